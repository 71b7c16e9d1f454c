"""Log sync converges: under loss, duplication and reordering, after a healed partition,
with a lying peer among the honest ones — over many seeds (`PYRSIA_SIM_SEEDS` for more).

Invariant at every check: every honest node's chain is a prefix of the authority's.
Liveness: once the authority stops and the network heals, every honest node reaches
its height within a bound of simulated time.
"""

from __future__ import annotations

import random

import pytest

from pyrsia.p2p.behaviours.sync.core import SyncConfig
from tests.sim.driver import Simulation, replayable, seeds
from tests.sim.network import Faults
from tests.sim.sync import SyncNode, make_block

CONFIG = SyncConfig(batch_blocks_max=16, request_timeout_s=2.0, backoff_s=1.0, status_interval_s=5.0)


def build(sim: Simulation, count: int, *, liars: int = 0) -> dict[str, SyncNode]:
    """Node 0 is the authority; every other node knows 2 or 3 earlier ones (random bootstrap)."""
    names = [f"n{i}" for i in range(count)]
    links: dict[str, set[str]] = {name: set() for name in names}
    for i in range(1, count):
        for j in sim.rng.sample(range(i), min(i, sim.rng.randint(2, 3))):
            links[names[i]].add(names[j])
            links[names[j]].add(names[i])
    nodes: dict[str, SyncNode] = {}
    authority_chain = [make_block(bytes(32), 0, b"genesis")]
    liar_names = set(sim.rng.sample(names[1:], liars))
    for name in names:
        chain = authority_chain if name == "n0" or name in liar_names else []
        nodes[name] = SyncNode(name, sorted(links[name]), chain, liar=name in liar_names, config=CONFIG)
        sim.add(name, nodes[name])
    for name in names:
        sim.call(name, nodes[name].connect)
    return nodes


def check_prefix(nodes: dict[str, SyncNode]) -> None:
    authority = nodes["n0"].chain
    for node in nodes.values():
        if not node.liar:
            assert node.chain == authority[: len(node.chain)], f"{node.name} diverged"


def run_scenario(seed: int, faults: Faults, *, count: int, liars: int, partition: bool) -> float:
    sim = Simulation(seed, faults)
    nodes = build(sim, count, liars=liars)
    authority = nodes["n0"]
    names = sorted(nodes)
    if partition:
        cut = set(sim.rng.sample(names[1:], count // 3))
        sim.network.partition([n for n in names if n not in cut], cut)
    for height in range(1, 60):
        sim.call("n0", lambda now, h=height: authority.produce(f"tx {h}".encode(), now))
        sim.run_for(sim.rng.uniform(0.01, 0.3))
        check_prefix(nodes)
    sim.network.heal()
    healed = sim.now_s
    target = len(authority.chain)
    honest = [n for n in nodes.values() if not n.liar]
    converged = sim.run_until(lambda: all(len(n.chain) == target for n in honest), within_s=120.0)
    check_prefix(nodes)
    behind = {n.name: len(n.chain) for n in honest if len(n.chain) != target}
    assert converged, f"not converged 120 s after healing: {behind} of {target}"
    for node in honest:
        for liar in (n.name for n in nodes.values() if n.liar):
            if liar in node.answered_by:  # it saw the liar's blocks: it must have cut it off
                assert liar in node.penalized and liar not in node.core.peer_heights(), node.name
    return sim.now_s - healed


@pytest.mark.parametrize("seed", seeds(200))
def test_sync_converges_under_loss_with_a_liar(seed: int) -> None:
    rng = random.Random(seed)
    faults = Faults(loss=0.1, duplication=rng.choice([0.0, 0.05]), reorder=True)
    with replayable(seed):
        run_scenario(seed, faults, count=12, liars=1, partition=False)


@pytest.mark.parametrize("seed", seeds(200, first=10_001))
def test_sync_converges_after_a_partition_heals(seed: int) -> None:
    with replayable(seed):
        run_scenario(seed, Faults(loss=0.02), count=12, liars=0, partition=True)
