"""Two figures of a pyrsia network on loopback, with real daemons.

    python benchmarks/p2p_network.py [--blocks 100000] [--peers 200]

sync   an authority's log holds `--blocks` one-transaction blocks (written before it
       starts, as its writer would: signed, endorsed, certified, fsynced); a fresh node
       bootstraps from it and syncs them all. Blocks per second from the moment the new
       node printed `ready` until its log reached the height (every block verified
       through the chain core and fsynced before it counts).
rss    a daemon's resident memory (VmRSS) idle, then with `--peers` libp2p peers
       connected to it (Hosts in this process, identify done with each).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from pyrsia.p2p.identity import Identity
from pyrsia.p2p.swarm.host import Host, HostConfig
from tests.support.chain_fill import fill_fast
from tests.support.node import NodeProcess


def height(node: NodeProcess) -> int:
    return int(httpx.get(f"{node.url}/api/v1/status", timeout=30).json()["translog"]["height"])


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--blocks", type=int, default=100_000)
    parser.add_argument("--peers", type=int, default=200)
    args = parser.parse_args()
    console = Console()
    table = Table(title="pyrsia network on loopback")
    table.add_column("measure")
    table.add_column("figure", justify="right")
    with tempfile.TemporaryDirectory(prefix="pyrsia-net-bench-") as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        fill_fast(root / "a", args.blocks)
        console.print(f"wrote {args.blocks} blocks in {time.perf_counter() - started:.1f} s")
        with NodeProcess(root / "a", "--log-level", "warning") as authority:
            with NodeProcess(
                root / "b", "--bootstrap", authority.p2p_address, "--log-level", "warning"
            ) as fresh:
                began = time.perf_counter()
                deadline = began + 3600
                first: tuple[float, int] | None = None  # when the first batch was stored, and its height
                while (now := height(fresh)) < args.blocks:
                    if first is None and now > 0:
                        first = (time.perf_counter(), now)
                    if time.perf_counter() > deadline:
                        raise SystemExit("sync did not finish within an hour")
                    time.sleep(0.2)
                ended = time.perf_counter()
                elapsed = ended - began
            table.add_row(
                f"sync of {args.blocks} blocks", f"{args.blocks / elapsed:,.0f} blocks/s ({elapsed:.1f} s)"
            )
            if first is not None and ended > first[0]:
                rest = (args.blocks - first[1]) / (ended - first[0])
                stored = f"{first[0] - began:.1f} s ({first[1]} blocks)"
                table.add_row("  of which: until the first batch was stored", stored)
                table.add_row("  then", f"{rest:,.0f} blocks/s")

            idle = rss_kib(authority.pid)
            hosts = [
                Host(Identity.from_seed(bytes([i % 256, i // 256]) * 16), HostConfig(listen_port=0))
                for i in range(args.peers)
            ]
            try:
                for host in hosts:
                    host.start()
                for host in hosts:
                    peer = host.connect(authority.p2p_address)
                    host.wait_identified(peer)
                connected = int(
                    httpx.get(f"{authority.url}/api/v1/status", timeout=30).json()["p2p"]["peers"]
                )
                loaded = rss_kib(authority.pid)
            finally:
                for host in hosts:
                    host.stop()
            table.add_row("daemon RSS, idle", f"{idle / 1024:.1f} MiB")
            table.add_row(f"daemon RSS, {connected} peers connected", f"{loaded / 1024:.1f} MiB")
        console.print(table)  # before the temp dir goes: removing 200,000 block files takes a while


if __name__ == "__main__":
    main()
