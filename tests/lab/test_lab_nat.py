"""Home routers in the lab: outbound works, inbound is dropped, hole punching needs a kept port.

One lab for the module: a public host `pub` (a rendezvous server), two routers that
keep source ports (`r1`, `r2`) and one that draws a random port per connection (`r3`),
one host behind each. Plain sockets show what the routers do: a host behind a router
reaches `pub` and `pub` sees the router's wan address; `pub` cannot open a connection
to a host behind a router, by its LAN address or the router's, because the router
drops the SYN (connect times out; a refusal would mean a RST, which would also break
hole punching). Two hosts that learned each other's mapped address from the
rendezvous and connect at once from their listening port (TCP simultaneous open, what
DCUtR does) get through two port-keeping routers nearly always, and through the
random-port router almost never: the port the rendezvous saw is not the one the
router uses towards the other host.

Then pyrsia itself: a daemon behind `r1` listening on 0.0.0.0 joins a public daemon
and pulls an image only the public daemon's upstream holds, while the public daemon's
own dial to the NATed node's addresses fails.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import images
from tests.support.lab import NETNS_DIR, Lab, LabError, LabHost, LabRouter, NatHost, require_tools
from tests.support.node import NodeProcess
from tests.support.registry import RegistryProcess

pytestmark = pytest.mark.lab

RENDEZVOUS_PORT = 7000
LISTEN_PORT = 9100  # the unsolicited-inbound probe's target
PROBE_S = 2.0  # a dropped SYN: connect gives up after this
PUNCH_TRIES = 20
PUNCH_TRIES_RANDOM = 6  # each failure costs a whole PUNCH_S
PUNCH_S = 2.0  # one try: rendezvous, then connect attempts until this much time is spent
PUNCH_ATTEMPTS_MAX = 3
PUNCH_SUCCESSES_MIN = 18  # of PUNCH_TRIES, through two port-keeping routers
TRY_S_MAX = 20.0  # a peer process that runs longer than this is hung
P2P_PORT = 44000
ROOT_FORWARDING = Path("/proc/sys/net/ipv4/ip_forward")  # read by the test, in the root namespace
IMAGE = images.three_layer(name="lab/behind-nat", tag="1.0")

# The source address a connection arrived from, sent back to the client.
ECHO_SOURCE = """
import socket, sys
server = socket.create_server(("0.0.0.0", int(sys.argv[1])))
server.settimeout(float(sys.argv[2]))
print("listening", flush=True)
conn, (peer, _) = server.accept()
conn.sendall(peer.encode())
conn.close()
"""
CLIENT = """
import socket, sys
with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5) as conn:
    print(conn.recv(100).decode())
"""
# The target of the inbound probes: a few connections, or an idle minute, then it ends.
LISTENER = """
import socket, sys
server = socket.create_server(("0.0.0.0", int(sys.argv[1])))
server.settimeout(60)
print("listening", flush=True)
for _ in range(16):
    conn, _ = server.accept()
    conn.close()
"""
# One connect; prints how it ended: connected, TimeoutError, ConnectionRefusedError, ...
PROBE = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3])).close()
    print("connected")
except OSError as exc:
    print(type(exc).__name__)
"""
# Pairs two clients that send the same key; tells each "<own observed> <peer's observed>".
RENDEZVOUS = """
import socket, sys, threading
PENDING_MAX = 64
pending = {}
lock = threading.Lock()

def serve(conn, observed):
    conn.settimeout(30)
    stream = conn.makefile("rw")
    key = stream.readline().strip()
    with lock:
        other = pending.pop(key, None)
        if other is None and len(pending) < PENDING_MAX:
            pending[key] = (stream, observed)
    if other is not None:
        other_stream, other_observed = other
        for out, me, them in ((other_stream, other_observed, observed), (stream, observed, other_observed)):
            out.write("%s:%d %s:%d\\n" % (*me, *them))
            out.flush()
    stream.readline()  # held open until the client leaves: its mapping stays in use

server = socket.create_server(("0.0.0.0", int(sys.argv[1])))
server.settimeout(300)  # idle that long: the module is long over
print("listening", flush=True)
for _ in range(1000):  # the module makes 2 * (PUNCH_TRIES + PUNCH_TRIES_RANDOM)
    conn, observed = server.accept()
    threading.Thread(target=serve, args=(conn, observed), daemon=True).start()
"""
# One side of a simultaneous open: listen on PORT, learn the peer's mapped address from
# the rendezvous (from PORT too, so the router maps that port), connect from PORT.
PUNCH = """
import json, socket, sys, time
rendezvous_ip, rendezvous_port, key, port, budget_s, attempts_max = sys.argv[1:]
port, attempts_max = int(port), int(attempts_max)

def bound():
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("0.0.0.0", port))
    return sock

listener = bound()
listener.listen(8)
rendezvous = bound()
rendezvous.settimeout(15)
rendezvous.connect((rendezvous_ip, int(rendezvous_port)))
rendezvous.sendall(key.encode() + b"\\n")
own, peer = rendezvous.makefile().readline().split()
peer_ip, peer_port = peer.rsplit(":", 1)
deadline = time.monotonic() + float(budget_s)
result = {"ok": False, "own": own, "peer": peer, "errors": []}
for attempt in range(attempts_max):
    left = deadline - time.monotonic()
    if left <= 0:
        break
    sock = bound()
    sock.settimeout(left)
    try:
        sock.connect((peer_ip, int(peer_port)))
        sock.sendall(key.encode() + b"\\n")
        heard = sock.makefile().readline().strip()
        result.update(ok=heard == key, heard=heard, attempt=attempt + 1)
        break
    except OSError as exc:
        result["errors"].append(type(exc).__name__)
    finally:
        sock.close()
print(json.dumps(result), flush=True)
"""


