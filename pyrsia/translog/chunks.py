"""Chunk hashes and chunk roots: how a record names every 1 MiB piece of its blob.

A blob is cut into chunks of `CHUNK_BYTES` (the last may be shorter); each chunk is
named by its SHA-256, and `chunk_root` is the RFC 6962 Merkle root over those chunk
hashes (DESIGN §3), so a peer can check any one chunk against the committed root with
an inclusion proof and a bad chunk is pinned on the peer that sent it.

The empty blob has zero chunks, so its root is the RFC 6962 root of the empty tree,
SHA-256 of the empty string (`merkle.EMPTY_ROOT`). A blob of one chunk has the root
`leaf_hash(sha256(blob))`, which is not the blob's digest: the leaf hash is domain
separated (RFC 6962 §2.1). Pure: bytes in, hashes out.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

from pyrsia.translog import merkle

CHUNK_BYTES = 1 << 20


def chunk_hashes(data: bytes, chunk_bytes: int = CHUNK_BYTES) -> list[bytes]:
    """SHA-256 of each `chunk_bytes` piece of `data`, in order; none for empty data."""
    view = memoryview(data)
    return [hashlib.sha256(view[i : i + chunk_bytes]).digest() for i in range(0, len(data), chunk_bytes)]


def chunk_root(hashes: Sequence[bytes]) -> bytes:
    """The RFC 6962 root over chunk hashes (the empty tree's root for no chunks)."""
    return merkle.Tree(hashes).root()


class ChunkHasher:
    """Chunk hashes of a stream fed in pieces of any size: `update` as bytes arrive,
    then `hashes` or `root()`. Equal to `chunk_hashes` of the concatenated input."""

    def __init__(self, chunk_bytes: int = CHUNK_BYTES) -> None:
        if chunk_bytes <= 0:
            raise ValueError("chunk size must be positive")
        self.chunk_bytes = chunk_bytes
        self.size = 0
        self._done: list[bytes] = []
        self._current = hashlib.sha256()
        self._filled = 0  # bytes in the current, unfinished chunk

    def update(self, data: bytes) -> None:
        view = memoryview(data)
        self.size += len(view)
        while view:
            take = min(len(view), self.chunk_bytes - self._filled)
            self._current.update(view[:take])
            self._filled += take
            view = view[take:]
            if self._filled == self.chunk_bytes:
                self._done.append(self._current.digest())
                self._current, self._filled = hashlib.sha256(), 0

    def update_all(self, pieces: Iterable[bytes]) -> ChunkHasher:
        for piece in pieces:
            self.update(piece)
        return self

    @property
    def hashes(self) -> list[bytes]:
        """Every chunk's hash so far, the unfinished last chunk included."""
        return self._done + ([self._current.digest()] if self._filled else [])

    def root(self) -> bytes:
        return chunk_root(self.hashes)
