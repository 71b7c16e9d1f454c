"""A one-authority network across four lab hosts: addresses must be ones peers can dial.

Authority A (its upstream, a CNCF docker-registry, on A's own loopback) and regular
nodes B, C, D run on four hosts of one bridge, every daemon on p2p port 44000 of all
interfaces with no announce setting. B and D join through A's bridge address, C
through B's only. Each node must advertise its bridge address and never a loopback
one, list no peer at a loopback address, and C, which never met A, must find A
through the DHT: with B stopped, podman inside C's host pulls an image only A's
upstream holds, through C's own HTTP port, and gets the upstream's digest.
"""

from __future__ import annotations

import ipaddress
import json
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support import images
from tests.support.lab import Lab, LabHost, require_tools
from tests.support.node import NodeProcess
from tests.support.registry import RegistryProcess

pytestmark = pytest.mark.lab

P2P_PORT = 44000
DEADLINE_S = 30.0
GATE_S = 15.0  # what a node learned at start-up is in place long before the tests run
IMAGE = images.three_layer(name="lab/only-upstream", tag="1.0")  # pulled only through C
ON_A = images.nested()  # pulled through A itself: the lab's own plumbing works


@dataclass(frozen=True, slots=True, kw_only=True)
class LabNode:
    """A daemon on a lab host; `multiaddr` is built from the host's bridge address."""

    name: str
    host: LabHost
    process: NodeProcess
    peer_id: str

    @property
    def multiaddr(self) -> str:
        return self.host.multiaddr(P2P_PORT, self.peer_id)

    def cli(self, *args: str) -> Any:
        """`pyrsia ARGS --json --node URL` inside the node's host, parsed."""
        result = self.host.pyrsia(*args, "--json", "--node", self.process.url)
        assert result.returncode == 0, f"pyrsia {' '.join(args)} on {self.name}:\n{result.stderr}"
        return json.loads(result.stdout)

    def status(self) -> dict[str, Any]:
        doc: dict[str, Any] = self.cli("status")
        return doc


@dataclass(frozen=True, slots=True, kw_only=True)
class Network:
    lab: Lab
    nodes: dict[str, LabNode]
    root: Path


def is_loopback(multiaddr: str) -> bool:
    parts = multiaddr.split("/")
    return len(parts) > 2 and parts[1] in ("ip4", "ip6") and ipaddress.ip_address(parts[2]).is_loopback


def eventually(
    condition: Callable[[], bool], what: str | Callable[[], str], within_s: float = DEADLINE_S
) -> None:
    """Polls `condition` until the deadline; `what` (or what it returns) explains a failure."""
    deadline = time.monotonic() + within_s
    while not condition():
        if time.monotonic() >= deadline:
            pytest.fail(f"not within {within_s:g} s: {what if isinstance(what, str) else what()}")
        time.sleep(0.2)


def p2p_log(node: LabNode) -> str:
    return "\n".join(line for line in node.process.output().splitlines() if "pyrsia.p2p" in line)[-3000:]


def start_node(stack: ExitStack, root: Path, host: LabHost, *flags: str) -> LabNode:
    process = NodeProcess(
        root / host.name,
        "--p2p-host",
        "0.0.0.0",
        "--p2p-port",
        str(P2P_PORT),
        *flags,
        command=host.pyrsia_command(),
    )
    stack.enter_context(process)
    peer_id = process.p2p_address.rsplit("/p2p/", 1)[1]
    return LabNode(name=host.name, host=host, process=process, peer_id=peer_id)


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Network]:
    require_tools("docker-registry", "podman", "curl")
    root = tmp_path_factory.mktemp("lab")
    storage = root / "upstream"
    with RegistryProcess(storage) as seeding:  # loopback of the test, then served inside A
        images.push(seeding.url, IMAGE)
        images.push(seeding.url, ON_A)
    with ExitStack() as stack:
        lab = stack.enter_context(Lab())
        hosts = {name: lab.add_host(name) for name in "abcd"}
        upstream = stack.enter_context(RegistryProcess(storage, prefix=hosts["a"].prefix))
        a = start_node(stack, root, hosts["a"], "--docker-upstream", upstream.url)
        b = start_node(stack, root, hosts["b"], "--bootstrap", a.multiaddr)
        c = start_node(stack, root, hosts["c"], "--bootstrap", b.multiaddr, "--request-timeout", "60")
        d = start_node(stack, root, hosts["d"], "--bootstrap", a.multiaddr)
        yield Network(lab=lab, nodes={"a": a, "b": b, "c": c, "d": d}, root=root)