@dataclass(frozen=True, slots=True, kw_only=True)
class NatLab:
    lab: Lab
    pub: LabHost
    routers: dict[str, LabRouter]
    behind: dict[str, NatHost]  # h1 behind r1, h2 behind r2, h3 behind r3


@pytest.fixture(scope="module")
def nat() -> Iterator[NatLab]:
    require_tools("iptables")
    with Lab() as lab:
        pub = lab.add_host("pub")
        r1, r2 = lab.add_router("r1"), lab.add_router("r2", kind="preserving")
        r3 = lab.add_router("r3", kind="random")
        behind = {f"h{i}": router.add_host(f"h{i}") for i, router in enumerate((r1, r2, r3), start=1)}
        started(pub, RENDEZVOUS, str(RENDEZVOUS_PORT))
        yield NatLab(lab=lab, pub=pub, routers={"r1": r1, "r2": r2, "r3": r3}, behind=behind)


def started(host: LabHost, script: str, *args: str) -> subprocess.Popen[bytes]:
    """`script` running on `host` once it printed "listening"; the lab kills it on exit."""
    process = host.popen([sys.executable, "-c", script, *args], stdout=subprocess.PIPE)
    assert process.stdout is not None and process.stdout.readline() == b"listening\n"
    return process


def source_seen_by(server: LabHost, client: LabHost, port: int) -> str:
    """A connection from `client` to `server`: the source address the server saw."""
    listening = started(server, ECHO_SOURCE, str(port), "30")
    answer = client.run(sys.executable, "-c", CLIENT, server.ip, str(port), timeout_s=30)
    assert answer.returncode == 0, answer.stderr
    assert listening.wait(timeout=30) == 0
    return answer.stdout.strip()


def probe(run: subprocess.CompletedProcess[str]) -> str:
    assert run.returncode == 0, run.stderr
    return run.stdout.strip()


def test_routers_have_their_own_lan_and_a_wan_address_below_the_hosts(nat: NatLab) -> None:
    r1, r3 = nat.routers["r1"], nat.routers["r3"]
    h1, h3 = nat.behind["h1"], nat.behind["h3"]
    assert r1.wan_ip.rsplit(".", 1)[0] == nat.pub.ip.rsplit(".", 1)[0]  # same segment
    assert int(r1.wan_ip.rsplit(".", 1)[1]) < 10 and int(r3.wan_ip.rsplit(".", 1)[1]) < 10
    assert h1.public_ip == r1.wan_ip and h3.public_ip == r3.wan_ip
    assert h1.ip.rsplit(".", 1)[0] != h3.ip.rsplit(".", 1)[0]  # one LAN per router
    assert "default via " + r1.lan_ip in h1.run("ip", "route").stdout
    masquerade = r3.run("iptables", "-t", "nat", "-S", "POSTROUTING").stdout
    assert "--random-fully" in masquerade
    assert "--random-fully" not in r1.run("iptables", "-t", "nat", "-S", "POSTROUTING").stdout
    with pytest.raises(LabError, match="taken"):
        r1.add_host("pub")


