"""Small manifests kept in memory, by digest, so a manifest GET reads no file.

What it owns: the bytes and media type of manifests served recently, least recently
used first out. Entries are content-addressed: the bytes were checked against their
digest when they were read (or fetched) and so stay right for as long as they are
held. Holding a manifest here says nothing about whether the log vouches for it:
callers decide that first, on every request, and only then ask here for the bytes.

Bounds: at most `bytes_max` body bytes in all, and a manifest larger than
`entry_bytes_max` is never held (it is served from disk each time). A cache of
`bytes_max = 0` holds nothing.

No locks here: its one user takes one around every call.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from pyrsia.formats.digest import Digest

MANIFEST_BYTES_MAX = 256 * 1024  # an image index of many platforms is tens of KiB


@dataclass(frozen=True, slots=True, kw_only=True)
class CachedManifest:
    media_type: str
    body: bytes


class ManifestCache:
    def __init__(self, bytes_max: int, entry_bytes_max: int = MANIFEST_BYTES_MAX) -> None:
        if bytes_max < 0 or entry_bytes_max < 0:
            raise ValueError("cache bounds must not be negative")
        self.bytes_max = bytes_max
        self.entry_bytes_max = min(entry_bytes_max, bytes_max)
        self._entries: OrderedDict[Digest, CachedManifest] = OrderedDict()
        self._bytes = 0

    @property
    def bytes_held(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, digest: Digest) -> CachedManifest | None:
        found = self._entries.get(digest)
        if found is not None:
            self._entries.move_to_end(digest)
        return found

    def put(self, digest: Digest, media_type: str, body: bytes) -> bool:
        """Hold a manifest whose bytes are known to match `digest`; whether it is held."""
        if len(body) > self.entry_bytes_max:
            return False
        old = self._entries.pop(digest, None)
        if old is not None:
            self._bytes -= len(old.body)
        self._entries[digest] = CachedManifest(media_type=media_type, body=body)
        self._bytes += len(body)
        while self._bytes > self.bytes_max:
            _, dropped = self._entries.popitem(last=False)
            self._bytes -= len(dropped.body)
        return True
