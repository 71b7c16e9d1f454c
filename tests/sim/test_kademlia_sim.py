"""Kademlia over the simulated network: every provided key is found, whatever the seed.

Networks grow one node at a time, each new node knowing one to three random earlier
ones (its bootstrap list) and looking itself up. Random nodes provide random keys;
other random nodes then look each key up, and every lookup must name the provider.
Many small networks (k = 6, so routing takes several hops) run under loss,
duplication and reordering drawn from the seed; a few 500-node networks use the
spec's k = 20 and report their hop counts; they hand messages over without encoding
them (the small networks run every message through the codec). Failures print `seed=N`; see
`tests/sim/__init__.py` for replaying one.
"""

from __future__ import annotations

import hashlib
import math
import random
import statistics
from collections import Counter

import pytest

from pyrsia.p2p.behaviours.kad.core import KadConfig, Kademlia, LookupEnd
from tests.sim.driver import Simulation, replayable, seeds
from tests.sim.kad import KadNode, grow, sim_addr
from tests.sim.network import Faults

# Simulated links answer in tens of milliseconds; a second without an answer is a loss.
SIM_CONFIG = KadConfig(request_timeout_s=1.0, lookup_timeout_s=30.0)
SMALL_CONFIG = KadConfig(k=6, request_timeout_s=1.0, lookup_timeout_s=30.0)
SETTLE_S = 5.0


def _key(sim: Simulation) -> bytes:
    return b"\x12\x20" + hashlib.sha256(sim.rng.randbytes(16)).digest()


def provide_random_keys(sim: Simulation, nodes: list[KadNode], count: int) -> list[tuple[KadNode, bytes]]:
    """`count` random nodes each provide a fresh key; runs until every announcement went out."""
    provided: list[tuple[KadNode, bytes, int]] = []
    for _ in range(count):
        provider = sim.rng.choice(nodes)
        key = _key(sim)
        sim.call(provider.peer_id, lambda now, p=provider, k=key: p.provide(k, now))
        provided.append((provider, key, provider.last_started))
    assert sim.run_until(lambda: all(lid in p.provides for p, _, lid in provided), within_s=120)
    for provider, _, lookup_id in provided:
        assert provider.provides[lookup_id].stored_at, "a provide reached no peer"
    sim.run_for(SETTLE_S)  # let the ADD_PROVIDER messages land
    return [(p, k) for p, k, _ in provided]


def find_each(
    sim: Simulation, askers: list[KadNode], provided: list[tuple[KadNode, bytes]], per_key: int
) -> list[int]:
    """`per_key` random askers (never the provider) look each key up; all must find it.

    Returns the hop count of every lookup.
    """
    started: list[tuple[KadNode, KadNode, int]] = []
    for provider, key in provided:
        for asker in sim.rng.sample([n for n in askers if n is not provider], per_key):
            sim.call(asker.peer_id, lambda now, a=asker, k=key: a.find_providers(k, now))
            started.append((asker, provider, asker.last_started))
    assert sim.run_until(lambda: all(lid in a.lookups for a, _, lid in started), within_s=120)
    hops: list[int] = []
    for asker, provider, lookup_id in started:
        done = asker.lookups[lookup_id]
        found = [p.peer_id for p in done.providers]
        assert provider.peer_id in found, f"lookup {done.end.value} after {done.requests} requests: {done}"
        assert done.end is LookupEnd.COMPLETE
        assert done.hops is not None
        hops.append(done.hops)
    return hops


def report(label: str, nodes: int, hops: list[int], sim: Simulation) -> None:
    spread = dict(sorted(Counter(hops).items()))
    print(
        f"\n{label}: {nodes} nodes, {len(hops)} lookups, hops mean {statistics.mean(hops):.2f} "
        f"max {max(hops)} distribution {spread}; {sim.network.stats}"
    )


@pytest.mark.parametrize("seed", seeds(200))
def test_small_networks_find_every_provider_under_faults(seed: int) -> None:
    with replayable(seed):
        rng_faults = Simulation(seed).rng
        faults = Faults(
            loss=rng_faults.choice([0.0, 0.05, 0.1]),
            duplication=rng_faults.choice([0.0, 0.02]),
            reorder=rng_faults.random() < 0.8,
        )
        sim = Simulation(seed, faults)
        nodes = grow(sim, 48, SMALL_CONFIG, join_interval_s=0.1)
        hops = find_each(sim, nodes, provide_random_keys(sim, nodes, 4), per_key=3)
        assert max(hops) <= 2 * math.log2(len(nodes))


