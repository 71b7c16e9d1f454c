"""The Kademlia core against sybils and address leaks: diversity, provider quotas, addresses.

Driven by hand, no sockets: 250 identities from one /24 are held to the table's bounds
while peers from other groups still enter; throwaway ids from one address are held to
the provider quotas while others still store; answers carry only addresses the asker
can dial. `remote_ip` is the far end of the connection, as the shell passes it.
"""

from __future__ import annotations

import functools
import hashlib
import random
from collections import Counter
from typing import Any

from pyrsia.p2p.behaviours.kad import addresses
from pyrsia.p2p.behaviours.kad import messages as dm
from pyrsia.p2p.behaviours.kad.core import (
    Effect,
    KadConfig,
    Kademlia,
    LookupDone,
    Refuse,
    Reply,
    Send,
    common_prefix_len,
    key_point,
)
from pyrsia.p2p.behaviours.kad.messages import Message, MessageType, Peer
from pyrsia.p2p.identity import Identity
from pyrsia.p2p.wire.multiaddr import Multiaddr, tcp

SYBIL_IP = "203.0.113.7"
SYBILS = 250


@functools.cache
def peer(i: int) -> str:
    return Identity.from_seed(i.to_bytes(32, "big")).peer_id


def raw(peer_id: str) -> bytes:
    return dm.peer_id_to_bytes(peer_id)


def honest_ip(i: int) -> str:
    """Peer `i`'s own /24: 10.x.y.1 never shares one with another i below 65,536."""
    return f"10.{(i >> 8) & 0xFF}.{i & 0xFF}.1"


def listen(ip: str, port: int = 44000) -> bytes:
    return tcp(ip, port).to_bytes()


ME = peer(0)
KEY = dm.provider_key("sha256:" + "ab" * 32)


def core(**config: Any) -> Kademlia:
    return Kademlia(
        peer_id=ME,
        addrs=(listen("198.51.100.1"),),
        rng=random.Random(1),
        now_s=0.0,
        config=KadConfig(**config),
    )


def one(effects: list[Effect], kind: type[Any]) -> Any:
    found = [e for e in effects if isinstance(e, kind)]
    assert len(found) == 1, effects
    return found[0]


def bucket_of(node: Kademlia, peer_id: str) -> int:
    return node.table.bucket_of(key_point(raw(peer_id)))


def group_counts_by_bucket(node: Kademlia) -> Counter[tuple[int, str | None]]:
    return Counter((node.table.bucket_of(e.point), e.group) for e in node.table.entries())


# -- groups and scopes ---------------------------------------------------------------


def test_groups_are_ipv4_slash_24_and_ipv6_slash_48() -> None:
    group = addresses.ip_group
    ip = addresses.parse_ip
    assert group(ip("203.0.113.7")) == group(ip("203.0.113.250")) == "203.0.113.0/24"
    assert group(ip("203.0.114.7")) != group(ip("203.0.113.7"))
    assert group(ip("::ffff:203.0.113.9")) == "203.0.113.0/24"  # IPv4-mapped counts as IPv4
    assert group(ip("2001:db8:1:2::1")) == group(ip("2001:db8:1:ffff::9")) == "2001:db8:1::/48"
    assert group(ip("2001:db8:2::1")) != group(ip("2001:db8:1::1"))
    assert group(ip("127.0.0.1")) == "127.0.0.0/24"  # loopback is not exempt by default
    exempt = addresses.parse_networks(["10.0.0.0/8", "fd00::/8"])
    assert group(ip("10.9.9.9"), exempt) is None and group(ip("fd12::1"), exempt) is None
    assert group(ip("11.0.0.1"), exempt) == "11.0.0.0/24"
    assert group(None) is None