def test_every_node_joined_the_authoritys_network(network: Network) -> None:
    a = network.nodes["a"].status()["p2p"]
    assert a["authority"] is True
    for name in "bcd":
        p2p = network.nodes[name].status()["p2p"]
        assert p2p["genesis"] == a["genesis"] and p2p["authority"] is False, name


def test_nodes_advertise_their_bridge_address_and_no_loopback(network: Network) -> None:
    a = network.nodes["a"]
    assert a.multiaddr in a.status()["p2p"]["addresses"]
    # p2p addresses only: the top-level `addresses` are the HTTP API's, on 127.0.0.1 by design.
    advertised = {name: node.status()["p2p"]["addresses"] for name, node in network.nodes.items()}
    loopback = {name: [x for x in addresses if is_loopback(x)] for name, addresses in advertised.items()}
    assert not any(loopback.values()), f"loopback among a node's own p2p addresses: {loopback}"


def test_no_node_lists_a_peer_at_a_loopback_address(network: Network) -> None:
    a, b, d = (network.nodes[name] for name in "abd")
    eventually(lambda: {b.peer_id, d.peer_id} <= {p["peer_id"] for p in a.cli("peers")}, "b and d on a")
    listed = {name: node.cli("peers") for name, node in network.nodes.items()}
    assert all(listed.values()), f"a node without peers: {listed}"
    loopback = {
        name: [(p["peer_id"], p["address"]) for p in peers if is_loopback(p["address"])]
        for name, peers in listed.items()
    }
    assert not any(loopback.values()), f"peers listed at a loopback address: {loopback}"


def podman_env(root: Path, registry: str) -> dict[str, str]:
    """podman confined to `root`: vfs storage, cgroupfs, `registry` as an insecure registry."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "storage.conf").write_text(
        f'[storage]\ndriver = "vfs"\ngraphroot = "{root}/graph"\nrunroot = "{root}/run"\n'
    )
    (root / "containers.conf").write_text(
        '[engine]\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n'
        f'events_logfile_path = "{root}/events.log"\nruntime = "runc"\n'
    )
    (root / "registries.conf").write_text(
        f'unqualified-search-registries = []\n[[registry]]\nlocation = "{registry}"\ninsecure = true\n'
    )
    return {
        "CONTAINERS_STORAGE_CONF": str(root / "storage.conf"),
        "CONTAINERS_CONF": str(root / "containers.conf"),
        "CONTAINERS_REGISTRIES_CONF": str(root / "registries.conf"),
    }


def podman_pull(node: LabNode, image: images.Image, podman_root: Path) -> None:
    """podman inside the node's host pulls `image` through the node; digest and id must match."""
    registry = node.process.address  # the node's HTTP port on its host's own 127.0.0.1
    reference = f"{registry}/{image.reference}"
    env = podman_env(podman_root, registry)
    pulled = node.host.run("podman", "pull", "--tls-verify=false", reference, env=env, timeout_s=90)
    assert pulled.returncode == 0, f"{pulled.stderr}\n--- {node.name}:\n{node.process.output()[-4000:]}"
    shown = node.host.run("podman", "image", "inspect", "--format", "{{.Digest}} {{.Id}}", reference, env=env)
    assert shown.returncode == 0, shown.stderr
    digest, image_id = shown.stdout.split()
    assert digest == image.top
    assert f"sha256:{image_id}" == image.config_of(image.platforms["linux/amd64"])


def test_podman_in_the_authoritys_host_pulls_through_it(network: Network) -> None:
    podman_pull(network.nodes["a"], ON_A, network.root / "podman-a")


def test_c_finds_the_authority_through_the_dht_and_pulls_with_b_gone(network: Network) -> None:
    a, b, c = (network.nodes[name] for name in "abc")
    # C met only B; its lookup of itself through B must have put A or D in its table, at an
    # address C can dial: with B gone, C's table is all it has to find A by.
    eventually(
        lambda: c.status()["p2p"]["dht_peers"] >= 2,
        lambda: f"c's DHT table holds more than b; c's p2p log:\n{p2p_log(c)}",
        within_s=GATE_S,
    )
    b.process.stop()
    eventually(lambda: b.peer_id not in {p["peer_id"] for p in c.cli("peers")}, "c saw b leave")

    # The image is only in A's upstream, on A's loopback: C can have it only through A.
    podman_pull(c, IMAGE, network.root / "podman-c")
    assert a.peer_id in {p["peer_id"] for p in c.cli("peers")}
