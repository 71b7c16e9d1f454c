"""What the swarm does for a behaviour from outside the host: ticks, dials, reports."""

from __future__ import annotations

import os
import queue
import socket
import time
from collections.abc import Sequence

from pyrsia.p2p.identity import Identity
from pyrsia.p2p.swarm import behaviour as sw
from pyrsia.p2p.swarm.host import Host, HostConfig
from pyrsia.p2p.wire.multiaddr import Multiaddr, tcp


class Probe:
    """Counts ticks, dials when told, and reports what it saw."""

    protocols: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.ticks = 0

    def tick(self, now_s: float) -> Sequence[sw.Effect]:
        self.ticks += 1
        if self.ticks == 3:
            return [sw.Report(conn=sw.NO_CONN, outcome=("ticked", self.ticks))]
        return ()

    def on_event(self, event: sw.Event, now_s: float) -> Sequence[sw.Effect]:
        match event:
            case sw.ConnectionUp(conn=conn, peer=peer):
                return [sw.Report(conn=conn, outcome=("up", peer))]
            case sw.DialFailed(peer=peer, tag=tag, reason=reason):
                return [sw.Report(conn=sw.NO_CONN, outcome=("failed", peer, tag, reason))]
        return ()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _next(reports: queue.Queue[object], kind: str) -> object:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        report = reports.get(timeout=max(0.01, deadline - time.monotonic()))
        if isinstance(report, tuple) and report[0] == kind:
            return report
    raise AssertionError(f"no {kind} report")


def test_a_behaviour_ticks_dials_in_order_and_hears_of_failures() -> None:
    config = HostConfig(listen_host="127.0.0.1", listen_port=0)
    host = Host(Identity.from_seed(os.urandom(32)), config)
    other = Host(Identity.from_seed(os.urandom(32)), config)
    probe, reports = Probe(), queue.Queue[object]()
    host.add_behaviour(probe, lambda peer, outcome: reports.put(outcome))
    host.start()
    other.start()
    try:
        assert _next(reports, "ticked") == ("ticked", 3)
        dead = tcp("127.0.0.1", _closed_port())
        named = Multiaddr.parse("/dns4/localhost/tcp/1")  # a name is never looked up on the selector
        host.run(probe, lambda now: [sw.Dial(peer=other.peer_id, addrs=(dead, named), tag="t1")])
        failed = _next(reports, "failed")
        assert isinstance(failed, tuple) and failed[1:3] == (other.peer_id, "t1")
        assert "not an IP address" in failed[3] and str(dead) in failed[3]
        live = other.listen_addrs[0]
        host.run(probe, lambda now: [sw.Dial(peer=other.peer_id, addrs=(dead, live), tag="t2")])
        assert _next(reports, "up") == ("up", other.peer_id)
        assert host.is_connected(other.peer_id)
    finally:
        host.stop()
        other.stop()
