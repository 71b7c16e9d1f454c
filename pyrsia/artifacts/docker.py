"""Docker artifacts: what the transparency log vouches for, fetched and verified.

Lookup order (DESIGN §2): the log says which digest a tag is and whether a digest may
be served at all; the bytes come from the local blob store, else from the upstream
(the peer-to-peer exchange will sit before it), and are verified against that digest
before anyone sees them.

Publishing on first pull (the embedded default is its own only authority): the tagged
manifest, every platform manifest of an index and every image config are fetched and
verified, then one `AddArtifact` per file — index or manifest, each platform manifest,
each config, each layer — is committed in one block, and only then is the manifest
served. Layers are vouched for by the digests their manifests name; their bytes are
fetched on first request and served only once they hash to that digest. A tag keeps
the digest the log committed for it: moving a tag upstream does not move it here.

Concurrent requests for the same missing item share one upstream fetch (`SingleFlight`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from pyrsia.artifacts.blobstore import BlobStore
from pyrsia.artifacts.provenance import Provenance, of_image
from pyrsia.artifacts.singleflight import SingleFlight
from pyrsia.artifacts.vouch import DOCKER, ArtifactLog, NewArtifact
from pyrsia.errors import BlobUnknown, NameUnknown, UpstreamError
from pyrsia.formats import manifest
from pyrsia.formats.digest import Digest
from pyrsia.formats.manifest import Descriptor
from pyrsia.translog.chunks import CHUNK_BYTES, ChunkHasher, chunk_hashes, chunk_root
from pyrsia.upstream.registry import RegistryClient

log = logging.getLogger("pyrsia.artifacts")
FETCHES_PARALLEL_MAX = 8


@dataclass(frozen=True, slots=True)
class StoredManifest:
    digest: Digest
    media_type: str
    body: bytes


@dataclass(frozen=True, slots=True)
class StoredBlob:
    digest: Digest
    path: Path
    size: int


def manifest_path(name: str, reference: str) -> str:
    return f"/v2/{name}/manifests/{reference}"


def blob_path(name: str, digest: str) -> str:
    return f"/v2/{name}/blobs/{digest}"


class DockerArtifacts:
    def __init__(self, blobs: BlobStore, translog: ArtifactLog, upstream: RegistryClient) -> None:
        self._blobs = blobs
        self._translog = translog
        self._upstream = upstream
        self._flights = SingleFlight()

    def manifest(self, name: str, reference: str | Digest, accept: Sequence[str]) -> StoredManifest:
        """The manifest for a tag or digest, negotiated against the client's Accept list."""
        if isinstance(reference, Digest):
            found = self._manifest_by_digest(name, reference)
        else:
            found = self._manifest_by_tag(name, reference)
        if manifest.wants_platform_manifest(accept, found.media_type):
            child = manifest.pick_platform(found.body)
            return self._manifest_by_digest(name, Digest.parse(child.digest))
        return found

    def blob(self, name: str, digest: Digest) -> StoredBlob:
        if not self._translog.vouches(DOCKER, str(digest)):
            raise BlobUnknown(f"the transparency log does not vouch for blob {digest}")
        size = self._blobs.checked(digest)
        if size is None:
            self._flights.run(f"blob {digest}", lambda: self._fetch_blob(name, digest))
            size = self._blobs.checked(digest)
            if size is None:
                raise BlobUnknown(f"blob {digest} could not be stored")
        return StoredBlob(digest, self._blobs.path(digest), size)

    def tags(self, name: str) -> list[str]:
        """Tags the log holds and the upstream lists; the log's alone when the upstream is down."""
        prefix = f"{name}:"
        local = [i.removeprefix(prefix) for i in self._translog.package_ids(DOCKER, prefix)]
        try:
            remote = self._upstream.list_tags(name)
        except NameUnknown:
            if not local:
                raise
            remote = []
        except UpstreamError as exc:
            log.warning("tag list of %s from the transparency log only: %s", name, exc.message)
            if not local:
                raise
            remote = []
        return sorted(set(local) | set(remote))

    # -- internals ------------------------------------------------------------------

    def _manifest_by_tag(self, name: str, tag: str) -> StoredManifest:
        vouched = self._translog.committed(DOCKER, manifest_path(name, tag))
        if vouched is not None:
            return self._vouched_manifest(name, Digest.parse(vouched.digest))
        return self._flights.run(f"publish {name}:{tag}", lambda: self._publish(name, tag))

    def _manifest_by_digest(self, name: str, digest: Digest) -> StoredManifest:
        if self._translog.vouches(DOCKER, str(digest)):
            return self._vouched_manifest(name, digest)
        return self._flights.run(f"publish {name}@{digest}", lambda: self._publish(name, str(digest)))

    def _vouched_manifest(self, name: str, digest: Digest) -> StoredManifest:
        body = self._blobs.read_checked(digest)
        if body is None:  # vouched for, but not (or no longer) held: fetch it again
            body = self._flights.run(f"manifest {digest}", lambda: self._fetch_manifest(name, digest))
        return StoredManifest(digest, manifest.media_type_of(body), body)

    def _fetch_manifest(self, name: str, digest: Digest) -> bytes:
        fetched = self._upstream.get_manifest(name, str(digest))  # checks the digest
        self._blobs.put(fetched.digest, fetched.body, source=self._upstream.base_url)
        return fetched.body

    def _publish(self, name: str, reference: str) -> StoredManifest:
        """Fetch the manifest tree and configs, verify, commit them to the log, then serve."""
        # A flight that finished between our lookup and this one may have published it.
        if ":" in reference and self._translog.vouches(DOCKER, reference):
            return self._vouched_manifest(name, Digest.parse(reference))
        done = None if ":" in reference else self._translog.committed(DOCKER, manifest_path(name, reference))
        if done is not None:
            return self._vouched_manifest(name, Digest.parse(done.digest))
        source = self._upstream.base_url
        top = self._upstream.get_manifest(name, reference)
        self._blobs.put(top.digest, top.body, source=source)
        package_id = f"{name}:{reference}" if ":" not in reference else f"{name}@{reference}"
        children = manifest.children(top.body) if top.media_type in manifest.INDEX_TYPES else []
        with ThreadPoolExecutor(FETCHES_PARALLEL_MAX) as pool:
            # An index names one manifest (and config) per platform: fetch them side by side.
            fetched = pool.map(partial(self._upstream.get_manifest, name), [c.digest for c in children])
            platforms = list(fetched) if children else [top]
            parts_of = [manifest.image_parts(p.body) for p in platforms]
            configs = list(pool.map(partial(self._config, name), parts_of))
        files: list[NewArtifact] = []
        first: Provenance | None = None
        for platform, parts, config in zip(platforms, parts_of, configs, strict=True):
            self._blobs.put(platform.digest, platform.body, source=source)
            found = of_image(name, platform.body, config)
            first = first or found
            record = _Recorder(package_id, source, found)
            if platform is not top:
                path = manifest_path(name, str(platform.digest))
                files.append(
                    record(
                        path,
                        str(platform.digest),
                        len(platform.body),
                        platform.media_type,
                        _chunks(platform.body),
                    )
                )
            files += [
                record(blob_path(name, p.digest), p.digest, p.size, p.media_type, self._chunks_of(name, p))
                for p in parts
            ]
        assert first is not None, "every manifest tree has at least one platform"
        top_record = _Recorder(package_id, source, first)
        files.insert(
            0,
            top_record(
                manifest_path(name, reference),
                str(top.digest),
                len(top.body),
                top.media_type,
                _chunks(top.body),
            ),
        )
        self._translog.publish(_unique(files))
        log.info("published %s (%s, %d files) from upstream", package_id, top.digest, len(files))
        return StoredManifest(top.digest, top.media_type, top.body)

    def _config(self, name: str, parts: list[Descriptor]) -> bytes | None:
        """The image config (first of a manifest's parts), fetched and verified if not held."""
        digest = Digest.parse(parts[0].digest)
        if self._blobs.checked(digest) is None:
            self._upstream.fetch_blob(name, digest, self._blobs.opener(digest, self._upstream.base_url))
        return self._blobs.read(digest)

    def _chunks_of(self, name: str, part: Descriptor) -> tuple[int, bytes]:
        """Chunk size and root of a config or layer: from its bytes when held; from its
        digest when it is one sha256 chunk (the root of one chunk is its leaf hash);
        else its bytes are fetched (verified) first."""
        digest = Digest.parse(part.digest)
        if self._blobs.checked(digest) is None:
            if digest.algorithm == "sha256" and 0 < part.size <= CHUNK_BYTES:
                return CHUNK_BYTES, chunk_root([bytes.fromhex(digest.hex)])
            self._fetch_blob(name, digest)
        with self._blobs.path(digest).open("rb") as file:
            hasher = ChunkHasher().update_all(iter(partial(file.read, CHUNK_BYTES), b""))
        return CHUNK_BYTES, hasher.root()

    def _fetch_blob(self, name: str, digest: Digest) -> None:
        if self._blobs.checked(digest) is not None:
            return  # another flight stored it between our check and our turn
        self._upstream.fetch_blob(name, digest, self._blobs.opener(digest, self._upstream.base_url))
        log.info("pulled blob %s of %s from upstream", digest, name)


@dataclass(frozen=True, slots=True)
class _Recorder:
    """Makes the AddArtifact records of one package with one provenance."""

    package_id: str
    source: str
    provenance: Provenance

    def __call__(
        self, path: str, digest: str, size: int, media_type: str, chunks: tuple[int, bytes]
    ) -> NewArtifact:
        return NewArtifact(
            package_type=DOCKER,
            package_id=self.package_id,
            path=path,
            digest=digest,
            size=size,
            chunk_size=chunks[0],
            chunk_root=chunks[1],
            media_type=media_type,
            source=self.source,
            author=self.provenance.author,
            dependencies=self.provenance.dependencies,
        )


def _chunks(body: bytes) -> tuple[int, bytes]:
    return CHUNK_BYTES, chunk_root(chunk_hashes(body))


def _unique(files: list[NewArtifact]) -> list[NewArtifact]:
    """Platforms may share layers; the log records each (path, digest) once per publish."""
    seen: set[tuple[str, str]] = set()
    out = []
    for f in files:
        if (f.path, f.digest) not in seen:
            seen.add((f.path, f.digest))
            out.append(f)
    return out