def test_servable_addresses_leave_out_what_the_asker_cannot_dial() -> None:
    public, private = listen("203.0.113.7"), listen("192.168.1.5")
    loopback, link_local, ip6_loop = listen("127.0.0.1"), listen("169.254.3.4"), listen("::1")
    unspecified, port_zero = listen("0.0.0.0"), listen("203.0.113.7", 0)
    localhost = Multiaddr.parse("/dns4/localhost/tcp/1").to_bytes()
    dns = Multiaddr.parse("/dns4/node.example/tcp/1").to_bytes()
    everything = (
        public,
        private,
        loopback,
        link_local,
        ip6_loop,
        unspecified,
        port_zero,
        localhost,
        dns,
        b"junk",
    )
    assert addresses.servable(everything, to_loopback=False) == (public, private, dns)
    assert addresses.servable(everything, to_loopback=True) == (
        public,
        private,
        loopback,
        link_local,
        ip6_loop,
        localhost,
        dns,
    )
    # Short lists go through the bounded cache and are judged the same, asked twice or not.
    for to_loopback in (False, True):
        long = addresses.servable(everything, to_loopback=to_loopback)
        for _ in range(2):
            short = tuple(
                a for one in everything for a in addresses.servable((one,), to_loopback=to_loopback)
            )
            assert short == long
    assert addresses._servable_cached.cache_info().maxsize == addresses.CACHE_ENTRIES_MAX


# -- peer diversity in the routing table -----------------------------------------------


def test_sybils_from_one_address_are_held_to_the_bounds_and_others_still_enter() -> None:
    node = core()  # the defaults: 16 per bucket, 64 in the table
    for i in range(1, SYBILS + 1):
        # Each sybil advertises an address of its own: the group comes from the socket.
        node.add_peer(peer(i), (listen(honest_ip(i)),), 0.0, remote_ip=SYBIL_IP)
    sybil_group = "203.0.113.0/24"
    assert node.table.group_size(sybil_group) == len(node.table) == 64
    per_bucket = group_counts_by_bucket(node)
    assert max(per_bucket.values()) == 16  # the shallow buckets hit the per-bucket bound
    refused = node.refusals()
    assert refused["table_bucket_group"] > 0 and refused["table_group"] > 0
    assert refused["table_bucket_group"] + refused["table_group"] == SYBILS - 64

    entered = 0
    for i in range(1000, 1200):
        honest = peer(i)
        index = bucket_of(node, honest)
        had_room = len(node.table.bucket(index)) < node.config.k
        node.add_peer(honest, (listen(honest_ip(i)),), 1.0, remote_ip=honest_ip(i))
        assert (node.table.get(raw(honest)) is not None) == had_room, (index, had_room)
        entered += had_room
    # Every bucket the sybils crowd still took k - 16 = 4 others, and the deep ones more.
    assert entered >= 3 * 4
    assert node.table.group_size(sybil_group) == 64
    for (_, group), count in group_counts_by_bucket(node).items():
        assert group == sybil_group or count == 1


def test_the_per_bucket_bound_holds_on_its_own_and_loopback_is_one_group() -> None:
    node = core(ip_group_peers_per_bucket_max=3, ip_group_peers_max=1000)
    for i in range(1, 120):
        node.add_peer(peer(i), (listen("127.0.0.1", 40000 + i),), 0.0, remote_ip="127.0.0.1")
    per_bucket = group_counts_by_bucket(node)
    assert set(g for _, g in per_bucket) == {"127.0.0.0/24"}
    assert max(per_bucket.values()) == 3
    assert node.refusals()["table_group"] == 0 and node.refusals()["table_bucket_group"] > 0


def test_twenty_nodes_on_loopback_all_enter_with_the_defaults() -> None:
    for seed in range(20):
        base = 5000 + seed * 20
        node = Kademlia(peer_id=peer(base), addrs=(), rng=random.Random(seed), now_s=0.0, config=KadConfig())
        for i in range(base + 1, base + 20):
            node.add_peer(peer(i), (listen("127.0.0.1", 40000 + i),), 0.0, remote_ip="127.0.0.1")
        assert len(node.table) == 19 and node.refusals()["table_bucket_group"] == 0


def test_exempt_networks_are_not_counted() -> None:
    node = core(ip_group_peers_per_bucket_max=1, ip_group_peers_max=2, ip_group_exempt=("10.0.0.0/8",))
    for i in range(1, 40):
        node.add_peer(peer(i), (listen("10.0.0.2"),), 0.0, remote_ip="10.0.0.2")
    assert len(node.table) > 2 and node.refusals()["table_group"] == 0
    assert all(e.group is None for e in node.table.entries())


