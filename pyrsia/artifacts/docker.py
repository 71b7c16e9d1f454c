"""Docker artifacts: what the transparency log vouches for, fetched and verified.

Lookup order (DESIGN §2): the log says which digest a tag is and whether a digest may
be served at all; the bytes come from the local blob store, else from the next source
that has them (`Sources`: the upstream today, peers in front of it next), and are
verified against the log's digest, size and chunk root before anyone sees them.

Publishing on first pull (the embedded default is its own only authority): the tagged
manifest, every platform manifest of an index and every image config are fetched and
verified, then one `AddArtifact` per file is committed in one block, with the size and
chunk root of the bytes held, and only then is the manifest served. A layer's record
is committed when its bytes are first fetched and verified, never before: until then
the layer is *expected* — named, with its declared size, by a committed manifest —
and a request for it fetches it, refuses bytes whose size or digest disagree with the
manifest, commits its record and serves it. Expected layers are noted under
`<home>/refs/docker/expected/` (a local cache: a served manifest notes its layers
again). A tag keeps the digest the log committed for it: moving a tag upstream does
not move it here.

Concurrent requests for the same missing item share one fetch (`SingleFlight`).

Registries (`formats.registry_host`): a repository is named by its key — Docker Hub's
names as they are, any other registry's prefixed with its host (`ghcr.io/org/app`) —
and fetched from that registry's upstream client, never another's. Each record names
its registry (`registry`). An authority publishes, and vouches for another's record,
only from a registry its network's genesis lists (`RegistryRefused` otherwise, one
line); it checks a record against the registry the record names, whose name must
agree with the record's path. A request for a registry that neither has an upstream
here nor is in the genesis list is `RegistryUnknown`.

Manifests served are kept in memory, bounded (`ManifestCache`): once the log vouches
for a digest, its bytes come from there, without reading, hashing and parsing the file
again; their expected layers were noted when they were first read.

A blob the log vouches for (size and chunk root recorded) but the node lacks can be
served while peers deliver it (`blob_or_download`): the fetch runs in the background
and, once its first chunk verified, the caller gets the download's `BlobProgress`,
which yields only the verified, contiguous prefix. When peers cannot deliver, the
caller waits for the fetch (upstream) as before.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any

from pyrsia.artifacts.blobstore import BlobProgress, BlobStore, StoredBlob
from pyrsia.artifacts.manifest_cache import ManifestCache
from pyrsia.artifacts.provenance import Provenance, of_image
from pyrsia.artifacts.records import RecordStore
from pyrsia.artifacts.singleflight import SingleFlight
from pyrsia.artifacts.sources import BlobSource, Sources, Wanted
from pyrsia.artifacts.vouch import DOCKER, ArtifactLog, Authority, NewArtifact, Vouched
from pyrsia.config import default_of
from pyrsia.errors import (
    BlobUnknown,
    ManifestInvalid,
    ManifestUnknown,
    NameUnknown,
    PyrsiaError,
    RegistryRefused,
    RegistryUnknown,
    UpstreamError,
    UpstreamManifestInvalid,
)
from pyrsia.formats import manifest
from pyrsia.formats.digest import Digest
from pyrsia.formats.manifest import Descriptor
from pyrsia.formats.registry_host import DOCKER_IO, Qualified, qualify, split_key
from pyrsia.translog.chunks import chunk_hashes, chunk_root
from pyrsia.translog.tx import AddArtifact
from pyrsia.upstream.registry import FetchedManifest, RegistryClient, RegistryClients
from pyrsia.upstream.sink import OpenSink

log = logging.getLogger("pyrsia.artifacts")
FETCHES_PARALLEL_MAX = 8
# A layer shared by many images keeps the newest few manifests that name it.
EXPECTED_BY_MAX = 8
# Waiting for a download to become streamable re-checks at least this often (a wake-up
# may be missed between the flight starting and the first chunk).
STREAM_POLL_S = 1.0


@dataclass(frozen=True, slots=True)
class StoredManifest:
    digest: Digest
    media_type: str
    body: bytes


def manifest_path(name: str, reference: str) -> str:
    return f"/v2/{name}/manifests/{reference}"


def _repository_of(package_id: str) -> str:
    name = package_id.partition("@")[0]
    head, colon, _tag = name.rpartition(":")
    return head if colon and "/" not in _tag else name


def blob_path(name: str, digest: str) -> str:
    return f"/v2/{name}/blobs/{digest}"


def _clients(upstream: RegistryClient | RegistryClients) -> RegistryClients:
    """A lone client is Docker Hub's (what a node had before registries were named)."""
    return upstream if isinstance(upstream, RegistryClients) else RegistryClients({DOCKER_IO: upstream})


