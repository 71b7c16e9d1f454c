"""Maven artifacts: which blob a repository path is, pulled through, verified, vouched for.

A file is served only while the transparency log's newest record for its path names
the sha256 the node holds. The first request for a path fetches it from the upstream
(checked against the checksum the upstream publishes), commits an `AddArtifact` for
it, and only then serves it. A POM's developers and dependencies become the record's
author and dependencies; the other files of that version take them from the POM's
record. Checksum sidecars are not logged: they are computed from vouched bytes.

Each file a node holds has a record at `<home>/refs/maven/<path>@` with its sha256
(the blob), size, every checksum Maven may ask for, and when it was fetched. (The `@`
suffix cannot occur in a valid path segment, so a record never collides with a
directory of another path.) Release files never change once fetched: if the upstream
later sends other bytes for a logged path, they are refused. Metadata
(`maven-metadata.xml`) changes upstream as versions are published: it is fetched
again once older than the TTL, and if the upstream cannot be reached then, the old
copy is served marked stale rather than failing the build.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pyrsia.artifacts.blobstore import BlobStore, StoredBlob
from pyrsia.artifacts.provenance import Provenance, of_pom
from pyrsia.artifacts.records import RecordStore
from pyrsia.artifacts.singleflight import SingleFlight
from pyrsia.artifacts.sources import BlobSource, Sources, Wanted
from pyrsia.artifacts.vouch import MAVEN, ArtifactLog, Authority, NewArtifact, Vouched
from pyrsia.errors import DigestMismatch, MavenFileUnknown, PyrsiaError, StorageError, UpstreamError
from pyrsia.formats.digest import Digest
from pyrsia.formats.maven_layout import CHECKSUMS, MavenPath, parse_path
from pyrsia.translog.chunks import CHUNK_BYTES
from pyrsia.translog.tx import AddArtifact
from pyrsia.upstream.maven import FetchedFile, MavenClient, MavenRepositories

log = logging.getLogger("pyrsia.artifacts")


@dataclass(frozen=True, slots=True)
class MavenFile:
    blob: Path
    size: int
    checksums: dict[str, str]
    fetched_at: float
    # The upstream's Last-Modified (epoch seconds), else when the node fetched it: what
    # `Last-Modified` and `If-Modified-Since` speak of is the file, not our copy of it.
    last_modified: float
    stale: bool = False


class MavenArtifacts:
    def __init__(
        self,
        blobs: BlobStore,
        records: RecordStore,
        translog: ArtifactLog,
        upstream: MavenClient | MavenRepositories,
        metadata_ttl_s: float,
        clock: Callable[[], float] = time.time,
        authority: Authority | None = None,
        peers: Sequence[BlobSource] = (),
        observe: Callable[[str, int], None] | None = None,
    ) -> None:
        """`authority` is set on a node that is not one: what its log lacks, it asks for."""
        self._blobs = blobs
        self._records = records
        self._translog = translog
        # Tried in order per file; a record names the repository that served it.
        self._upstream = MavenRepositories([upstream]) if isinstance(upstream, MavenClient) else upstream
        self._metadata_ttl_s = metadata_ttl_s
        self._clock = clock
        self._flights = SingleFlight()
        self._authority = authority
        # A file the log already vouches for can come from peers, checked against its record.
        self._peers = Sources(blobs, peers, observe)

    def file(self, target: MavenPath) -> MavenFile:
        held = self._held(target.path)
        if held is not None:
            if not target.is_metadata or self._clock() - held.fetched_at < self._metadata_ttl_s:
                return held
            try:
                return self._fetch(target)
            except UpstreamError as exc:
                log.warning("serving stale %s: %s", target.path, exc.message)
                return dataclasses.replace(held, stale=True)
        return self._fetch(target)

    def _held(self, path: str) -> MavenFile | None:
        """The file, if held, intact, and what the log's newest record for the path names."""
        record = self._records.get(path + "@")
        if record is None:
            return None
        vouched = self._translog.committed(MAVEN, served_path(path))
        digest = Digest("sha256", str(record["sha256"]))
        if vouched is None or vouched.digest != str(digest):
            return None
        size = self._blobs.checked(digest)
        if size is None:
            return None
        checksums = {k: str(record[k]) for k in ("sha1", "md5", "sha256", "sha512")}
        fetched_at = float(record["fetched_at"])
        modified = record.get("last_modified")
        last_modified = float(modified) if isinstance(modified, int | float) else fetched_at
        return MavenFile(self._blobs.path(digest), size, checksums, fetched_at, last_modified)

    def _fetch(self, target: MavenPath) -> MavenFile:
        return self._flights.run(f"maven {target.path}", lambda: self._download(target))

    def _download(self, target: MavenPath) -> MavenFile:
        path = target.path
        vouched = self._translog.committed(MAVEN, served_path(path))
        expected: Digest | None = None
        if self._authority is not None:
            # Not an authority: the log must hold the file first, and the bytes must be its.
            if vouched is None or target.is_metadata:
                self._authority.request_publish("maven", path)
                vouched = self._translog.committed(MAVEN, served_path(path))
            if vouched is None:
                raise MavenFileUnknown(f"an authority published {path}, but this node's log lacks it")
            expected = Digest.parse(vouched.digest)
            if (from_peers := self._from_peers(target, vouched)) is not None:
                return from_peers
        fetched = self._upstream.fetch(path, self._blobs.opener(expected, self._upstream.base_url, CHECKSUMS))
        if vouched is not None and vouched.digest != str(fetched.digest) and not target.is_metadata:
            # A released file never changes: the log's digest stands, the upstream's new bytes do not.
            raise DigestMismatch(
                expected=vouched.digest, calculated=str(fetched.digest), source=fetched.base_url
            )
        if self._authority is None and (vouched is None or vouched.digest != str(fetched.digest)):
            # new, or metadata that changed: an authority commits it
            who = self._provenance(target, fetched.digest)
            self._translog.publish(
                [
                    NewArtifact(
                        package_type=MAVEN,
                        package_id=package_id(target),
                        path=served_path(path),
                        digest=str(fetched.digest),
                        size=fetched.size,
                        chunk_root=_stored(fetched).chunk_root,
                        media_type=target.content_type,
                        source=f"{fetched.base_url}/{path}",
                        registry=fetched.repository,
                        author=who.author,
                        dependencies=who.dependencies,
                    )
                ]
            )
        now = self._clock()
        record: dict[str, object] = {
            **fetched.checksums,
            "size": fetched.size,
            "fetched_at": now,
            "last_modified": fetched.last_modified,
            "verified_with": fetched.verified_with,
        }
        self._records.put(path + "@", record)
        checked = fetched.verified_with or "nothing published"
        log.info("pulled %s from upstream %s (checked with %s)", path, fetched.repository, checked)
        modified = now if fetched.last_modified is None else fetched.last_modified
        return MavenFile(self._blobs.path(fetched.digest), fetched.size, fetched.checksums, now, modified)

    def verify_record(self, record: AddArtifact) -> str | None:
        """Why this node would not vouch for another authority's `record`, or None: the
        file, fetched from this node's own upstream, must have its digest, size and chunk
        root. The bytes are kept and served from here on.

        The upstream's checksum sidecar is not fetched: the bytes must equal the record's
        digest, which is a stronger check than a checksum from the same upstream (the
        proposer's own pull-through checked that one)."""
        path = record.path.removeprefix("/maven2/")
        target = parse_path(path)
        # Checked at the repository the record names (by its URL) when this node has it.
        opener = self._blobs.opener(None, record.source, CHECKSUMS)
        fetched = self._upstream.fetch_from(record.source, path, opener, sidecar=False)
        stored = _stored(fetched)
        base = f"{fetched.repository} ({fetched.base_url})"
        problem = None
        if str(fetched.digest) != record.digest:
            problem = f"{base} serves {fetched.digest} for {path}, not {record.digest}"
        elif fetched.size != record.size:
            problem = f"{path} is {fetched.size} bytes at {base}, the record says {record.size}"
        elif stored.chunk_root != record.chunk_root:
            problem = f"the chunk root of {path} from {base} differs from the record's"
        if problem is not None:
            if not self._translog.vouches(MAVEN, str(fetched.digest)):
                self._blobs.remove(fetched.digest)
            return problem
        self._records.put(
            target.path + "@",
            {
                **fetched.checksums,
                "size": fetched.size,
                "fetched_at": self._clock(),
                "last_modified": fetched.last_modified,
                "verified_with": "record",
            },
        )
        return None

    def _from_peers(self, target: MavenPath, vouched: Vouched) -> MavenFile | None:
        """The file from peers, its bytes the record's; None when no peer delivers it."""
        wanted = Wanted(
            digest=Digest.parse(vouched.digest),
            name=target.path,
            size=vouched.size,
            chunk_root=vouched.chunk_root,
        )
        try:
            stored = self._peers.obtain(wanted)
        except PyrsiaError as exc:
            log.info("%s not from peers: %s", target.path, exc.message)
            return None
        hashers = {algorithm: hashlib.new(algorithm) for algorithm in CHECKSUMS}
        try:
            with stored.path.open("rb") as file:
                while block := file.read(CHUNK_BYTES):
                    for hasher in hashers.values():
                        hasher.update(block)
        except OSError as exc:
            raise StorageError(f"cannot read blob {stored.digest}: {exc.strerror}") from exc
        checksums = {algorithm: hasher.hexdigest() for algorithm, hasher in hashers.items()}
        now = self._clock()
        record = {
            **checksums,
            "size": stored.size,
            "fetched_at": now,
            "last_modified": None,
            "verified_with": "log",
        }
        self._records.put(target.path + "@", record)
        log.info("pulled %s from peers (checked against the log)", target.path)
        return MavenFile(stored.path, stored.size, checksums, now, now)

    def _provenance(self, target: MavenPath, digest: Digest) -> Provenance:
        if target.path.endswith(".pom"):
            return of_pom(self._blobs.read(digest) or b"", target.group)
        if target.artifact and target.version:
            pom = f"{target.path.rsplit('/', 1)[0]}/{target.artifact}-{target.version}.pom"
            if (vouched := self._translog.committed(MAVEN, served_path(pom))) is not None:
                return Provenance(author=vouched.author, dependencies=vouched.dependencies)
        return Provenance(author=target.group)


def _stored(fetched: FetchedFile) -> StoredBlob:
    assert isinstance(fetched.committed, StoredBlob), "the Maven client commits through a BlobWriter"
    return fetched.committed


def served_path(path: str) -> str:
    return f"/maven2/{path}"


def package_id(target: MavenPath) -> str:
    """`group:artifact:version` for a file of a version; the directory, dotted, for metadata."""
    if target.artifact and target.version:
        return f"{target.group}:{target.artifact}:{target.version}"
    return target.group
