"""DHT lookup figures: hops, requests and simulated time per lookup in a simulated network.

    python benchmarks/dht_lookup.py [--nodes 1000] [--keys 50] [--per-key 5] [--loss 0.0] [--seed 1]
    python benchmarks/dht_lookup.py --real 30 [--keys 10] [--per-key 3] [--seed 1]

Runs the real Kademlia core (k = 20, alpha = 3) on the deterministic simulator of
`tests/sim`: nodes join one by one knowing one to three earlier nodes, random nodes
provide random keys, and other random nodes look each key up (GET_PROVIDERS, stopping
at the first provider) and look up random peers (FIND_NODE, to the k closest). Link
delay is 2 ms plus an exponential 20 ms on average; --loss drops that share of
messages. The same seed gives the same figures.

--real N runs the same lookups over N real libp2p Hosts in this process on loopback
(TCP, Noise, yamux, a `KadService` each; node i bootstraps from one earlier node), and
reports wall-clock time per lookup instead of simulated time. Every Host has its own
selector thread and worker pools, so N is limited by threads and CPU, not by the DHT.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import statistics
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pyrsia.p2p.behaviours.kad.core import KadConfig, LookupDone
from pyrsia.p2p.behaviours.kad.messages import peer_id_to_bytes
from pyrsia.p2p.behaviours.kad.service import KadService
from pyrsia.p2p.identity import Identity
from pyrsia.p2p.swarm.host import Host, HostConfig
from tests.sim.driver import Simulation
from tests.sim.kad import KadNode, grow
from tests.sim.network import Faults


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def run_lookups(sim: Simulation, started: list[tuple[KadNode, int]]) -> list[LookupDone]:
    sim.run_until(lambda: all(lid in n.lookups for n, lid in started), within_s=600)
    return [n.lookups[lid] for n, lid in started]


def lookup_table(title: str, rows: list[tuple[str, list[LookupDone], int | None]], time_label: str) -> Table:
    table = Table(title=title)
    for column in ("lookup", "count", "found", "hops mean", "p50", "p95", "max", "requests/lookup"):
        table.add_column(column, justify="right")
    table.add_column(f"{time_label} ms p50", justify="right")
    table.add_column("p95", justify="right")
    for label, results, ok in rows:
        hops = [float(r.hops) for r in results if r.hops is not None] or [float("nan")]
        elapsed_ms = [r.elapsed_s * 1000 for r in results]
        table.add_row(
            label,
            str(len(results)),
            f"{ok}/{len(results)}" if ok is not None else "-",
            f"{statistics.mean(hops):.2f}",
            f"{percentile(hops, 0.5):.0f}",
            f"{percentile(hops, 0.95):.0f}",
            f"{max(hops):.0f}",
            f"{statistics.mean(r.requests for r in results):.1f}",
            f"{percentile(elapsed_ms, 0.5):.1f}",
            f"{percentile(elapsed_ms, 0.95):.1f}",
        )
    return table


def run_real(args: argparse.Namespace, console: Console) -> None:
    """The lookups of the simulated run, over `args.real` real Hosts on loopback."""
    rng = random.Random(args.seed)
    config = KadConfig(request_timeout_s=5.0, lookup_timeout_s=30.0)
    hosts: list[Host] = []
    services: list[KadService] = []
    wall = time.perf_counter()
    try:
        for index in range(args.real):
            identity = Identity.from_seed(rng.randbytes(32))
            host = Host(identity, HostConfig(listen_host="127.0.0.1", listen_port=0)).start()
            hosts.append(host)
            kad = KadService(host, identity, config=config, rng=random.Random(rng.random())).start()
            if services:
                seed = rng.choice(hosts[:index])
                kad.bootstrap([str(seed.listen_addrs[0].with_peer(seed.peer_id))], timeout=30.0)
            services.append(kad)
        grown_s = time.perf_counter() - wall

        get: list[LookupDone] = []
        found = 0
        for _ in range(args.keys):
            provider = rng.choice(services)
            key = b"\x12\x20" + hashlib.sha256(rng.randbytes(16)).digest()
            digest = "sha256:" + key[2:].hex()
            provider.provide(digest, timeout=60.0)
            for asker in rng.sample([s for s in services if s is not provider], args.per_key):
                done = asker.lookup_providers(key, wanted=1, timeout=60.0)
                get.append(done)
                found += provider.peer_id in {p.peer_id for p in done.providers}
        find: list[LookupDone] = []
        for _ in range(args.keys * args.per_key):
            asker, target = rng.sample(services, 2)
            find.append(asker.lookup_node(peer_id_to_bytes(target.peer_id), timeout=60.0))

        title = f"DHT lookups over {args.real} real Hosts on loopback, k=20, alpha=3, seed {args.seed}"
        rows = [("GET_PROVIDERS", get, found), ("FIND_NODE", find, None)]
        console.print(lookup_table(title, rows, "wall"))
        sizes = [s.routing_table_size for s in services]
        console.print(
            f"routing tables: mean {statistics.mean(sizes):.1f} peers (min {min(sizes)}, max {max(sizes)}); "
            f"wall time {time.perf_counter() - wall:.1f} s ({grown_s:.1f} s to start and bootstrap)"
        )
        console.print(
            "GET_PROVIDERS stops at the first provider; FIND_NODE runs until the k closest answered."
        )
    finally:
        for kad in services:
            kad.stop()
        for host in hosts:
            host.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--keys", type=int, default=50)
    parser.add_argument("--per-key", type=int, default=5)
    parser.add_argument("--loss", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--real", type=int, default=0, metavar="N", help="use N real Hosts on loopback")
    args = parser.parse_args()
    console = Console(width=max(Console().width, 120))
    if args.real:
        if args.real < 2:
            parser.error("--real needs at least 2 nodes")
        run_real(args, console)
        return
    config = KadConfig(request_timeout_s=1.0, lookup_timeout_s=30.0)

    wall = time.perf_counter()
    sim = Simulation(args.seed, Faults(loss=args.loss))
    nodes = grow(sim, args.nodes, config, join_interval_s=0.1, wire=False)
    grown_s = time.perf_counter() - wall
    sent_after_join = sim.network.stats.sent

    provided: list[tuple[KadNode, bytes, int]] = []
    for _ in range(args.keys):
        provider = sim.rng.choice(nodes)
        key = b"\x12\x20" + hashlib.sha256(sim.rng.randbytes(16)).digest()
        sim.call(provider.peer_id, lambda now, p=provider, k=key: p.provide(k, now))
        provided.append((provider, key, provider.last_started))
    sim.run_until(lambda: all(lid in p.provides for p, _, lid in provided), within_s=600)
    sim.run_for(5.0)

    get: list[tuple[KadNode, int]] = []
    found = 0
    for provider, key, _ in provided:
        for asker in sim.rng.sample([n for n in nodes if n is not provider], args.per_key):
            sim.call(asker.peer_id, lambda now, a=asker, k=key: a.find_providers(k, now, wanted=1))
            get.append((asker, asker.last_started))
    get_done = run_lookups(sim, get)
    for (provider, _, _), index in zip(provided, range(0, len(get_done), args.per_key), strict=True):
        for done in get_done[index : index + args.per_key]:
            found += provider.peer_id in {p.peer_id for p in done.providers}

    find: list[tuple[KadNode, int]] = []
    for _ in range(args.keys * args.per_key):
        asker, target = sim.rng.sample(nodes, 2)
        sim.call(asker.peer_id, lambda now, a=asker, t=target: a.find_node(peer_id_to_bytes(t.peer_id), now))
        find.append((asker, asker.last_started))
    find_done = run_lookups(sim, find)

    title = f"DHT lookups, {args.nodes} nodes, k=20, alpha=3, loss {args.loss:.0%}, seed {args.seed}"
    rows = [("GET_PROVIDERS", get_done, found), ("FIND_NODE", find_done, None)]
    console.print(lookup_table(title, rows, "sim"))
    sizes = [len(n.core.table) for n in nodes]
    console.print(
        f"routing tables: mean {statistics.mean(sizes):.1f} peers (min {min(sizes)}, max {max(sizes)}); "
        f"{sent_after_join / args.nodes:.1f} messages per join; "
        f"{sim.network.stats.lost} messages lost; wall time {time.perf_counter() - wall:.1f} s "
        f"({grown_s:.1f} s to grow the network)"
    )
    console.print("GET_PROVIDERS stops at the first provider; FIND_NODE runs until the k closest answered.")


if __name__ == "__main__":
    main()