class RegistrySource:
    """The upstream registries as a blob source: a blob by repository key and digest, from
    the registry the key names."""

    def __init__(self, upstream: RegistryClient | RegistryClients) -> None:
        self._clients = _clients(upstream)
        self.label = "upstream"

    def origin(self, wanted: Wanted) -> str:
        try:
            return f"upstream {self._clients.get(split_key(wanted.name).registry).base_url}"
        except PyrsiaError:  # no such registry: `fetch` says so
            return self.label

    def fetch(self, wanted: Wanted, open_sink: OpenSink) -> None:
        repo = split_key(wanted.name)
        client = self._clients.get(repo.registry)
        # The declared size bounds the download (and its deadline) in the client too.
        client.fetch_blob(repo.name, wanted.digest, open_sink, size_bytes=wanted.size)


class DockerArtifacts:
    def __init__(
        self,
        blobs: BlobStore,
        translog: ArtifactLog,
        upstream: RegistryClient | RegistryClients,
        expected: RecordStore,
        sources: Sequence[BlobSource] | None = None,
        authority: Authority | None = None,
        observe: Callable[[str, int], None] | None = None,
        agreed: Callable[[], Sequence[str]] | None = None,
        manifest_cache_bytes_max: int = default_of("manifest_cache_bytes_max"),
    ) -> None:
        """`authority` is set on a node that is not one: what its log lacks, it asks for.
        `agreed` gives the registries the network vouches for (at the log's tip; unset,
        every registry with an upstream here)."""
        self._blobs = blobs
        self._translog = translog
        self._upstreams = _clients(upstream)
        self._agreed = agreed
        self._expected = expected
        chosen = [RegistrySource(self._upstreams)] if sources is None else sources
        self._sources = Sources(blobs, chosen, observe)
        # Manifests come from the registry's manifest endpoint, so only the other sources
        # (peers) can stand in for it.
        self._manifest_sources = Sources(
            blobs, [s for s in chosen if not isinstance(s, RegistrySource)], observe
        )
        self._flights = SingleFlight()
        self._authority = authority
        self._upstream_only = Sources(blobs, [RegistrySource(self._upstreams)])
        self._manifests = ManifestCache(manifest_cache_bytes_max)
        self._manifests_lock = threading.Lock()

    # -- registries -----------------------------------------------------------------

    def agreed_registries(self) -> frozenset[str]:
        return frozenset(self._agreed() if self._agreed is not None else self._upstreams.hosts)

    def resolve(self, path_name: str, ns: str | None) -> str:
        """The key of the repository a request names (see `formats.registry_host`), when
        its registry is one this node has an upstream for or its network agreed to."""
        repo = qualify(path_name, ns)
        if repo.registry not in self._upstreams.hosts | self.agreed_registries():
            self._upstreams.get(repo.registry)  # raises RegistryUnknown, naming what is known
        return repo.key

    def _check_agreed(self, registry: str) -> None:
        if registry not in self.agreed_registries():
            raise RegistryRefused(
                f"registry {registry[:100]} is not one this network vouches for (it agrees to"
                f" {', '.join(sorted(self.agreed_registries()))}; see `pyrsia registries`)"
            )

    def _client(self, name: str) -> tuple[RegistryClient, Qualified]:
        repo = split_key(name)
        return self._upstreams.get(repo.registry), repo

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
        vouched = self._translog.record(DOCKER, str(digest))
        if vouched is not None:
            return self._flights.run(f"blob {digest}", lambda: self._sources.obtain(_wanted(name, vouched)))
        expected = self._expected_layer(digest)
        if expected is None:
            raise BlobUnknown(f"the transparency log does not vouch for blob {digest}")
        return self._flights.run(f"blob {digest}", lambda: self._first_fetch(name, digest, expected))

    def blob_or_download(self, name: str, digest: Digest) -> StoredBlob | BlobProgress:
        """The blob when held (or fetched whole), or the peer download serving it meanwhile.

        Only a vouched blob with a logged size and chunk root streams (its chunks verify
        one by one); a download is handed out once its first bytes are readable.
        """
        vouched = self._translog.record(DOCKER, str(digest))
        if vouched is None or vouched.size is None or vouched.chunk_root is None:
            return self.blob(name, digest)
        held = self._blobs.stored(digest)
        if held is not None:
            return self.blob(name, digest)  # counts the local serve the same way
        done: Future[StoredBlob] = Future()

        def fetch() -> None:
            try:
                done.set_result(self.blob(name, digest))
            except BaseException as exc:  # handed to the caller below
                done.set_exception(exc)
            finally:
                self._blobs.notify_downloads()

        threading.Thread(target=fetch, name=f"blob-{digest.hex[:12]}", daemon=True).start()
        changed = self._blobs.downloads_changed
        with changed:
            while not done.done():
                progress = self._blobs.download_progress(digest)
                if progress is not None and progress.readable_bytes() > 0:
                    return progress
                changed.wait(STREAM_POLL_S)
        return done.result()

    def tags(self, name: str) -> list[str]:
        """Tags the log holds and the upstream lists; the log's alone when the upstream is down."""
        prefix = f"{name}:"
        local = [i.removeprefix(prefix) for i in self._translog.package_ids(DOCKER, prefix)]
        try:
            client, repo = self._client(name)
            remote = client.list_tags(repo.name)
        except RegistryUnknown:
            if not local:
                raise
            remote = []
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

    def repositories(self) -> list[str]:
        """Every repository the log holds a committed manifest of, sorted (`/v2/_catalog`)."""
        # Each record's package id is `name:tag` or `name@digest`; a name holds no '@', and
        # its only ':' is a registry's port, before its first '/'.
        ids = self._translog.package_ids(DOCKER, "")
        return sorted({_repository_of(i) for i in ids})

    # -- endorsing ------------------------------------------------------------------

    def verify_record(self, record: AddArtifact) -> str | None:
        """Why this node would not vouch for another authority's `record`, or None.

        The file is fetched from this node's own upstream, never from peers, and must
        have the record's digest, size and chunk root; the bytes are kept (this node will
        serve them). Failures of the upstream raise, and are a refusal too.
        """
        registry = record.registry_or_default
        head, sep, ref = record.path.rpartition("/manifests/")
        if not (sep and head.startswith("/v2/")):
            head, sep, ref = record.path.rpartition("/blobs/")
            if not (sep and head.startswith("/v2/")) or ref != record.digest:
                return f"{record.path} is not a Docker path for {record.digest}"
        name = head.removeprefix("/v2/")
        if split_key(name).registry != registry:
            return f"{record.path} is not in registry {registry[:100]}, which the record names"
        try:
            self._check_agreed(registry)
        except RegistryRefused as exc:
            return exc.message
        client, repo = self._client(name)
        if "/manifests/" in record.path:
            fetched = client.get_manifest(repo.name, ref)  # checks a digest reference
            found = (str(fetched.digest), len(fetched.body), chunk_root(chunk_hashes(fetched.body)))
            problem = _disagreement(record, found, f"{repo}:{ref}", client.base_url)
            if problem is None:
                self._blobs.put(fetched.digest, fetched.body, source=client.base_url)
            return problem
        digest = Digest.parse(ref)
        stored = self._blobs.stored(digest) or self._upstream_only.obtain(
            Wanted(digest=digest, name=name, size=record.size)
        )
        return _disagreement(
            record, (str(stored.digest), stored.size, stored.chunk_root), ref, client.base_url
        )

    # -- manifests ------------------------------------------------------------------

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
        """The bytes of a manifest the log vouches for (the caller has asked it)."""
        with self._manifests_lock:
            cached = self._manifests.get(digest)
        if cached is not None:
            return StoredManifest(digest, cached.media_type, cached.body)
        body = self._blobs.read_checked(digest)
        if body is None:  # vouched for, but not (or no longer) held: fetch it again
            body = self._flights.run(f"manifest {digest}", lambda: self._fetch_manifest(name, digest))
        found = StoredManifest(digest, manifest.media_type_of(body), body)
        if found.media_type not in manifest.INDEX_TYPES:
            record = self._translog.committed(DOCKER, manifest_path(name, str(digest)))
            self._note_layers(
                name, found, record.package_id if record else f"{name}@{digest}", only_missing=True
            )
        with self._manifests_lock:
            self._manifests.put(digest, found.media_type, body)
        return found

    def _fetch_manifest(self, name: str, digest: Digest) -> bytes:
        """A vouched manifest's bytes: from peers when the record says what they must be, else
        from the upstream (which checks the digest)."""
        record = self._translog.record(DOCKER, str(digest))
        if record is not None:
            try:
                stored = self._manifest_sources.obtain(_wanted(name, record))
                body = self._blobs.read_checked(stored.digest)
                if body is not None:
                    return body
            except PyrsiaError as exc:
                log.info("manifest %s not from peers: %s", digest, exc.message)
        client, repo = self._client(name)
        fetched = client.get_manifest(repo.name, str(digest))  # checks the digest
        self._blobs.put(fetched.digest, fetched.body, source=client.base_url)
        return fetched.body

    def _publish(self, name: str, reference: str) -> StoredManifest:
        """`_publish_tree`, leaving nothing behind when it fails: configs it fetched are
        removed unless the log vouches for them, and a manifest tree that does not parse
        is the upstream's fault (502), not the client's. A node that is not an authority
        asks one instead, and serves what then reaches its log."""
        # The list in force at this node's tip: a regular node refuses before asking.
        self._check_agreed(split_key(name).registry)
        if self._authority is not None:
            return self._requested_manifest(name, reference)
        fresh: list[Digest] = []
        try:
            return self._publish_tree(name, reference, fresh)
        except BaseException as exc:
            for digest in fresh:
                if not self._translog.vouches(DOCKER, str(digest)):
                    self._blobs.remove(digest)
            if isinstance(exc, ManifestInvalid):
                raise UpstreamManifestInvalid(
                    f"upstream manifests of {name}:{reference}: {exc.message}"
                ) from exc
            raise

    def _publish_tree(self, name: str, reference: str, fresh: list[Digest]) -> StoredManifest:
        """Fetch the manifest tree and configs, verify, commit them to the log, then serve."""
        # A flight that finished between our lookup and this one may have published it.
        if ":" in reference and self._translog.vouches(DOCKER, reference):
            return self._vouched_manifest(name, Digest.parse(reference))
        done = None if ":" in reference else self._translog.committed(DOCKER, manifest_path(name, reference))
        if done is not None:
            return self._vouched_manifest(name, Digest.parse(done.digest))
        client, repo = self._client(name)
        source = client.base_url
        top = client.get_manifest(repo.name, reference)
        package_id = f"{name}:{reference}" if ":" not in reference else f"{name}@{reference}"
        children = manifest.children(top.body) if top.media_type in manifest.INDEX_TYPES else []
        with ThreadPoolExecutor(FETCHES_PARALLEL_MAX) as pool:
            # An index names one manifest (and config) per platform: fetch them side by side.
            fetched = pool.map(partial(self._child_manifest, name), children)
            platforms = list(fetched) if children else [top]
            parts_of = [manifest.image_parts(p.body) for p in platforms]
            configs = list(pool.map(partial(self._config, name, fresh), parts_of))
        files: list[NewArtifact] = []
        provenances = [
            of_image(name, platform.body, self._blobs.read(config.digest))
            for platform, config in zip(platforms, configs, strict=True)
        ]
        for platform, parts, config, found in zip(platforms, parts_of, configs, provenances, strict=True):
            record = _Recorder(package_id, source, found, repo.registry)
            if platform is not top:
                files.append(record.of_body(manifest_path(name, str(platform.digest)), platform))
            files.append(record(blob_path(name, parts[0].digest), parts[0].media_type, config))
        files.insert(
            0,
            _Recorder(package_id, source, provenances[0], repo.registry).of_body(
                manifest_path(name, reference), top
            ),
        )
        try:
            for fetched_manifest in (top, *platforms):
                self._blobs.put(fetched_manifest.digest, fetched_manifest.body, source=source)
            for platform, found in zip(platforms, provenances, strict=True):
                stored = StoredManifest(platform.digest, platform.media_type, platform.body)
                self._note_layers(name, stored, package_id, provenance=found)
            self._translog.publish(_unique(files))
        except BaseException:
            # Nothing the log does not vouch for stays on disk (a shared blob may be vouched already).
            for file in files:
                if not self._translog.vouches(DOCKER, file.digest):
                    self._blobs.remove(Digest.parse(file.digest))
            raise
        log.info("published %s (%s, %d files) from upstream", package_id, top.digest, len(files))
        return StoredManifest(top.digest, top.media_type, top.body)

    def _child_manifest(self, name: str, child: Descriptor) -> FetchedManifest:
        client, repo = self._client(name)
        fetched = client.get_manifest(repo.name, child.digest)
        if len(fetched.body) != child.size:
            raise ManifestInvalid(
                f"{client.base_url}: manifest {child.digest} of {name} is {len(fetched.body)} bytes,"
                f" its index says {child.size}"
            )
        return fetched

    def _config(self, name: str, fresh: list[Digest], parts: list[Descriptor]) -> StoredBlob:
        """The image config (first of a manifest's parts), fetched and verified if not held."""
        config = parts[0]
        wanted = Wanted(digest=Digest.parse(config.digest), name=name, size=config.size)
        if self._blobs.stored(wanted.digest) is None:
            fresh.append(wanted.digest)  # fetched by this publish: removed if the publish fails
        return self._sources.obtain(wanted)

    # -- layers ---------------------------------------------------------------------

    def _note_layers(
        self,
        name: str,
        platform: StoredManifest,
        package_id: str,
        *,
        provenance: Provenance | None = None,
        only_missing: bool = False,
    ) -> None:
        """Record the layers a manifest names as expected, with what their record will say."""
        for layer in manifest.image_parts(platform.body)[1:]:
            key = _expected_key(Digest.parse(layer.digest))
            held = self._expected.get(key)
            if only_missing and held is not None:
                continue
            if provenance is None:
                provenance = Provenance(author=name)
            entry = {
                "manifest": str(platform.digest),
                "name": name,
                "package_id": package_id,
                "size": layer.size,
                "media_type": layer.media_type,
                "author": provenance.author,
                "dependencies": list(provenance.dependencies),
            }
            others = [e for e in (held or {}).get("by", []) if e.get("manifest") != entry["manifest"]]
            self._expected.put(key, {"by": [entry, *others][:EXPECTED_BY_MAX]})

    def _expected_layer(self, digest: Digest) -> dict[str, Any] | None:
        """What a committed manifest says of this layer, if any committed manifest names it."""
        held = self._expected.get(_expected_key(digest))
        for entry in (held or {}).get("by", []):
            if isinstance(entry, dict) and self._translog.vouches(DOCKER, str(entry.get("manifest"))):
                return entry
        return None

    def _requested_manifest(self, name: str, reference: str) -> StoredManifest:
        assert self._authority is not None
        self._authority.request_publish("docker_manifest", name, reference)
        if ":" in reference:
            if self._translog.vouches(DOCKER, reference):
                return self._vouched_manifest(name, Digest.parse(reference))
        elif (done := self._translog.committed(DOCKER, manifest_path(name, reference))) is not None:
            return self._vouched_manifest(name, Digest.parse(done.digest))
        raise ManifestUnknown(f"an authority published {name}:{reference}, but this node's log lacks it")

    def _first_fetch(self, name: str, digest: Digest, expected: dict[str, Any]) -> StoredBlob:
        """A layer's bytes, fetched for the first time: verify against its manifest, then commit."""
        vouched = self._translog.record(DOCKER, str(digest))
        if vouched is None and self._authority is not None:
            self._authority.request_publish("docker_blob", name, str(digest))
            vouched = self._translog.record(DOCKER, str(digest))
            if vouched is None:
                raise BlobUnknown(f"an authority published blob {digest}, but this node's log lacks it")
        if vouched is not None:  # committed by another flight (or the authority asked)
            return self._sources.obtain(_wanted(name, vouched))
        size = expected.get("size")
        wanted = Wanted(digest=digest, name=name, size=size if isinstance(size, int) else None)
        stored = self._sources.obtain(wanted)
        record_name = str(expected.get("name", name))
        provenance = Provenance(
            author=str(expected.get("author", "")),
            dependencies=tuple(str(d) for d in expected.get("dependencies", [])),
        )
        client, repo = self._client(record_name)
        record = _Recorder(str(expected.get("package_id", name)), client.base_url, provenance, repo.registry)
        self._translog.publish(
            [record(blob_path(record_name, str(digest)), str(expected.get("media_type", "")), stored)]
        )
        log.info("pulled blob %s of %s from upstream and committed its record", digest, name)
        return stored