@pytest.mark.parametrize("seed", seeds(2, first=1001))
def test_500_nodes_find_every_provider_in_few_hops(seed: int) -> None:
    with replayable(seed):
        sim = Simulation(seed)
        nodes = grow(sim, 500, SIM_CONFIG, join_interval_s=0.1, wire=False)
        hops = find_each(sim, nodes, provide_random_keys(sim, nodes, 20), per_key=5)
        report("500 nodes", len(nodes), hops, sim)
        assert statistics.mean(hops) <= 2 * math.log2(len(nodes))


@pytest.mark.parametrize("seed", seeds(1, first=2001))
def test_500_nodes_with_10_percent_loss_still_find_every_provider(seed: int) -> None:
    with replayable(seed):
        sim = Simulation(seed, Faults(loss=0.1))
        nodes = grow(sim, 500, SIM_CONFIG, join_interval_s=0.1, wire=False)
        hops = find_each(sim, nodes, provide_random_keys(sim, nodes, 20), per_key=5)
        report("500 nodes, 10% loss", len(nodes), hops, sim)
        assert statistics.mean(hops) <= 2 * math.log2(len(nodes))
        assert sim.network.stats.lost > 0


@pytest.mark.parametrize("seed", seeds(20, first=3001))
def test_crashed_nodes_and_restarts_from_a_snapshot(seed: int) -> None:
    with replayable(seed):
        sim = Simulation(seed)
        nodes = grow(sim, 48, SMALL_CONFIG, join_interval_s=0.1)
        provided = provide_random_keys(sim, nodes, 4)
        providers = {p.peer_id for p, _ in provided}
        crashed = sim.rng.sample([n for n in nodes if n.peer_id not in providers], len(nodes) // 5)
        snapshots = {n.peer_id: n.core.snapshot() for n in crashed}
        for node in crashed:
            sim.crash(node.peer_id)
        survivors = [n for n in nodes if n not in crashed]
        # Records live on up to k nodes, so losing a fifth of the network loses no key.
        find_each(sim, survivors, provided, per_key=3)

        restarted: list[KadNode] = []
        for node in crashed:
            core = Kademlia(
                peer_id=node.peer_id,
                addrs=(sim_addr(node.peer_id),),
                rng=random.Random(sim.rng.getrandbits(64)),
                now_s=sim.now_s,
                config=SMALL_CONFIG,
            )
            assert core.restore(snapshots[node.peer_id], sim.now_s) == len(node.core.peers())
            fresh = KadNode(core)
            sim.restart(node.peer_id, fresh)
            restarted.append(fresh)
        # No bootstrap: the restored table alone must route.
        find_each(sim, restarted, provided, per_key=2)


@pytest.mark.parametrize("seed", seeds(20, first=4001))
def test_a_partitioned_minority_finds_providers_after_healing(seed: int) -> None:
    with replayable(seed):
        sim = Simulation(seed)
        nodes = grow(sim, 48, SMALL_CONFIG, join_interval_s=0.1)
        minority = sim.rng.sample(nodes, len(nodes) // 5)
        majority = [n for n in nodes if n not in minority]
        sim.network.partition([n.peer_id for n in minority])
        provided = provide_random_keys(sim, majority, 3)
        find_each(sim, majority, provided, per_key=3)
        for _, key in provided:
            node = minority[0]
            sim.call(node.peer_id, lambda now, n=node, k=key: n.find_providers(k, now))
            lookup_id = node.last_started
            assert sim.run_until(lambda n=node, i=lookup_id: i in n.lookups, within_s=60)
            assert node.lookups[lookup_id].providers == ()
        sim.network.heal()
        find_each(sim, minority, provided, per_key=2)


def test_one_seed_replays_the_same_run() -> None:
    def run() -> tuple[list[tuple[float, str, str]], list[int]]:
        sim = Simulation(7, Faults(loss=0.05, duplication=0.05))
        sim.trace = []
        nodes = grow(sim, 24, SMALL_CONFIG, join_interval_s=0.1)
        hops = find_each(sim, nodes, provide_random_keys(sim, nodes, 2), per_key=2)
        return sim.trace, hops

    first, second = run(), run()
    assert first[0] and first == second