def test_a_removed_peer_frees_its_groups_place_and_replacements_respect_the_bounds() -> None:
    node = core(k=2, ip_group_peers_per_bucket_max=1, ip_group_peers_max=10)
    in_zero = [
        peer(i) for i in range(1, 400) if common_prefix_len(key_point(raw(peer(i))), key_point(raw(ME))) == 0
    ]
    a, b, c, d = in_zero[:4]
    node.add_peer(a, (listen("198.18.0.1"),), 0.0, remote_ip="198.18.0.1")  # group A
    node.add_peer(b, (listen("198.19.0.1"),), 0.0, remote_ip="198.19.0.1")  # group B: bucket full
    assert len(node.table.bucket(0)) == 2
    # c (group A) is refused outright: A already has its one place in bucket 0.
    node.add_peer(c, (listen("198.18.0.2"),), 100.0, remote_ip="198.18.0.2")
    assert node.table.get(raw(c)) is None and node.table.replacements(0) == []
    # d (group C) waits as a replacement; when b leaves, d moves in, not a group-A peer.
    node.add_peer(d, (listen("198.20.0.1"),), 100.0, remote_ip="198.20.0.1")
    assert [e.peer_id for e in node.table.replacements(0)] == [d]
    node.table.remove(raw(b))
    assert node.table.get(raw(d)) is not None
    node.table.remove(raw(a))
    assert node.table.group_size("198.18.0.0/24") == 0
    node.add_peer(c, (listen("198.18.0.2"),), 200.0, remote_ip="198.18.0.2")
    assert node.table.get(raw(c)) is not None


def test_a_restored_table_keeps_each_peers_group() -> None:
    node = core()
    node.add_peer(peer(1), (listen("10.0.0.1"),), 0.0, remote_ip=SYBIL_IP)
    snapshot = node.snapshot()
    again = core()
    assert again.restore(snapshot, 1.0) == 1
    entry = again.table.get(raw(peer(1)))
    assert entry is not None and entry.group == "203.0.113.0/24"


# -- provider quotas ---------------------------------------------------------------------


def add_provider(provider: str, key: bytes, ip: str) -> Message:
    record = Peer(id=raw(provider), addrs=(listen(ip),))
    return Message(type=MessageType.ADD_PROVIDER, key=key, provider_peers=(record,))


def key_of(i: int) -> bytes:
    return dm.provider_key("sha256:" + hashlib.sha256(i.to_bytes(8, "big")).hexdigest())


def test_one_peer_is_held_to_its_provider_quota() -> None:
    node = core(provider_records_per_peer_max=50, inbound_burst=1e9)
    flooder, other = peer(1), peer(2)
    refused = 0
    for i in range(80):
        effects = node.request_received(
            flooder, i, add_provider(flooder, key_of(i), "198.18.0.1"), 0.0, remote_ip="198.18.0.1"
        )
        refused += any(isinstance(e, Refuse) for e in effects)
    assert node.providers.records_of(raw(flooder)) == 50 == len(node.providers)
    assert refused == 30 == node.refusals()["provider_peer_quota"]
    # Renewing a record it holds is not a new one: still accepted.
    assert (
        node.request_received(
            flooder, 99, add_provider(flooder, key_of(0), "198.18.0.1"), 1.0, remote_ip="198.18.0.1"
        )
        == []
    )
    assert (
        node.request_received(
            other, 1, add_provider(other, key_of(0), "198.19.0.1"), 1.0, remote_ip="198.19.0.1"
        )
        == []
    )
    assert len(node.providers) == 51


def test_throwaway_ids_from_one_address_are_held_to_the_group_quota() -> None:
    node = core(provider_records_per_ip_group_max=100, provider_records_max=1000)
    for i in range(1, SYBILS + 1):
        sybil = peer(i)
        node.request_received(sybil, i, add_provider(sybil, key_of(i), SYBIL_IP), 0.0, remote_ip=SYBIL_IP)
    assert node.providers.records_of_group("203.0.113.0/24") == 100 == len(node.providers)
    assert node.refusals()["provider_group_quota"] == SYBILS - 100
    honest = peer(2000)
    assert (
        node.request_received(
            honest, 1, add_provider(honest, KEY, "198.51.100.9"), 0.0, remote_ip="198.51.100.9"
        )
        == []
    )
    asker = peer(2001)
    reply = one(
        node.request_received(
            asker, 2, Message(type=MessageType.GET_PROVIDERS, key=KEY), 0.0, remote_ip="198.51.100.10"
        ),
        Reply,
    )
    assert [p.id for p in reply.message.provider_peers] == [raw(honest)]


