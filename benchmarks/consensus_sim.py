"""Consensus in the simulator: transactions and heights per simulated second, commit latency, CPU.

Runs n honest authorities (4, 7 and 31 by default) on the simulated network of
`tests/sim` (2 ms + exponential 15 ms mean delay, no loss) with the real core, the
real wire codec and real Ed25519 signing and verification, uncached: each block
holds `--txs` transactions endorsed by a quorum (every node checks every
endorsement), every precommit carries a vote extension (a signature over the
block's hash, checked by every receiver), and every proposer always has a block.
Reports, per n:

  - tx/s: committed transactions per simulated second; commits/s: heights per
    simulated second
  - latency ms p50/p99: from a node entering a height to its commit, in simulated
    milliseconds (1 tick = 10 ms)
  - messages/commit: deliveries on the simulated network per height
  - core CPU ms/commit: CPU time inside Core.step/tick/ready/advance (with the
    injected validate and extension checks) per height and node, and total CPU
    ms/commit: the whole simulation (codec, driver, signing, checks) per height

    PYTHONPATH=. .venv/bin/python benchmarks/consensus_sim.py [--heights 30] [--sizes 4,7,31] [--txs 4]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

from pyrsia.consensus.core import Core
from pyrsia.translog.tx import verify_signature
from tests.sim.consensus import TICK_S, build
from tests.sim.driver import Simulation
from tests.sim.network import Faults

CORE_S = [0.0]


def timed(method: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.process_time()
        try:
            return method(*args, **kwargs)
        finally:
            CORE_S[0] += time.process_time() - start

    return wrapper


for _verb in ("step", "tick", "ready", "advance"):
    setattr(Core, _verb, timed(getattr(Core, _verb)))


def run(n: int, heights: int, seed: int, txs: int) -> dict[str, float]:
    CORE_S[0] = 0.0
    sim = Simulation(seed, Faults(delay_s_min=0.002, delay_s_mean=0.015, loss=0.0, duplication=0.0))
    started = time.process_time()
    nodes, _, checker = build(sim, honest=n, skew=False, verify=verify_signature, txs_per_block=txs)
    entered: dict[tuple[str, int], float] = {(node.name, 0): 0.0 for node in nodes}
    latencies: list[float] = []
    seen = {node.name: 0 for node in nodes}

    def progressed() -> bool:
        for node in nodes:
            while seen[node.name] < node.height:
                height = seen[node.name]
                latencies.append((sim.now_s - entered[(node.name, height)]) / TICK_S)
                entered[(node.name, height + 1)] = sim.now_s
                seen[node.name] += 1
        return all(node.height >= heights for node in nodes)

    sim.run_until(progressed, within_s=3600)
    cpu_s = time.process_time() - started
    decided = min(node.height for node in nodes)
    latencies.sort()
    return {
        "n": n,
        "heights": decided,
        "tx_per_s": checker.transactions / sim.now_s,
        "commits_per_s": decided / sim.now_s,
        "latency_ms_p50": statistics.median(latencies) * TICK_S * 1000,
        "latency_ms_p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * TICK_S * 1000,
        "messages_per_commit": sim.delivered / decided,
        "core_ms_per_commit": CORE_S[0] * 1000 / decided / n,
        "total_ms_per_commit": cpu_s * 1000 / decided,
        "checked": checker.commits,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--heights", type=int, default=30)
    parser.add_argument("--sizes", default="4,7,31")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--txs", type=int, default=4, help="transactions per block")
    args = parser.parse_args()
    print(f"{args.txs} transactions per block; simulated time; latency from entering a height to its commit")
    header = (
        f"{'n':>3} {'heights':>7} {'tx/s':>6} {'commits/s':>9} {'lat ms p50':>10} {'lat ms p99':>10} "
        f"{'msgs/commit':>11} {'core CPU ms/commit/node':>23} {'total CPU ms/commit':>19}"
    )
    print(header)
    for n in (int(x) for x in args.sizes.split(",")):
        r = run(n, args.heights, args.seed, args.txs)
        print(
            f"{r['n']:>3} {r['heights']:>7} {r['tx_per_s']:>6.1f} {r['commits_per_s']:>9.1f} "
            f"{r['latency_ms_p50']:>10.0f} {r['latency_ms_p99']:>10.0f} {r['messages_per_commit']:>11.0f} "
            f"{r['core_ms_per_commit']:>23.2f} {r['total_ms_per_commit']:>19.1f}"
        )


if __name__ == "__main__":
    main()
