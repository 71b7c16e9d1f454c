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


_SCALARS = frozenset({str, int, bytes, bool, type(None)})


def _canonical(value: Any) -> Any:
    kind = type(value)
    if kind in _SCALARS:  # the common case first: encoding is on every hot path
        return value
    if kind is dict:
        if not all(type(k) is str for k in value):
            raise TxInvalid("map keys must be strings")
        return {k: _canonical(value[k]) for k in sorted(value)}
    if kind is list or kind is tuple:
        return [_canonical(v) for v in value]
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


def encode_sorted(doc: dict[str, Any]) -> bytes:
    """`encode(doc)` for a map built with its keys in sorted order whose values are
    scalars, lists of scalars or maps built the same way (a block header, a record):
    msgpack writes such a map canonically as it stands, so the walk that sorts and
    checks each value is skipped (hot paths)."""
    assert list(doc) == sorted(doc), "keys must be inserted in sorted order"
    try:
        packed: bytes = msgpack.packb(doc, use_bin_type=True)
    except (OverflowError, ValueError, UnicodeEncodeError) as exc:
        raise TxInvalid(f"cannot encode: {exc}") from exc
    return packed


def scalar(value: str | int | bytes) -> bytes:
    """`encode` of one string, integer (64-bit) or bytes value, without the walk."""
    if type(value) not in _SCALARS:
        return encode(value)
    try:
        packed: bytes = msgpack.packb(value, use_bin_type=True)
    except (OverflowError, ValueError, UnicodeEncodeError) as exc:
        raise TxInvalid(f"cannot encode: {exc}") from exc
    return packed


_KEYS_CACHED_MAX = 256
_keys: dict[str, bytes] = {}  # the packed form of each map key seen on a hot path


def raw_map(entries: dict[str, bytes]) -> bytes:
    """The canonical encoding of a map whose values are already canonically encoded:
    what `encode` writes for it, without encoding the values again (hot paths)."""
    parts = [_header(len(entries), 0x80, b"\xde", b"\xdf")]
    for key in sorted(entries):
        packed = _keys.get(key)
        if packed is None:
            packed = scalar(key)
            if len(_keys) < _KEYS_CACHED_MAX:
                _keys[key] = packed
        parts += (packed, entries[key])
    return b"".join(parts)


def raw_array(items: list[bytes]) -> bytes:
    """The canonical encoding of an array of already encoded items."""
    return _header(len(items), 0x90, b"\xdc", b"\xdd") + b"".join(items)


def _header(count: int, fix: int, sixteen: bytes, thirty_two: bytes) -> bytes:
    # msgpack spec: fixmap/fixarray below 16 entries, then 16- and 32-bit big-endian counts
    if count < 16:
        return bytes([fix | count])
    if count < 1 << 16:
        return sixteen + count.to_bytes(2, "big")
    return thirty_two + count.to_bytes(4, "big")


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
