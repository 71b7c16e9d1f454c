"""Loopback-only network namespaces, for clients that must not reach the internet.

dockerd falls back from a registry mirror to Docker Hub when the mirror fails; inside
a namespace with only `lo`, that fallback has nowhere to go, so a passing pull proves
the node served it. Processes enter with `nsenter --net=…`, not `ip netns exec`, which
remounts /sys and hides the cgroup tree dockerd needs.
"""

from __future__ import annotations

import os
import subprocess
from types import TracebackType


class LoopbackNamespace:
    """`ip netns add NAME` with `lo` up; `prefix` runs a command inside it."""

    def __init__(self, name: str | None = None) -> None:
        self.name = name or f"pyrsia-test-{os.getpid()}"

    @property
    def prefix(self) -> list[str]:
        return ["nsenter", f"--net=/run/netns/{self.name}"]

    def run(self, *argv: str, timeout_s: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.prefix, *argv], capture_output=True, text=True, timeout=timeout_s)

    def __enter__(self) -> LoopbackNamespace:
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        subprocess.run(["ip", "-n", self.name, "link", "set", "lo", "up"], check=True)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        subprocess.run(["ip", "netns", "del", self.name], check=False)
