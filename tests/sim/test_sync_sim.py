"""Log sync converges and defends itself: under loss, duplication and reordering, after
a healed partition, with liars, slow peers and sybils among the honest — over many seeds
(`PYRSIA_SIM_SEEDS` for more).

Invariant at every check: every honest node's chain is a prefix of the authority's.
Liveness: once the authority stops and the network heals, every honest node reaches its
height within a bound of simulated time, whatever the liars and sybils do.
Defence: every honest node has dropped each lying neighbour (bad blocks, block 0 again
and again, a height it cannot deliver) by the end, and none believes a sybil's claim.
"""

from __future__ import annotations

import random

import pytest

from pyrsia.p2p.behaviours.sync.core import SyncConfig
from tests.sim.driver import Simulation, replayable, seeds
from tests.sim.network import Faults
from tests.sim.sync import LYING_ROLES, SyncNode, make_block

CONFIG = SyncConfig(batch_blocks_max=16, request_timeout_s=2.0, backoff_s=1.0, status_interval_s=5.0)
SETTLE_S = 120.0  # after convergence: long enough for every liar to be asked strikes_max times


def build(
    sim: Simulation, count: int, *, liars: int = 0, slow: int = 0, sybils: int = 0
) -> dict[str, SyncNode]:
    """Node 0 is the authority; every other node dials 2 or 3 earlier ones (random bootstrap).

    Liars (of a random lying role) and slow nodes are among the `count`; each honest node
    dials at least one that is not a liar, so none is eclipsed. Sybils are extra nodes
    that dial in to every other node.
    """
    names = [f"n{i}" for i in range(count)]
    roles = dict.fromkeys(names, "honest")
    odd = sim.rng.sample(names[1:], liars + slow)
    for name in odd[:liars]:
        roles[name] = sim.rng.choice(LYING_ROLES)
    for name in odd[liars:]:
        roles[name] = "slow"
    links: dict[str, set[str]] = {name: set() for name in names}
    dials: dict[str, set[str]] = {name: set() for name in names}
    for i in range(1, count):
        chosen = sim.rng.sample(range(i), min(i, sim.rng.randint(2, 3)))
        if all(roles[names[j]] in LYING_ROLES for j in chosen):  # not eclipsed: no sync could help it
            chosen.append(sim.rng.choice([j for j in range(i) if roles[names[j]] not in LYING_ROLES]))
        for j in chosen:
            links[names[i]].add(names[j])
            links[names[j]].add(names[i])
            dials[names[i]].add(names[j])
    sybil_names = [f"s{i}" for i in range(sybils)]
    for sybil in sybil_names:
        roles[sybil] = "sybil"
        links[sybil] = set(names)
        dials[sybil] = set(names)
    nodes: dict[str, SyncNode] = {}
    authority_chain = [make_block(bytes(32), 0, b"genesis")]
    for name in [*names, *sybil_names]:
        chain = authority_chain if name == "n0" or roles[name] not in ("honest", "slow") else []
        nodes[name] = SyncNode(
            name, sorted(links[name]), chain, role=roles[name], config=CONFIG,
            rng=random.Random(sim.rng.random()), dials=frozenset(dials[name]),
        )  # fmt: skip
        sim.add(name, nodes[name])
    for name in nodes:
        sim.call(name, nodes[name].connect)
    return nodes


def check_prefix(nodes: dict[str, SyncNode]) -> None:
    authority = nodes["n0"].chain
    for node in nodes.values():
        if node.honest:
            assert node.chain == authority[: len(node.chain)], f"{node.name} diverged"


def run_scenario(
    seed: int,
    faults: Faults,
    *,
    count: int,
    liars: int = 0,
    slow: int = 0,
    sybils: int = 0,
    partition: bool = False,
) -> float:
    sim = Simulation(seed, faults)
    nodes = build(sim, count, liars=liars, slow=slow, sybils=sybils)
    authority = nodes["n0"]
    names = sorted(n for n in nodes if n.startswith("n"))
    if partition:
        cut = set(sim.rng.sample(names[1:], count // 3))
        sim.network.partition([n for n in nodes if n not in cut], cut)
    for height in range(1, 60):
        sim.call("n0", lambda now, h=height: authority.produce(f"tx {h}".encode(), now))
        sim.run_for(sim.rng.uniform(0.01, 0.3))
        check_prefix(nodes)
    sim.network.heal()
    healed = sim.now_s
    target = len(authority.chain)
    honest = [n for n in nodes.values() if n.honest]
    converged = sim.run_until(lambda: all(len(n.chain) == target for n in honest), within_s=120.0)
    check_prefix(nodes)
    behind = {n.name: len(n.chain) for n in honest if len(n.chain) != target}
    assert converged, f"not converged 120 s after healing: {behind} of {target}"
    took = sim.now_s - healed
    sim.run_for(SETTLE_S)
    check_prefix(nodes)
    for node in honest:
        assert node.core.best_known_height == target - 1, (node.name, node.core.best_known_height)
        for peer in node.neighbours:
            if nodes[peer].role in LYING_ROLES:
                assert peer in node.penalized, f"{node.name} still trusts {nodes[peer].role} {peer}"
                assert peer not in node.core.peer_heights(), node.name
            if nodes[peer].honest:
                assert peer not in node.penalized, (
                    f"{node.name} dropped honest {peer}: {node.penalized[peer]}"
                )
    return took


@pytest.mark.parametrize("seed", seeds(200))
def test_sync_converges_under_loss_with_a_liar(seed: int) -> None:
    rng = random.Random(seed)
    faults = Faults(loss=0.1, duplication=rng.choice([0.0, 0.05]), reorder=True)
    with replayable(seed):
        run_scenario(seed, faults, count=12, liars=1)


@pytest.mark.parametrize("seed", seeds(200, first=10_001))
def test_sync_converges_after_a_partition_heals(seed: int) -> None:
    with replayable(seed):
        run_scenario(seed, Faults(loss=0.02), count=12, partition=True)


@pytest.mark.parametrize("seed", seeds(60, first=20_001))
def test_sync_converges_among_liars_slow_peers_and_sybils(seed: int) -> None:
    rng = random.Random(seed)
    faults = Faults(loss=rng.choice([0.0, 0.05]), duplication=rng.choice([0.0, 0.05]), reorder=True)
    with replayable(seed):
        run_scenario(seed, faults, count=12, liars=3, slow=2, sybils=rng.randint(5, 25))
