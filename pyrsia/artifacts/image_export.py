"""Pull one image from any Registry v2 endpoint (a node, or an upstream) to local files.

Output is an OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/<hex>`), the
format skopeo, podman and umoci read. A docker-archive is the layout's blobs plus a
`manifest.json` in Docker's save format, packed in a tar, which `docker load` and
`podman load` read. It leaves out `index.json`: given one, podman loads the archive as
OCI and takes the tag annotation for the image name.

Every blob is written through a `BlobStore` without fan-out (the layout's own
shape), so each one is digest-checked and atomically placed; layers download in
parallel, each reporting progress to its own callback (started with the blob's digest).
"""

from __future__ import annotations

import io
import json
import platform
import shutil
import tarfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from pyrsia.artifacts.blobstore import BlobStore
from pyrsia.errors import ManifestInvalid, StorageError
from pyrsia.formats import manifest
from pyrsia.formats.digest import Digest
from pyrsia.upstream.registry import RegistryClient

PARALLEL_DOWNLOADS = 4
_ARCHITECTURES = {"x86_64": "amd64", "aarch64": "arm64"}
REF_NAME = "org.opencontainers.image.ref.name"
# `start(digest, total_bytes)` returns the callback that receives byte counts.
ProgressStart = Callable[[Digest, int], Callable[[int], None]]


@dataclass(frozen=True, slots=True)
class Platform:
    os: str
    architecture: str

    @classmethod
    def parse(cls, text: str) -> Platform:
        os_name, sep, arch = text.partition("/")
        if not sep or not os_name or not arch or "/" in arch:
            raise ManifestInvalid(f"platform must be OS/ARCH, like linux/amd64, not {text!r}")
        return cls(os_name, arch)

    @classmethod
    def host(cls) -> Platform:
        """This machine, in the names image indexes use (linux/amd64, linux/arm64)."""
        machine = platform.machine().lower()
        return cls("linux", _ARCHITECTURES.get(machine, machine))

    def __str__(self) -> str:
        return f"{self.os}/{self.architecture}"


@dataclass(frozen=True, slots=True)
class PulledImage:
    layout: Path
    manifest_digest: Digest
    media_type: str
    config_digest: Digest
    layer_digests: tuple[Digest, ...]
    total_bytes: int
    platform: Platform | None


def pull_to_layout(
    client: RegistryClient,
    name: str,
    reference: str,
    out: Path,
    platform: Platform,
    start: ProgressStart,
) -> PulledImage:
    """Fetch manifest, config and layers of one platform into an OCI layout at `out`."""
    store = BlobStore(out / "blobs", fanout=False, tmp_dir=out / ".tmp")
    top = client.get_manifest(name, reference)
    chosen = top
    picked: Platform | None = None
    if top.media_type in manifest.INDEX_TYPES:
        child = manifest.pick_platform(top.body, platform.os, platform.architecture)
        chosen = client.get_manifest(name, child.digest)
        picked = platform
        store.put(top.digest, top.body, source=client.base_url)
    store.put(chosen.digest, chosen.body, source=client.base_url)
    parts = manifest.image_parts(chosen.body)

    def fetch(part: manifest.Descriptor) -> None:
        digest = Digest.parse(part.digest)
        if store.size(digest) is None:
            client.fetch_blob(
                name,
                digest,
                store.opener(digest, client.base_url),
                start(digest, part.size),
                size_bytes=part.size,
            )

    with ThreadPoolExecutor(PARALLEL_DOWNLOADS) as pool:
        list(pool.map(fetch, parts))
    try:
        shutil.rmtree(out / ".tmp", ignore_errors=True)
        (out / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
        entry: dict[str, object] = {
            "mediaType": chosen.media_type,
            "digest": str(chosen.digest),
            "size": len(chosen.body),
        }
        if ":" not in reference:  # a tag, not a digest
            entry["annotations"] = {REF_NAME: reference}
        index = {"schemaVersion": 2, "mediaType": manifest.OCI_INDEX, "manifests": [entry]}
        (out / "index.json").write_text(json.dumps(index))
    except OSError as exc:
        raise StorageError(f"cannot write image layout in {out}: {exc.strerror}") from exc
    digests = [Digest.parse(p.digest) for p in parts]
    return PulledImage(
        layout=out,
        manifest_digest=chosen.digest,
        media_type=chosen.media_type,
        config_digest=digests[0],
        layer_digests=tuple(digests[1:]),
        total_bytes=sum(p.size for p in parts),
        platform=picked,
    )


def write_docker_archive(image: PulledImage, repo_tag: str, target: Path) -> None:
    """Pack a pulled layout as a tar that `docker load` and `podman load` accept."""

    def blob(digest: Digest) -> str:
        return f"blobs/{digest.algorithm}/{digest.hex}"

    save_manifest = [
        {
            "Config": blob(image.config_digest),
            "RepoTags": [repo_tag],
            "Layers": [blob(d) for d in image.layer_digests],
        }
    ]
    try:
        with tarfile.open(target, "w") as archive:
            for path in sorted((image.layout / "blobs").rglob("*")):
                if path.is_file():
                    archive.add(path, arcname=str(path.relative_to(image.layout)))
            listing = json.dumps(save_manifest).encode()
            info = tarfile.TarInfo("manifest.json")
            info.size = len(listing)
            archive.addfile(info, io.BytesIO(listing))
    except OSError as exc:
        raise StorageError(f"cannot write {target}: {exc.strerror}") from exc
