"""kill -9 during batched sync loses nothing, with real daemons.

An authority daemon holds `BLOCKS` one-transaction blocks. A second daemon of the same
network (it knows the genesis, holds block 0) syncs them from it in batches of
`BATCH_BLOCKS`, pipelined (one batch fetched while the one before is stored); it is
killed with SIGKILL at seeded random moments while batches are being stored, and
restarted, `KILLS` times. After each kill, before the restart:

- `pyrsia log verify` passes on its log (each block whole, linked, signed, certified);
- the log holds at least the height the daemon reported before the kill (a reported
  height is durable: the head moves only once a batch's files and directory are
  fsynced).

At the end it catches up to the authority's height, and every block file is the same
as the authority's, byte for byte (so every block hash is).
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import httpx

from pyrsia.translog.store import BlockFiles
from tests.support.chain_fill import fill_fast
from tests.support.node import NodeProcess
from tests.support.translog import genesis_bytes

BLOCKS = 6000
BATCH_BLOCKS = 256  # small batches: many of them, so kills land in different stages
KILLS = 6
SEED = 20261207
PROGRESS_S = 180.0  # a loaded machine stores a batch slowly; progress, not speed, is checked
CATCH_UP_S = 600.0


def pyrsia(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pyrsia", *args], capture_output=True, text=True, timeout=300
    )


def height(node: NodeProcess) -> int:
    response = httpx.get(f"{node.url}/api/v1/status", timeout=30)
    response.raise_for_status()
    return int(response.json()["translog"]["height"])


def on_disk(home: Path) -> list[int]:
    return BlockFiles(home / "translog", create=False).heights()


def test_kill_9_during_batched_sync_loses_nothing_and_catches_up(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    authority_home, target_home = tmp_path / "authority", tmp_path / "target"
    fill_fast(authority_home, BLOCKS)
    genesis_file = tmp_path / "genesis.blk"
    genesis_file.write_bytes(genesis_bytes(authority_home))
    with ExitStack() as stack:
        authority = stack.enter_context(NodeProcess(authority_home, "--log-level", "warning"))
        flags = (
            "--genesis", str(genesis_file), "--bootstrap", authority.p2p_address,
            "--sync-batch-blocks-max", str(BATCH_BLOCKS),
        )  # fmt: skip
        reported = 0
        kills = 0
        while kills < KILLS:
            target = NodeProcess(target_home, *flags)
            stack.callback(target.kill)
            target.start()
            # Let it store at least one more batch, then kill it at a random moment while
            # the next one is on its way (fetched, verified or being written).
            start_height = height(target)
            if start_height >= BLOCKS:
                target.kill()
                break  # caught up already: the rounds so far stand
            deadline = time.monotonic() + PROGRESS_S
            while (now := height(target)) <= start_height:
                assert time.monotonic() < deadline, f"no progress from {start_height} in {PROGRESS_S} s"
                time.sleep(0.05)
            if now >= BLOCKS:
                target.kill()
                break  # caught up before this kill: the rounds so far stand
            time.sleep(rng.uniform(0.0, 0.4))
            reported = max(reported, height(target))
            target.kill()
            kills += 1
            verified = pyrsia("log", "verify", "--home", str(target_home), "--json")
            assert verified.returncode == 0, verified.stdout + verified.stderr
            report = json.loads(verified.stdout)
            assert report["ok"] and report["blocks"] == len(on_disk(target_home))
            assert report["blocks"] - 1 >= reported, (
                f"kill {kills}: the daemon reported height {reported}, its log holds {report['blocks'] - 1}"
            )
            torn = len(list((target_home / "translog" / "blocks").glob(".*.part")))  # a write it cut short
            print(f"kill {kills}: reported {reported}, log holds {report['blocks'] - 1}, {torn} temp files")
        assert kills >= 3, f"only {kills} kill(s) landed before the sync finished"
        with NodeProcess(target_home, *flags) as target:
            deadline = time.monotonic() + CATCH_UP_S
            while height(target) < BLOCKS:
                assert time.monotonic() < deadline, f"at {height(target)} of {BLOCKS} after {CATCH_UP_S} s"
                time.sleep(0.2)
        authority.stop()
    assert pyrsia("log", "verify", "--home", str(target_home)).returncode == 0
    ours, theirs = BlockFiles(target_home / "translog"), BlockFiles(authority_home / "translog")
    assert on_disk(target_home) == on_disk(authority_home) == list(range(BLOCKS + 1))
    for h in range(BLOCKS + 1):
        assert ours.read(h) == theirs.read(h), f"block {h} differs"
