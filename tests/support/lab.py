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
        router = lab.add_router("r1")       # wan 10.231.X.1, its LAN 10.232.X.0/24
        b = router.add_host("b")            # b.ip == "10.232.X.10", b.public_ip == "10.231.X.1"

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
(the child inherits the environment, so PYTHONPATH reaches the checkout's `pyrsia`
and `tests` packages); `host.run(...)` waits for it. The lab tracks what `popen`
started and kills it on exit.

Teardown (also when a test fails, or setup fails halfway): every process still in a
lab namespace is killed (a namespace with a process in it outlives `ip netns del`,
and its veth with it), then every namespace is deleted, the switch last.

Routers: `lab.add_router(name, kind=...)` is a home router, a namespace whose `wan`
end is on the bridge at `.1`-`.9` (router `r` is `.(1+r)`) and whose `lan` bridge is
`.1` of a private /24 of its own, `10.(232+r).X.0/24`; `router.add_host(name)` puts a
host on that LAN (`.(10+i)`, default route via the router) with the `LabHost` API
plus `public_ip`, the router's `wan` address. The router masquerades what leaves by
`wan`, either keeping the source port when it is free ("preserving", as most home
routers do) or choosing a random one for every new mapping ("random",
`--random-fully`, symmetric-like), and drops, never rejects, whatever arrives on
`wan` that is not part of a connection the LAN opened: an unsolicited SYN gets no
answer, the peer's connect times out. A reset would also end the conntrack entry a
simultaneous open relies on. Every other machine on the segment (public hosts and
the other routers) routes each router's LAN through its `wan`, so what stops an
inbound connection to a LAN address is the router's DROP, never a missing route.
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
from typing import Literal

SUBNET_BLOCK = "10.231"  # the lab's /24s are 10.231.X.0/24, X in 0..255
PREFIX_LEN = 24
HOST_OFFSET = 10  # host i is .(10+i); .1-.9 stay free for routers
HOSTS_MAX = 240
NAMESPACE_PREFIX = "pyrsia-lab"
BRIDGE = "br0"
TOOLS = ("ip", "nsenter")
ROUTERS_MAX = 9  # wan addresses .1-.9, below the hosts
LAN_BLOCK_FIRST = 232  # router r's LAN is 10.(232+r).X.0/24
ROUTER_TOOLS = ("iptables",)
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


RouterKind = Literal["preserving", "random"]
ROUTER_KINDS: tuple[RouterKind, ...] = ("preserving", "random")


@dataclass(frozen=True, slots=True, kw_only=True)
class NatHost(LabHost):
    """A host on a router's LAN: `ip` is its private address, `public_ip` the router's."""

    router: LabRouter = field(repr=False, compare=False)

    @property
    def public_ip(self) -> str:
        """The source address every machine beyond the router sees from this host."""
        return self.router.wan_ip


