"""Canonical msgpack: one encoding per value, so hashes and signatures are stable.

Maps have string keys written in sorted order; floats are refused (their encodings
differ between writers); tuples encode as arrays. Decoding bounds every length so a
hostile file or frame cannot make us allocate without limit.
"""

from __future__ import annotations

from typing import Any

import msgpack

from pyrsia.errors import TxInvalid

DECODED_BYTES_MAX = 64 * 1024 * 1024


def _canonical(value: Any) -> Any:
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise TxInvalid("map keys must be strings")
        return {k: _canonical(value[k]) for k in sorted(value)}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    if isinstance(value, float):
        raise TxInvalid("floats have no canonical encoding")
    if value is None or isinstance(value, bool | int | str | bytes):
        return value
    raise TxInvalid(f"cannot encode {type(value).__name__}")


def encode(value: Any) -> bytes:
    try:
        packed: bytes = msgpack.packb(_canonical(value), use_bin_type=True)
    except (OverflowError, ValueError, UnicodeEncodeError) as exc:  # ints past 64 bits, lone surrogates
        raise TxInvalid(f"cannot encode: {exc}") from exc
    return packed


def decode(data: bytes) -> Any:
    """Bytes to plain values; anything malformed is `TxInvalid`."""
    if len(data) > DECODED_BYTES_MAX:
        raise TxInvalid("encoded value too large")
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True)
    except (ValueError, msgpack.UnpackException, TypeError) as exc:
        raise TxInvalid(f"undecodable msgpack: {exc}") from exc


def field(doc: Any, key: str, kind: type | tuple[type, ...]) -> Any:
    """`doc[key]` checked to be a map entry of the given type."""
    if not isinstance(doc, dict) or key not in doc:
        raise TxInvalid(f"missing field {key!r}")
    value = doc[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise TxInvalid(f"field {key!r} has the wrong type")
    return value
