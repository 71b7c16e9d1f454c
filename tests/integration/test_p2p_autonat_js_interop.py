"""AutoNAT between pyrsia Hosts and real js-libp2p 3.2 nodes, v1 and v2, both directions.

js-libp2p's `@libp2p/autonat` speaks AutoNAT v1 (`/libp2p/autonat/1.0.0`) and
`@libp2p/autonat-v2` speaks v2; both refuse to dial or test private and loopback
addresses, so every node here is a machine of its own: a network namespace whose one
interface sits on a /24 of public-looking addresses (20.0.0.0/24, 21.0.0.0/24, …,
nothing outside these namespaces routes them), all joined by a router namespace. The
pyrsia Host runs in this process with its sockets in its namespace (`_inside`); each js
node runs under `nsenter`. "Not reachable" is a machine whose listen port answers every
new inbound connection with a reset (iptables REJECT), while its own dials still go out.

* js asks pyrsia: the js services ask on their own once they meet pyrsia; a reachable js
  node's listen address comes out verified, an unreachable one's tally gets a failure.
  v1 is also asked by hand (js-libp2p's own message codec), which shows the exact answer.
* pyrsia asks js: three js servers, each in a /24 of its own (the tally counts a network
  once), give pyrsia's reachability "auto" its 3 agreeing answers: public, or private.
  js-libp2p's v1 server dials through `openConnection`, which hands back the connection it
  already has to the requester, and answers OK only when that connection's remote address
  is the one asked about; so the js nodes dial pyrsia there (the way a peer that found
  pyrsia in the DHT would), and a connection pyrsia dialled from an ephemeral port would
  read as "unreachable" whatever the truth.

Needs root (namespaces, iptables), node and the pinned npm packages.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from pyrsia.p2p.behaviours.autonat import messages as v2
from pyrsia.p2p.behaviours.autonat import v1
from pyrsia.p2p.identity import Identity
from pyrsia.p2p.swarm.host import Host, HostConfig
from tests.integration.test_p2p_js_interop import TIMEOUT_S, JsNode
from tests.support.wait import eventually

pytestmark = pytest.mark.lab  # namespaces and iptables: needs root, and fails without it

CLONE_NEWNET = 0x40000000
VERDICT_S = 90.0  # js asks on identify; pyrsia's rounds come every 5 s: room under load
_libc = ctypes.CDLL(None, use_errno=True)


@contextlib.contextmanager
def _inside(namespace: str) -> Iterator[None]:
    """This thread in `namespace`; threads it starts meanwhile stay there for good."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{namespace}", os.O_RDONLY)
    try:
        if _libc.setns(target, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {namespace}")
        try:
            yield
        finally:
            if _libc.setns(home, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back home")
    finally:
        os.close(home)
        os.close(target)


def _run(*argv: str) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, f"{' '.join(argv)}: {result.stderr.strip()}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Machine:
    namespace: str
    ip: str

    @property
    def prefix(self) -> list[str]:
        return ["nsenter", f"--net=/run/netns/{self.namespace}"]

    def refuse_inbound(self, port: int) -> None:
        """New connections to `port` get a reset; replies to our own dials still come in."""
        rule = ["-p", "tcp", "--dport", str(port), "--syn", "-j", "REJECT", "--reject-with", "tcp-reset"]
        _run(*self.prefix, "iptables", "-A", "INPUT", *rule)


class Net:
    """A router namespace and one namespace per machine, machine i on (20+i).0.0.0/24."""

    def __init__(self) -> None:
        self.tag = f"pyan{os.getpid()}"
        self.router = f"{self.tag}r"
        self.namespaces: list[str] = []
        self.machines: list[Machine] = []
        self.stops: list[Any] = []

    def __enter__(self) -> Net:
        assert os.geteuid() == 0, "network namespaces need root"
        for tool in ("ip", "nsenter", "iptables"):
            assert shutil.which(tool), f"{tool} is missing"
        _run("ip", "netns", "add", self.router)
        self.namespaces.append(self.router)
        _run("ip", "-n", self.router, "link", "set", "lo", "up")
        _run(
            "nsenter", f"--net=/run/netns/{self.router}", "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"
        )
        return self

    def machine(self) -> Machine:
        i = len(self.machines)
        namespace = f"{self.tag}m{i}"
        _run("ip", "netns", "add", namespace)
        self.namespaces.append(namespace)
        net = f"{20 + i}.0.0"
        _run(
            "ip",
            "-n",
            self.router,
            "link",
            "add",
            f"v{i}",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            namespace,
        )
        _run("ip", "-n", self.router, "addr", "add", f"{net}.1/24", "dev", f"v{i}")
        _run("ip", "-n", self.router, "link", "set", f"v{i}", "up")
        _run("ip", "-n", namespace, "link", "set", "lo", "up")
        _run("ip", "-n", namespace, "addr", "add", f"{net}.2/24", "dev", "eth0")
        _run("ip", "-n", namespace, "link", "set", "eth0", "up")
        _run("ip", "-n", namespace, "route", "add", "default", "via", f"{net}.1")
        machine = Machine(namespace=namespace, ip=f"{net}.2")
        self.machines.append(machine)
        return machine

    def js(self, machine: Machine, *flags: str) -> JsNode:
        node = JsNode(f"--listen={machine.ip}", *flags, prefix=machine.prefix)
        self.stops.append(node)
        return node

    def host(self, machine: Machine, **changes: Any) -> Host:
        settings: dict[str, Any] = {"relay_service": False, "hole_punching": False, **changes}
        config = HostConfig(listen_host=machine.ip, listen_port=0, **settings)
        host = Host(Identity.from_seed(os.urandom(32)), config)
        with _inside(machine.namespace):
            host.start()  # its listener and its selector thread, which makes every dial
        self.stops.append(host)
        return host

    def __exit__(self, *exc: object) -> None:
        for node in reversed(self.stops):
            with contextlib.suppress(Exception):
                node.stop()
        for namespace in reversed(self.namespaces):
            listed = subprocess.run(
                ["ip", "netns", "pids", namespace], capture_output=True, text=True, timeout=30
            )
            for pid in listed.stdout.split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True, timeout=30)


@pytest.fixture
def net() -> Iterator[Net]:
    with Net() as lab:
        yield lab


def _listen(host: Host) -> str:
    return str(host.listen_addrs[0].with_peer(host.peer_id))


def _js_addr(js: JsNode) -> str:
    """js's listen address (js advertises a public one only once AutoNAT verified it)."""
    (addr,) = [a["addr"] for a in js.call("autonat")["addrs"] if a["type"] == "transport"]
    return str(addr)


def _port(addr: str) -> int:
    return int(addr.split("/tcp/")[1].split("/")[0])


def _autonat(js: JsNode, version: str, addr: str) -> tuple[bool, dict[str, int] | None]:
    """Whether js counts `addr` verified, and its tally for it (None once decided or never asked)."""
    state = js.call("autonat")
    (verified,) = [a["verified"] for a in state["addrs"] if a["addr"] == addr]
    tally = [r for r in state[version] if r["addr"] == addr]
    return verified, (tally[0] if tally else None)


# 1. A js node asks pyrsia to dial it back.


@pytest.mark.parametrize(("flag", "version"), [("--autonat", "v1"), ("--autonat-v2", "v2")])
def test_pyrsia_confirms_a_reachable_js_node(net: Net, flag: str, version: str) -> None:
    server = net.host(net.machine())
    js = net.js(net.machine(), flag)
    addr = _js_addr(js)
    assert _autonat(js, version, addr) == (False, None)  # a public address, never tested
    assert js.call("dial", addr=_listen(server))["peer"] == server.peer_id
    eventually(
        lambda: _autonat(js, version, addr)[0], lambda: f"js: {js.call('autonat')}", within_s=VERDICT_S
    )
    if version == "v1":  # the answer itself, by js-libp2p's codec
        answer = js.call("autonatV1Dial", peer=server.peer_id, addrs=[addr])
        assert (answer["type"], answer["status"], answer["addr"]) == ("DIAL_RESPONSE", "OK", addr), answer


@pytest.mark.parametrize(("flag", "version"), [("--autonat", "v1"), ("--autonat-v2", "v2")])
def test_pyrsia_reports_an_unreachable_js_node(net: Net, flag: str, version: str) -> None:
    server = net.host(net.machine())
    machine = net.machine()
    js = net.js(machine, flag)
    addr = _js_addr(js)
    machine.refuse_inbound(_port(addr))
    assert js.call("dial", addr=_listen(server))["peer"] == server.peer_id

    def failed_once() -> bool:
        verified, tally = _autonat(js, version, addr)
        return not verified and tally is not None and (tally["success"], tally["failure"]) == (0, 1)

    eventually(failed_once, lambda: f"js: {js.call('autonat')}", within_s=VERDICT_S)
    if version == "v1":
        answer = js.call("autonatV1Dial", peer=server.peer_id, addrs=[addr])
        assert (answer["status"], answer["addr"]) == ("E_DIAL_ERROR", addr), answer


def test_pyrsia_refuses_to_dial_another_ip_for_a_js_node(net: Net) -> None:
    server = net.host(net.machine())
    js = net.js(net.machine())
    js.call("dial", addr=_listen(server))
    elsewhere = "/ip4/20.0.0.77/tcp/4001"  # not the IP js connects from: the spec's amplification rule
    answer = js.call("autonatV1Dial", peer=server.peer_id, addrs=[elsewhere])
    assert answer["status"] == "E_DIAL_REFUSED", answer
    assert server.stats().refusals["autonat_v1_no_dialable_address"] == 1


# 2. pyrsia asks js servers to dial it back.


def _servers(net: Net, flag: str) -> list[JsNode]:
    return [net.js(net.machine(), flag) for _ in range(3)]


def _await(host: Host, reachability: str) -> None:
    eventually(
        lambda: host.stats().reachability == reachability,
        lambda: f"{host.stats()}",
        within_s=VERDICT_S,
        every_s=0.2,
    )


def test_js_v2_servers_find_pyrsia_public(net: Net) -> None:
    node = net.host(net.machine(), reachability="auto")
    servers = _servers(net, "--autonat-v2")
    assert node.stats().reachability == "unknown"
    for js in servers:
        assert node.connect(f"{_js_addr(js)}/p2p/{js.peer_id}", timeout=TIMEOUT_S) == js.peer_id
        assert v2.DIAL_REQUEST_PROTOCOL in node.wait_identified(js.peer_id, timeout=TIMEOUT_S).protocols
    _await(node, "public")
    assert node._autonat_client.status(node.listen_addrs[0]) == "reachable"


def test_js_v2_servers_find_pyrsia_private(net: Net) -> None:
    machine = net.machine()
    node = net.host(machine, reachability="auto")
    machine.refuse_inbound(node.listen_port)
    servers = _servers(net, "--autonat-v2")
    for js in servers:
        assert node.connect(f"{_js_addr(js)}/p2p/{js.peer_id}", timeout=TIMEOUT_S) == js.peer_id
        assert v2.DIAL_REQUEST_PROTOCOL in node.wait_identified(js.peer_id, timeout=TIMEOUT_S).protocols
    _await(node, "private")
    assert node._autonat_client.status(node.listen_addrs[0]) == "unreachable"


# js-libp2p's v1 server (@libp2p/autonat 3.0.28) answers no client that is connected to it
# directly, js or pyrsia: `openConnection` hands back the requester's own connection, the
# `finally` after the dial closes it, and the answer is then written to a closed stream
# ("Cannot write to a stream that is closed" in its log). So pyrsia cannot get a v1 verdict
# from js; what these tests show is that pyrsia's request is one js reads and acts on (its
# log names pyrsia's peer id and address and the outcome of its dial), that pyrsia takes the
# lost answer as no verdict (and does not ask that server again for a day), and, as a
# control, that a js client fares no better.

V1_LOG = "DEBUG=libp2p:auto-nat*"


def _v1_server(net: Net) -> JsNode:
    machine = net.machine()
    node = JsNode(f"--listen={machine.ip}", "--autonat", prefix=[*machine.prefix, "env", V1_LOG])
    net.stops.append(node)
    return node


def _logged(js: JsNode, text: str) -> bool:
    return any(text in line for line in list(js._stderr))


def _no_v1_verdict(node: Host, js: JsNode) -> None:
    client = node._autonat_v1_client
    eventually(
        lambda: client.results["failed"] >= 1, lambda: f"v1 probes {client.results}", within_s=VERDICT_S
    )
    assert set(client.results) == {"failed"}, client.results
    assert node.stats().reachability == "unknown"
    assert not client.asks(js.peer_id, node._clock())  # not asked again: it would drop us again
    closed = "Cannot write to a stream that is closed"
    eventually(lambda: _logged(js, closed), lambda: "".join(js._stderr)[-2000:])


def test_a_js_v1_server_dials_a_reachable_pyrsia_but_never_answers(net: Net) -> None:
    node = net.host(net.machine(), reachability="auto")
    js = _v1_server(net)
    # js dials pyrsia's listen address, so the connection js hands back is the one asked about
    assert js.call("dial", addr=_listen(node))["peer"] == node.peer_id
    assert v1.PROTOCOL in node.wait_identified(js.peer_id, timeout=TIMEOUT_S).protocols
    dialled = f"successfully dialed {node.peer_id} via {_listen(node)}"
    eventually(lambda: _logged(js, dialled), lambda: "".join(js._stderr)[-2000:], within_s=VERDICT_S)
    _no_v1_verdict(node, js)


def test_a_js_v1_server_fails_to_dial_an_unreachable_pyrsia_and_never_answers(net: Net) -> None:
    machine = net.machine()
    node = net.host(machine, reachability="auto")
    machine.refuse_inbound(node.listen_port)
    js = _v1_server(net)
    assert node.connect(f"{_js_addr(js)}/p2p/{js.peer_id}", timeout=TIMEOUT_S) == js.peer_id
    assert v1.PROTOCOL in node.wait_identified(js.peer_id, timeout=TIMEOUT_S).protocols
    asked = f"dial multiaddrs {_listen(node)} for peer {node.peer_id}"
    eventually(lambda: _logged(js, asked), lambda: "".join(js._stderr)[-2000:], within_s=VERDICT_S)
    eventually(lambda: _logged(js, f"could not dial {node.peer_id}"), lambda: "".join(js._stderr)[-2000:])
    _no_v1_verdict(node, js)


def test_a_js_v1_server_answers_no_js_client_either(net: Net) -> None:
    server = _v1_server(net)
    client = net.js(net.machine())
    addr = _js_addr(client)
    assert client.call("dial", addr=f"{_js_addr(server)}/p2p/{server.peer_id}")["peer"] == server.peer_id
    with pytest.raises(AssertionError, match="stream closed while reading"):
        client.call("autonatV1Dial", peer=server.peer_id, addrs=[addr])
    eventually(lambda: _logged(server, "Cannot write to a stream that is closed"))