class LabRouter:
    """A home router: `wan` on the lab's bridge, a `lan` bridge for the hosts behind it.

    Made by `Lab.add_router`; its namespace is the lab's, so the lab's teardown deletes it.
    """

    def __init__(self, *, lab: Lab, name: str, number: int, kind: RouterKind) -> None:
        self.name = name
        self.number = number  # r: wan .(1+r), LAN 10.(232+r).X.0/24
        self.kind = kind
        self.namespace = f"{lab.switch}-{name}"
        self.wan_ip = f"{SUBNET_BLOCK}.{lab.index}.{1 + number}"
        self.lan_ip = f"10.{LAN_BLOCK_FIRST + number}.{lab.index}.1"
        self.lan_subnet = f"10.{LAN_BLOCK_FIRST + number}.{lab.index}.0/{PREFIX_LEN}"
        self.hosts: dict[str, NatHost] = {}
        self._lab = lab

    def __repr__(self) -> str:
        return f"LabRouter(name={self.name!r}, kind={self.kind!r}, wan_ip={self.wan_ip!r})"

    @property
    def prefix(self) -> list[str]:
        """argv that runs the rest of a command inside the router (iptables, conntrack)."""
        return ["nsenter", f"--net={NETNS_DIR / self.namespace}"]

    def run(self, *argv: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
        """Runs argv inside the router and waits; output captured as text."""
        return subprocess.run([*self.prefix, *argv], capture_output=True, text=True, timeout=timeout_s)

    def _must(self, *argv: str) -> None:
        result = self.run(*argv, timeout_s=30)
        if result.returncode != 0:
            raise LabError(f"{' '.join(argv)} in router {self.name}: {result.stderr.strip()}")

    def setup(self) -> None:
        """wan on the bridge, the lan bridge, forwarding, MASQUERADE and the inbound DROP."""
        lab = self._lab
        _ip("-n", self.namespace, "link", "set", "lo", "up")
        port = f"r{self.number}"  # the switch side
        peer = ("peer", "name", "wan", "netns", self.namespace)  # made inside the router, never in root
        _ip("-n", lab.switch, "link", "add", port, "type", "veth", *peer)
        _ip("-n", lab.switch, "link", "set", port, "master", BRIDGE)
        _ip("-n", lab.switch, "link", "set", port, "up")
        _ip("-n", self.namespace, "addr", "add", f"{self.wan_ip}/{PREFIX_LEN}", "dev", "wan")
        _ip("-n", self.namespace, "link", "set", "wan", "up")
        _ip("-n", self.namespace, "link", "add", "lan", "type", "bridge")
        _ip("-n", self.namespace, "addr", "add", f"{self.lan_ip}/{PREFIX_LEN}", "dev", "lan")
        _ip("-n", self.namespace, "link", "set", "lan", "up")
        # /proc/sys/net is the opener's namespace: this turns forwarding on in the router only.
        self._must("sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward")
        # Linux's SNAT keeps the source port unless that mapping is taken; --random-fully
        # draws one for every new connection, so each peer sees another port.
        random_port = ["--random-fully"] if self.kind == "random" else []
        masquerade = ("-t", "nat", "-A", "POSTROUTING", "-o", "wan", "-j", "MASQUERADE", *random_port)
        self._must("iptables", *masquerade)
        # DROP, not REJECT: a home router stays silent, and a RST would delete the conntrack
        # entry the LAN host's own outgoing SYN made, which a simultaneous open needs.
        unsolicited = ["-i", "wan", "-m", "conntrack", "!", "--ctstate", "ESTABLISHED,RELATED", "-j", "DROP"]
        self._must("iptables", "-A", "FORWARD", "-o", "lan", *unsolicited)
        self._must("iptables", "-A", "INPUT", *unsolicited)

    def route_from(self, namespace: str) -> None:
        """Another machine on the bridge sends packets for this LAN to the router's wan."""
        _ip("-n", namespace, "route", "add", self.lan_subnet, "via", self.wan_ip)

    def add_host(self, name: str) -> NatHost:
        """A new namespace on the router's LAN, its default route via the router."""
        lab = self._lab
        lab.check_name(name)
        if len(self.hosts) >= HOSTS_MAX:
            raise LabError(f"router {self.name} is full")
        number = len(self.hosts)
        namespace = f"{lab.switch}-{name}"
        _ip("netns", "add", namespace)
        lab.adopt(namespace)
        port = f"l{number}"  # the router side, enslaved to its lan bridge
        peer = ("peer", "name", "eth0", "netns", namespace)
        _ip("-n", self.namespace, "link", "add", port, "type", "veth", *peer)
        _ip("-n", self.namespace, "link", "set", port, "master", "lan")
        _ip("-n", self.namespace, "link", "set", port, "up")
        address = f"10.{LAN_BLOCK_FIRST + self.number}.{lab.index}.{HOST_OFFSET + number}"
        _ip("-n", namespace, "link", "set", "lo", "up")
        _ip("-n", namespace, "addr", "add", f"{address}/{PREFIX_LEN}", "dev", "eth0")
        _ip("-n", namespace, "link", "set", "eth0", "up")
        _ip("-n", namespace, "route", "add", "default", "via", self.lan_ip)
        host = NatHost(
            name=name, namespace=namespace, ip=address, prefix_len=PREFIX_LEN, _lab=lab, router=self
        )
        self.hosts[name] = host
        return host


class Lab:
    """A switch namespace with a bridge; `add_host` plugs a new host into it."""

    def __init__(self) -> None:
        self.index = -1  # X of 10.231.X.0/24, claimed on enter
        self.hosts: dict[str, LabHost] = {}  # on the bridge; hosts behind a router are its own
        self.routers: dict[str, LabRouter] = {}
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
        for router in self.routers.values():
            router.route_from(namespace)
        self.hosts[name] = host
        return host

    def add_router(self, name: str, kind: RouterKind = "preserving") -> LabRouter:
        """A new router namespace `pyrsia-lab<X>-<name>`; `router.add_host` fills its LAN."""
        if kind not in ROUTER_KINDS:
            raise LabError(f"router kind {kind!r} is not one of {', '.join(ROUTER_KINDS)}")
        self.check_name(name)
        if len(self.routers) >= ROUTERS_MAX:
            raise LabError(f"a lab has at most {ROUTERS_MAX} routers (.1-.{ROUTERS_MAX} of the subnet)")
        require_tools(*ROUTER_TOOLS)
        router = LabRouter(lab=self, name=name, number=len(self.routers), kind=kind)
        _ip("netns", "add", router.namespace)
        self.adopt(router.namespace)
        router.setup()
        for other in self.routers.values():
            other.route_from(router.namespace)
            router.route_from(other.namespace)
        for host in self.hosts.values():
            router.route_from(host.namespace)
        self.routers[name] = router
        return router

    def check_name(self, name: str) -> None:
        """A router's or a host's name: alphanumeric, not taken by any machine of the lab."""
        if self.index < 0:
            raise LabError("routers and hosts are made inside `with Lab()`")
        behind = {host for router in self.routers.values() for host in router.hosts}
        if not name.isalnum() or name in self.hosts or name in self.routers or name in behind:
            raise LabError(f"name {name!r} is taken or not alphanumeric")

    def adopt(self, namespace: str) -> None:
        """From here on, teardown kills what runs in `namespace` and deletes it."""
        self._namespaces.append(namespace)

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
