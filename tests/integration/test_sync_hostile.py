"""Hostile sync peers against a real `pyrsia daemon`: it catches up from the honest one.

A target daemon knows the network by its genesis file and holds block 0 only. Two
in-process hosts of their own keys dial it and serve `/pyrsia/sync/1.0.0`:

- a *repeater*, claiming height 300, that answers every `get_blocks` with block 0;
- a *claimer*, claiming height 10^12, that answers every `get_blocks` with no blocks.

At once the target dials the authority (a real daemon with 200 blocks). The target
reaches height 200 within normal time, disconnects both liars (their sync penalties
are in its log, and they are banned: a new connection is dropped again), and its
status never reports the claimed 10^12 as `best_known_height`.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from pyrsia.errors import PeerError
from pyrsia.p2p.behaviours.sync import core as sync
from pyrsia.p2p.behaviours.sync.core import Blocks, GetBlocks, Status
from pyrsia.p2p.identity import Identity
from pyrsia.p2p.swarm.host import Host, HostConfig, Stream
from pyrsia.translog.block import Block
from tests.support.node import NodeProcess
from tests.support.translog import fill, genesis_bytes

BLOCKS = 200
CATCH_UP_S = 30.0
STREAM_TIMEOUT_S = 10.0


class HostileSyncPeer:
    """A p2p host that claims `height` on the right network and answers fetches with `answer`."""

    def __init__(self, genesis: bytes, height: int, answer: Callable[[GetBlocks], Blocks]) -> None:
        self.genesis = genesis
        self.height = height
        self.answer = answer
        self.asked = 0
        self._lock = threading.Lock()
        self.identity = Identity.from_seed(os.urandom(32))
        self.peer_id = self.identity.peer_id
        self.host = Host(self.identity, HostConfig(listen_host="127.0.0.1", listen_port=0))
        self.host.set_handler(sync.PROTOCOL_ID, self._serve)
        self.host.start()

    def _serve(self, stream: Stream) -> None:
        try:
            raw = stream.read_message(sync.MESSAGE_BYTES_MAX, STREAM_TIMEOUT_S)
            if raw is None:
                return
            message = sync.decode(raw)
            if isinstance(message, Status):
                claim = Status(genesis=self.genesis, height=self.height, tip=b"\x07" * 32)
                stream.write_message(sync.encode(claim), STREAM_TIMEOUT_S)
            elif isinstance(message, GetBlocks):
                with self._lock:
                    self.asked += 1
                stream.write_message(sync.encode(self.answer(message)), STREAM_TIMEOUT_S)
            stream.close()
        except PeerError:
            stream.reset()

    def stop(self) -> None:
        self.host.stop()


def status(node: NodeProcess) -> dict[str, object]:
    response = httpx.get(f"{node.url}/api/v1/status", timeout=10)
    response.raise_for_status()
    doc: dict[str, object] = response.json()
    return doc


def height_and_best(node: NodeProcess) -> tuple[int, int]:
    doc = status(node)
    translog, p2p = doc["translog"], doc["p2p"]
    assert isinstance(translog, dict) and isinstance(p2p, dict)
    return int(translog["height"]), int(p2p["best_known_height"])


@pytest.fixture
def homes(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    fill(tmp_path / "authority", BLOCKS)
    (tmp_path / "genesis.blk").write_bytes(genesis_bytes(tmp_path / "authority"))
    yield tmp_path / "authority", tmp_path / "genesis.blk"


def test_a_daemon_catches_up_from_the_honest_peer_and_drops_the_liars(
    homes: tuple[Path, Path], tmp_path: Path
) -> None:
    authority_home, genesis_file = homes
    block0 = genesis_file.read_bytes()
    genesis = Block.decode(block0).header.hash
    with ExitStack() as stack:
        authority = stack.enter_context(NodeProcess(authority_home))
        target = stack.enter_context(NodeProcess(tmp_path / "target", "--genesis", str(genesis_file)))
        target_id = str(status(target)["peer_id"])
        assert height_and_best(target) == (0, 0) and height_and_best(authority) == (BLOCKS, BLOCKS)
        repeater = HostileSyncPeer(genesis, 300, lambda _request: Blocks(blocks=(block0,)))
        claimer = HostileSyncPeer(genesis, 10**12, lambda _request: Blocks(blocks=()))
        liars = (repeater, claimer)
        for liar in liars:
            stack.callback(liar.stop)
            liar.host.connect(target.p2p_address)
        # The target dials the honest authority (a ping by multiaddr connects) beside the liars.
        started = time.monotonic()
        pinged = httpx.post(f"{target.url}/api/v1/ping", params={"peer": authority.p2p_address}, timeout=30)
        assert pinged.status_code == 200, pinged.text
        seen_best: set[int] = set()
        while True:  # the best height is read at least once, however fast the catch-up
            height, best = height_and_best(target)
            seen_best.add(best)
            if height >= BLOCKS and not any(liar.host.is_connected(target_id) for liar in liars):
                break
            assert time.monotonic() - started < CATCH_UP_S, (
                f"after {CATCH_UP_S} s: target at {height_and_best(target)}, liars connected: "
                f"{[liar.host.is_connected(target_id) for liar in liars]}"
            )
            time.sleep(0.1)
        print(f"caught up {BLOCKS} blocks and dropped both liars in {time.monotonic() - started:.1f} s")
        assert height_and_best(target) == (BLOCKS, BLOCKS)
        assert max(seen_best) <= BLOCKS, seen_best  # never the claimed 10**12 (nor 300)
        log = target.output()
        assert f"sync: peer {repeater.peer_id}" in log and f"sync: peer {claimer.peer_id}" in log
        assert "strikes" in log
        # Banned: a liar that comes back is disconnected again.
        repeater.host.connect(target.p2p_address)
        deadline = time.monotonic() + CATCH_UP_S
        while repeater.host.is_connected(target_id):
            assert time.monotonic() < deadline, "the banned repeater stayed connected"
            time.sleep(0.1)
        assert height_and_best(target) == (BLOCKS, BLOCKS)
