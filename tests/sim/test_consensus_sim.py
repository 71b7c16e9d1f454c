"""Consensus under a hostile network and a lying authority, one seed per run (VOPR-style).

Each run has a safety phase and a liveness phase (TigerBeetle's VOPR). In the safety
phase the network loses, duplicates, delays and reorders messages, partitions and
heals at random, every node's clock is skewed and runs fast or slow, and the scenario
crashes nodes or lets a Byzantine authority lie (about proposals, votes, vote
extensions and endorsements). Proposals are blocks of endorsed transactions and
precommits carry real vote extensions. The `SafetyChecker` checks every commit as it
happens: one value per height everywhere, heights without gaps, a certificate of
distinct authority precommits that verifies on its own, every signer's extension in
it, a quorum of valid endorsements on every transaction, and no false transaction
(one the honest authorities would not endorse). Then the
network stabilises (GST: partitions heal, loss stops) and every honest node that is
up must commit the next height within `LIVENESS_S` simulated seconds — the paper's
termination property (Tendermint: arXiv:1807.04938, §4, Lemma 6).

Seeds per scenario add up to over a thousand per run; PYRSIA_SIM_SEEDS=N runs N of
each, PYRSIA_SIM_SEED=N replays one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import pytest

from tests.sim.consensus import ByzantineNode, ConsensusNode, Lies, SafetyChecker, build
from tests.sim.driver import Simulation, replayable, seeds
from tests.sim.network import Faults

LIVENESS_S = 30.0
LOSSY = Faults(delay_s_min=0.002, delay_s_mean=0.015, loss=0.05, duplication=0.05, reorder=True)


def chaos(
    sim: Simulation,
    nodes: list[ConsensusNode],
    *,
    duration_s: float,
    crash: Sequence[ConsensusNode] = (),
    restart: bool = False,
) -> None:
    """Random partitions and heals; `crash` nodes go down at random times (and maybe return)."""
    rng = sim.rng
    names = [n.name for n in nodes]
    events: list[tuple[float, str, ConsensusNode | None]] = []
    for _ in range(rng.randint(0, 3)):
        events.append((rng.uniform(0, duration_s), "partition", None))
        events.append((rng.uniform(0, duration_s), "heal", None))
    for node in crash:
        down_at = rng.uniform(0, duration_s)
        events.append((down_at, "crash", node))
        if restart:
            events.append((rng.uniform(down_at, duration_s), "restart", node))
    for when, action, node in sorted(events, key=lambda e: e[0]):
        sim.run_for(when - sim.now_s)
        if action == "partition":
            shuffled = rng.sample(names, len(names))
            cut = rng.randint(1, len(names) - 1)
            sim.network.partition(shuffled[:cut], shuffled[cut:])
        elif action == "heal":
            sim.network.heal()
        elif action == "crash" and node is not None and sim.network.is_up(node.name):
            sim.crash(node.name)
        elif action == "restart" and node is not None and not sim.network.is_up(node.name):
            bring_back(sim, node)
    sim.run_for(duration_s - sim.now_s)


def bring_back(sim: Simulation, node: ConsensusNode) -> None:
    node.restart(sim.now_s)
    sim.restart(node.name, node)
    sim.call(node.name, lambda _now: node.drain())


def stabilise_and_demand_progress(
    sim: Simulation,
    honest: list[ConsensusNode],
    checker: SafetyChecker,
    *,
    restart: Sequence[ConsensusNode] = (),
) -> None:
    """GST: heal, stop losing messages, restart who should; every honest node up commits once more."""
    sim.network.heal()
    sim.network.faults = dataclasses.replace(sim.network.faults, loss=0.0)
    for node in restart:
        if not sim.network.is_up(node.name):
            bring_back(sim, node)
    checker.check_prefixes(honest)
    live = [n for n in honest if sim.network.is_up(n.name)]
    target = max(n.height for n in honest) + 1
    done = sim.run_until(lambda: all(n.height >= target for n in live), within_s=LIVENESS_S)
    heights = {n.name[-6:]: n.height for n in live}
    assert done, f"after GST not every honest node reached height {target} within {LIVENESS_S}s: {heights}"
    checker.check_prefixes(honest)


@pytest.mark.parametrize("seed", seeds(400))
def test_four_authorities_one_byzantine(seed: int) -> None:
    """n=4, f=1: the liar equivocates, double-votes, endorses false transactions, swaps extensions."""
    with replayable(seed):
        sim = Simulation(seed, LOSSY)
        honest, liars, checker = build(sim, honest=3, byzantine=1)
        chaos(sim, [*honest, *liars], duration_s=sim.rng.uniform(0.2, 1.0))
        stabilise_and_demand_progress(sim, honest, checker)
        assert isinstance(liars[0], ByzantineNode)


@pytest.mark.parametrize("seed", seeds(200))
def test_seven_authorities_two_crashed(seed: int) -> None:
    """n=7, f=2: two authorities crash for good at random times; the other five carry on."""
    with replayable(seed):
        sim = Simulation(seed, LOSSY)
        honest, _, checker = build(sim, honest=7)
        dead = sim.rng.sample(honest, 2)
        chaos(sim, honest, duration_s=sim.rng.uniform(0.2, 1.0), crash=dead)
        for node in dead:
            if sim.network.is_up(node.name):
                sim.crash(node.name)
        stabilise_and_demand_progress(sim, honest, checker)


@pytest.mark.parametrize("seed", seeds(300))
def test_four_authorities_partitions_and_restarts(seed: int) -> None:
    """n=4, all honest: partitions that heal, nodes that crash and resume from their hard state."""
    with replayable(seed):
        sim = Simulation(seed, LOSSY)
        honest, _, checker = build(sim, honest=4)
        crashing = sim.rng.sample(honest, sim.rng.randint(0, 2))
        chaos(sim, honest, duration_s=sim.rng.uniform(0.3, 1.5), crash=crashing, restart=True)
        stabilise_and_demand_progress(sim, honest, checker, restart=crashing)


@pytest.mark.parametrize("seed", seeds(200))
def test_compact_proposals_with_lost_submits(seed: int) -> None:
    """Values name transactions by id; submits are lost (one node gets none at all, and a
    restart loses a node's pool), so nodes hold proposals and fetch what they lack."""
    with replayable(seed):
        sim = Simulation(seed, LOSSY)
        honest, _, checker = build(sim, honest=4, submit_loss=sim.rng.uniform(0.0, 0.5))
        crashing = sim.rng.sample(honest[1:], sim.rng.randint(0, 1))
        chaos(sim, honest, duration_s=sim.rng.uniform(0.3, 1.5), crash=crashing, restart=True)
        stabilise_and_demand_progress(sim, honest, checker, restart=crashing)
        deaf = honest[0]
        proposed_elsewhere = any(c.certificate.value not in deaf.own_values for c in deaf.log)
        assert not proposed_elsewhere or deaf.stats.txs_fetched > 0, "the deaf node never fetched"
        assert sum(n.stats.invalid_blocks for n in honest) == 0, "an honest proposal was refused"


@pytest.mark.parametrize("seed", seeds(100))
def test_authority_set_changes_per_height(seed: int) -> None:
    """Five nodes; at each height one of them (rotating) is not an authority, four are."""

    def rotating(everyone: frozenset[str]) -> Callable[[int], frozenset[str]]:
        ordered = sorted(everyone)

        def at(height: int) -> frozenset[str]:
            return everyone - {ordered[height % len(ordered)]}

        return at

    with replayable(seed):
        sim = Simulation(seed, LOSSY)
        honest, _, checker = build(sim, honest=5, authorities=rotating)
        chaos(sim, honest, duration_s=sim.rng.uniform(0.3, 1.0))
        stabilise_and_demand_progress(sim, honest, checker)
        assert checker.commits > 0


@pytest.mark.parametrize("seed", seeds(20))
def test_byzantine_lies_are_reported_or_refused_and_change_nothing(seed: int) -> None:
    """A liar at work: honest nodes report its double votes, refuse its forgeries and bad
    extensions, find its blocks of false transactions invalid, and keep committing."""
    with replayable(seed):
        sim = Simulation(seed, LOSSY)
        # Every block it proposes holds a false transaction that only it endorsed.
        honest, _, checker = build(sim, honest=3, byzantine=1, lies=Lies(false_block=1.0))

        def seen() -> dict[str, int]:
            return {
                "evidence": sum(n.stats.evidence for n in honest),
                "rejected": sum(n.stats.rejected for n in honest),
                "bad extensions": sum(n.stats.bad_extensions for n in honest),
                "invalid blocks": sum(n.stats.invalid_blocks for n in honest),
                "lowest height": min(n.height for n in honest),
            }

        done = sim.run_until(lambda: min(seen().values()) >= 3, within_s=LIVENESS_S)
        assert done, f"not all lies were caught within {LIVENESS_S}s: {seen()}"
        assert checker.transactions > 0
        checker.check_prefixes(honest)
