"""Where a blob's bytes come from: an ordered list of sources behind one seam.

The log decides *what* a blob is (digest, size, chunk root); a `Sources` decides
*where* its bytes come from. The local store is asked first; then each source in
order (today the upstream named in the record; the peer exchange goes in front of it)
until one delivers bytes that verify. Every source writes through a `BlobWriter`,
which checks the size as bytes arrive and the digest and chunk root at the end, so no
source is trusted: a source that fails or lies is logged and the next one is tried.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from pyrsia.artifacts.blobstore import BlobStore, StoredBlob
from pyrsia.errors import BlobUnknown, PyrsiaError, StorageError
from pyrsia.formats.digest import Digest
from pyrsia.upstream.sink import OpenSink

log = logging.getLogger("pyrsia.artifacts")


@dataclass(frozen=True, slots=True, kw_only=True)
class Wanted:
    """A blob to obtain, and what is known of it before any byte arrives."""

    digest: Digest
    name: str  # the repository (Docker) or the path (Maven) it is asked for under
    size: int | None = None  # the logged size, or a manifest's declared one
    chunk_root: bytes | None = None  # the logged chunk root, once committed


class BlobSource(Protocol):
    label: str

    def origin(self, wanted: Wanted) -> str:
        """Where `wanted` would come from, as its writer is labelled (what a transfer
        list shows): for the upstream, which registry's URL."""
        ...

    def fetch(self, wanted: Wanted, open_sink: OpenSink) -> None:
        """Deliver the bytes into sinks from `open_sink` and commit one, or raise."""
        ...


class Sources:
    """`observe(source, size)` hears where each blob's bytes came from ("local" when held,
    "upstream" for the upstream sources; peers count their own bytes as they arrive)."""

    def __init__(
        self,
        store: BlobStore,
        sources: Sequence[BlobSource],
        observe: Callable[[str, int], None] | None = None,
    ) -> None:
        self._store = store
        self._sources = list(sources)
        self._observe = observe

    @property
    def labels(self) -> list[str]:
        return [s.label for s in self._sources]

    def obtain(self, wanted: Wanted) -> StoredBlob:
        """The blob, verified, from the store or the first source that delivers it."""
        held = self._store.stored(wanted.digest)
        if held is not None:
            self._count("local", held.size)
            return held
        failures: list[PyrsiaError] = []
        for source in self._sources:
            opener = self._store.opener(
                wanted.digest, source.origin(wanted), size=wanted.size, chunk_root=wanted.chunk_root
            )
            try:
                source.fetch(wanted, opener)
            except StorageError:
                raise  # our disk, not the source: trying elsewhere would fail the same way
            except PyrsiaError as exc:
                log.warning("blob %s from %s failed: %s", wanted.digest, source.label, exc.message)
                failures.append(exc)
                continue
            stored = self._store.stored(wanted.digest)
            if stored is not None:
                if not source.label.startswith("peer"):
                    self._count("upstream", stored.size)
                return stored
        if failures:
            # The last source is the upstream: its error says most (a peer's is in the log).
            raise failures[-1]
        raise BlobUnknown(f"no source holds blob {wanted.digest}")

    def _count(self, source: str, size: int) -> None:
        if self._observe is not None:
            self._observe(source, size)
