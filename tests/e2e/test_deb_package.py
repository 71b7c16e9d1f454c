"""The Debian package installs, runs, passes `systemd-analyze verify`, and purges clean.

Builds the .deb from `dist/pyrsia` (`make binary` runs before the tests) with the
packaging script, installs it with dpkg on this machine, and always purges it again.
"""

from __future__ import annotations

import gzip
import pwd
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import pyrsia

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
INSTALLED = [
    "/usr/bin/pyrsia",
    "/lib/systemd/system/pyrsia.service",
    "/usr/share/bash-completion/completions/pyrsia",
    "/usr/share/zsh/vendor-completions/_pyrsia",
    "/usr/share/fish/vendor_completions.d/pyrsia.fish",
    "/usr/share/man/man1/pyrsia.1.gz",
]


def sh(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def installed() -> Iterator[Path]:
    built = sh(str(ROOT / "packaging" / "debian" / "build-deb.sh"), pyrsia.__version__)
    assert built.returncode == 0, built.stderr
    deb = Path(built.stdout.strip().splitlines()[-1])
    try:
        result = sh("dpkg", "-i", str(deb))
        assert result.returncode == 0, result.stdout + result.stderr
        yield deb
    finally:
        sh("dpkg", "--purge", "pyrsia")


def test_installs_runs_and_has_its_files(installed: Path) -> None:
    assert sh("/usr/bin/pyrsia", "--version").stdout.strip() == f"pyrsia {pyrsia.__version__}"
    for path in INSTALLED:
        assert Path(path).is_file(), path
    account = pwd.getpwnam("pyrsia")
    home = Path("/var/lib/pyrsia")
    assert account.pw_dir == str(home) and home.stat().st_uid == account.pw_uid
    assert home.stat().st_mode & 0o777 == 0o750
    page = gzip.decompress(Path("/usr/share/man/man1/pyrsia.1.gz").read_bytes()).decode()
    assert page.startswith(".TH PYRSIA 1") and ".SH PYRSIA LOG SEARCH" in page


def test_unit_file_verifies(installed: Path) -> None:
    result = sh("systemd-analyze", "verify", "/lib/systemd/system/pyrsia.service")
    assert result.returncode == 0 and result.stderr.strip() == "", result.stderr


def test_purge_removes_everything(installed: Path) -> None:
    result = sh("dpkg", "--purge", "pyrsia")
    assert result.returncode == 0, result.stderr
    for path in [*INSTALLED, "/var/lib/pyrsia"]:
        assert not Path(path).exists(), path
    with pytest.raises(KeyError):
        pwd.getpwnam("pyrsia")
    # Put it back so the fixture's final purge and any later test see a consistent state.
    assert sh("dpkg", "-i", str(installed)).returncode == 0
