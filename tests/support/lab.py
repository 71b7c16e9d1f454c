"""The network lab: pyrsia nodes as separate hosts on one switched segment.

Loopback hides addressing bugs (a node that advertises 127.0.0.1 still works when
every peer shares that loopback), so the lab gives each node a machine of its own: a
network namespace with `lo` and one `eth0`, plugged by a veth pair into a bridge that
lives in a switch namespace of the lab's own. Nothing is created in the root
namespace: each veth is made inside the switch namespace with its peer end placed
straight into the host's, so deleting the namespaces deletes every link.

    with Lab() as lab:                      # switch namespace + bridge, 10.231.X.0/24
        a = lab.add_host("a")               # namespace, veth, a.ip == "10.231.X.10"
        a.run("ip", "-br", "addr")          # CompletedProcess, inside a's namespace
        node = NodeProcess(home, "--p2p-host", "0.0.0.0", command=a.pyrsia_command())

Addresses: every lab claims one /24 of 10.231.0.0/16 (`SUBNET_BLOCK`) by creating its
switch namespace, `pyrsia-lab<X>`; `ip netns add` refuses a name that exists, so two
labs, in one process or several, never share a subnet or a name. Host `i` (in order of
`add_host`) is `10.231.X.(10+i)/24`; `.1`-`.9` are kept for routers.

Processes enter a host with `nsenter --net=/run/netns/NAME` (`LabHost.prefix`), not
`ip netns exec`, which remounts /sys and hides the cgroup tree podman and dockerd
need. HTTP of a daemon stays on the host's own 127.0.0.1, so the test reaches it
only through the host: `host.pyrsia("status", "--json", "--node", url)`.

Hostile peers: an attack test runs any code as another machine on the segment,
`host.popen([sys.executable, "-c", code])` or `host.popen([sys.executable, script])`
(the child inherits the environment, so PYTHONPATH reaches the worktree's `pyrsia`
and `tests` packages); `host.run(...)` waits for it. The lab tracks what `popen`
started and kills it on exit.

Teardown (also when a test fails, or setup fails halfway): every process still in a
lab namespace is killed (a namespace with a process in it outlives `ip netns del`,
and its veth with it), then every namespace is deleted, the switch last.

Routers (for the NAT lab, not built yet) fit the same shape: `add_router(name)` makes
a namespace with a `wan` end on the bridge (`.1`-`.9`) and a `lan` veth to hosts
behind it, which get `add_host(name, behind=router)` addresses from a second /24
(10.232.X.0/24), a default route via the router, and iptables MASQUERADE (optionally
`--random-fully`) plus a conntrack-based DROP on the router's `wan`, per the recipes
the project verified for hole punching.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

SUBNET_BLOCK = "10.231"  # the lab's /24s are 10.231.X.0/24, X in 0..255
PREFIX_LEN = 24
HOST_OFFSET = 10  # host i is .(10+i); .1-.9 stay free for routers
HOSTS_MAX = 240
NAMESPACE_PREFIX = "pyrsia-lab"
BRIDGE = "br0"
TOOLS = ("ip", "nsenter")
KILL_GRACE_S = 5.0
NETNS_DIR = Path("/run/netns")


class LabError(RuntimeError):
    """The lab could not be built: a missing tool, no root, no free subnet."""


def require_tools(*tools: str) -> None:
    """Fails (never skips) when a tool the lab or a lab test drives is missing."""
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        raise LabError(f"missing {', '.join(missing)}: run .ci/install-tools")


def _ip(*argv: str) -> None:
    result = subprocess.run(["ip", *argv], capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        raise LabError(f"ip {' '.join(argv)}: {result.stderr.strip()}")


@dataclass(frozen=True, slots=True, kw_only=True)
class LabHost:
    """One machine of the lab: its namespace, its address on the bridge."""

    name: str
    namespace: str
    ip: str
    prefix_len: int
    _lab: Lab = field(repr=False, compare=False)

    @property
    def prefix(self) -> list[str]:
        """argv that runs the rest of a command inside this host."""
        return ["nsenter", f"--net={NETNS_DIR / self.namespace}"]

    def multiaddr(self, port: int, peer_id: str | None = None) -> str:
        """`/ip4/<this host>/tcp/PORT[/p2p/PEER_ID]`, the address other hosts dial."""
        address = f"/ip4/{self.ip}/tcp/{port}"
        return f"{address}/p2p/{peer_id}" if peer_id else address

    def run(
        self, *argv: str, timeout_s: float = 60, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Runs argv inside the host and waits; output captured as text."""
        return subprocess.run(
            [*self.prefix, *argv],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env={**os.environ, **(env or {})},
        )

    def popen(self, argv: list[str], **kwargs: object) -> subprocess.Popen[bytes]:
        """Starts argv inside the host; the lab kills it on exit if it still runs."""
        process: subprocess.Popen[bytes] = subprocess.Popen([*self.prefix, *argv], **kwargs)  # type: ignore[call-overload]
        self._lab.track(process)
        return process

    def pyrsia_command(self) -> list[str]:
        """`python -m pyrsia` inside this host, for `NodeProcess(command=...)`."""
        return [*self.prefix, sys.executable, "-m", "pyrsia"]

    def pyrsia(self, *args: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
        """The pyrsia CLI run inside this host (where a daemon's 127.0.0.1 HTTP port is)."""
        return self.run(sys.executable, "-m", "pyrsia", *args, timeout_s=timeout_s)


class Lab:
    """A switch namespace with a bridge; `add_host` plugs a new host into it."""

    def __init__(self) -> None:
        self.index = -1  # X of 10.231.X.0/24, claimed on enter
        self.hosts: dict[str, LabHost] = {}
        self._namespaces: list[str] = []  # created, in order; deleted in reverse
        self._processes: list[subprocess.Popen[bytes]] = []

    @property
    def switch(self) -> str:
        return f"{NAMESPACE_PREFIX}{self.index}"

    @property
    def subnet(self) -> str:
        return f"{SUBNET_BLOCK}.{self.index}.0/{PREFIX_LEN}"

    def __enter__(self) -> Lab:
        require_tools(*TOOLS)
        if os.geteuid() != 0:
            raise LabError("the network lab needs root (network namespaces)")
        self._claim()
        try:
            _ip("-n", self.switch, "link", "set", "lo", "up")
            _ip("-n", self.switch, "link", "add", BRIDGE, "type", "bridge")
            _ip("-n", self.switch, "link", "set", BRIDGE, "up")
        except BaseException:
            self.close()
            raise
        return self

    def _claim(self) -> None:
        """Takes the first free X: `ip netns add` fails on a name that exists."""
        for index in range(256):
            name = f"{NAMESPACE_PREFIX}{index}"
            if (NETNS_DIR / name).exists():
                continue
            result = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True, timeout=30)
            if result.returncode == 0:
                self.index = index
                self._namespaces.append(name)
                return
            if "exists" not in result.stderr:  # not a lost race for this X: a real failure
                raise LabError(f"ip netns add {name}: {result.stderr.strip()}")
        raise LabError(f"no free lab subnet in {SUBNET_BLOCK}.0.0/16 (stale {NAMESPACE_PREFIX}* namespaces?)")

    def add_host(self, name: str) -> LabHost:
        """A new namespace `pyrsia-lab<X>-<name>` whose eth0 is on the bridge."""
        if self.index < 0:
            raise LabError("add_host outside `with Lab()`")
        if name in self.hosts or not name.isalnum() or len(self.hosts) >= HOSTS_MAX:
            raise LabError(f"host name {name!r} is taken, not alphanumeric, or the lab is full")
        number = len(self.hosts)
        namespace = f"{self.switch}-{name}"
        _ip("netns", "add", namespace)
        self._namespaces.append(namespace)  # from here on, teardown deletes it
        port = f"h{number}"  # the switch side; names are per namespace, so short and fixed
        peer = ("peer", "name", "eth0", "netns", namespace)  # made inside the host, never in root
        _ip("-n", self.switch, "link", "add", port, "type", "veth", *peer)
        _ip("-n", self.switch, "link", "set", port, "master", BRIDGE)
        _ip("-n", self.switch, "link", "set", port, "up")
        address = f"{SUBNET_BLOCK}.{self.index}.{HOST_OFFSET + number}"
        _ip("-n", namespace, "link", "set", "lo", "up")
        _ip("-n", namespace, "addr", "add", f"{address}/{PREFIX_LEN}", "dev", "eth0")
        _ip("-n", namespace, "link", "set", "eth0", "up")
        host = LabHost(name=name, namespace=namespace, ip=address, prefix_len=PREFIX_LEN, _lab=self)
        self.hosts[name] = host
        return host

    def track(self, process: subprocess.Popen[bytes]) -> None:
        self._processes.append(process)

    def close(self) -> None:
        """Kills what runs in the lab, then deletes every namespace; safe to call twice."""
        for process in self._processes:
            if process.poll() is None:
                process.terminate()
        deadline = time.monotonic() + KILL_GRACE_S
        for process in self._processes:
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=30)
            for pipe in (process.stdin, process.stdout, process.stderr):
                if pipe is not None:
                    pipe.close()
        self._processes.clear()
        for namespace in reversed(self._namespaces):
            self._kill_inside(namespace)
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True, timeout=30)
        self._namespaces.clear()

    @staticmethod
    def _kill_inside(namespace: str) -> None:
        """SIGKILLs what was started in the namespace by other means (NodeProcess, nsenter)."""
        listed = subprocess.run(
            ["ip", "netns", "pids", namespace], capture_output=True, text=True, timeout=30
        )
        for pid in listed.stdout.split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
