"""A node behind a home router finds out it is private, and serves its artifacts through a relay.

One lab: authority A (its upstream, a CNCF docker-registry, on A's own loopback),
relay R (`--relay-circuit-bytes-max` 512 KiB, less than one exchange chunk), S (public,
no relay service) and P on the segment; N behind a port-keeping router, on the default
`reachability = "auto"`, joining through A, R and S. P joins through R only. The module
runs in order:

1. AutoNAT decides: A, R and S each dial N's addresses back on a connection of their
   own, the router drops the SYN, three of them agree and N reports `private`; R, dialled
   back by its peers, reports `public`. N then reserves on the relays among its peers
   (R and A: S relays nothing) and advertises `/p2p/RELAY/p2p-circuit/p2p/N` addresses;
   P's own dials to N's LAN address and to the router's address time out: the NAT is real.
2. podman inside N's host pulls an image only A's upstream holds (N dials out only);
   N then provides its blobs in the DHT. N and S also pull a larger image (layers of
   4 MB: four 1 MiB chunks each) and provide it.
3. A stops: the authority and the upstream are gone. podman inside P's host pulls the
   small image; it can only come from N, and only through R's relay: P lists N as a
   relayed peer, R counts a circuit and relayed bytes, P's exchange counts bytes
   received from N, and the digests match.
4. podman inside P's host pulls the larger image, whose providers are N (through R) and
   S (direct). Each layer's chunks are shared out between the providers, and the first
   chunk N sends passes R's circuit limit: R resets the circuit mid-transfer, P's
   exchange evicts N for that layer and S delivers its chunks; the pull completes with
   the upstream's digests.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.lab.test_lab_network import P2P_PORT, LabNode, eventually, p2p_log, podman_pull, start_node
from tests.support import images
from tests.support.lab import Lab, NatHost, require_tools
from tests.support.registry import RegistryProcess

pytestmark = pytest.mark.lab

# AutoNAT: three servers each pay-and-dial N's address (a dropped SYN ends in the server's
# 15 s dial-back timeout at most), asked as soon as they identified; then a reservation each.
AUTONAT_S = 60.0
RESERVE_S = 45.0  # N reserves once it is private and identified the relays
IMAGE = images.three_layer(name="lab/served-behind-nat", tag="1.0")  # under 2 kB of blobs
# Less than one 1 MiB exchange chunk (the small image fits many times): a circuit that
# carries a chunk of the larger image is reset by R mid-transfer.
CIRCUIT_BYTES_MAX = 512 * 1024
LARGE = images.large(name="lab/reset-mid-transfer", tag="1.0", layer_bytes=4_000_000)
LARGE_BLOB_BYTES = sum(len(blob) for blob in LARGE.blobs.values())
EXCHANGE_RECEIVED = "pyrsia_exchange_received_bytes_total"
EXCHANGE_RECEIVED_BY_PATH = "pyrsia_exchange_received_bytes_by_path_total"
P2P_REFUSALS = "pyrsia_p2p_refusals_total"


@dataclass(frozen=True, slots=True, kw_only=True)
class RelayLab:
    lab: Lab
    nodes: dict[str, LabNode]  # a, r, s, n, p
    behind: NatHost  # n's host
    root: Path


@pytest.fixture(scope="module")
def relay_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayLab]:
    require_tools("docker-registry", "podman", "curl", "iptables")
    root = tmp_path_factory.mktemp("lab-relay")
    storage = root / "upstream"
    with RegistryProcess(storage) as seeding:  # loopback of the test, then served inside A
        images.push(seeding.url, IMAGE)
        images.push(seeding.url, LARGE)
    with ExitStack() as stack:
        lab = stack.enter_context(Lab())
        hosts = {name: lab.add_host(name) for name in ("a", "r", "s", "p")}
        behind = lab.add_router("r1").add_host("n")
        upstream = stack.enter_context(RegistryProcess(storage, prefix=hosts["a"].prefix))
        a = start_node(stack, root, hosts["a"], "--docker-upstream", upstream.url)
        r = start_node(
            stack,
            root,
            hosts["r"],
            "--bootstrap",
            a.multiaddr,
            "--relay-circuit-bytes-max",
            str(CIRCUIT_BYTES_MAX),
        )
        # A third AutoNAT server for N (the verdict takes 3 agreeing servers) and a second
        # provider of the larger image; no relay, so N's relays stay A and R. S serves over
        # the p2p exchange only: over its HTTP port it finished a pull before P had asked N
        # for a whole circuit's worth, and the reset mid-transfer never came.
        s = start_node(
            stack,
            root,
            hosts["s"],
            "--bootstrap",
            a.multiaddr,
            "--relay-service",
            "false",
            "--peer-http-port",
            "0",
        )
        n = start_node(
            stack,
            root,
            behind,
            # reachability: the default, "auto"
            "--bootstrap",
            a.multiaddr,
            "--bootstrap",
            r.multiaddr,
            "--bootstrap",
            s.multiaddr,
            "--request-timeout",
            "60",
            # This module is about the relay's path: N would otherwise punch through to P
            # (P is public: N's dial out works) and the transfer would go direct
            # (test_lab_dcutr.py is about that).
            "--hole-punching",
            "false",
        )
        p = start_node(stack, root, hosts["p"], "--bootstrap", r.multiaddr, "--request-timeout", "60")
        nodes = {"a": a, "r": r, "s": s, "n": n, "p": p}
        yield RelayLab(lab=lab, nodes=nodes, behind=behind, root=root)


def relayed_via(node: LabNode) -> dict[str, str]:
    """The node's circuit addresses, by the relay's peer id."""
    relayed: list[str] = node.status()["p2p"]["relayed"]
    found = {}
    for address in relayed:
        match = re.search(r"/p2p/([^/]+)/p2p-circuit/p2p/([^/]+)$", address)
        assert match is not None and match.group(2) == node.peer_id, address
        found[match.group(1)] = address
    return found


def peer_entry(node: LabNode, peer_id: str) -> dict[str, Any] | None:
    listed: list[dict[str, Any]] = node.cli("peers")
    return next((p for p in listed if p["peer_id"] == peer_id), None)


def relay_counters(node: LabNode) -> dict[str, int]:
    counters: dict[str, int] = node.status()["p2p"]["relay"]
    return counters


def metric(node: LabNode, family: str, label: str) -> float:
    """The sample of `family` whose labels include `label` (`name="value"`) on the node's
    /metrics; 0 if absent."""
    scraped = node.host.run("curl", "-sf", f"{node.process.url}/metrics")
    assert scraped.returncode == 0, scraped.stderr
    for line in scraped.stdout.splitlines():
        if line.startswith(family + "{") and label in line.split("}", 1)[0]:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def received_from(node: LabNode, peer_id: str) -> float:
    """`pyrsia_exchange_received_bytes_total{peer=PEER}` on the node's /metrics; 0 if absent."""
    return metric(node, EXCHANGE_RECEIVED, f'peer="{peer_id}"')


