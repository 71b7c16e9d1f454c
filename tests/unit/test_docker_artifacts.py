"""Docker pull-through publishes the whole manifest tree before serving, and serves
nothing the log does not vouch for."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from pyrsia.artifacts.blobstore import BlobStore
from pyrsia.artifacts.docker import DockerArtifacts
from pyrsia.artifacts.records import RecordStore
from pyrsia.artifacts.vouch import MemoryArtifactLog
from pyrsia.errors import BlobUnknown, DigestMismatch, UpstreamSizeInvalid
from pyrsia.formats.digest import Digest
from pyrsia.formats.manifest import ALL_TYPES
from pyrsia.translog.chunks import chunk_hashes, chunk_root
from pyrsia.upstream.registry import RegistryClient
from tests.support import images


class Upstream:
    """A v2 registry answering from `Image`s, counting blob downloads."""

    def __init__(self, *served: images.Image) -> None:
        self.images = {image.name: image for image in served}
        self.blob_gets: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        parts = request.url.path.split("/")
        kind, reference = parts[-2], parts[-1]
        image = self.images.get("/".join(parts[2:-2]))
        if image is None:
            return httpx.Response(404)
        if kind == "manifests":
            digest = image.top if reference == image.tag else reference
            if digest not in image.manifests:
                return httpx.Response(404)
            media_type, body = image.manifests[digest]
            headers = {"Content-Type": media_type, "Docker-Content-Digest": digest}
            return httpx.Response(200, content=body, headers=headers)
        if kind == "blobs" and reference in image.blobs:
            self.blob_gets.append(reference)
            return httpx.Response(200, content=image.blobs[reference])
        return httpx.Response(404)


def make(tmp_path: Path, *served: images.Image) -> tuple[DockerArtifacts, MemoryArtifactLog, Upstream]:
    upstream = Upstream(*served)
    client = RegistryClient("https://up.test", transport=httpx.MockTransport(upstream), retries_max=0)
    translog = MemoryArtifactLog()
    records = RecordStore(tmp_path / "refs")
    return DockerArtifacts(BlobStore(tmp_path / "blobs"), translog, client, records), translog, upstream


def test_first_pull_of_an_index_commits_manifests_and_configs_in_one_block(tmp_path: Path) -> None:
    multi = images.multi_arch()
    artifacts, translog, upstream = make(tmp_path, multi)
    found = artifacts.manifest(multi.name, multi.tag, ALL_TYPES)
    assert str(found.digest) == multi.top and translog.blocks == 1
    digests = [v.digest for _, v in translog.records]
    assert digests[0] == multi.top
    configs = {multi.config_of(d) for d in multi.platforms.values()}
    expected = {multi.top, *multi.platforms.values(), *configs}
    assert set(digests) == expected and len(digests) == len(expected)
    # Every record carries the size and chunk root of the bytes the node holds.
    for _, vouched in translog.records:
        body = (
            multi.manifests[vouched.digest][1]
            if vouched.digest in multi.manifests
            else multi.blobs[vouched.digest]
        )
        assert vouched.size == len(body) and vouched.chunk_root == chunk_root(chunk_hashes(body))
    assert all(v.package_id == "library/multi:2.0" for _, v in translog.records)
    assert translog.records[0][1].path == "/v2/library/multi/manifests/2.0"
    # Configs were fetched to read provenance; layers wait for their first request.
    assert sorted(upstream.blob_gets) == sorted(multi.config_of(d) for d in multi.platforms.values())
    artifacts.manifest(multi.name, multi.tag, ALL_TYPES)
    assert translog.blocks == 1


def test_author_comes_from_the_image_label(tmp_path: Path) -> None:
    three = images.three_layer()
    artifacts, translog, _ = make(tmp_path, three)
    artifacts.manifest(three.name, three.tag, ALL_TYPES)
    assert {v.author for _, v in translog.records} == {"Pyrsia Tests <tests@pyrsia.example>"}


def test_blobs_the_log_does_not_vouch_for_are_unknown(tmp_path: Path) -> None:
    three = images.three_layer()
    artifacts, _, upstream = make(tmp_path, three)
    layer = Digest.parse(three.layers_of(three.top)[0])
    with pytest.raises(BlobUnknown):
        artifacts.blob(three.name, layer)  # the upstream has it, but nothing vouches for it yet
    assert upstream.blob_gets == []


def test_a_layer_is_committed_when_its_bytes_are_first_fetched(tmp_path: Path) -> None:
    three = images.three_layer()
    artifacts, translog, upstream = make(tmp_path, three)
    artifacts.manifest(three.name, three.tag, ALL_TYPES)
    layers = three.layers_of(three.top)
    assert not any(translog.vouches("docker", layer) for layer in layers)
    blob = artifacts.blob(three.name, Digest.parse(layers[0]))
    record = translog.record("docker", layers[0])
    assert record is not None and translog.blocks == 2
    data = three.blobs[layers[0]]
    assert record.size == blob.size == len(data)
    assert record.chunk_root == blob.chunk_root == chunk_root(chunk_hashes(data))
    assert (
        record.package_id == f"{three.name}:{three.tag}"
        and record.path == f"/v2/{three.name}/blobs/{layers[0]}"
    )
    assert record.author == "Pyrsia Tests <tests@pyrsia.example>"
    artifacts.blob(three.name, Digest.parse(layers[0]))
    assert translog.blocks == 2 and upstream.blob_gets.count(layers[0]) == 1


def test_a_layer_whose_size_disagrees_with_its_manifest_is_refused(tmp_path: Path) -> None:
    three = images.three_layer()
    artifacts, translog, _ = make(tmp_path, three)
    artifacts.manifest(three.name, three.tag, ALL_TYPES)
    layer = three.layers_of(three.top)[2]
    three.blobs[layer] += b"more than the manifest declared"
    with pytest.raises((DigestMismatch, UpstreamSizeInvalid)):  # the client cuts it off, or the writer
        artifacts.blob(three.name, Digest.parse(layer))
    assert not translog.vouches("docker", layer) and translog.blocks == 1
    assert artifacts._blobs.size(Digest.parse(layer)) is None


def test_vouched_layer_is_fetched_once_and_refetched_when_tampered(tmp_path: Path) -> None:
    three = images.three_layer()
    artifacts, _, upstream = make(tmp_path, three)
    artifacts.manifest(three.name, three.tag, ALL_TYPES)
    layer = Digest.parse(three.layers_of(three.top)[1])
    blob = artifacts.blob(three.name, layer)
    assert blob.path.read_bytes() == three.blobs[str(layer)]
    artifacts.blob(three.name, layer)
    assert upstream.blob_gets.count(str(layer)) == 1
    blob.path.write_bytes(b"tampered")
    again = artifacts.blob(three.name, layer)
    assert again.path.read_bytes() == three.blobs[str(layer)]
    assert upstream.blob_gets.count(str(layer)) == 2


def test_tags_come_from_the_log_when_the_upstream_is_gone(tmp_path: Path) -> None:
    nested = images.nested()
    artifacts, _, upstream = make(tmp_path, nested)
    artifacts.manifest(nested.name, nested.tag, ALL_TYPES)
    upstream.images.clear()
    assert artifacts.tags(nested.name) == [nested.tag]


def test_concurrent_first_pulls_publish_once(tmp_path: Path) -> None:
    import threading

    three = images.three_layer()
    artifacts, translog, _ = make(tmp_path, three)
    barrier = threading.Barrier(8)

    def pull() -> None:
        barrier.wait()
        artifacts.manifest(three.name, three.tag, ALL_TYPES)

    threads = [threading.Thread(target=pull) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert translog.blocks == 1
