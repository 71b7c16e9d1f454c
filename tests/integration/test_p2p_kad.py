"""Kademlia over real libp2p Hosts on loopback: `KadService` drives the pure core.

Several Hosts in one process, each with its own selector thread, Noise, yamux and a
`KadService`, joined in a chain (each bootstraps from the previous one only): content
and peers are found across the chain, a restarted node comes back from its saved
routing table without bootstrap addresses, and a raw peer flooding requests is
refused by the rate limit while the service keeps answering others with bounded
memory.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pyrsia.errors import DigestInvalid, PeerError
from pyrsia.p2p.behaviours.kad import messages as dm
from pyrsia.p2p.behaviours.kad.core import KadConfig
from pyrsia.p2p.behaviours.kad.messages import Message, MessageType, Peer
from pyrsia.p2p.behaviours.kad.service import PROTOCOL_ID, KadService, KadServiceLimits
from pyrsia.p2p.identity import Identity
from pyrsia.p2p.swarm.addresses import AddressFilter
from pyrsia.p2p.swarm.host import Host, HostConfig
from pyrsia.p2p.wire.multiaddr import Multiaddr

TIMEOUT_S = 30.0


def wait_until(condition: Callable[[], object], what: str, timeout: float = TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def address(node: Node) -> str:
    return str(node.host.listen_addrs[0].with_peer(node.host.peer_id))


@dataclass
class Node:
    identity: Identity
    snapshot: Path
    config: KadConfig
    host: Host = field(init=False)
    kad: KadService = field(init=False)

    def start(self) -> Node:
        config = HostConfig(listen_host="127.0.0.1", listen_port=0)
        self.host = Host(self.identity, config).start()
        self.kad = KadService(
            self.host, self.identity, config=self.config, snapshot_path=self.snapshot
        ).start()
        return self

    def stop(self) -> None:
        self.kad.stop()
        self.host.stop()

    @property
    def peer_id(self) -> str:
        return self.identity.peer_id


class Cluster:
    def __init__(self, tmp_path: Path) -> None:
        self._tmp = tmp_path
        self.nodes: list[Node] = []

    def add(self, config: KadConfig | None = None) -> Node:
        index = len(self.nodes)
        node = Node(
            identity=Identity.from_seed(os.urandom(32)),
            snapshot=self._tmp / f"kad-{index}.msgpack",
            config=config or KadConfig(request_timeout_s=5.0, lookup_timeout_s=20.0),
        ).start()
        self.nodes.append(node)
        return node

    def chain(self, count: int) -> list[Node]:
        """`count` nodes, each bootstrapped from the one before it only."""
        nodes = [self.add()]
        for _ in range(count - 1):
            node = self.add()
            assert node.kad.bootstrap([address(nodes[-1])], timeout=TIMEOUT_S) >= 1
            nodes.append(node)
        return nodes

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path)
    try:
        yield cluster
    finally:
        cluster.stop()


def raw_host(*targets: Node) -> Host:
    """A bare libp2p Host with no kad service, connected to `targets`: it sends raw frames."""
    config = HostConfig(listen_host="127.0.0.1", listen_port=0)
    host = Host(Identity.from_seed(os.urandom(32)), config).start()
    for target in targets:
        host.connect(address(target), timeout=TIMEOUT_S)
    return host


def raw_exchange(host: Host, peer: str, messages: list[Message]) -> tuple[list[Message], bool]:
    """Send `messages` on one stream; the replies read, and whether the stream was reset."""
    stream = host.open_stream(peer, [PROTOCOL_ID], timeout=TIMEOUT_S)
    reader = dm.reader()
    replies: list[Message] = []
    try:
        for message in messages:
            stream.write(dm.encode_framed(message))
            if message.type is MessageType.ADD_PROVIDER:
                continue
            while (raw := reader.next_message()) is None:
                chunk = stream.read(timeout=TIMEOUT_S)
                if not chunk:
                    return replies, False
                reader.feed(chunk)
            replies.append(dm.decode(raw))
        stream.close()
        # The service closes its side once we closed ours (or resets a refused request).
        return replies, stream.read(timeout=TIMEOUT_S) != b""
    except PeerError:
        return replies, True


def peer_ids(found: list[tuple[str, list[Multiaddr]]]) -> set[str]:
    return {peer for peer, _ in found}


def test_chain_finds_providers_and_peers(cluster: Cluster) -> None:
    nodes = cluster.chain(8)
    first, last = nodes[0], nodes[-1]
    for node in nodes:
        assert node.kad.routing_table_size >= 1

    digest = digest_of(b"a blob only the last node holds")
    stored_at = last.kad.provide(digest, timeout=TIMEOUT_S)
    assert stored_at and last.peer_id not in stored_at

    found: list[tuple[str, list[Multiaddr]]] = []

    def first_finds_last() -> bool:
        found[:] = first.kad.find_providers(digest, timeout=TIMEOUT_S)
        return last.peer_id in peer_ids(found)

    wait_until(first_finds_last, "the first node to find the last as provider")
    addrs = dict(found)[last.peer_id]
    assert last.host.listen_addrs[0] in addrs
    assert first.kad.find_providers(digest_of(b"nobody has this"), timeout=TIMEOUT_S) == []
    assert first.kad.stats().lookups_done >= 2

    # A newcomer that only node 5 knows: node 0 never connected to it.
    hidden = cluster.add()
    assert hidden.host.connect(address(nodes[5]), timeout=TIMEOUT_S) == nodes[5].peer_id
    wait_until(
        lambda: hidden.peer_id in {p for p, _ in nodes[5].kad.peers()},
        "node 5 to add the newcomer to its table",
    )
    assert not first.host.is_connected(hidden.peer_id)
    assert hidden.peer_id not in {p for p, _ in first.kad.peers()}
    assert hidden.host.listen_addrs[0] in first.kad.find_peer(hidden.peer_id, timeout=TIMEOUT_S)

    # A peer that does not exist is not found.
    ghost = Identity.from_seed(os.urandom(32)).peer_id
    assert first.kad.find_peer(ghost, timeout=TIMEOUT_S) == []

    with pytest.raises(DigestInvalid):
        first.kad.find_providers("sha256:not-hex", timeout=TIMEOUT_S)


def test_restart_restores_the_table_and_reconnects_without_bootstrap(cluster: Cluster) -> None:
    nodes = cluster.chain(6)
    restarted = nodes[3]
    digest = digest_of(b"provided by node 0")
    assert nodes[0].kad.provide(digest, timeout=TIMEOUT_S)
    table_before = restarted.kad.routing_table_size
    old_addr = restarted.host.listen_addrs[0]

    restarted.stop()
    assert restarted.snapshot.is_file()
    restarted.start()  # same identity and snapshot file, a new Host on a new port
    new_addr = restarted.host.listen_addrs[0]
    assert new_addr != old_addr
    assert restarted.kad.routing_table_size >= min(table_before, 1)

    # Without bootstrap addresses: it dialled its saved peers, who now know its new port.
    wait_until(
        lambda: new_addr in nodes[0].kad.find_peer(restarted.peer_id, timeout=TIMEOUT_S),
        "node 0 to learn the restarted node's new address",
    )
    wait_until(
        lambda: nodes[0].peer_id in peer_ids(restarted.kad.find_providers(digest, timeout=TIMEOUT_S)),
        "the restarted node to find node 0's record",
    )


def test_unreadable_snapshot_starts_empty(cluster: Cluster, tmp_path: Path) -> None:
    node = cluster.add()
    node.stop()
    node.snapshot.write_bytes(b"\xc1 not msgpack")
    node.start()
    assert node.kad.routing_table_size == 0
    other = cluster.add()
    assert node.kad.bootstrap([address(other)], timeout=TIMEOUT_S) == 1


def test_a_stream_carries_several_requests_and_garbage_is_reset(cluster: Cluster) -> None:
    service, other = cluster.chain(2)
    client = raw_host(service)
    try:
        key = dm.provider_key(digest_of(b"x"))
        requests = [
            Message(type=MessageType.PING),
            Message(type=MessageType.FIND_NODE, key=dm.peer_id_to_bytes(other.peer_id)),
            Message(type=MessageType.GET_PROVIDERS, key=key),
        ]
        replies, reset = raw_exchange(client, service.peer_id, requests)
        assert [r.type for r in replies] == [r.type for r in requests]
        assert not reset
        assert other.peer_id in {dm.peer_id_from_bytes(p.id) for p in replies[1].closer_peers}
        # The client does not serve kad: answered, but kept out of the table.
        assert client.peer_id not in {p for p, _ in service.kad.peers()}

        stream = client.open_stream(service.peer_id, [PROTOCOL_ID], timeout=TIMEOUT_S)
        stream.write(b"\x05\xff\xff\xff\xff\xff")  # a length prefix then a broken protobuf
        with pytest.raises(PeerError):
            stream.read_all(1024, timeout=TIMEOUT_S)
        stream = client.open_stream(service.peer_id, [PROTOCOL_ID], timeout=TIMEOUT_S)
        stream.write(b"\xff\xff\xff\x7f")  # declares a 256 MiB message
        with pytest.raises(PeerError):
            stream.read_all(1024, timeout=TIMEOUT_S)
        # PUT_VALUE is not supported: refused with a reset, nothing stored.
        put = Message(type=MessageType.PUT_VALUE, key=key)
        assert raw_exchange(client, service.peer_id, [put]) == ([], True)
        assert service.kad.stats().provider_records == 0
        assert raw_exchange(client, service.peer_id, requests[:1])[0][0].type is MessageType.PING
    finally:
        client.stop()


def test_flooding_peer_is_refused_while_others_are_answered(cluster: Cluster) -> None:
    burst, records_max = 20, 10
    config = KadConfig(
        request_timeout_s=5.0,
        lookup_timeout_s=20.0,
        inbound_requests_per_s=0.01,  # no refill worth counting during the test
        inbound_burst=float(burst),
        provider_records_max=records_max,
    )
    service = cluster.add(config)
    neighbour = cluster.add()
    assert neighbour.kad.bootstrap([address(service)], timeout=TIMEOUT_S) == 1
    finder, adder = raw_host(service), raw_host(service)
    try:
        flood = 120
        answered = refused = 0
        for i in range(flood):
            target = dm.peer_id_to_bytes(Identity.from_seed(i.to_bytes(32, "big")).peer_id)
            replies, reset = raw_exchange(
                finder, service.peer_id, [Message(type=MessageType.FIND_NODE, key=target)]
            )
            answered += len(replies)
            refused += reset and not replies
        assert burst <= answered <= burst + 1
        assert refused == flood - answered

        # Provider records naming the flooder: bounded by the rate limit and the store.
        me = Peer(id=dm.peer_id_to_bytes(adder.peer_id), addrs=(adder.listen_addrs[0].to_bytes(),))
        for i in range(flood):
            key = dm.provider_key(digest_of(i.to_bytes(4, "big")))
            add = Message(type=MessageType.ADD_PROVIDER, key=key, provider_peers=(me,))
            raw_exchange(adder, service.peer_id, [add])
        wait_until(lambda: service.kad.stats().requests_in >= 2 * flood, "the service to take every request")
        stats = service.kad.stats()
        assert 1 <= stats.provider_records <= records_max
        assert stats.requests_refused >= 2 * flood - 2 * (burst + 1)

        # The flooders are refused; a well-behaved peer is still answered.
        assert raw_exchange(finder, service.peer_id, [Message(type=MessageType.PING)]) == ([], True)
        assert service.host.listen_addrs[0] in neighbour.kad.find_peer(service.peer_id, timeout=TIMEOUT_S)
        digest = digest_of(b"neighbour's blob")
        assert service.peer_id in neighbour.kad.provide(digest, timeout=TIMEOUT_S)
        assert neighbour.peer_id in peer_ids(service.kad.find_providers(digest, timeout=TIMEOUT_S))
    finally:
        finder.stop()
        adder.stop()


def test_bootstrap_errors_are_typed(cluster: Cluster) -> None:
    node = cluster.add()
    plain = raw_host()
    try:
        with pytest.raises(PeerError):
            node.kad.bootstrap(["/ip4/127.0.0.1/tcp/1"], timeout=5.0)
        with pytest.raises(PeerError, match="does not serve"):
            node.kad.bootstrap([str(plain.listen_addrs[0].with_peer(plain.peer_id))], timeout=TIMEOUT_S)
    finally:
        plain.stop()


def test_stopped_service_refuses_calls(tmp_path: Path) -> None:
    identity = Identity.from_seed(os.urandom(32))
    host = Host(identity, HostConfig(listen_host="127.0.0.1", listen_port=0)).start()
    try:
        kad = KadService(host, identity, limits=KadServiceLimits(snapshot_interval_s=1.0))
        with pytest.raises(PeerError):
            kad.find_peer(identity.peer_id, timeout=1.0)
        kad.start()
        kad.stop()
        with pytest.raises(PeerError):
            kad.provide(digest_of(b"late"), timeout=1.0)
    finally:
        host.stop()


def test_streams_past_a_peers_share_are_refused_and_counted(tmp_path: Path) -> None:
    # The kad behaviour holds at most `inbound_streams_per_peer_max` inbound streams of
    # one peer; more are reset at once and counted, never queued.
    identity = Identity.from_seed(os.urandom(32))
    host = Host(identity, HostConfig(listen_host="127.0.0.1", listen_port=0)).start()
    limits = KadServiceLimits(inbound_streams_per_peer_max=2, stream_idle_timeout_s=TIMEOUT_S)
    kad = KadService(host, identity, config=KadConfig(request_timeout_s=20.0), limits=limits)
    kad.start()
    client = Host(Identity.from_seed(os.urandom(32)), HostConfig(listen_host="127.0.0.1", listen_port=0))
    client.start()
    try:
        client.connect(str(host.listen_addrs[0].with_peer(host.peer_id)), timeout=TIMEOUT_S)
        held = [client.open_stream(host.peer_id, [PROTOCOL_ID], timeout=TIMEOUT_S) for _ in range(2)]
        ping = [Message(type=MessageType.PING)]
        results = [raw_exchange(client, host.peer_id, ping) for _ in range(3)]
        assert results == [([], True)] * 3
        assert kad.stats().requests_dropped == 3
        assert host.stats().refusals[f"streams_per_peer:{PROTOCOL_ID}"] == 3
        # The held streams are still served, and once one closes, a new stream is too.
        held[0].write(dm.encode_framed(ping[0]))
        reply = held[0].read_message(dm.MESSAGE_BYTES_MAX, timeout=TIMEOUT_S)
        assert reply is not None and dm.decode(reply).type is MessageType.PING
        held[0].close()
        wait_until(lambda: raw_exchange(client, host.peer_id, ping)[0] != [], "a stream to be answered again")
        assert kad.stats().requests_in >= 2
    finally:
        client.stop()
        kad.stop()
        host.stop()


def test_a_peer_advertised_only_behind_a_relay_is_reached_through_it(tmp_path: Path) -> None:
    # The private node advertises no direct address, only its circuit through the relay:
    # a lookup that must ask it dials the circuit (the behaviour's Dial), not a socket.
    def node(**changes: object) -> tuple[Host, KadService]:
        identity = Identity.from_seed(os.urandom(32))
        config = HostConfig(listen_host="127.0.0.1", listen_port=0, **changes)  # type: ignore[arg-type]
        host = Host(identity, config).start()
        return host, KadService(host, identity, config=KadConfig(request_timeout_s=5.0)).start()

    relay, relay_kad = node()
    private, private_kad = node(
        reachability="private",
        relay_service=False,
        hole_punching=False,
        no_announce=(AddressFilter.parse("127.0.0.0/8"),),
    )
    seeker, seeker_kad = node(relay_service=False, hole_punching=False)
    relay_address = str(relay.listen_addrs[0].with_peer(relay.peer_id))
    try:
        private.connect(relay_address, timeout=TIMEOUT_S)
        wait_until(lambda: bool(private.address_kinds()["relayed"]), "a reservation on the relay")
        (circuit,) = private.listen_addrs
        assert circuit.is_relayed
        assert private_kad.bootstrap([relay_address], timeout=TIMEOUT_S) == 1
        wait_until(
            lambda: private.peer_id in {p for p, _ in relay_kad.peers()},
            "the relay to table the private node",
        )
        assert seeker_kad.bootstrap([relay_address], timeout=TIMEOUT_S) >= 1
        found = seeker_kad.find_peer(private.peer_id, timeout=TIMEOUT_S)
        assert [str(a) for a in found] == [str(circuit.without_peer())]
        info = seeker.peer_info(private.peer_id)
        assert info is not None and info.relayed
        assert private.peer_id in {p for p, _ in seeker_kad.peers()}
    finally:
        for kad in (seeker_kad, private_kad, relay_kad):
            kad.stop()
        for host in (seeker, private, relay):
            host.stop()