def test_quotas_are_freed_by_expiry_and_by_per_key_eviction() -> None:
    node = core(
        provider_records_per_peer_max=2,
        providers_per_key_max=2,
        provider_ttl_s=100.0,
        provider_sweep_interval_s=10.0,
    )
    p1, p2, p3 = peer(1), peer(2), peer(3)
    for i, who in enumerate((p1, p2, p3)):
        node.request_received(who, i, add_provider(who, KEY, honest_ip(i)), 0.0, remote_ip=honest_ip(i))
    assert node.providers.records_of(raw(p1)) == 0  # evicted by the per-key bound: counted out
    assert len(node.providers) == 2
    node.request_received(p2, 9, add_provider(p2, key_of(1), honest_ip(1)), 0.0, remote_ip=honest_ip(1))
    assert node.providers.records_of(raw(p2)) == 2
    refused = node.request_received(
        p2, 10, add_provider(p2, key_of(2), honest_ip(1)), 0.0, remote_ip=honest_ip(1)
    )
    assert one(refused, Refuse)
    node.tick(200.0)
    assert len(node.providers) == 0 and node.providers.records_of(raw(p2)) == 0
    assert (
        node.request_received(
            p2, 11, add_provider(p2, key_of(2), honest_ip(1)), 200.0, remote_ip=honest_ip(1)
        )
        == []
    )


# -- addresses ---------------------------------------------------------------------------


def test_answers_carry_loopback_only_to_a_loopback_asker() -> None:
    node = core()
    served = peer(1)
    addrs = (listen("127.0.0.1", 4001), listen("169.254.1.1"), listen("203.0.113.50"), listen("0.0.0.0"))
    node.add_peer(served, addrs, 0.0, remote_ip="203.0.113.50")
    find = Message(type=MessageType.FIND_NODE, key=raw(peer(77)))
    remote = one(node.request_received(peer(2), 1, find, 0.0, remote_ip="198.51.100.2"), Reply)
    assert remote.message.closer_peers == (Peer(id=raw(served), addrs=(listen("203.0.113.50"),)),)
    local = one(node.request_received(peer(3), 2, find, 0.0, remote_ip="127.0.0.1"), Reply)
    assert local.message.closer_peers[0].addrs == addrs[:3]
    assert node.refusals()["addrs_withheld"] == 3 + 1

    # Provider records and our own record follow the same rule.
    node.request_received(served, 3, add_provider(served, KEY, "127.0.0.1"), 0.0, remote_ip="127.0.0.1")
    get = Message(type=MessageType.GET_PROVIDERS, key=KEY)
    remote = one(node.request_received(peer(2), 4, get, 0.0, remote_ip="198.51.100.2"), Reply)
    assert [(p.id, p.addrs) for p in remote.message.provider_peers] == [(raw(served), ())]


def test_our_own_loopback_address_is_not_served_to_a_remote_asker() -> None:
    node = Kademlia(
        peer_id=ME,
        addrs=(listen("127.0.0.1"), listen("198.51.100.1")),
        rng=random.Random(1),
        now_s=0.0,
        config=KadConfig(),
    )
    node.provide(KEY, 0.0)
    get = Message(type=MessageType.GET_PROVIDERS, key=KEY)
    reply = one(node.request_received(peer(2), 1, get, 0.0, remote_ip="198.51.100.2"), Reply)
    assert reply.message.provider_peers == (Peer(id=raw(ME), addrs=(listen("198.51.100.1"),)),)


def test_loopback_addresses_in_a_remote_reply_are_not_taken_in() -> None:
    node = core()
    first = peer(1)
    node.add_peer(first, (listen("198.51.100.1"),), 0.0, remote_ip="198.51.100.1")
    lookup_id, effects = node.find_node(raw(peer(500)), 0.0)
    send = one(effects, Send)
    learned = peer(2)
    reply = Message(
        type=MessageType.FIND_NODE,
        closer_peers=(Peer(id=raw(learned), addrs=(listen("127.0.0.1"), listen("198.51.100.22"))),),
    )
    effects = node.response_received(send.request_id, reply, 0.0, remote_ip="198.51.100.1")
    ask = one(effects, Send)
    assert ask.peer == learned and ask.addrs == (listen("198.51.100.22"),)
    done = one(
        node.response_received(
            ask.request_id, Message(type=MessageType.FIND_NODE), 0.0, remote_ip="198.51.100.22"
        ),
        LookupDone,
    )
    assert done.lookup_id == lookup_id
    assert {p.peer_id: p.addrs for p in done.closest}[learned] == (listen("198.51.100.22"),)
