"""Session fixtures for the container image tests: one podman store per session with
the offline Debian base imported, and the pyrsia node image built once into it.

Both image modules (`test_container_image.py`, `test_docker_extension.py`) use the
same node image; the store is emptied and deleted when the session ends.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

import pyrsia
from tests.support.containers import ROOT, Podman, debian_base_tar, frozen_binary

NODE_IMAGE = f"pyrsia/pyrsia:{pyrsia.__version__}"


@pytest.fixture(scope="session")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Podman]:
    missing = [tool for tool in ("podman", "runc", "debootstrap", "skopeo") if shutil.which(tool) is None]
    assert not missing, f"the container tests need {missing}: run `make tools`"
    store = Podman(tmp_path_factory.mktemp("podman"))
    try:
        store.import_base(debian_base_tar())
        yield store
    finally:
        store.cleanup()
        shutil.rmtree(store.root, ignore_errors=True)


@pytest.fixture(scope="session")
def node_image(podman: Podman, tmp_path_factory: pytest.TempPathFactory) -> str:
    """`pyrsia/pyrsia:VERSION` built from packaging/docker/Dockerfile; returns its tag.

    The build context holds only what the Dockerfile copies (dist/pyrsia), so the
    repository's other files never travel into the build."""
    context = tmp_path_factory.mktemp("node-image-context")
    (context / "dist").mkdir()
    shutil.copy2(frozen_binary(), context / "dist" / "pyrsia")
    podman.build(NODE_IMAGE, ROOT / "packaging" / "docker" / "Dockerfile", context)
    return NODE_IMAGE
