"""Block files: one per block, `<root>/blocks/<height:012d>.blk`, durable once written.

Frame: magic, payload length (8 bytes, big-endian), SHA-256 of the payload, payload
(the canonical block). A block is written to a temp file, fsynced, renamed into place
and the directory fsynced, so a crash leaves the old chain or the old chain plus one
whole block. A *torn* last file — shorter than its frame says, which only a disk that
lost acknowledged writes can produce — never committed and is removed on open; any
other damage (a checksum mismatch, a gap) is reported by height and never repaired
silently.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import zlib
from collections.abc import Iterator
from pathlib import Path

from pyrsia.durable import write_atomic
from pyrsia.errors import ChainBroken, StorageError

log = logging.getLogger("pyrsia.translog")
MAGIC = b"PYRSIA-BLOCK-1\n"
_LENGTH = slice(len(MAGIC), len(MAGIC) + 8)
_LENGTH_CRC = slice(len(MAGIC) + 8, len(MAGIC) + 12)
_DIGEST = slice(len(MAGIC) + 12, len(MAGIC) + 44)
_HEADER = len(MAGIC) + 44
SUFFIX = ".blk"


def frame(payload: bytes) -> bytes:
    length = len(payload).to_bytes(8, "big")
    return MAGIC + length + zlib.crc32(length).to_bytes(4, "big") + hashlib.sha256(payload).digest() + payload


class Torn(Exception):
    """The file ends before its (intact) frame says it does."""


def unframe(data: bytes, height: int) -> bytes:
    """The payload of a whole, intact frame. The length carries its own CRC, so a
    damaged length is reported as damage, not mistaken for a torn write."""
    if len(data) < _HEADER:
        if MAGIC.startswith(data[: len(MAGIC)]):
            raise Torn()
        raise ChainBroken(height, "block file has no block header")
    if not data.startswith(MAGIC) or zlib.crc32(data[_LENGTH]).to_bytes(4, "big") != data[_LENGTH_CRC]:
        raise ChainBroken(height, "block file header is damaged")
    length = int.from_bytes(data[_LENGTH], "big")
    payload = data[_HEADER:]
    if len(payload) < length:
        raise Torn()
    if len(payload) != length or hashlib.sha256(payload).digest() != data[_DIGEST]:
        raise ChainBroken(height, "block file checksum does not match its contents")
    return payload


class BlockFiles:
    def __init__(self, root: Path) -> None:
        self.dir = root / "blocks"
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create {self.dir}: {exc.strerror}") from exc

    def path(self, height: int) -> Path:
        return self.dir / f"{height:012d}{SUFFIX}"

    def heights(self) -> list[int]:
        """Heights on disk, checked to be 0..n-1 with no gap."""
        for leftover in self.dir.glob(".*.part"):  # writes a crash interrupted
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()
        names = sorted(p.name for p in self.dir.glob(f"*{SUFFIX}"))
        heights = []
        for expected, name in enumerate(names):
            stem = name.removesuffix(SUFFIX)
            if not stem.isdigit() or int(stem) != expected:
                raise ChainBroken(expected, f"block file {name} where height {expected} should be")
            heights.append(expected)
        return heights

    def read(self, height: int) -> bytes:
        """The block's payload; `Torn` or `ChainBroken` when the file is damaged."""
        try:
            data = self.path(height).read_bytes()
        except FileNotFoundError as exc:
            raise ChainBroken(height, "block file is missing") from exc
        except OSError as exc:
            raise StorageError(f"cannot read block {height}: {exc.strerror}") from exc
        return unframe(data, height)

    def iter_payloads(self, heights: list[int]) -> Iterator[tuple[int, bytes]]:
        for height in heights:
            yield height, self.read(height)

    def write(self, height: int, payload: bytes) -> None:
        write_atomic(self.path(height), frame(payload))

    def drop_torn(self, height: int) -> None:
        log.warning("removing torn block file %s: it never committed", self.path(height).name)
        self.path(height).unlink()
