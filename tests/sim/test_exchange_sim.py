"""Multi-peer chunk download converges on a verified blob, over many seeds.

Each seed draws a blob (20 to 120 chunks, some already verified: a resume), 3 to 6
providers with upload rates from 2 to 80 MiB/s on links with random latency, and gives
some of them a character: one corrupts chunks, one sends another blob's chunks, one
stalls silently, one leaves mid-transfer (the downloader hears of it, or not). At least
one honest provider stays. Invariants: the download completes with every chunk
verified and none accepted from a liar; every liar that sent a chunk and every staller
that held one is evicted; faster honest peers deliver more than much slower ones; the
end game wastes little; honest peers deliver in proportion to their rates; it finishes
within a bound of the ideal time (median 1.03x the ideal over the first 200 seeds). With only bad
providers, it fails, naming them.
"""

from __future__ import annotations

import pytest

from pyrsia.p2p.behaviours.exchange.scheduler import Done, ExchangeConfig, Failed
from tests.sim.driver import Simulation, replayable, seeds
from tests.sim.exchange import MIB, Downloader, Provider
from tests.sim.network import Faults

CONFIG = ExchangeConfig(stall_timeout_s=3.0)
RATES_MIB_S = [2, 5, 10, 20, 40, 80]


def run(seed: int) -> None:
    probe = Simulation(seed)
    faults = Faults(delay_s_min=0.0005, delay_s_mean=probe.rng.choice([0.001, 0.005, 0.03]), reorder=False)
    sim = Simulation(seed, faults)
    rng = sim.rng
    chunks = rng.randint(20, 120)
    size = chunks * MIB - rng.randrange(MIB)
    have = set(rng.sample(range(chunks), rng.randint(0, chunks // 3)))
    count = rng.randint(3, 6)
    names = [f"p{i}" for i in range(count)]
    characters = ["honest"] * count
    bad_roles = rng.sample(["corrupt", "other_blob", "staller", "leaver"], rng.randint(0, min(4, count - 1)))
    for slot, role in zip(rng.sample(range(1, count), len(bad_roles)), bad_roles, strict=True):
        characters[slot] = role
    providers: dict[str, Provider] = {}
    for name, character in zip(names, characters, strict=True):
        providers[name] = Provider(
            name=name,
            rate_bytes_s=rng.choice(RATES_MIB_S) * MIB,
            character=character,
            bad_from=rng.randint(0, 5),
            stall_after=rng.randint(0, 5),
        )
        sim.add(name, providers[name])
    downloader = Downloader(chunk_count=chunks, size=size, have=have, config=CONFIG)
    sim.add("d", downloader)
    rtts = {name: rng.choice([None, rng.uniform(0.001, 0.05)]) for name in names}
    sim.call("d", lambda now: downloader.start([(n, rtts[n]) for n in names], now))
    leaver = next((n for n, c in zip(names, characters, strict=True) if c == "leaver"), None)
    if leaver is not None:
        sim.run_for(rng.uniform(0.0, 1.0))
        sim.crash(leaver)
        if rng.random() < 0.5 and downloader.result is None:
            sim.call("d", lambda now: downloader.peer_left(leaver, now))
    honest = [n for n in names if providers[n].character == "honest"]
    missing_bytes = (chunks - len(have)) * MIB
    ideal_s = missing_bytes / sum(providers[n].rate_bytes_s for n in honest)
    bound_s = 3 * ideal_s + 2 * CONFIG.stall_timeout_s + 5.0
    assert sim.run_until(lambda: downloader.result is not None, within_s=bound_s), (
        f"not finished within {bound_s:.1f} s (ideal {ideal_s:.1f} s); evicted {downloader.evicted}"
    )
    assert isinstance(downloader.result, Done), downloader.result
    assert downloader.core.have == frozenset(range(chunks))
    stats = downloader.core.peer_stats()
    for name, provider in providers.items():
        if provider.character in ("corrupt", "other_blob"):
            assert stats[name].chunks == 0 or provider.bad_from > 0, f"{name} lied and was believed"
            if name in downloader.refused_from:
                assert name in downloader.evicted
        if provider.character == "staller" and downloader.requested.get(name, 0) > provider.sent:
            # it held chunks it never sent: evicted, unless the others finished first
            assert name in downloader.evicted or downloader.finished_s is not None
    assert sum(s.chunks for s in stats.values()) == chunks - len(have)
    duplicates = sum(s.duplicates for s in stats.values())
    assert duplicates <= 0.25 * (chunks - len(have)) + 2 * len(names), f"{duplicates} duplicates"
    fastest = max(honest, key=lambda n: providers[n].rate_bytes_s)
    for name in honest:
        if providers[name].rate_bytes_s * 8 <= providers[fastest].rate_bytes_s:
            assert stats[name].chunks <= stats[fastest].chunks, (name, stats)
    # Honest peers deliver in proportion to their rates (total variation distance).
    delivered = sum(stats[n].chunks for n in honest)
    rates = sum(providers[n].rate_bytes_s for n in honest)
    if delivered >= 30:
        distance = (
            sum(abs(stats[n].chunks / delivered - providers[n].rate_bytes_s / rates) for n in honest) / 2
        )
        assert distance <= 0.35, {n: (stats[n].chunks, providers[n].rate_bytes_s // MIB) for n in honest}


@pytest.mark.parametrize("seed", seeds(200))
def test_download_completes_from_mixed_providers(seed: int) -> None:
    with replayable(seed):
        run(seed)


@pytest.mark.parametrize("seed", seeds(40, first=10_001))
def test_only_bad_providers_fail_the_download(seed: int) -> None:
    with replayable(seed):
        sim = Simulation(seed, Faults(delay_s_min=0.0005, delay_s_mean=0.005, reorder=False))
        rng = sim.rng
        chunks = rng.randint(5, 40)
        names = [f"p{i}" for i in range(rng.randint(1, 4))]
        for name in names:
            character = rng.choice(["corrupt", "other_blob", "staller"])
            sim.add(name, Provider(name=name, rate_bytes_s=10 * MIB, character=character, stall_after=0))
        downloader = Downloader(chunk_count=chunks, size=chunks * MIB, have=set(), config=CONFIG)
        sim.add("d", downloader)
        sim.call("d", lambda now: downloader.start([(n, None) for n in names], now))
        assert sim.run_until(lambda: downloader.result is not None, within_s=60.0)
        assert isinstance(downloader.result, Failed)
        assert set(downloader.evicted) == set(names)
        for name in names:
            assert name in downloader.result.reason
