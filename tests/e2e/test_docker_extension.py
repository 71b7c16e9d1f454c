"""The Docker Desktop extension image (`packaging/docker-desktop/`), built by the tests
`FROM` the node image, checked the way `docker extension validate` checks an image
(there is no Docker Desktop here): every label the Marketplace requires, present and
well formed; `metadata.json` at the image root, valid in shape, and every path it
names (icon, compose file, UI root and page) present inside the image; the compose
file running this same image as the node, its data on the node image's volume.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest

import pyrsia
from tests.support.containers import ROOT, Podman

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

EXTENSION = ROOT / "packaging" / "docker-desktop"
EXTENSION_IMAGE = f"pyrsia/pyrsia-docker-extension:{pyrsia.__version__}"
RAW_PREFIX = "https://raw.githubusercontent.com/pyrsia/pyrsia/main/"
# Labels Docker Desktop requires of an extension image (docs: extensions-sdk, image labels).
REQUIRED_LABELS = (
    "org.opencontainers.image.title",
    "org.opencontainers.image.description",
    "org.opencontainers.image.vendor",
    "com.docker.desktop.extension.api.version",
    "com.docker.desktop.extension.icon",
    "com.docker.extension.screenshots",
    "com.docker.extension.detailed-description",
    "com.docker.extension.publisher-url",
    "com.docker.extension.changelog",
)
API_VERSION = re.compile(r"^\s*(?:(?:>=|<=|>|<|=)?\s*\d+\.\d+\.\d+\s*,?\s*)+$")
CATEGORY = re.compile(r"^[a-z]+(?:-[a-z]+)*$")
METADATA_KEYS = {"icon", "vm", "ui", "host"}
SCREENSHOT_SIZE = (2400, 1600)  # what the Marketplace displays without scaling


@pytest.fixture(scope="module")
def extension_image(podman: Podman, node_image: str) -> str:
    podman.build(
        EXTENSION_IMAGE, EXTENSION / "Dockerfile", EXTENSION, "--build-arg", f"PYRSIA_IMAGE={node_image}"
    )
    return EXTENSION_IMAGE


@pytest.fixture(scope="module")
def labels(podman: Podman, extension_image: str) -> dict[str, str]:
    shown: dict[str, str] = json.loads(
        podman.out("image", "inspect", "--format", "{{json .Labels}}", extension_image)
    )
    return shown


@pytest.fixture(scope="module")
def image_root(podman: Podman, extension_image: str) -> Iterator[Path]:
    """The extension image's filesystem, mounted read-only for the test to read."""
    root = Path(podman.out("image", "mount", extension_image))
    try:
        yield root
    finally:
        podman.run("image", "unmount", extension_image, check=False)


def repo_file(url: str) -> Path:
    """The file in this checkout a raw.githubusercontent.com URL of the repository names."""
    assert url.startswith(RAW_PREFIX), url
    return ROOT / url.removeprefix(RAW_PREFIX)


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()[:24]
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", f"{path} is not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_required_labels_present_and_well_formed(labels: dict[str, str]) -> None:
    missing = [name for name in REQUIRED_LABELS if not labels.get(name, "").strip()]
    assert not missing, f"labels Docker Desktop requires are missing or empty: {missing}"
    assert labels["org.opencontainers.image.title"] == "pyrsia"
    assert API_VERSION.match(labels["com.docker.desktop.extension.api.version"])
    for name in ("com.docker.desktop.extension.icon", "com.docker.extension.publisher-url"):
        assert urlparse(labels[name]).scheme == "https" and urlparse(labels[name]).netloc, name
    additional = json.loads(labels["com.docker.extension.additional-urls"])
    assert additional and all(set(entry) == {"title", "url"} for entry in additional)
    assert all(urlparse(entry["url"]).scheme == "https" for entry in additional)
    categories = labels["com.docker.extension.categories"].split(",")
    assert all(CATEGORY.match(category) for category in categories), categories


def test_icon_and_screenshots_are_this_repositorys_files(labels: dict[str, str], image_root: Path) -> None:
    icon = repo_file(labels["com.docker.desktop.extension.icon"])
    assert icon.suffix in {".svg", ".png", ".jpg"} and icon.is_file(), icon
    metadata = json.loads((image_root / "metadata.json").read_text())
    assert (image_root / metadata["icon"]).read_bytes() == icon.read_bytes()  # one icon, two places
    screenshots = json.loads(labels["com.docker.extension.screenshots"])
    assert isinstance(screenshots, list) and screenshots
    for shot in screenshots:
        assert set(shot) == {"alt", "url"} and shot["alt"].strip(), shot
        assert png_size(repo_file(shot["url"])) == SCREENSHOT_SIZE, shot["url"]


def test_metadata_paths_resolve_inside_the_image(image_root: Path) -> None:
    metadata_file = image_root / "metadata.json"
    assert metadata_file.is_file(), "metadata.json must be at the image root"
    assert metadata_file.read_bytes() == (EXTENSION / "metadata.json").read_bytes()
    metadata = json.loads(metadata_file.read_text())
    assert set(metadata) <= METADATA_KEYS and isinstance(metadata["icon"], str), metadata
    assert (image_root / metadata["icon"].lstrip("/")).is_file(), metadata["icon"]
    vm = metadata["vm"]
    assert set(vm) == {"composefile"}, vm  # a compose file or an image, not both
    assert (image_root / vm["composefile"].lstrip("/")).is_file(), vm
    tabs = metadata["ui"]
    assert set(tabs) == {"dashboard-tab"}, tabs
    tab = tabs["dashboard-tab"]
    assert {"title", "root", "src"} <= set(tab) and tab["title"].strip()
    assert tab["root"].startswith("/") and (image_root / tab["root"].lstrip("/")).is_dir()
    page = image_root / tab["root"].lstrip("/") / tab["src"]
    assert page.is_file() and page.read_bytes() == (EXTENSION / "ui" / tab["src"]).read_bytes()


def test_backend_is_this_image_running_the_node(
    podman: Podman, node_image: str, extension_image: str, image_root: Path
) -> None:
    metadata = json.loads((image_root / "metadata.json").read_text())
    compose = (image_root / metadata["vm"]["composefile"].lstrip("/")).read_text()
    # Docker Desktop substitutes the extension image for DESKTOP_PLUGIN_IMAGE.
    assert re.search(r"^\s+image: \$\{DESKTOP_PLUGIN_IMAGE\}$", compose, re.M), compose
    node = json.loads(podman.out("image", "inspect", "--format", "{{json .Config}}", node_image))
    extension = json.loads(podman.out("image", "inspect", "--format", "{{json .Config}}", extension_image))
    # The extension image runs exactly what the node image runs: `pyrsia daemon`.
    assert extension["Entrypoint"] == node["Entrypoint"] == ["/usr/bin/pyrsia"]
    assert extension["Cmd"] == node["Cmd"] and extension["User"] == node["User"]
    # Its data volume is the node's home, and the published port the one the UI tab opens.
    (home,) = node["Volumes"]
    assert re.search(rf"^\s+- pyrsia-data:{re.escape(home)}$", compose, re.M), compose
    assert (
        re.search(r"^\s+- \"127\.0\.0\.1:7888:7888\"$", compose, re.M) and "7888/tcp" in node["ExposedPorts"]
    )
    page = (EXTENSION / "ui" / metadata["ui"]["dashboard-tab"]["src"]).read_text()
    assert '"http://localhost:7888"' in page and "openExternal" in page
    assert (image_root / "usr" / "bin" / "pyrsia").is_file()
