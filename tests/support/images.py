"""Small, valid container images built offline, byte for byte reproducible.

Each layer is a real gzip'd tar (fixed mtimes, so digests never change between runs),
each config lists the layers' diff ids, so podman and dockerd can unpack what they
pull. `Image` holds every blob and manifest by digest; `push` uploads it to any v2
registry with monolithic uploads, the way python registry clients do.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import random
import tarfile
from dataclasses import dataclass, field

import httpx

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Image:
    """A repository's worth of content: blobs and manifests by digest, one tag."""

    name: str
    tag: str
    top: str = ""  # digest of the tagged manifest or index
    top_media_type: str = ""
    blobs: dict[str, bytes] = field(default_factory=dict)
    manifests: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # digest -> (type, bytes)
    platforms: dict[str, str] = field(default_factory=dict)  # "linux/arm64" -> manifest digest

    @property
    def reference(self) -> str:
        return f"{self.name}:{self.tag}"

    def config_of(self, manifest_digest: str) -> str:
        return str(json.loads(self.manifests[manifest_digest][1])["config"]["digest"])

    def layers_of(self, manifest_digest: str) -> list[str]:
        doc = json.loads(self.manifests[manifest_digest][1])
        return [layer["digest"] for layer in doc["layers"]]


def layer(files: dict[str, bytes]) -> tuple[bytes, str]:
    """A gzip'd tar of `files`; returns (compressed bytes, diff id of the tar)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path, content in sorted(files.items()):
            info = tarfile.TarInfo(path)
            info.size, info.mtime, info.mode = len(content), 1_700_000_000, 0o644
            tar.addfile(info, io.BytesIO(content))
    tar_bytes = raw.getvalue()
    return gzip.compress(tar_bytes, mtime=0), sha256(tar_bytes)


def _add_manifest(image: Image, media_type: str, doc: dict[str, object]) -> str:
    data = json.dumps(doc, indent=2, sort_keys=True).encode()
    digest = sha256(data)
    image.manifests[digest] = (media_type, data)
    return digest


def _single(
    image: Image,
    layer_files: list[dict[str, bytes]],
    *,
    arch: str = "amd64",
    docker: bool = False,
    labels: dict[str, str] | None = None,
) -> str:
    """Adds one platform's config, layers and manifest; returns the manifest digest."""
    layers = [layer(files) for files in layer_files]
    config = {
        "architecture": arch,
        "os": "linux",
        "created": "2026-01-01T00:00:00Z",
        "config": {"Cmd": ["/bin/true"], "Labels": labels or {}},
        "rootfs": {"type": "layers", "diff_ids": [diff_id for _, diff_id in layers]},
        "history": [{"created": "2026-01-01T00:00:00Z", "created_by": "pyrsia tests"} for _ in layers],
    }
    config_bytes = json.dumps(config, sort_keys=True).encode()
    image.blobs[sha256(config_bytes)] = config_bytes
    for blob, _ in layers:
        image.blobs[sha256(blob)] = blob
    manifest_type = DOCKER_MANIFEST if docker else OCI_MANIFEST
    return _add_manifest(
        image,
        manifest_type,
        {
            "schemaVersion": 2,
            "mediaType": manifest_type,
            "config": {
                "mediaType": DOCKER_CONFIG if docker else OCI_CONFIG,
                "digest": sha256(config_bytes),
                "size": len(config_bytes),
            },
            "layers": [
                {
                    "mediaType": DOCKER_LAYER if docker else OCI_LAYER,
                    "digest": sha256(blob),
                    "size": len(blob),
                }
                for blob, _ in layers
            ],
        },
    )


def three_layer(name: str = "library/threelayer", tag: str = "1.0") -> Image:
    """(a) A Docker schema2 image with three layers."""
    image = Image(name, tag)
    image.top = _single(
        image,
        [
            {"etc/os-release": b"NAME=pyrsia-test\n"},
            {"usr/share/hello/a.txt": b"a" * 40_000},
            {"usr/share/hello/b.bin": bytes(range(256)) * 300},
        ],
        docker=True,
        labels={"org.opencontainers.image.authors": "Pyrsia Tests <tests@pyrsia.example>"},
    )
    image.top_media_type = DOCKER_MANIFEST
    image.platforms["linux/amd64"] = image.top
    return image


def large(name: str = "bench/large", tag: str = "1.0", layer_bytes: int = 20_000_000) -> Image:
    """A Docker schema2 image of three layers of seeded random bytes (incompressible, reproducible)."""
    image = Image(name, tag)
    files = [{f"data/{i}.bin": random.Random(i).randbytes(layer_bytes)} for i in range(3)]
    image.top = _single(image, files, docker=True)
    image.top_media_type = DOCKER_MANIFEST
    image.platforms["linux/amd64"] = image.top
    return image


def multi_arch(name: str = "library/multi", tag: str = "2.0") -> Image:
    """(b) An OCI index over linux/amd64 and linux/arm64, each with its own layer."""
    image = Image(name, tag)
    entries = []
    for arch in ("amd64", "arm64"):
        digest = _single(image, [{"arch.txt": f"built for {arch}\n".encode()}], arch=arch)
        image.platforms[f"linux/{arch}"] = digest
        entries.append(
            {
                "mediaType": OCI_MANIFEST,
                "digest": digest,
                "size": len(image.manifests[digest][1]),
                "platform": {"os": "linux", "architecture": arch},
            }
        )
    image.top = _add_manifest(
        image, OCI_INDEX, {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
    )
    image.top_media_type = OCI_INDEX
    return image


def nested(name: str = "team/tools/hello", tag: str = "v3") -> Image:
    """(c) An OCI image under a multi-level repository name."""
    image = Image(name, tag)
    image.top = _single(image, [{"hello.txt": b"hello from a nested repository\n"}])
    image.top_media_type = OCI_MANIFEST
    image.platforms["linux/amd64"] = image.top
    return image


def one_layer(name: str, tag: str, files: dict[str, bytes]) -> Image:
    """An OCI image of one layer holding `files` (distinct files, distinct digests)."""
    image = Image(name, tag)
    image.top = _single(image, [files])
    image.top_media_type = OCI_MANIFEST
    image.platforms["linux/amd64"] = image.top
    return image


def push(registry_url: str, image: Image, auth: tuple[str, str] | httpx.Auth | None = None) -> None:
    """Uploads every blob, then child manifests by digest, then the tag."""
    with httpx.Client(base_url=registry_url, timeout=60, auth=auth) as client:
        for digest, data in image.blobs.items():
            push_blob(client, image.name, digest, data)
        for digest, (media_type, data) in image.manifests.items():
            if digest != image.top:
                _put_manifest(client, image.name, digest, media_type, data)
        media_type, data = image.manifests[image.top]
        _put_manifest(client, image.name, image.tag, media_type, data)


def push_blob(client: httpx.Client, name: str, digest: str, data: bytes) -> None:
    started = client.post(f"/v2/{name}/blobs/uploads/")
    assert started.status_code == 202, started.text
    location = httpx.URL(started.headers["Location"])
    # The upload URL carries its own state in the query; the digest is added to it.
    done = client.put(
        location.copy_add_param("digest", digest),
        content=data,
        headers={"Content-Type": "application/octet-stream"},
    )
    assert done.status_code == 201, done.text


def _put_manifest(client: httpx.Client, name: str, reference: str, media_type: str, data: bytes) -> None:
    response = client.put(
        f"/v2/{name}/manifests/{reference}", content=data, headers={"Content-Type": media_type}
    )
    assert response.status_code == 201, response.text