@pytest.mark.parametrize("name", ["h1", "h2", "h3"])
def test_a_host_behind_a_router_reaches_a_public_host_from_the_routers_address(
    nat: NatLab, name: str
) -> None:
    host = nat.behind[name]
    assert source_seen_by(nat.pub, host, 9000) == host.public_ip != host.ip


@pytest.mark.parametrize("name", ["h1", "h3"])
def test_a_public_host_cannot_open_a_connection_to_a_host_behind_a_router(nat: NatLab, name: str) -> None:
    host = nat.behind[name]
    started(host, LISTENER, str(LISTEN_PORT))
    port, budget = str(LISTEN_PORT), str(PROBE_S)
    # The listener is up: from the router, which is on the LAN, it answers.
    assert probe(host.router.run(sys.executable, "-c", PROBE, host.ip, port, budget)) == "connected"
    # From the segment, by the LAN address (routed to the router) and by the router's
    # own: the SYN is dropped, so connect times out; a refusal would mean a RST.
    by_lan = probe(nat.pub.run(sys.executable, "-c", PROBE, host.ip, port, budget))
    by_wan = probe(nat.pub.run(sys.executable, "-c", PROBE, host.public_ip, port, budget))
    assert (by_lan, by_wan) == ("TimeoutError", "TimeoutError")


def punch(nat: NatLab, a: NatHost, b: NatHost, key: str, port: int) -> tuple[dict[str, object], ...]:
    """One simultaneous-open try between `a` and `b`, both on local `port`: both reports."""
    argv = [nat.pub.ip, str(RENDEZVOUS_PORT), key, str(port), str(PUNCH_S), str(PUNCH_ATTEMPTS_MAX)]
    sides = [host.popen([sys.executable, "-c", PUNCH, *argv], stdout=subprocess.PIPE) for host in (a, b)]
    reports = []
    for side in sides:
        out, _ = side.communicate(timeout=TRY_S_MAX)
        assert side.returncode == 0, f"a punching side crashed (key {key})"
        reports.append(json.loads(out))
    return tuple(reports)


def punch_tries(
    nat: NatLab, a: NatHost, b: NatHost, tries: int, port_base: int
) -> list[tuple[dict[str, object], ...]]:
    return [punch(nat, a, b, f"{a.name}-{b.name}-{t}", port_base + t) for t in range(tries)]


def test_simultaneous_open_gets_through_port_keeping_routers_and_not_a_random_one(nat: NatLab) -> None:
    h1, h2, h3 = (nat.behind[name] for name in ("h1", "h2", "h3"))
    kept = punch_tries(nat, h1, h2, PUNCH_TRIES, 41000)
    scrambled = punch_tries(nat, h1, h3, PUNCH_TRIES_RANDOM, 42000)

    # What the rendezvous saw: the routers' addresses; r1 and r2 kept every port, r3 did not.
    for t, (one, two) in enumerate(kept):
        assert (one["own"], two["own"]) == (f"{h1.public_ip}:{41000 + t}", f"{h2.public_ip}:{41000 + t}")
    random_ports = [str(three["own"]) for _, three in scrambled]
    assert all(own.startswith(h3.public_ip + ":") for own in random_ports)
    remapped = [own for t, own in enumerate(random_ports) if own != f"{h3.public_ip}:{42000 + t}"]
    assert len(remapped) > len(random_ports) // 2, random_ports

    kept_ok = sum(1 for reports in kept if all(r["ok"] for r in reports))
    scrambled_ok = sum(1 for reports in scrambled if all(r["ok"] for r in reports))
    assert kept_ok >= PUNCH_SUCCESSES_MIN, f"{kept_ok}/{PUNCH_TRIES}: {kept}"
    assert scrambled_ok < PUNCH_TRIES_RANDOM // 2, f"{scrambled_ok}/{PUNCH_TRIES_RANDOM}: {scrambled}"


