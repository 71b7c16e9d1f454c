"""Two nodes behind two home routers meet through a relay and punch a hole to each other.

One lab per router kind: authority A (its upstream on A's own loopback) and relay R on
the segment; N1 behind router r1 and N2 behind router r2, both `--reachability private`,
joining through A and R, so each reserves on the relays. The module runs in order:

1. N1 and N2 hold circuit addresses on R.
2. podman inside N1's host pulls an image only A's upstream holds (3 layers of random
   bytes, so no compression hides where they went); N1 provides its blobs.
3. A stops. N2 dials N1's circuit address through R: a relayed connection, which the
   side that accepted it (N1, unless N1's DHT dialled N2 through R first) turns into a
   direct one by hole punching (DCUtR).
   *Port-keeping routers*: both ends list each other with `relayed: false`, N1 counts a
   punch that went direct, and podman inside N2's host pulls the image: its bytes come
   from N1 while R relays a small part of them at most.
   *Random-port routers*: the punch fails (each router maps the punch's listen port to
   a port of its own choosing, so neither SYN finds its way), the peers stay relayed, and
   the pull completes through R, which relays at least the blobs' bytes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.lab.test_lab_network import LabNode, eventually, p2p_log, podman_pull, start_node
from tests.lab.test_lab_relay import peer_entry, received_from, relay_counters, relayed_via
from tests.support import images
from tests.support.lab import ROUTER_KINDS, Lab, NatHost, require_tools
from tests.support.registry import RegistryProcess

pytestmark = pytest.mark.lab

RESERVE_S = 45.0  # start-up, identify, a reservation on each relay
PUNCH_S = 30.0  # the punch starts as the relayed connection comes up; one attempt is enough here
GIVE_UP_S = 90.0  # three attempts of up to 10 s each, with 2 s and 4 s between them
IMAGE = images.large(name="lab/punched", tag="1.0", layer_bytes=1_000_000)
BLOB_BYTES = sum(len(blob) for blob in IMAGE.blobs.values())


@dataclass(frozen=True, slots=True, kw_only=True)
class PunchLab:
    kind: str  # the routers': "preserving" | "random"
    nodes: dict[str, LabNode]  # a, r, n1, n2
    root: Path


@pytest.fixture(scope="module", params=ROUTER_KINDS)
def punch_lab(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PunchLab]:
    require_tools("docker-registry", "podman", "curl", "iptables")
    kind: Any = request.param
    root = tmp_path_factory.mktemp(f"lab-dcutr-{kind}")
    storage = root / "upstream"
    with RegistryProcess(storage) as seeding:
        images.push(seeding.url, IMAGE)
    with ExitStack() as stack:
        lab = stack.enter_context(Lab())
        hosts = {name: lab.add_host(name) for name in ("a", "r")}
        behind = {name: lab.add_router(f"r{i}", kind).add_host(name) for i, name in ((1, "n1"), (2, "n2"))}
        upstream = stack.enter_context(RegistryProcess(storage, prefix=hosts["a"].prefix))
        a = start_node(stack, root, hosts["a"], "--docker-upstream", upstream.url)
        r = start_node(stack, root, hosts["r"], "--bootstrap", a.multiaddr)
        private = ("--reachability", "private", "--bootstrap", a.multiaddr, "--bootstrap", r.multiaddr)
        n1 = start_node(stack, root, behind["n1"], *private, "--request-timeout", "60")
        n2 = start_node(stack, root, behind["n2"], *private, "--request-timeout", "60")
        yield PunchLab(kind=kind, nodes={"a": a, "r": r, "n1": n1, "n2": n2}, root=root)


def holepunch(node: LabNode) -> dict[str, int]:
    counters: dict[str, int] = node.status()["p2p"]["holepunch"]
    return counters


def test_both_private_nodes_reserve_on_the_relay(punch_lab: PunchLab) -> None:
    r = punch_lab.nodes["r"]
    for name in ("n1", "n2"):
        node = punch_lab.nodes[name]
        eventually(
            lambda node=node: r.peer_id in relayed_via(node),
            lambda node=node: f"{node.name}'s relayed addresses {relayed_via(node)}:\n{p2p_log(node)}",
            within_s=RESERVE_S,
        )


def test_the_first_node_pulls_from_the_authority_and_provides(punch_lab: PunchLab) -> None:
    n1 = punch_lab.nodes["n1"]
    podman_pull(n1, IMAGE, punch_lab.root / "podman-n1")
    eventually(
        lambda: n1.status()["p2p"]["provided_keys"] >= 1, lambda: f"n1 provides nothing:\n{p2p_log(n1)}"
    )


def test_met_through_the_relay_they_punch_through_or_stay_relayed(punch_lab: PunchLab) -> None:
    a, r, n1, n2 = (punch_lab.nodes[name] for name in ("a", "r", "n1", "n2"))
    a.process.stop()
    eventually(lambda: peer_entry(n2, a.peer_id) is None, "n2 saw a leave")
    eventually(lambda: peer_entry(n1, a.peer_id) is None, "n1 saw a leave")

    circuit = relayed_via(n1)[r.peer_id]
    # They may have met (and punched, or failed to) through A's relay already.
    before = {n1.name: holepunch(n1), n2.name: holepunch(n2)}
    met = n2.host.pyrsia("ping", circuit, "--json", "--node", n2.process.url, timeout_s=60)
    assert met.returncode == 0, f"n2 could not reach n1 through r: {met.stderr}\n{p2p_log(n2)}"

    if punch_lab.kind == "preserving":
        for me, them in ((n2, n1), (n1, n2)):
            eventually(
                lambda me=me, them=them: (
                    (e := peer_entry(me, them.peer_id)) is not None and e["relayed"] is False
                ),
                lambda me=me, them=them: (
                    f"{me.name} lists {peer_entry(me, them.peer_id)}; punches {holepunch(me)}:\n{p2p_log(me)}"
                ),
                within_s=PUNCH_S,
            )
        assert holepunch(n1)["successes"] >= 1, holepunch(n1)
        # The direct connection's far end is N1's router (its wan address): through the NAT.
        entry = peer_entry(n2, n1.peer_id)
        assert isinstance(n1.host, NatHost)
        assert entry is not None and entry["address"].startswith(f"/ip4/{n1.host.public_ip}/tcp/"), entry
    else:
        # The side that accepted the relayed connection tries up to three times (the other
        # answers at most three punches of one peer in 5 minutes: earlier ones count), then
        # gives up. Which side that is depends on who dialled whom through the relay: N2's
        # ping, or N1's own dial (its DHT reaches peers at their circuit addresses too).
        # A punch may also fail before it dials (the other side answers no more punches of
        # this peer, or the relayed connection went): a failure counted is the evidence.
        def punched_and_failed(node: LabNode) -> bool:
            return holepunch(node)["failures"] > before[node.name]["failures"]

        eventually(
            lambda: punched_and_failed(n1) or punched_and_failed(n2),
            lambda: (
                f"punches: n1 {holepunch(n1)}, n2 {holepunch(n2)} (before {before}):\n{p2p_log(n1)}"
            ),
            within_s=GIVE_UP_S,
        )
        assert holepunch(n1)["successes"] == 0 and holepunch(n2)["successes"] == 0
        entry = peer_entry(n2, n1.peer_id)
        assert entry is not None and entry["relayed"] is True, entry
    assert holepunch(n1)["attempts"] >= 1 and holepunch(n2)["attempts"] >= 1


def test_the_second_node_pulls_the_image_from_the_first(punch_lab: PunchLab) -> None:
    r, n1, n2 = (punch_lab.nodes[name] for name in ("r", "n1", "n2"))
    before = relay_counters(r)["bytes_relayed"]
    podman_pull(n2, IMAGE, punch_lab.root / "podman-n2")
    assert received_from(n2, n1.peer_id) >= BLOB_BYTES / 2, (
        f"n2's exchange got little from n1:\n{p2p_log(n2)}"
    )
    relayed = relay_counters(r)["bytes_relayed"] - before
    if punch_lab.kind == "preserving":
        # The blobs went over the direct connection: R carried a small part at most.
        assert relayed < BLOB_BYTES / 10, f"r relayed {relayed} of {BLOB_BYTES} blob bytes"
    else:
        assert relayed >= BLOB_BYTES / 2, f"r relayed only {relayed} of {BLOB_BYTES} blob bytes"
