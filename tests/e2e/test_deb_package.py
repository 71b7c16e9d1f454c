"""The Debian package builds, installs, runs, passes `systemd-analyze verify`, and
removes and purges clean — with dpkg, on this machine (Debian, as root).

The package comes from `packaging/debian/build-deb.sh` on `dist/pyrsia`; when that
binary is missing or reports another version, `make binary` builds it first. The
module fixture installs the package once and always purges it afterwards, whatever
failed. Every tool the test drives must be present: a missing one fails the test.

No systemd runs in a container, so `systemd-analyze verify` checks the unit offline:
its syntax, that `ExecStart`'s binary exists and is executable, and that its
`Documentation=man:pyrsia(1)` page resolves through `man` — which is why the unit is
verified where the package installed it, after installation.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import pyrsia

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
BINARY = ROOT / "dist" / "pyrsia"
BUILD_DEB = ROOT / "packaging" / "debian" / "build-deb.sh"
TOOLS = ("make", "dpkg", "dpkg-deb", "dpkg-query", "systemd-analyze", "man", "bash", "adduser", "deluser")
HOME = Path("/var/lib/pyrsia")
UNIT = Path("/lib/systemd/system/pyrsia.service")
MAN_PAGE = Path("/usr/share/man/man1/pyrsia.1.gz")
INSTALLED = [
    Path("/usr/bin/pyrsia"),
    UNIT,
    Path("/usr/share/bash-completion/completions/pyrsia"),
    Path("/usr/share/zsh/vendor-completions/_pyrsia"),
    Path("/usr/share/fish/vendor_completions.d/pyrsia.fish"),
    MAN_PAGE,
    Path("/usr/share/doc/pyrsia/copyright"),
]


def run(
    *argv: str | Path, timeout_s: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, timeout=timeout_s, check=False, env=env
    )


def installed_version() -> str | None:
    result = run("dpkg-query", "-W", "-f", "${Status} ${Version}", "pyrsia")
    words = result.stdout.split()
    return words[-1] if result.returncode == 0 and "installed" in words[:3] else None


def account_exists() -> bool:
    try:
        pwd.getpwnam("pyrsia")
    except KeyError:
        return False
    return True


def group_exists() -> bool:
    try:
        grp.getgrnam("pyrsia")
    except KeyError:
        return False
    return True


@pytest.fixture(scope="module")
def deb() -> Path:
    """The package file, built from dist/pyrsia (built first when missing or stale)."""
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    assert not missing, f"the package test needs {missing}: run `make tools`"
    assert os.geteuid() == 0, "installing a .deb needs root"
    version = pyrsia.__version__
    current = run(BINARY, "--version").stdout.strip() if BINARY.is_file() else ""
    if current != f"pyrsia {version}":
        built = run("make", "-C", ROOT, "binary", timeout_s=900)
        assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-4000:]
    result = run(BUILD_DEB, version, env={**os.environ, "PYTHON": str(ROOT / ".venv" / "bin" / "python")})
    assert result.returncode == 0, result.stderr
    return Path(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def installed(deb: Path) -> Iterator[Path]:
    """The package installed with dpkg; purged afterwards even when a test failed."""
    # Purging at the end would destroy a pyrsia someone installed on purpose.
    assert installed_version() is None, "pyrsia is already installed here: `dpkg --purge pyrsia` first"
    assert not account_exists(), "a `pyrsia` account exists already; the purge would delete it"
    try:
        result = run("dpkg", "-i", deb)
        assert result.returncode == 0, result.stdout + result.stderr
        yield deb
    finally:
        run("dpkg", "--purge", "pyrsia")


def test_package_metadata_and_permissions(deb: Path) -> None:
    fields = {
        name: run("dpkg-deb", "-f", deb, name).stdout.strip()
        for name in ("Package", "Version", "Architecture", "Maintainer", "Section", "Priority", "Depends")
    }
    assert fields["Package"] == "pyrsia" and fields["Version"] == pyrsia.__version__
    assert fields["Architecture"] == run("dpkg", "--print-architecture").stdout.strip()
    assert "libc6" in fields["Depends"] and "adduser" in fields["Depends"]
    assert all(fields.values()), fields
    assert run("dpkg-deb", "-f", deb, "Description").stdout.strip()
    listing = run("dpkg-deb", "-c", deb).stdout.splitlines()
    assert listing
    for line in listing:  # e.g. "drwxr-xr-x root/root 0 2026-01-01 00:00 ./usr/"
        mode, owner, *_, path = line.split()
        assert owner == "root/root", line
        if mode.startswith("d"):
            assert mode == "drwxr-xr-x", line
        elif path == "./usr/bin/pyrsia":
            assert mode == "-rwxr-xr-x", line
        else:
            assert mode == "-rw-r--r--", line


def test_installs_its_files_account_and_home(installed: Path) -> None:
    assert installed_version() == pyrsia.__version__
    version = run("/usr/bin/pyrsia", "--version")
    assert version.returncode == 0 and version.stdout.strip() == f"pyrsia {pyrsia.__version__}"
    for path in INSTALLED:
        assert path.is_file(), path
    account = pwd.getpwnam("pyrsia")
    assert account.pw_dir == str(HOME) and account.pw_uid < 1000  # a system account
    assert account.pw_shell.endswith(("nologin", "false"))
    assert grp.getgrnam("pyrsia").gr_gid == account.pw_gid
    home = HOME.stat()
    assert (home.st_uid, home.st_gid, home.st_mode & 0o7777) == (account.pw_uid, account.pw_gid, 0o750)


def test_man_page_reads(installed: Path) -> None:
    env = {**os.environ, "MANPAGER": "cat", "PAGER": "cat", "MANWIDTH": "100", "LC_ALL": "C.UTF-8"}
    result = run("man", "-l", MAN_PAGE, env=env)
    assert result.returncode == 0, result.stderr
    page = result.stdout
    for heading in ("NAME", "SYNOPSIS", "COMMANDS", "ENVIRONMENT", "SEE ALSO"):
        assert f"\n{heading}\n" in page, heading
    assert "pyrsia log search" in page and "--author" in page and "PYRSIA_NODE" in page
    assert run("man", "-w", "pyrsia", env=env).stdout.strip() == str(MAN_PAGE)


def test_installed_bash_completion_drives_the_installed_binary(installed: Path) -> None:
    # bash-completion loads /usr/share/bash-completion/completions/pyrsia on first use;
    # PATH holds only system directories, so the frozen /usr/bin/pyrsia answers.
    script = """
