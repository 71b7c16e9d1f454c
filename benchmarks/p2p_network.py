"""Two figures of a pyrsia network on loopback, with real daemons.

    python benchmarks/p2p_network.py [--blocks 100000] [--peers 200] [--dir PATH]

sync   an authority's log holds `--blocks` one-transaction blocks (written before it
       starts, as its writer would: signed, endorsed, certified, fsynced); a fresh node
       bootstraps from it and syncs them all. Blocks per second from the moment the new
       node printed `ready` until its log reached the height (every block verified
       through the chain core and fsynced before it counts), and the CPU time each
       daemon (with its signature helper process) spent per 1,000 blocks meanwhile
       (user + system): on a shared machine the CPU figure moves less than the
       wall-clock one.
floor  how fast this filesystem creates files and makes them durable in batches of
       2,048 the way sync stores blocks (written, one sync of the filesystem, renamed, one
       directory fsync), beside one fsync per file (8 at once): sync cannot store blocks
       faster than the first.
rss    a daemon's resident memory (VmRSS) idle, then with `--peers` libp2p peers
       connected to it (Hosts in this process, identify done with each).
probe  one core's speed before and after the sync (`cpu_probe.py`).

`--dir` puts the data on a chosen filesystem (default: the system's temp directory).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.cpu_probe import ed25519_check_us, shown
from pyrsia.durable import Watch, commit_staged, stage_file, write_new_files
from pyrsia.p2p.identity import Identity
from pyrsia.p2p.swarm.host import Host, HostConfig
from tests.support.chain_fill import fill_fast
from tests.support.node import NodeProcess

READY_TIMEOUT_S = 600.0  # opening a log of 100,000 blocks reads and hashes every file
PROBE_BATCHES = 3
PROBE_FILE_BYTES = 1024  # about a one-transaction block


def height(node: NodeProcess) -> int:
    return int(httpx.get(f"{node.url}/api/v1/status", timeout=30).json()["translog"]["height"])


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def cpu_s(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds the process and its live child processes (the
    daemon's signature helper) have used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    user, system = int(fields[11]) / ticks, int(fields[12]) / ticks
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            child_user, child_system = cpu_s(int(child))
            user, system = user + child_user, system + child_system
    return user, system


def per_thousand(before: tuple[float, float], after: tuple[float, float], blocks: int) -> str:
    user, system = ((a - b) * 1000 / blocks * 1000 for a, b in zip(after, before, strict=True))
    return f"{user + system:,.0f} ms (user {user:,.0f}, sys {system:,.0f})"


def files_per_s(directory: Path, batch: int, *, each: bool) -> float:
    """Files created and made durable per second, in batches as sync writes blocks
    (`each`: one fsync per file instead of one sync of the filesystem)."""
    directory.mkdir(parents=True)
    data = bytes(PROBE_FILE_BYTES)
    started = time.perf_counter()
    for n in range(PROBE_BATCHES):
        names = [f"{n:04d}-{i:06d}.probe" for i in range(batch)]
        if each:
            write_new_files(directory, [(name, data) for name in names])
            continue
        watch = Watch(directory)
        try:
            commit_staged(directory, [(stage_file(directory, data), name) for name in names], watch)
        finally:
            watch.close()
    return PROBE_BATCHES * batch / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--blocks", type=int, default=100_000)
    parser.add_argument("--peers", type=int, default=200)
    parser.add_argument("--dir", type=Path, default=None, help="where the nodes' data goes")
    args = parser.parse_args()
    console = Console()
    table = Table(title="pyrsia network on loopback")
    table.add_column("measure")
    table.add_column("figure", justify="right")
    with tempfile.TemporaryDirectory(prefix="pyrsia-net-bench-", dir=args.dir) as tmp:
        root = Path(tmp)
        floor = files_per_s(root / "probe", 2048, each=False)
        floor_each = files_per_s(root / "probe-each", 2048, each=True)
        probe_before = ed25519_check_us()
        started = time.perf_counter()
        fill_fast(root / "a", args.blocks)
        console.print(f"wrote {args.blocks} blocks in {time.perf_counter() - started:.1f} s")
        with NodeProcess(root / "a", "--log-level", "warning", ready_timeout_s=READY_TIMEOUT_S) as authority:
            with NodeProcess(
                root / "b", "--bootstrap", authority.p2p_address, "--log-level", "warning"
            ) as fresh:
                began = time.perf_counter()
                cpu_before = cpu_s(fresh.pid), cpu_s(authority.pid)
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
                cpu_after = cpu_s(fresh.pid), cpu_s(authority.pid)
            probe_after = ed25519_check_us()
            table.add_row(
                f"sync of {args.blocks} blocks", f"{args.blocks / elapsed:,.0f} blocks/s ({elapsed:.1f} s)"
            )
            table.add_row(
                "  CPU per 1,000 blocks, syncing node", per_thousand(cpu_before[0], cpu_after[0], args.blocks)
            )
            table.add_row(
                "  CPU per 1,000 blocks, serving node", per_thousand(cpu_before[1], cpu_after[1], args.blocks)
            )
            table.add_row("  floor: files made durable here, one sync", f"{floor:,.0f} files/s")
            table.add_row("  (one fsync per file)", f"{floor_each:,.0f} files/s")
            table.add_row("  cpu probe: one core", shown(probe_before, probe_after))
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
