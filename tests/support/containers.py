"""Container images built offline by the tests: a Debian base from debootstrap, podman
confined to a directory of the test session's, and pyrsia's frozen binary.

No registry serves base images here, but the apt mirror does. `debian_base_tar` runs
`debootstrap --variant=minbase bookworm` once and keeps the rootfs as a tarball in a
cache outside the repository (`$XDG_CACHE_HOME/pyrsia-test`, else
`/var/tmp/pyrsia-test`), so later sessions skip the ~25 s it takes; a lock file makes
concurrent sessions build it once. `Podman` imports that tarball as
`docker.io/library/debian:bookworm-slim`, the base `packaging/docker/Dockerfile`
names, and builds and runs images with cgroupfs and runc under its own root (crun
and raised rlimits fail in this sandbox: runs pass ulimits at or below the current
ones). Its storage is the kernel's overlay when a probe mount of it works under that
root (as root), else vfs: vfs copies the whole rootfs for every layer and container,
which made one node image build take over a minute here where overlay takes seconds.

`frozen_binary` finds the single-file executable the images carry: `$PYRSIA_BINARY`,
else `dist/pyrsia` when it reports this checkout's version, else it runs PyInstaller
with the Makefile's `binary` arguments into `dist/`.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyrsia

ROOT = Path(__file__).resolve().parents[2]
SUITE = "bookworm"
BASE_REFERENCE = "docker.io/library/debian:bookworm-slim"
DEBOOTSTRAP_TIMEOUT_S = 900.0
BUILD_TIMEOUT_S = 900.0
# podman raises nofile/nproc by default; root here lacks CAP_SYS_RESOURCE.
ULIMITS = ("--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024")


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or "/var/tmp"
    path = Path(base) / "pyrsia-test"
    path.mkdir(parents=True, exist_ok=True)
    return path


def apt_mirror() -> str:
    """The Debian mirror apt uses here (deb822 or one-line sources), for debootstrap."""
    sources = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for source in sources:
        if not source.is_file() or source.suffix not in {".list", ".sources"}:
            continue
        text = source.read_text()
        for line in text.splitlines():
            words = line.split()
            if source.suffix == ".sources" and words[:1] == ["URIs:"] and f"Suites: {SUITE}" in text:
                uri = next((w for w in words[1:] if not w.endswith("-security")), "")
                if uri and "security" not in uri:
                    return uri
            if source.suffix == ".list" and words[:1] == ["deb"] and SUITE in words:
                uri = next(w for w in words[1:] if not w.startswith("["))
                if "security" not in uri:
                    return uri
    return "http://deb.debian.org/debian"


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def debian_base_tar() -> Path:
    """A minbase Debian rootfs as a tarball, built once and cached across sessions."""
    cache = cache_dir()
    tarball = cache / f"debian-{SUITE}-minbase.tar"
    with _locked(cache / "debian-base.lock"):
        if tarball.is_file():
            return tarball
        assert shutil.which("debootstrap"), "debootstrap is missing: run `make tools`"
        rootfs = cache / f"debian-{SUITE}-rootfs"
        shutil.rmtree(rootfs, ignore_errors=True)
        result = subprocess.run(
            ["debootstrap", "--variant=minbase", SUITE, str(rootfs), apt_mirror()],
            capture_output=True, text=True, timeout=DEBOOTSTRAP_TIMEOUT_S, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        partial = tarball.with_suffix(".partial")
        packed = subprocess.run(
            ["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(partial), "."],
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        assert packed.returncode == 0, packed.stderr
        partial.rename(tarball)
        shutil.rmtree(rootfs, ignore_errors=True)
        return tarball


def frozen_binary() -> Path:
    """The single-file `pyrsia` executable of this checkout's version."""
    wanted = f"pyrsia {pyrsia.__version__}"
    given = os.environ.get("PYRSIA_BINARY")
    candidate = Path(given) if given else ROOT / "dist" / "pyrsia"
    if candidate.is_file() and _version(candidate) == wanted:
        return candidate
    assert not given, f"$PYRSIA_BINARY={given} does not report {wanted!r}"
    pyinstaller = Path(sys.executable).parent / "pyinstaller"
    build = ROOT / "build"
    result = subprocess.run(
        [
            str(pyinstaller), "--onefile", "--noconfirm", "--clean", "--log-level", "WARN",
            "--name", "pyrsia", "--distpath", str(ROOT / "dist"), "--workpath", str(build / "pyinstaller"),
            "--specpath", str(build), "--paths", str(ROOT), "--hidden-import", "_cffi_backend",
            "--collect-submodules", "shellingham", str(ROOT / "packaging" / "pyinstaller" / "pyrsia_main.py"),
        ],
        capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    assert _version(candidate) == wanted
    return candidate


def _version(binary: Path) -> str:
    result = subprocess.run(
        [str(binary), "--version"], capture_output=True, text=True, timeout=120, check=False
    )
    return result.stdout.strip()


def storage_driver(root: Path) -> str:
    """`overlay` when the kernel mounts an overlay under `root` here, else `vfs`."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return "vfs"
    probe = Path(tempfile.mkdtemp(prefix="overlay-probe-", dir=root))
    try:
        for part in ("lower", "upper", "work", "merged"):
            (probe / part).mkdir()
        options = f"lowerdir={probe}/lower,upperdir={probe}/upper,workdir={probe}/work"
        mounted = subprocess.run(
            ["mount", "-t", "overlay", "overlay", "-o", options, str(probe / "merged")],
            capture_output=True, timeout=30, check=False,
        )  # fmt: skip
        if mounted.returncode != 0:
            return "vfs"
        subprocess.run(["umount", str(probe / "merged")], capture_output=True, timeout=30, check=True)
        return "overlay"
    finally:
        shutil.rmtree(probe, ignore_errors=True)


class Podman:
    """podman with its storage, runtime settings and registries confined to `root`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.driver = storage_driver(root)
        (root / "storage.conf").write_text(
            f'[storage]\ndriver = "{self.driver}"\ngraphroot = "{root}/graph"\nrunroot = "{root}/run"\n'
        )
        (root / "containers.conf").write_text(
            '[engine]\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n'
            f'events_logfile_path = "{root}/events.log"\nruntime = "runc"\n'
            f'volume_path = "{root}/volumes"\n'
        )
        # No search registries: a short name is a local image or nothing, never a pull.
        (root / "registries.conf").write_text("unqualified-search-registries = []\n")
        self.env = {
            **os.environ,
            "CONTAINERS_STORAGE_CONF": str(root / "storage.conf"),
            "CONTAINERS_CONF": str(root / "containers.conf"),
            "CONTAINERS_REGISTRIES_CONF": str(root / "registries.conf"),
        }

    def run(
        self, *argv: str | Path, timeout_s: float = 300, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            ["podman", *(str(a) for a in argv)],
            capture_output=True, text=True, timeout=timeout_s, env=self.env, check=False,
        )  # fmt: skip
        if check:
            assert result.returncode == 0, (
                f"podman {' '.join(map(str, argv))}\n{result.stdout}\n{result.stderr}"
            )
        return result

    def out(self, *argv: str | Path, timeout_s: float = 300) -> str:
        return self.run(*argv, timeout_s=timeout_s).stdout.strip()

    def import_base(self, tarball: Path) -> None:
        self.run("import", tarball, BASE_REFERENCE, timeout_s=600)

    def build(self, tag: str, dockerfile: Path, context: Path, *args: str) -> str:
        """Builds offline (no network, never pulls); returns the image id."""
        self.run(
            # docker format: OCI images drop HEALTHCHECK.
            "build", "--format", "docker", "--network", "none", "--pull=never", *ULIMITS,
            "-f", dockerfile, "-t", tag, *args, context,
            timeout_s=BUILD_TIMEOUT_S,
        )  # fmt: skip
        return self.out("image", "inspect", "--format", "{{.Id}}", tag)

    def cleanup(self) -> None:
        self.run("rm", "--all", "--force", "--time", "5", check=False)
        self.run("volume", "prune", "--force", check=False)
        self.run("rmi", "--all", "--force", check=False)
        # overlay storage may keep its own directory mounted: nothing stays mounted under root.
        with open("/proc/self/mounts") as mounts:
            points = [line.split()[1] for line in mounts]
        for point in sorted((p for p in points if p.startswith(f"{self.root}/")), reverse=True):
            subprocess.run(["umount", "-l", point], capture_output=True, timeout=30, check=False)
