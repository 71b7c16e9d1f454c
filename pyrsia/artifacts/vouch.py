"""What the transparency log vouches for, as the artifact services need it.

The services ask four things of the log: which digest a served path is (`committed`),
what the log says of a digest (`record`: size and chunk root, to verify bytes from any
source), whether a digest is vouched for at all (`vouches`), and to publish new files
(`publish`, which returns only once they are committed). Every published file carries
the size and chunk root of bytes the node holds and verified: no record is committed
before its bytes exist. `ArtifactLog` is that seam;
the node plugs the translog ledger in (`LedgerArtifactLog`), unit tests an in-memory
twin (`MemoryArtifactLog`).

Paths are the URL paths the node serves them under, so a record reads like the
request that fetches it: `/v2/library/alpine/manifests/3.18`,
`/v2/library/alpine/blobs/sha256:…`, `/maven2/com/example/hello/1.0/hello-1.0.jar`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from pyrsia.translog.chunks import CHUNK_BYTES
from pyrsia.translog.ledger import Ledger
from pyrsia.translog.tx import AddArtifact

DOCKER = "docker"
MAVEN = "maven"


@dataclass(frozen=True, slots=True, kw_only=True)
class NewArtifact:
    """One file to publish: the AddArtifact payload less what the log fills in."""

    package_type: str
    package_id: str
    path: str
    digest: str
    size: int
    chunk_root: bytes
    media_type: str
    source: str
    author: str
    dependencies: tuple[str, ...] = ()
    registry: str = ""  # the registry host (Docker) or repository id (Maven) it came from


@dataclass(frozen=True, slots=True, kw_only=True)
class Vouched:
    """A committed AddArtifact, as far as serving needs it."""

    package_id: str
    path: str
    digest: str
    size: int
    chunk_root: bytes
    media_type: str
    author: str
    dependencies: tuple[str, ...] = ()
    height: int = 0
    registry: str = ""

    @classmethod
    def of(cls, found: _Described, height: int) -> Vouched:
        return cls(
            package_id=found.package_id,
            path=found.path,
            digest=found.digest,
            size=found.size,
            chunk_root=found.chunk_root,
            media_type=found.media_type,
            author=found.author,
            dependencies=found.dependencies,
            height=height,
            registry=found.registry,
        )


class _Described(Protocol):
    """What a new artifact and a log record have in common."""

    @property
    def package_id(self) -> str: ...
    @property
    def path(self) -> str: ...
    @property
    def digest(self) -> str: ...
    @property
    def size(self) -> int: ...
    @property
    def chunk_root(self) -> bytes: ...
    @property
    def media_type(self) -> str: ...
    @property
    def author(self) -> str: ...
    @property
    def dependencies(self) -> tuple[str, ...]: ...
    @property
    def registry(self) -> str: ...


class ArtifactLog(Protocol):
    def committed(self, package_type: str, path: str) -> Vouched | None:
        """The newest committed record for a served path."""
        ...

    def record(self, package_type: str, digest: str) -> Vouched | None:
        """The newest committed record of a digest."""
        ...

    def vouches(self, package_type: str, digest: str) -> bool: ...

    def package_ids(self, package_type: str, prefix: str) -> list[str]: ...

    def paths(self, package_type: str, prefix: str, after: str, limit: int) -> list[str]:
        """Distinct committed paths under `prefix`, sorted, after `after`, at most `limit`."""
        ...

    def publish(self, artifacts: list[NewArtifact]) -> None:
        """Commits the files (one transaction each) or raises; durable on return."""
        ...


class Authority(Protocol):
    """How a node that is not an authority gets something into the log: it asks one.

    `kind` is `docker_manifest` (name, tag or digest), `docker_blob` (name, digest) or
    `maven` (the repository path as `name`). Returns once this node's own log holds the
    authority's commit (it arrives by sync); raises a `PyrsiaError` otherwise.
    """

    def request_publish(self, kind: str, name: str, reference: str = "") -> None: ...


@dataclass
class MemoryArtifactLog:
    """In-memory twin of the ledger for unit tests: commits at once, in order."""

    records: list[tuple[str, Vouched]] = field(default_factory=list)
    blocks: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def committed(self, package_type: str, path: str) -> Vouched | None:
        with self._lock:
            found = [v for t, v in self.records if t == package_type and v.path == path]
        return found[-1] if found else None

    def record(self, package_type: str, digest: str) -> Vouched | None:
        with self._lock:
            found = [v for t, v in self.records if t == package_type and v.digest == digest]
        return found[-1] if found else None

    def vouches(self, package_type: str, digest: str) -> bool:
        return self.record(package_type, digest) is not None

    def package_ids(self, package_type: str, prefix: str) -> list[str]:
        with self._lock:
            ids = {v.package_id for t, v in self.records if t == package_type}
        return sorted(i for i in ids if i.startswith(prefix))

    def paths(self, package_type: str, prefix: str, after: str, limit: int) -> list[str]:
        with self._lock:
            found = {v.path for t, v in self.records if t == package_type}
        return sorted(p for p in found if p.startswith(prefix) and p > after)[:limit]

    def publish(self, artifacts: list[NewArtifact]) -> None:
        with self._lock:
            self.blocks += 1
            self.records += [(a.package_type, Vouched.of(a, self.blocks)) for a in artifacts]


Commit = Callable[[Sequence[AddArtifact]], object]


class LedgerArtifactLog:
    """The translog ledger as the artifact services see it. `commit` is how payloads
    reach the log: the ledger's own `publish` (one authority), or consensus among several."""

    def __init__(self, ledger: Ledger, commit: Commit | None = None) -> None:
        self._ledger = ledger
        self._commit = commit or ledger.publish

    def committed(self, package_type: str, path: str) -> Vouched | None:
        record = self._ledger.latest(package_type, path)
        return None if record is None else Vouched.of(record, record.height)

    def record(self, package_type: str, digest: str) -> Vouched | None:
        found = self._ledger.newest_by_digest(package_type, digest)
        return None if found is None else Vouched.of(found, found.height)

    def vouches(self, package_type: str, digest: str) -> bool:
        return self._ledger.has_digest(package_type, digest)

    def package_ids(self, package_type: str, prefix: str) -> list[str]:
        return self._ledger.package_ids(package_type, prefix)

    def paths(self, package_type: str, prefix: str, after: str, limit: int) -> list[str]:
        return self._ledger.paths(package_type, prefix, after, limit)

    def publish(self, artifacts: list[NewArtifact]) -> None:
        self._commit(
            [
                AddArtifact(
                    package_type=a.package_type,
                    package_id=a.package_id,
                    path=a.path,
                    digest=a.digest,
                    size=a.size,
                    chunk_size=CHUNK_BYTES,
                    chunk_root=a.chunk_root,
                    media_type=a.media_type,
                    source=a.source,
                    author=a.author,
                    dependencies=a.dependencies,
                    registry=a.registry,
                )
                for a in artifacts
            ]
        )
