"""250 identities from one address against a real `pyrsia daemon`: held to the bounds.

An attacker in this process brings 250 identities, each a libp2p Host listening on, and
dialling from, 127.3.0.1 (its own /24 on loopback, apart from 127.0.0.1 where honest
peers are). Each serves kad (so the daemon offers it to its routing table), floods the
daemon with ADD_PROVIDER records for keys nobody holds, and then goes away. Afterwards
the daemon's table holds at most the 64 the whole-table bound lets one group have and
its provider store at most the group quota from that address (set low here to keep
the flood short), both refusals counted in `/api/v1/status`; an honest node still
finds a provider through the daemon, and the daemon still answers at once.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from pyrsia.errors import PeerError
from pyrsia.p2p.behaviours.kad import messages as dm
from pyrsia.p2p.behaviours.kad.core import KadConfig
from pyrsia.p2p.behaviours.kad.service import PROTOCOL_ID, KadService
from pyrsia.p2p.identity import Identity
from pyrsia.p2p.swarm.host import Host, HostConfig, Stream
from pyrsia.p2p.wire.multiaddr import Multiaddr
from tests.support.node import NodeProcess
from tests.support.wait import eventually

ATTACKER_IP = "127.3.0.1"
SYBILS = 250
FLOOD_PER_SYBIL = 4
GROUP_QUOTA = 500
TABLE_GROUP_MAX = 64  # the default of kad_ip_group_peers_max
TIMEOUT_S = 30.0


def status(node: NodeProcess) -> dict[str, object]:
    doc = httpx.get(f"{node.url}/api/v1/status", timeout=10).json()
    p2p = doc.get("p2p", doc)
    assert isinstance(p2p, dict)
    return p2p


def refused(node: NodeProcess) -> dict[str, int]:
    counts = status(node)["dht_refused"]
    assert isinstance(counts, dict)
    return counts


def exchange(stream: Stream, message: dm.Message) -> bytes:
    """Write one framed request and read what comes back until the daemon ends the stream."""
    stream.write(dm.encode_framed(message), timeout=TIMEOUT_S)
    try:
        return stream.read_all(dm.MESSAGE_BYTES_MAX, timeout=TIMEOUT_S)
    except PeerError:
        return b""  # reset: refused


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[NodeProcess]:
    node = NodeProcess(
        tmp_path / "daemon", "--kad-provider-records-per-ip-group-max", str(GROUP_QUOTA)
    ).start()
    try:
        yield node
    finally:
        node.stop()


def sybil(target: Multiaddr, daemon_id: str) -> None:
    identity = Identity.from_seed(os.urandom(32))
    host = Host(identity, HostConfig(listen_host=ATTACKER_IP, listen_port=0, dial_source=ATTACKER_IP))
    host.start()
    try:
        host.set_handler(PROTOCOL_ID, lambda stream: stream.reset())
        host.connect(target, timeout=TIMEOUT_S)
        me = dm.Peer(
            id=dm.peer_id_to_bytes(identity.peer_id), addrs=tuple(a.to_bytes() for a in host.listen_addrs)
        )
        for _ in range(FLOOD_PER_SYBIL):
            key = dm.provider_key("sha256:" + os.urandom(32).hex())
            add = dm.Message(type=dm.MessageType.ADD_PROVIDER, key=key, provider_peers=(me,))
            exchange(host.open_stream(daemon_id, [PROTOCOL_ID], timeout=TIMEOUT_S), add)
        # A last request with a reply: the daemon has read everything before it.
        ping = host.open_stream(daemon_id, [PROTOCOL_ID], timeout=TIMEOUT_S)
        ping.write(dm.encode_framed(dm.Message(type=dm.MessageType.PING)), timeout=TIMEOUT_S)
        assert ping.read(dm.MESSAGE_BYTES_MAX, timeout=TIMEOUT_S)
        ping.close()
    finally:
        host.stop()


def honest(target: str) -> tuple[Host, KadService]:
    identity = Identity.from_seed(os.urandom(32))
    host = Host(identity, HostConfig(listen_host="127.0.0.1", listen_port=0)).start()
    kad = KadService(host, identity, config=KadConfig(request_timeout_s=5.0, lookup_timeout_s=20.0)).start()
    kad.bootstrap([target], timeout=TIMEOUT_S)
    return host, kad


def test_250_sybils_from_one_address_are_held_to_the_bounds(daemon: NodeProcess) -> None:
    target = Multiaddr.parse(daemon.p2p_address)
    daemon_id = target.peer_id
    assert daemon_id is not None
    started = time.monotonic()
    for _ in range(SYBILS):
        sybil(target, daemon_id)
    flood_s = time.monotonic() - started

    eventually(lambda: status(daemon)["dht_peers"] == TABLE_GROUP_MAX, "the table to settle at the bound")
    counts = refused(daemon)
    assert counts["table_group"] + counts["table_bucket_group"] >= SYBILS - TABLE_GROUP_MAX
    assert status(daemon)["dht_provider_records"] == GROUP_QUOTA
    assert counts["provider_group_quota"] == SYBILS * FLOOD_PER_SYBIL - GROUP_QUOTA

    # An honest provider and an honest seeker, both on 127.0.0.1, meet through the daemon.
    digest = "sha256:" + hashlib.sha256(b"honest blob").hexdigest()
    provider_host, provider = honest(daemon.p2p_address)
    seeker_host = seeker = None
    try:
        assert daemon_id in provider.provide(digest, timeout=60.0)
        assert status(daemon)["dht_provider_records"] == GROUP_QUOTA + 1
        seeker_host, seeker = honest(daemon.p2p_address)
        found = seeker.find_providers(digest, timeout=60.0)
        assert provider.peer_id in [peer for peer, _ in found]
        # Still responsive: a kad round trip and the HTTP API answer well within the
        # time the flood took (the flood, not the daemon, sets the pace).
        begin = time.monotonic()
        assert seeker_host.ping(daemon_id, timeout=5.0) < 5.0
        assert status(daemon)["dht_peers"] >= TABLE_GROUP_MAX
        assert time.monotonic() - begin < max(2.0, flood_s / 10)
    finally:
        for kad in (seeker, provider):
            if kad is not None:
                kad.stop()
        for host in (seeker_host, provider_host):
            if host is not None:
                host.stop()