def _disagreement(record: AddArtifact, found: tuple[str, int, bytes], what: str, upstream: str) -> str | None:
    digest, size, root = found
    if digest != record.digest:
        return f"{upstream} serves {digest} for {what}, not {record.digest}"
    if size != record.size:
        return f"{what} is {size} bytes at {upstream}, the record says {record.size}"
    if root != record.chunk_root:
        return f"the chunk root of {what} from {upstream} differs from the record's"
    return None


def _wanted(name: str, vouched: Vouched) -> Wanted:
    return Wanted(
        digest=Digest.parse(vouched.digest), name=name, size=vouched.size, chunk_root=vouched.chunk_root
    )


def _expected_key(digest: Digest) -> str:
    return f"expected/{digest.algorithm}/{digest.hex}"


@dataclass(frozen=True, slots=True)
class _Recorder:
    """Makes the AddArtifact records of one package with one provenance."""

    package_id: str
    source: str
    provenance: Provenance
    registry: str

    def __call__(self, path: str, media_type: str, stored: StoredBlob) -> NewArtifact:
        return NewArtifact(
            package_type=DOCKER,
            package_id=self.package_id,
            path=path,
            digest=str(stored.digest),
            size=stored.size,
            chunk_root=stored.chunk_root,
            media_type=media_type,
            source=self.source,
            author=self.provenance.author,
            dependencies=self.provenance.dependencies,
            registry=self.registry,
        )

    def of_body(self, path: str, fetched: FetchedManifest) -> NewArtifact:
        """A manifest's record, from the bytes fetched (and already checked against its digest)."""
        return NewArtifact(
            package_type=DOCKER,
            package_id=self.package_id,
            path=path,
            digest=str(fetched.digest),
            size=len(fetched.body),
            chunk_root=chunk_root(chunk_hashes(fetched.body)),
            media_type=fetched.media_type,
            source=self.source,
            author=self.provenance.author,
            dependencies=self.provenance.dependencies,
            registry=self.registry,
        )


def _unique(files: list[NewArtifact]) -> list[NewArtifact]:
    """Platforms may share layers; the log records each (path, digest) once per publish."""
    seen: set[tuple[str, str]] = set()
    out = []
    for f in files:
        if (f.path, f.digest) not in seen:
            seen.add((f.path, f.digest))
            out.append(f)
    return out