def circuits_over_the_byte_limit(relay: LabNode) -> float:
    """Circuits the relay reset because they passed `relay_circuit_bytes_max`."""
    return metric(relay, P2P_REFUSALS, 'limit="relay_circuit_bytes"')


def test_autonat_finds_the_natted_node_private_and_the_relay_public(relay_lab: RelayLab) -> None:
    r, n = relay_lab.nodes["r"], relay_lab.nodes["n"]
    eventually(
        lambda: n.status()["p2p"]["reachability"] == "private",
        lambda: f"n's reachability {n.status()['p2p']['reachability']}; n's p2p log:\n{p2p_log(n)}",
        within_s=AUTONAT_S,
    )
    eventually(
        lambda: r.status()["p2p"]["reachability"] == "public",
        lambda: f"r's reachability {r.status()['p2p']['reachability']}; r's p2p log:\n{p2p_log(r)}",
        within_s=AUTONAT_S,
    )
    assert "p2p: reachability private" in n.process.output()  # decided, not forced
    assert n.status()["p2p"]["reachability"] == "private"  # and it holds


def test_the_private_node_reserves_on_the_relays_and_cannot_be_dialled(relay_lab: RelayLab) -> None:
    a, r, n, p = (relay_lab.nodes[name] for name in ("a", "r", "n", "p"))
    eventually(
        lambda: {a.peer_id, r.peer_id} <= relayed_via(n).keys(),
        lambda: f"n's relayed addresses {relayed_via(n)}; n's p2p log:\n{p2p_log(n)}",
        within_s=RESERVE_S,
    )
    via_r = relayed_via(n)[r.peer_id]
    assert via_r.startswith(f"/ip4/{r.host.ip}/tcp/{P2P_PORT}/p2p/{r.peer_id}/p2p-circuit/"), via_r
    assert relay_counters(r)["reservations_granted"] >= 1  # R granted it
    assert relay_counters(n)["reservations_held"] >= 2  # N holds one on R and one on A
    # Advertised: N's circuit addresses are among its own p2p addresses (identify, DHT).
    assert via_r in n.status()["p2p"]["addresses"]

    # P's own dials to N's LAN address and to the router's address: the router drops the SYN.
    behind = relay_lab.behind
    for address in (behind.multiaddr(P2P_PORT), f"/ip4/{behind.public_ip}/tcp/{P2P_PORT}"):
        dialled = p.host.pyrsia("ping", address, "--json", "--node", p.process.url, timeout_s=60)
        assert dialled.returncode != 0, f"p reached {address}: {dialled.stdout}"
        assert "took longer than" in dialled.stderr, dialled.stderr
    # Through R it answers: `pyrsia ping` dials the circuit address.
    through = p.host.pyrsia("ping", via_r, "--json", "--node", p.process.url, timeout_s=60)
    assert through.returncode == 0, through.stderr
    assert json.loads(through.stdout)["peer_id"] == n.peer_id