source /usr/share/bash-completion/bash_completion
__load_completion pyrsia || exit 3
complete -p pyrsia
COMP_LINE='pyrsia pull '; COMP_POINT=${#COMP_LINE}
COMP_WORDS=(pyrsia pull ''); COMP_CWORD=2
_pyrsia_completion pyrsia
printf '%s\\n' "${COMPREPLY[@]}"
"""
    env = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root"), "LC_ALL": "C.UTF-8"}
    result = run("bash", "-c", script, env=env, timeout_s=60)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "complete -o default -F _pyrsia_completion pyrsia"
    assert {"image", "artifact"} <= {line.split(":")[0] for line in lines[1:]}


def test_unit_file_verifies(installed: Path, tmp_path: Path) -> None:
    result = run("systemd-analyze", "verify", UNIT)
    assert result.returncode == 0 and result.stderr.strip() == "", result.stderr
    # Broken copies show the check has teeth offline: verify exits 0 on a misspelt key
    # (a warning on stderr — hence the empty-stderr demand above) and 1 on a missing binary.
    broken = tmp_path / "pyrsia.service"
    broken.write_text(UNIT.read_text().replace("Restart=on-failure", "Restart=on-failure\nRestartt=always"))
    result = run("systemd-analyze", "verify", broken)
    assert "Unknown key 'Restartt'" in result.stderr, result.stderr
    broken.write_text(UNIT.read_text().replace("/usr/bin/pyrsia ", "/usr/bin/pyrsia-missing "))
    result = run("systemd-analyze", "verify", broken)
    assert result.returncode != 0 and "pyrsia-missing" in result.stderr, result.stderr
    unit = UNIT.read_text()
    for setting in (
        "User=pyrsia",
        "ExecStart=/usr/bin/pyrsia daemon --home /var/lib/pyrsia",
        "NoNewPrivileges=true",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/pyrsia",
        "PrivateTmp=true",
        "Restart=on-failure",
    ):
        assert f"\n{setting}\n" in unit, setting


def test_remove_keeps_data_and_purge_deletes_everything(installed: Path) -> None:
    (HOME / "kept.txt").write_text("node data")
    result = run("dpkg", "--remove", "pyrsia")
    assert result.returncode == 0, result.stdout + result.stderr
    assert not Path("/usr/bin/pyrsia").exists()
    assert account_exists() and (HOME / "kept.txt").is_file()

    result = run("dpkg", "--purge", "pyrsia")
    assert result.returncode == 0, result.stdout + result.stderr
    for path in [*INSTALLED, HOME]:
        assert not path.exists(), path
    assert not account_exists() and not group_exists()
    assert run("dpkg-query", "-W", "pyrsia").returncode != 0  # dpkg forgot it entirely
