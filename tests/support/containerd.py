"""A private `containerd` and its `ctr` client, as the end-to-end tests drive them.

Everything containerd keeps (content store, snapshots, state, sockets, the `opt`
plugin's directory) lives under one temporary directory of its own; the CRI plugin is
disabled, so nothing reads /etc/containerd or touches the host's cgroups or CNI. It is
ready once `ctr version` gets an answer over its socket. `ctr images pull` resolves and
fetches in the ctr process itself, so ctr runs under the same `prefix` (a network
namespace) as containerd. Stopping kills what it started, shims included, unmounts
whatever it left mounted and removes its directory.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0
CTR_TIMEOUT_S = 120.0
# Snapshotters that need a filesystem or kernel module of their own; overlayfs and
# native stay. CRI would read the host's CNI and cgroup setup.
DISABLED_PLUGINS = (
    "io.containerd.grpc.v1.cri",
    "io.containerd.snapshotter.v1.btrfs",
    "io.containerd.snapshotter.v1.zfs",
    "io.containerd.snapshotter.v1.aufs",
    "io.containerd.snapshotter.v1.devmapper",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class ImageRecord:
    """One line of `ctr images ls`."""

    ref: str
    media_type: str
    digest: str


class Containerd:
    """`containerd --config DIR/config.toml`; `ctr(...)` talks to it."""

    def __init__(self, prefix: list[str] | None = None) -> None:
        self.prefix = prefix or []  # e.g. nsenter into a network namespace
        self.process: subprocess.Popen[bytes] | None = None
        # Unix socket paths are limited to ~104 bytes; pytest's tmp paths are longer.
        self.dir = Path(tempfile.mkdtemp(prefix="pyrsia-ctrd-", dir="/tmp"))
        self.socket = self.dir / "containerd.sock"
        self.config_path = self.dir / "config.toml"
        self.log_path = self.dir / "containerd.log"
        self.hosts_dir = self.dir / "certs.d"

    def start(self) -> Containerd:
        disabled = ", ".join(f'"{plugin}"' for plugin in DISABLED_PLUGINS)
        self.config_path.write_text(
            "version = 2\n"
            f'root = "{self.dir}/root"\n'
            f'state = "{self.dir}/state"\n'
            f"disabled_plugins = [{disabled}]\n"
            "[grpc]\n"
            f'  address = "{self.socket}"\n'
            "[ttrpc]\n"
            f'  address = "{self.socket}.ttrpc"\n'
            '[plugins."io.containerd.internal.v1.opt"]\n'
            f'  path = "{self.dir}/opt"\n'
        )
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [*self.prefix, "containerd", "--config", str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            if self.socket.exists() and self.ctr("version", check=False).returncode == 0:
                return self
            time.sleep(0.05)
        log_text = self.log_path.read_text(errors="replace")
        self.stop()
        raise RuntimeError(f"containerd did not become ready:\n{log_text}")

    def ctr(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [*self.prefix, "ctr", "--address", str(self.socket), *argv],
            capture_output=True,
            text=True,
            timeout=CTR_TIMEOUT_S,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"ctr {' '.join(argv)}\n{result.stdout}\n{result.stderr}")
        return result

    def mirror(self, registry: str, server: str, mirror_url: str) -> None:
        """`certs.d/REGISTRY/hosts.toml`: resolve and pull `registry` names from `mirror_url`."""
        host_dir = self.hosts_dir / registry
        host_dir.mkdir(parents=True, exist_ok=True)
        (host_dir / "hosts.toml").write_text(
            f'server = "{server}"\n[host."{mirror_url}"]\n  capabilities = ["pull", "resolve"]\n'
        )

    def pull(self, reference: str, *flags: str) -> None:
        self.ctr("images", "pull", "--hosts-dir", str(self.hosts_dir), *flags, reference)

    def images(self) -> dict[str, ImageRecord]:
        """`ctr images ls` by reference."""
        records = {}
        for line in self.ctr("images", "ls").stdout.splitlines()[1:]:
            ref, media_type, digest, *_ = line.split()
            records[ref] = ImageRecord(ref=ref, media_type=media_type, digest=digest)
        return records

    def content(self) -> dict[str, dict[str, str]]:
        """`ctr content ls`: digest -> labels (labels `k=v,k=v` or `-`)."""
        blobs = {}
        for line in self.ctr("content", "ls").stdout.splitlines()[1:]:
            # Columns are padded with tabs (Go's tabwriter); AGE holds spaces.
            digest, _size, _age, *rest = [cell for cell in line.split("\t") if cell]
            labels = rest[0] if rest else ""
            pairs = (item.split("=", 1) for item in labels.split(",") if "=" in item)
            blobs[digest] = {key: value for key, value in pairs}
        return blobs

    def stop(self) -> None:
        if self.process is not None:
            if self.process.poll() is None:
                self.process.terminate()
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None
        for pid in self._shim_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self._unmount_leftovers()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _shim_pids(self) -> list[int]:
        """Shims outlive containerd by design; ours name our socket in `-address`."""
        pids = []
        needle = str(self.socket).encode()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"-address" in argv and needle in argv:
                pids.append(int(entry.name))
        return pids

    def _unmount_leftovers(self) -> None:
        prefix = str(self.dir) + "/"
        mounts = [
            line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()
        ]  # mount points, innermost last
        for point in reversed([m for m in mounts if m.startswith(prefix)]):
            subprocess.run(["umount", "--lazy", point], check=False)

    def __enter__(self) -> Containerd:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