def test_the_private_node_pulls_from_the_authority_and_provides_the_blobs(relay_lab: RelayLab) -> None:
    n = relay_lab.nodes["n"]
    podman_pull(n, IMAGE, relay_lab.root / "podman-n")
    eventually(
        lambda: n.status()["p2p"]["provided_keys"] >= 1,
        lambda: f"n provides nothing; n's p2p log:\n{p2p_log(n)}",
    )


def test_the_private_node_and_a_public_one_both_hold_the_larger_image(relay_lab: RelayLab) -> None:
    s, n = relay_lab.nodes["s"], relay_lab.nodes["n"]
    for node in (n, s):
        before = node.status()["p2p"]["provided_keys"]
        podman_pull(node, LARGE, relay_lab.root / f"podman-large-{node.name}")
        eventually(
            lambda node=node, before=before: node.status()["p2p"]["provided_keys"] > before,
            lambda node=node: f"{node.name} provides no more; its p2p log:\n{p2p_log(node)}",
        )


def test_with_the_authority_gone_a_public_node_pulls_from_the_private_one_through_the_relay(
    relay_lab: RelayLab,
) -> None:
    a, r, n, p = (relay_lab.nodes[name] for name in ("a", "r", "n", "p"))
    before = relay_counters(r)
    a.process.stop()
    eventually(lambda: peer_entry(p, a.peer_id) is None, "p saw a leave")

    # The image is in no upstream any more: P can have it only from N, only through R.
    podman_pull(p, IMAGE, relay_lab.root / "podman-p")

    entry = peer_entry(p, n.peer_id)
    assert entry is not None and entry["relayed"] is True, entry
    assert received_from(p, n.peer_id) > 0, f"p's exchange got nothing from n; p's log:\n{p2p_log(p)}"
    # N advertises its peer HTTP port, but P reaches N only through R: the p2p exchange carried it.
    assert metric(p, EXCHANGE_RECEIVED_BY_PATH, f'peer="{n.peer_id}",path="p2p"') > 0
    assert metric(p, EXCHANGE_RECEIVED_BY_PATH, f'peer="{n.peer_id}",path="http"') == 0
    # P dialled N through R: a circuit P opened, that R carries now.
    assert relay_counters(p)["circuits_opened"] >= 1
    assert relay_counters(r)["circuits_relayed_now"] >= 1

    # R counts relayed bytes as they pass: the blobs went through it.
    blob_bytes = sum(len(blob) for blob in IMAGE.blobs.values())
    eventually(
        lambda: relay_counters(r)["bytes_relayed"] - before["bytes_relayed"] >= blob_bytes,
        lambda: f"r relayed {relay_counters(r)} (before {before}, blobs {blob_bytes} bytes)",
    )


def test_a_circuit_reset_mid_transfer_leaves_the_pull_to_the_other_provider(relay_lab: RelayLab) -> None:
    r, s, n, p = (relay_lab.nodes[name] for name in ("r", "s", "n", "p"))
    resets_before = circuits_over_the_byte_limit(r)
    relayed_before = relay_counters(r)["circuits_relayed"]
    from_s_before = received_from(p, s.peer_id)
    evicted = f"exchange: evicting peer {n.peer_id}"
    evictions_before = p.process.output().count(evicted)

    # N's chunks can reach P only through R, and R resets any circuit that carries one.
    podman_pull(p, LARGE, relay_lab.root / "podman-large-p")

    assert circuits_over_the_byte_limit(r) > resets_before, (
        f"r reset no circuit: {relay_counters(r)}; p's log:\n{p2p_log(p)}"
    )
    assert relay_counters(r)["circuits_relayed"] > relayed_before  # the reset circuit ended
    # P had asked N for chunks: the reset failed that stream and P's exchange dropped N.
    assert p.process.output().count(evicted) > evictions_before, p.process.output()[-4000:]
    # Whatever N could not deliver came from S: P got at least the blobs' bytes from the two,
    # and N (cut off after 512 KiB) sent none of its 1 MiB chunks whole.
    from_s = received_from(p, s.peer_id) - from_s_before
    assert from_s >= LARGE_BLOB_BYTES - 1024 * 1024, f"p got {from_s} of {LARGE_BLOB_BYTES} bytes from s"
    # N stays reachable through R after the reset: a new circuit carries a ping.
    through = p.host.pyrsia(
        "ping", relayed_via(n)[r.peer_id], "--json", "--node", p.process.url, timeout_s=60
    )
    assert through.returncode == 0, through.stderr
