"""Docker artifacts: where a manifest or blob comes from, verified.

Lookup order today: local tag record → local blob store → upstream pull-through (fetch,
verify digest, store, record the tag). DESIGN §2's full order is log → local → p2p →
verify: the transparency log will replace the tag records and vouch for each digest,
and the peer-to-peer exchange will sit before the upstream. Callers see only this
class, so those layers slot in here.

Concurrent requests for the same missing item share one upstream fetch (`SingleFlight`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pyrsia.artifacts.blobstore import BlobStore
from pyrsia.artifacts.digest import Digest
from pyrsia.artifacts.singleflight import SingleFlight
from pyrsia.artifacts.tags import TagStore
from pyrsia.errors import NameUnknown, UpstreamError
from pyrsia.registry import manifest
from pyrsia.upstream.registry import RegistryClient

log = logging.getLogger("pyrsia.artifacts")


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


class DockerArtifacts:
    def __init__(self, blobs: BlobStore, tags: TagStore, upstream: RegistryClient) -> None:
        self._blobs = blobs
        self._tags = tags
        self._upstream = upstream
        self._flights = SingleFlight()

    def manifest(self, name: str, reference: str | Digest, accept: Sequence[str]) -> StoredManifest:
        """The manifest for a tag or digest, negotiated against the client's Accept list."""
        if isinstance(reference, Digest):
            return self._manifest_by_digest(name, reference)
        found = self._manifest_by_tag(name, reference)
        if manifest.wants_platform_manifest(accept, found.media_type):
            child = manifest.pick_platform(found.body)
            return self._manifest_by_digest(name, Digest.parse(child.digest))
        return found

    def blob(self, name: str, digest: Digest) -> StoredBlob:
        size = self._blobs.checked(digest)
        if size is None:
            self._flights.run(f"blob {digest}", lambda: self._fetch_blob(name, digest))
            size = self._blobs.checked(digest)
            assert size is not None, "a committed blob is on disk"
        return StoredBlob(digest, self._blobs.path(digest), size)

    def tags(self, name: str) -> list[str]:
        """Tags known upstream and locally; the local ones alone when the upstream is down."""
        local = self._tags.tags(name)
        try:
            remote = self._upstream.list_tags(name)
        except NameUnknown:
            if not local:
                raise
            remote = []
        except UpstreamError as exc:
            log.warning("tag list of %s from local records only: %s", name, exc.message)
            if not local:
                raise
            remote = []
        return sorted(set(local) | set(remote))

    # -- internals ------------------------------------------------------------------

    def _manifest_by_tag(self, name: str, tag: str) -> StoredManifest:
        digest = self._tags.get(name, tag)
        if digest is not None and (body := self._blobs.read_checked(digest)) is not None:
            return StoredManifest(digest, manifest.media_type_of(body), body)
        return self._flights.run(f"tag {name}:{tag}", lambda: self._fetch_manifest(name, tag))

    def _manifest_by_digest(self, name: str, digest: Digest) -> StoredManifest:
        body = self._blobs.read_checked(digest)
        if body is not None:
            return StoredManifest(digest, manifest.media_type_of(body), body)
        return self._flights.run(f"manifest {digest}", lambda: self._fetch_manifest(name, str(digest)))

    def _fetch_manifest(self, name: str, reference: str) -> StoredManifest:
        fetched = self._upstream.get_manifest(name, reference)
        self._blobs.put(fetched.digest, fetched.body, source=self._upstream.base_url)
        if ":" not in reference:
            self._tags.set(name, reference, fetched.digest)
        log.info("pulled manifest %s:%s (%s) from upstream", name, reference, fetched.digest)
        return StoredManifest(fetched.digest, fetched.media_type, fetched.body)

    def _fetch_blob(self, name: str, digest: Digest) -> None:
        if self._blobs.size(digest) is not None:
            return  # another flight stored it between our check and our turn
        self._upstream.fetch_blob(name, digest, self._blobs)
        log.info("pulled blob %s of %s from upstream", digest, name)
