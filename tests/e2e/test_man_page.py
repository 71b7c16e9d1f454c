"""The man page: `packaging/man/pyrsia.1` is what the CLI generates now, `man` renders
it without a single groff warning, and the release sdist ships it (the Homebrew
formula installs it from there; the Debian package generates the same page).

The sdist is built offline when pip's configuration points at a local index: PEP 517's
`build_sdist` from a setuptools new enough for pyproject's license field, installed
into a scratch directory, on a copy of the tracked files (the checkout stays clean).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
from datetime import UTC, datetime
from pathlib import Path

import pytest

import pyrsia
from tests.support.containers import ROOT

pytestmark = pytest.mark.e2e

PAGE = ROOT / "packaging" / "man" / "pyrsia.1"
GENERATOR = ROOT / "packaging" / "man" / "generate.py"
MAN_ENV = {
    "MANPAGER": "cat",
    "PAGER": "cat",
    "MANWIDTH": "80",
    "LC_ALL": "C.UTF-8",
    "MAN_KEEP_FORMATTING": "",
}
SHIPPED = (
    "packaging/man/pyrsia.1",
    "completions/pyrsia.bash",
    "completions/_pyrsia",
    "completions/pyrsia.fish",
)


def render(page: Path) -> subprocess.CompletedProcess[str]:
    """`man ./pyrsia.1` from the page's directory, every groff warning enabled."""
    return subprocess.run(
        ["man", "--warnings=w", "-l", f"./{page.name}"],
        cwd=page.parent, capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, **MAN_ENV},
    )  # fmt: skip


def test_committed_page_is_what_the_cli_generates(tmp_path: Path) -> None:
    match = re.search(r'^\.TH PYRSIA 1 "(\d{4}-\d{2}-\d{2})"', PAGE.read_text(), re.M)
    assert match, "pyrsia.1 lacks its .TH line"
    epoch = int(datetime.strptime(match.group(1), "%Y-%m-%d").replace(tzinfo=UTC).timestamp())
    fresh = tmp_path / "pyrsia.1"
    result = subprocess.run(
        [sys.executable, str(GENERATOR), str(fresh)],
        capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "SOURCE_DATE_EPOCH": str(epoch), "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert fresh.read_text() == PAGE.read_text(), "packaging/man/pyrsia.1 is stale: run `make man`"


def test_man_renders_the_page_without_warnings(tmp_path: Path) -> None:
    assert shutil.which("man") and shutil.which("groff"), (
        "man-db and groff-base are missing: run `make tools`"
    )
    result = render(PAGE)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    page = result.stdout
    for heading in (
        "NAME",
        "SYNOPSIS",
        "DESCRIPTION",
        "OPTIONS",
        "COMMANDS",
        "ENVIRONMENT",
        "FILES",
        "SEE ALSO",
    ):
        assert f"\n{heading}\n" in page, heading
    assert f"pyrsia {pyrsia.__version__}" in page and "pyrsia log search" in page and "PYRSIA_NODE" in page
    assert all(len(line) <= 80 for line in page.splitlines()), "lines wider than MANWIDTH"
    # The check has teeth: an unknown escape in a copy makes groff warn.
    broken = tmp_path / "pyrsia.1"
    broken.write_text(PAGE.read_text().replace(".SH NAME\n", ".SH NAME\n\\qbroken\n", 1))
    warned = render(broken)
    assert "warning" in warned.stderr, warned.stderr


@pytest.fixture(scope="module")
def sdist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sdist of the tracked files, built by setuptools' PEP 517 backend."""
    work = tmp_path_factory.mktemp("sdist")
    backend = work / "setuptools"
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--target", str(backend), "setuptools>=77"],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr
    tracked = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        timeout=60,
        check=True,
    ).stdout.split(b"\0")
    source = work / "source"
    for name in filter(None, (t.decode() for t in tracked)):
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    script = f"from setuptools import build_meta; print(build_meta.build_sdist({str(work)!r}))"
    built = subprocess.run(
        [sys.executable, "-c", script],
        cwd=source, capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "PYTHONPATH": str(backend)},
    )  # fmt: skip
    assert built.returncode == 0, built.stderr[-3000:]
    return work / built.stdout.strip().splitlines()[-1]


def test_sdist_ships_the_man_page_and_completions(sdist: Path) -> None:
    assert sdist.name == f"pyrsia-{pyrsia.__version__}.tar.gz"
    top = f"pyrsia-{pyrsia.__version__}"
    with tarfile.open(sdist) as tar:
        names = set(tar.getnames())
        for shipped in SHIPPED:
            member = tar.extractfile(f"{top}/{shipped}")
            assert member is not None, shipped
            assert member.read() == (ROOT / shipped).read_bytes(), shipped
        assert f"{top}/pyrsia/cli/app.py" in names and f"{top}/PKG-INFO" in names
        assert not any(name.startswith(f"{top}/tests/") for name in names)