def test_a_pyrsia_node_behind_a_router_pulls_from_a_public_node_that_cannot_dial_it(
    nat: NatLab, tmp_path: Path
) -> None:
    require_tools("docker-registry")
    storage = tmp_path / "upstream"
    with RegistryProcess(storage) as seeding:  # on the test's loopback, then served inside `up`
        images.push(seeding.url, IMAGE)
    public = nat.lab.add_host("up")
    behind = nat.routers["r1"].add_host("n")
    with ExitStack() as stack:
        upstream = stack.enter_context(RegistryProcess(storage, prefix=public.prefix))
        authority = stack.enter_context(
            NodeProcess(
                tmp_path / "a",
                "--p2p-host",
                "0.0.0.0",
                "--p2p-port",
                str(P2P_PORT),
                "--docker-upstream",
                upstream.url,
                command=public.pyrsia_command(),
            )
        )
        authority_id = authority.p2p_address.rsplit("/p2p/", 1)[1]
        node = stack.enter_context(
            NodeProcess(
                tmp_path / "n",
                "--p2p-host",
                "0.0.0.0",
                "--p2p-port",
                str(P2P_PORT),
                "--bootstrap",
                public.multiaddr(P2P_PORT, authority_id),
                "--request-timeout",
                "60",
                command=behind.pyrsia_command(),
            )
        )
        node_id = node.p2p_address.rsplit("/p2p/", 1)[1]

        # Outbound works: the NATed node joined, pulls through its own HTTP port an image
        # only the authority's upstream holds, and the authority sees it at r1's address.
        out = tmp_path / "pulled"
        pulled = behind.pyrsia(
            "pull",
            "image",
            IMAGE.reference,
            "--output",
            str(out),
            "--json",
            "--node",
            node.url,
            timeout_s=120,
        )
        assert pulled.returncode == 0, f"{pulled.stderr}\n--- n:\n{node.output()[-4000:]}"
        assert json.loads(pulled.stdout)["manifest_digest"] == IMAGE.top
        listed = authority_cli(public, authority, "peers")
        seen = {p["peer_id"]: p["address"] for p in listed}
        assert seen.get(node_id, "").startswith(f"/ip4/{behind.public_ip}/tcp/"), seen

        # Inbound does not: the authority's own dials (no /p2p/ suffix, so the live
        # outbound connection from n is not reused) to n's LAN address and to the
        # router's address on n's port both fail.
        for address in (behind.multiaddr(P2P_PORT), f"/ip4/{behind.public_ip}/tcp/{P2P_PORT}"):
            dialled = public.pyrsia("ping", address, "--json", "--node", authority.url, timeout_s=60)
            assert dialled.returncode != 0, f"the authority reached {address}: {dialled.stdout}"
            # Timed out, as a dropped SYN makes it: not refused, not a usage error.
            assert "took longer than" in dialled.stderr, dialled.stderr


def authority_cli(host: LabHost, process: NodeProcess, *args: str) -> list[dict[str, str]]:
    result = host.pyrsia(*args, "--json", "--node", process.url)
    assert result.returncode == 0, result.stderr
    found: list[dict[str, str]] = json.loads(result.stdout)
    return found


def lab_links_in_root() -> list[str]:
    """Links of the root namespace named like a router's or its switch port or LAN ports."""
    shown = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True)
    names = (line.split(":")[1].strip().split("@")[0] for line in shown.stdout.splitlines())
    return sorted(name for name in names if re.fullmatch(r"[rl]\d+|wan|lan|br0", name))


def root_rules_on_wan() -> list[str]:
    saved = subprocess.run(["iptables-save"], capture_output=True, text=True, check=True)
    return [line for line in saved.stdout.splitlines() if "wan" in line]


def test_routers_and_their_hosts_leave_nothing_behind_also_after_a_failed_setup() -> None:
    forwarding = ROOT_FORWARDING.read_text()  # the root namespace's, never a router's
    with pytest.raises(RuntimeError, match="the test failed"), Lab() as lab:
        router = lab.add_router("r1")
        host = router.add_host("h1")
        untracked = subprocess.Popen([*host.prefix, "sleep", "600"])  # as NodeProcess starts one
        in_router = subprocess.Popen([*router.prefix, "sleep", "600"])
        # The switch port the next router would take exists already: its veth cannot be made.
        squat = subprocess.run(["ip", "-n", lab.switch, "link", "add", "r1", "type", "bridge"], check=False)
        assert squat.returncode == 0
        with pytest.raises(LabError, match="veth"):
            lab.add_router("r2", kind="random")
        with pytest.raises(LabError, match="kind"):
            lab.add_router("r3", kind="symmetric")  # type: ignore[arg-type]
        names = sorted(p.name for p in NETNS_DIR.glob(f"{lab.switch}*"))
        assert {f"{lab.switch}-{name}" for name in ("r1", "h1", "r2")} <= set(names)
        raise RuntimeError("the test failed")
    assert untracked.wait(timeout=10) != 0 and in_router.wait(timeout=10) != 0
    assert not any((NETNS_DIR / name).exists() for name in names)
    assert not lab_links_in_root()
    assert not root_rules_on_wan()
    assert ROOT_FORWARDING.read_text() == forwarding
