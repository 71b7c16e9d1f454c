"""Chunk roots: how a logged artifact can be checked one chunk at a time.

A blob is cut into `CHUNK_BYTES` (1 MiB) chunks, the last one shorter; the leaves of
an RFC 6962 tree are the chunks' SHA-256 digests, and its root is the `chunk_root`
an `AddArtifact` records (DESIGN §3). A downloader that trusts the log can check a
peer's chunk list against the root, then each chunk against the list, and so pin a
bad chunk on the peer that sent it long before the whole digest can be checked. The
empty blob has no chunks; its root is the empty tree's.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from pyrsia.translog import merkle

CHUNK_BYTES = 1 << 20


def chunk_count(size: int, chunk_bytes: int = CHUNK_BYTES) -> int:
    return -(-size // chunk_bytes)


def chunk_root(hashes: Sequence[bytes]) -> bytes:
    return merkle.Tree(hashes).root()


def chunk_hashes(data: bytes, chunk_bytes: int = CHUNK_BYTES) -> list[bytes]:
    return [hashlib.sha256(data[i : i + chunk_bytes]).digest() for i in range(0, len(data), chunk_bytes)]


class ChunkHasher:
    """Chunk digests of bytes fed in order, in pieces of any size."""

    def __init__(self, chunk_bytes: int = CHUNK_BYTES) -> None:
        self.chunk_bytes = chunk_bytes
        self.hashes: list[bytes] = []
        self._current = hashlib.sha256()
        self._filled = 0

    def update(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            take = min(len(view), self.chunk_bytes - self._filled)
            self._current.update(view[:take])
            self._filled += take
            view = view[take:]
            if self._filled == self.chunk_bytes:
                self.hashes.append(self._current.digest())
                self._current, self._filled = hashlib.sha256(), 0

    def finish(self) -> list[bytes]:
        """Every chunk digest, the partial last chunk included."""
        if self._filled:
            self.hashes.append(self._current.digest())
            self._current, self._filled = hashlib.sha256(), 0
        return self.hashes

    def root(self) -> bytes:
        return chunk_root(self.finish())
