"""Maven artifacts: which blob a repository path is, pulled through and verified.

Each file a node holds has a record at `<home>/refs/maven/<path>@` with its sha256
(the blob), size, every checksum Maven may ask for, and when it was fetched. (The `@`
suffix cannot occur in a valid path segment, so a record never collides with a
directory of another path.) Release files never change once fetched. Metadata
(`maven-metadata.xml`) changes upstream as versions are published: it is fetched
again once older than the TTL, and if the upstream cannot be reached then, the old
copy is served marked stale rather than failing the build.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pyrsia.artifacts.blobstore import BlobStore
from pyrsia.artifacts.digest import Digest
from pyrsia.artifacts.records import RecordStore
from pyrsia.artifacts.singleflight import SingleFlight
from pyrsia.errors import UpstreamError
from pyrsia.registry.maven_layout import MavenPath
from pyrsia.upstream.maven import MavenClient

log = logging.getLogger("pyrsia.artifacts")


@dataclass(frozen=True, slots=True)
class MavenFile:
    blob: Path
    size: int
    checksums: dict[str, str]
    fetched_at: float
    stale: bool = False


class MavenArtifacts:
    def __init__(
        self,
        blobs: BlobStore,
        records: RecordStore,
        upstream: MavenClient,
        metadata_ttl_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._blobs = blobs
        self._records = records
        self._upstream = upstream
        self._metadata_ttl_s = metadata_ttl_s
        self._clock = clock
        self._flights = SingleFlight()

    def file(self, target: MavenPath) -> MavenFile:
        held = self._held(target.path)
        if held is not None:
            if not target.is_metadata or self._clock() - held.fetched_at < self._metadata_ttl_s:
                return held
            try:
                return self._fetch(target.path)
            except UpstreamError as exc:
                log.warning("serving stale %s: %s", target.path, exc.message)
                return MavenFile(held.blob, held.size, held.checksums, held.fetched_at, stale=True)
        return self._fetch(target.path)

    def _held(self, path: str) -> MavenFile | None:
        record = self._records.get(path + "@")
        if record is None:
            return None
        digest = Digest("sha256", str(record["sha256"]))
        size = self._blobs.checked(digest)
        if size is None:
            return None
        checksums = {k: str(record[k]) for k in ("sha1", "md5", "sha256", "sha512")}
        return MavenFile(self._blobs.path(digest), size, checksums, float(record["fetched_at"]))

    def _fetch(self, path: str) -> MavenFile:
        return self._flights.run(f"maven {path}", lambda: self._download(path))

    def _download(self, path: str) -> MavenFile:
        fetched = self._upstream.fetch(path, self._blobs)
        now = self._clock()
        record: dict[str, object] = {
            **fetched.checksums,
            "size": fetched.size,
            "fetched_at": now,
            "verified_with": fetched.verified_with,
        }
        self._records.put(path + "@", record)
        checked = fetched.verified_with or "nothing published"
        log.info("pulled %s from upstream (checked with %s)", path, checked)
        return MavenFile(self._blobs.path(fetched.digest), fetched.size, fetched.checksums, now)
