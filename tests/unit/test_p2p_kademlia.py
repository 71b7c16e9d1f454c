"""The Kademlia core driven by hand: table, lookups, providers, limits, persistence."""

from __future__ import annotations

import functools
import hashlib
import random
from collections.abc import Sequence
from typing import Any

import pytest

from pyrsia.p2p.behaviours.kad import messages as dm
from pyrsia.p2p.behaviours.kad.core import (
    HOUR_S,
    Effect,
    InboundRateLimit,
    KadConfig,
    Kademlia,
    LookupDone,
    LookupEnd,
    ProvideDone,
    Refuse,
    Reply,
    Send,
    common_prefix_len,
    key_point,
)
from pyrsia.p2p.behaviours.kad.messages import Message, MessageType, Peer
from pyrsia.p2p.identity import Identity
from pyrsia.p2p.wire.multiaddr import tcp


@functools.cache
def peer(i: int) -> str:
    return Identity.from_seed(i.to_bytes(32, "big")).peer_id


def raw(peer_id: str) -> bytes:
    return dm.peer_id_to_bytes(peer_id)


def addr(peer_id: str) -> bytes:
    """A public-looking address of its own /24 (a few tests' peers share one by chance)."""
    digest = hashlib.sha256(peer_id.encode()).digest()
    return tcp(f"100.{digest[0] % 64 + 64}.{digest[1]}.{digest[2] % 254 + 1}", 4001).to_bytes()


ME = peer(0)
KEY = dm.provider_key("sha256:" + "ab" * 32)


def cpl(peer_id: str, other: str = ME) -> int:
    return common_prefix_len(key_point(raw(peer_id)), key_point(raw(other)))


def in_bucket(bucket: int, count: int, *, start: int = 1) -> list[str]:
    found = []
    i = start
    while len(found) < count:
        if cpl(peer(i)) == bucket:
            found.append(peer(i))
        i += 1
    return found


def core(**config: Any) -> Kademlia:
    return Kademlia(
        peer_id=ME, addrs=(addr(ME),), rng=random.Random(1), now_s=0.0, config=KadConfig(**config)
    )


def sends(effects: list[Effect]) -> list[Send]:
    return [e for e in effects if isinstance(e, Send)]


def one(effects: list[Effect], kind: type[Any]) -> Any:
    found = [e for e in effects if isinstance(e, kind)]
    assert len(found) == 1, effects
    return found[0]


def as_peer(peer_id: str) -> Peer:
    return Peer(id=raw(peer_id), addrs=(addr(peer_id),))


def answer(
    node: Kademlia,
    send: Send,
    *,
    closer: Sequence[str] = (),
    providers: Sequence[str] = (),
    now_s: float = 0.0,
) -> list[Effect]:
    reply = Message(
        type=send.message.type,
        key=send.message.key if send.message.type is MessageType.GET_PROVIDERS else b"",
        closer_peers=tuple(as_peer(p) for p in closer),
        provider_peers=tuple(as_peer(p) for p in providers),
    )
    return node.response_received(send.request_id, reply, now_s)


# -- routing table -----------------------------------------------------------------


def test_peers_land_in_the_bucket_of_their_common_prefix() -> None:
    node = core()
    for i in range(1, 60):
        node.add_peer(peer(i), (addr(peer(i)),), 0.0)
    for index in range(256):
        for entry in node.table.bucket(index):
            assert cpl(entry.peer_id) == index
    assert len(node.table) == len(node.peers()) > 0
    assert node.add_peer(ME, (addr(ME),), 0.0) == [] and len(node.table) == len(node.peers())


def test_a_bucket_holds_k_peers_and_keeps_the_rest_as_replacements() -> None:
    node = core(k=3, replacements_per_bucket_max=2)
    peers = in_bucket(0, 6)
    for p in peers:
        node.add_peer(p, (addr(p),), 0.0)
    assert [e.peer_id for e in node.table.bucket(0)] == peers[:3]
    assert [e.peer_id for e in node.table.replacements(0)] == peers[4:6]
    assert len(node.table) == 3


def test_closest_orders_by_xor_distance_to_the_key() -> None:
    node = core()
    for i in range(1, 200):
        node.add_peer(peer(i), (addr(peer(i)),), 0.0)
    target = key_point(KEY)
    expected = sorted((e for e in node.table.entries()), key=lambda e: e.point ^ target)[:20]
    assert node.table.closest(target, 20) == expected
    me_first = sorted(node.table.entries(), key=lambda e: e.point ^ key_point(raw(ME)))[:5]
    assert node.table.closest(key_point(raw(ME)), 5) == me_first
    # Every bucket depth, whether or not a peer was ever put in it (the scan skips empty ones).
    for bit in range(0, 256, 3):
        point = key_point(raw(ME)) ^ (1 << bit)
        nearest = sorted(node.table.entries(), key=lambda e: e.point ^ point)[:20]
        assert node.table.closest(point, 20) == nearest


def test_full_bucket_pings_its_least_recently_seen_peer_and_evicts_it_when_silent() -> None:
    node = core(k=2, ping_after_idle_s=10.0)
    first, second, newcomer = in_bucket(0, 3)
    node.add_peer(first, (addr(first),), 0.0)
    node.add_peer(second, (addr(second),), 5.0)
    # The oldest was seen 5 s ago: presumed alive, no ping yet.
    assert node.add_peer(newcomer, (addr(newcomer),), 5.0) == []
    ping = one(node.add_peer(newcomer, (addr(newcomer),), 20.0), Send)
    assert ping.peer == first and ping.message == Message(type=MessageType.PING)
    # One ping per bucket at a time.
    assert node.add_peer(newcomer, (addr(newcomer),), 21.0) == []
    assert node.request_failed(ping.request_id, 22.0) == []
    assert [e.peer_id for e in node.table.bucket(0)] == [second, newcomer]


def test_full_bucket_keeps_a_peer_that_answers_its_ping() -> None:
    node = core(k=2, ping_after_idle_s=10.0)
    first, second, newcomer = in_bucket(0, 3)
    node.add_peer(first, (addr(first),), 0.0)
    node.add_peer(second, (addr(second),), 0.0)
    ping = one(node.add_peer(newcomer, (addr(newcomer),), 30.0), Send)
    node.response_received(ping.request_id, Message(type=MessageType.PING), 30.5)
    assert [e.peer_id for e in node.table.bucket(0)] == [second, first]
    assert [e.peer_id for e in node.table.replacements(0)] == [newcomer]


def test_unanswered_ping_times_out_by_tick() -> None:
    node = core(k=1, ping_after_idle_s=0.0, request_timeout_s=2.0)
    first, newcomer = in_bucket(0, 2)
    node.add_peer(first, (addr(first),), 0.0)
    one(node.add_peer(newcomer, (addr(newcomer),), 1.0), Send)
    assert node.next_deadline_s() == 3.0
    node.tick(3.0)
    assert [e.peer_id for e in node.table.bucket(0)] == [newcomer]


# -- lookups -----------------------------------------------------------------------


def test_find_node_queries_alpha_closest_then_closer_peers_until_k_closest_answered() -> None:
    node = core(k=3, alpha=2)
    known = [peer(i) for i in range(1, 5)]
    for p in known:
        node.add_peer(p, (addr(p),), 0.0)
    target_peer = peer(99)
    lookup_id, effects = node.find_node(raw(target_peer), 0.0)
    first = sends(effects)
    target = key_point(raw(target_peer))
    by_distance = sorted(known, key=lambda p: key_point(raw(p)) ^ target)
    assert [s.peer for s in first] == by_distance[:2]
    assert all(s.message == Message(type=MessageType.FIND_NODE, key=raw(target_peer)) for s in first)
    # The first answer names the target itself: it is nearer than anything we knew.
    effects = answer(node, first[0], closer=[target_peer])
    assert [s.peer for s in sends(effects)] == [target_peer]
    in_flight = [first[1], *sends(effects)]
    done: list[Effect] = []
    for send in in_flight:
        done += answer(node, send, closer=[])
    more = sends(done)
    for send in more:
        done += answer(node, send)
    result = one(done, LookupDone)
    assert result.lookup_id == lookup_id and result.end is LookupEnd.COMPLETE
    assert result.closest[0].peer_id == target_peer and len(result.closest) == 3
    assert result.hops == 2 and result.requests == len(first) + 1 + len(more)
    assert node.active_lookups == 0 and node.pending_requests == 0


def test_find_providers_stops_as_soon_as_enough_providers_are_found() -> None:
    node = core()
    for i in range(1, 10):
        node.add_peer(peer(i), (addr(peer(i)),), 0.0)
    _, effects = node.find_providers(KEY, 0.0, wanted=1)
    first = sends(effects)
    assert len(first) == 3 and all(s.message.type is MessageType.GET_PROVIDERS for s in first)
    result = one(answer(node, first[0], providers=[peer(50)]), LookupDone)
    assert [p.peer_id for p in result.providers] == [peer(50)]
    assert result.providers[0].addrs == (addr(peer(50)),)
    assert result.hops == 1 and result.end is LookupEnd.COMPLETE
    # The other two answers arrive after the end and change nothing.
    assert answer(node, first[1], providers=[peer(51)]) == []
    assert node.pending_requests == 0


def test_lookup_with_an_empty_table_ends_at_once() -> None:
    node = core()
    result = one(node.find_providers(KEY, 0.0)[1], LookupDone)
    assert result.end is LookupEnd.EXHAUSTED and result.providers == () and result.hops is None


def test_a_silent_peer_is_retried_then_skipped_and_leaves_the_table() -> None:
    node = core(alpha=1, request_timeout_s=1.0, request_attempts_max=2, peer_failures_max=1)
    near, far = sorted([peer(1), peer(2)], key=lambda p: key_point(raw(p)) ^ key_point(KEY))
    node.add_peer(near, (addr(near),), 0.0)
    node.add_peer(far, (addr(far),), 0.0)
    _, effects = node.find_providers(KEY, 0.0)
    (first,) = sends(effects)
    assert first.peer == near
    (retry,) = sends(node.tick(1.0))
    assert retry.peer == near and retry.request_id != first.request_id
    (second,) = sends(node.tick(2.0))
    assert second.peer == far
    assert [p.peer_id for p in node.peers()] == [far]
    result = one(answer(node, second, providers=[peer(7)], now_s=2.5), LookupDone)
    assert [p.peer_id for p in result.providers] == [peer(7)]
    assert result.requests == 3


def test_a_reply_of_the_wrong_type_counts_as_a_failure() -> None:
    node = core(alpha=1, request_attempts_max=1)
    node.add_peer(peer(1), (addr(peer(1)),), 0.0)
    (send,) = sends(node.find_node(raw(peer(9)), 0.0)[1])
    result = one(node.response_received(send.request_id, Message(type=MessageType.PING), 0.1), LookupDone)
    assert result.end is LookupEnd.EXHAUSTED and result.closest == ()
    assert node.response_received(12345, Message(type=MessageType.PING), 0.2) == []


def test_lookup_times_out_as_a_whole() -> None:
    node = core(request_timeout_s=100.0, lookup_timeout_s=5.0)
    node.add_peer(peer(1), (addr(peer(1)),), 0.0)
    node.find_node(raw(peer(9)), 0.0)
    assert node.next_deadline_s() == 5.0
    result = one(node.tick(5.0), LookupDone)
    assert result.end is LookupEnd.TIMEOUT and node.pending_requests == 0


def test_lookups_beyond_the_bound_end_busy() -> None:
    node = core(lookups_active_max=1, request_timeout_s=100.0)
    node.add_peer(peer(1), (addr(peer(1)),), 0.0)
    node.find_node(raw(peer(8)), 0.0)
    result = one(node.find_node(raw(peer(9)), 0.0)[1], LookupDone)
    assert result.end is LookupEnd.BUSY


# -- answering requests ------------------------------------------------------------


def test_find_node_is_answered_with_the_closest_peers_but_never_the_asker() -> None:
    node = core(k=5)
    for i in range(1, 30):
        node.add_peer(peer(i), (addr(peer(i)),), 0.0)
    asker = peer(3)
    reply = one(
        node.request_received(asker, 7, Message(type=MessageType.FIND_NODE, key=raw(asker)), 0.0), Reply
    )
    assert reply.inbound_id == 7 and reply.message.type is MessageType.FIND_NODE
    ids = [p.id for p in reply.message.closer_peers]
    assert len(ids) == 5 and raw(asker) not in ids
    expected = node.table.closest(key_point(raw(asker)), 5, exclude=frozenset((raw(asker),)))
    assert ids == [e.id for e in expected]


def test_ping_get_value_and_put_value() -> None:
    node = core()
    assert one(
        node.request_received(peer(1), 1, Message(type=MessageType.PING), 0.0), Reply
    ).message == Message(type=MessageType.PING)
    get = one(
        node.request_received(peer(1), 2, Message(type=MessageType.GET_VALUE, key=b"/pk/x"), 0.0), Reply
    )
    assert get.message.record is None and get.message.key == b"/pk/x"
    put = Message(type=MessageType.PUT_VALUE, key=b"k", record=dm.Record(key=b"k", value=b"v"))
    assert isinstance(one(node.request_received(peer(1), 3, put, 0.0), Refuse), Refuse)
    bad = Message(type=MessageType.GET_PROVIDERS, key=b"not a multihash")
    assert one(node.request_received(peer(1), 4, bad, 0.0), Refuse).reason


def test_requests_with_addresses_add_the_asker_to_the_table_and_without_do_not() -> None:
    node = core()
    node.request_received(peer(1), 1, Message(type=MessageType.PING), 0.0)
    assert node.peers() == []
    node.request_received(peer(2), 1, Message(type=MessageType.PING), 0.0, addrs=(addr(peer(2)),))
    assert [p.peer_id for p in node.peers()] == [peer(2)]


def add_provider(sender: str, provider: str, *, addrs: bool = True, key: bytes = KEY) -> Message:
    record = Peer(id=raw(provider), addrs=(addr(provider),) if addrs else ())
    return Message(type=MessageType.ADD_PROVIDER, key=key, provider_peers=(record,))


def get_providers(node: Kademlia, now_s: float, asker: str = peer(40)) -> list[str]:
    reply = one(
        node.request_received(asker, 1, Message(type=MessageType.GET_PROVIDERS, key=KEY), now_s), Reply
    )
    assert reply.message.key == KEY
    return [dm.peer_id_from_bytes(p.id) for p in reply.message.provider_peers]


def test_add_provider_is_stored_silently_and_served_until_its_ttl() -> None:
    node = core(provider_ttl_s=100.0, provider_sweep_interval_s=10.0)
    assert node.request_received(peer(1), 1, add_provider(peer(1), peer(1)), 0.0) == []
    assert get_providers(node, 50.0) == [peer(1)]
    assert get_providers(node, 100.0) == []
    assert len(node.providers) == 1
    node.tick(100.0)
    assert len(node.providers) == 0


def test_add_provider_naming_another_peer_or_no_address_is_refused() -> None:
    node = core()
    refused = one(node.request_received(peer(1), 1, add_provider(peer(1), peer(2)), 0.0), Refuse)
    assert refused.inbound_id == 1
    one(node.request_received(peer(1), 2, add_provider(peer(1), peer(1), addrs=False), 0.0), Refuse)
    one(node.request_received(peer(1), 3, add_provider(peer(1), peer(1), key=b"\x12\x20short"), 0.0), Refuse)
    assert len(node.providers) == 0 and get_providers(node, 0.0) == []


def test_provider_store_is_bounded_against_a_flood() -> None:
    node = core(provider_records_max=10, providers_per_key_max=3, inbound_burst=1e9)
    for i in range(50):
        key = dm.provider_key(f"sha256:{i:064x}")
        node.request_received(peer(1), i, add_provider(peer(1), peer(1), key=key), 0.0)
    for i in range(2, 8):
        node.request_received(peer(i), 0, add_provider(peer(i), peer(i)), 0.0)
    assert len(node.providers) == 10
    assert len(node.providers.get(KEY, 0.0, 100)) <= 3


def test_routing_table_stays_bounded_under_a_flood_of_askers() -> None:
    node = core(k=4, replacements_per_bucket_max=2)
    for i in range(1, 400):
        p = peer(i)
        node.request_received(p, 1, Message(type=MessageType.FIND_NODE, key=raw(p)), 0.0, addrs=(addr(p),))
    for index in range(256):
        assert len(node.table.bucket(index)) <= 4
        assert len(node.table.replacements(index)) <= 2


# -- rate limiting -----------------------------------------------------------------


def test_each_peer_gets_a_token_bucket_of_requests() -> None:
    node = core(inbound_requests_per_s=2.0, inbound_burst=5.0)
    ping = Message(type=MessageType.PING)
    results = [node.request_received(peer(1), i, ping, 0.0)[0] for i in range(7)]
    assert [type(r) for r in results] == [Reply] * 5 + [Refuse] * 2
    # Another peer is not affected; one second later two more requests are allowed.
    assert isinstance(node.request_received(peer(2), 0, ping, 0.0)[0], Reply)
    later = [node.request_received(peer(1), i, ping, 1.0)[0] for i in range(3)]
    assert [type(r) for r in later] == [Reply, Reply, Refuse]


def test_rate_limit_holds_a_bounded_number_of_peers() -> None:
    limit = InboundRateLimit(rate_per_s=1.0, burst=1.0, peers_max=3)
    for i in range(10):
        assert limit.allow(raw(peer(i)), 0.0)
    assert len(limit) == 3
    assert not limit.allow(raw(peer(9)), 0.0)


# -- providing and republishing -----------------------------------------------------


def run_provide(node: Kademlia, now_s: float, effects: list[Effect]) -> list[Effect]:
    """Answer every FIND_NODE with no closer peers; return the effects after the end."""
    out: list[Effect] = []
    queue = sends(effects)
    while queue:
        send = queue.pop(0)
        result = answer(node, send, now_s=now_s)
        out += result
        queue += [s for s in sends(result) if s.message.type is MessageType.FIND_NODE]
    return out


def test_provide_announces_to_the_closest_peers_and_republishes_on_schedule() -> None:
    node = core(k=3, republish_interval_s=22 * HOUR_S, refresh_interval_s=1e9, provider_sweep_interval_s=1e9)
    for i in range(1, 8):
        node.add_peer(peer(i), (addr(peer(i)),), 0.0)
    lookup_id, effects = node.provide(KEY, 0.0)
    after = run_provide(node, 0.0, effects)
    announced = [s for s in sends(after) if s.message.type is MessageType.ADD_PROVIDER]
    target = key_point(KEY)
    assert [s.peer for s in announced] == sorted(
        [p.peer_id for p in node.peers()], key=lambda p: key_point(raw(p)) ^ target
    )[:3]
    assert all(not s.expects_reply for s in announced)
    assert announced[0].message.provider_peers == (Peer(id=raw(ME), addrs=(addr(ME),)),)
    done = one(after, ProvideDone)
    assert done.lookup_id == lookup_id and done.stored_at == tuple(s.peer for s in announced)
    # We answer GET_PROVIDERS for our own key.
    assert get_providers(node, 1.0) == [ME]

    assert node.next_deadline_s() == 22 * HOUR_S
    assert sends(node.tick(22 * HOUR_S - 1)) == []
    again = sends(node.tick(22 * HOUR_S))
    assert again and all(s.message == Message(type=MessageType.FIND_NODE, key=KEY) for s in again)
    node.stop_providing(KEY)
    assert not any(isinstance(e, ProvideDone) for e in run_provide(node, 22 * HOUR_S, again))
    assert sends(node.tick(44 * HOUR_S)) == []


def kinds(effects: list[Effect]) -> list[MessageType]:
    return [s.message.type for s in sends(effects)]


def test_in_a_network_smaller_than_k_known_whole_a_provide_skips_its_lookup() -> None:
    node = core(small_network_s=300.0, refresh_interval_s=1e9, provider_sweep_interval_s=1e9)
    members = [peer(i) for i in range(1, 6)]
    for member in members:
        node.add_peer(member, (addr(member),), 0.0)
    _, effects = node.provide(KEY, 0.0)
    assert set(kinds(effects)) == {MessageType.FIND_NODE}  # nothing shows the network small yet
    after = run_provide(node, 0.0, effects)  # every answer names no one beyond the table
    assert [k for k in kinds(after) if k is not MessageType.FIND_NODE] == [MessageType.ADD_PROVIDER] * 5
    key2 = dm.provider_key("sha256:" + "cd" * 32)
    lookup_id, direct = node.provide(key2, 10.0)
    assert kinds(direct) == [MessageType.ADD_PROVIDER] * 5  # no FIND_NODE round
    done = one(direct, ProvideDone)
    assert done.lookup_id == lookup_id and sorted(done.stored_at) == sorted(members)
    assert node.small_network_provides == 1
    # Past `small_network_s` without another lookup, a provide looks up again.
    key3 = dm.provider_key("sha256:" + "ef" * 32)
    assert set(kinds(node.provide(key3, 310.0)[1])) == {MessageType.FIND_NODE}


def test_a_lookup_that_meets_a_peer_beyond_the_table_ends_the_shortcut() -> None:
    node = core(small_network_s=300.0, refresh_interval_s=1e9, provider_sweep_interval_s=1e9)
    for i in range(1, 4):
        node.add_peer(peer(i), (addr(peer(i)),), 0.0)
    run_provide(node, 0.0, node.provide(KEY, 0.0)[1])
    assert (
        kinds(node.provide(dm.provider_key("sha256:" + "01" * 32), 1.0)[1]) == [MessageType.ADD_PROVIDER] * 3
    )
    # A lookup hears of a stranger that never answers (so never joins the table).
    _, effects = node.find_node(raw(peer(90)), 2.0)
    queue = sends(effects)
    stranger = peer(90)
    while queue:
        send = queue.pop(0)
        if send.peer == stranger:
            result = node.request_failed(send.request_id, 2.0)
        else:
            result = answer(node, send, closer=[stranger], now_s=2.0)
        queue += sends(result)
    assert node.table.get(raw(stranger)) is None
    assert set(kinds(node.provide(dm.provider_key("sha256:" + "02" * 32), 3.0)[1])) == {MessageType.FIND_NODE}


def test_a_table_of_k_peers_always_looks_up_before_providing() -> None:
    node = core(k=3, small_network_s=300.0, refresh_interval_s=1e9, provider_sweep_interval_s=1e9)
    for i in range(1, 4):
        node.add_peer(peer(i), (addr(peer(i)),), 0.0)
    run_provide(node, 0.0, node.provide(KEY, 0.0)[1])
    assert set(kinds(node.provide(dm.provider_key("sha256:" + "03" * 32), 1.0)[1])) == {MessageType.FIND_NODE}


def test_refresh_looks_up_ourselves_and_a_random_key_in_each_stale_bucket() -> None:
    node = core(refresh_interval_s=600.0, request_timeout_s=1.0)
    for i in range(1, 40):
        node.add_peer(peer(i), (addr(peer(i)),), 0.0)
    effects = node.tick(600.0)
    keys = {s.message.key for s in sends(effects)}
    assert raw(ME) in keys
    cpls = {common_prefix_len(key_point(k), key_point(raw(ME))) for k in keys if k != raw(ME)}
    assert {0, 1} <= cpls


# -- persistence -------------------------------------------------------------------


def test_snapshot_restores_the_same_table() -> None:
    node = core()
    for i in range(1, 50):
        node.add_peer(peer(i), (addr(peer(i)), b"/second"), 0.0)
    snapshot = node.snapshot()
    fresh = core()
    assert fresh.restore(snapshot, 100.0) == len(node.peers())
    assert sorted((p.peer_id, p.addrs) for p in fresh.peers()) == sorted(
        (p.peer_id, p.addrs) for p in node.peers()
    )


@pytest.mark.parametrize(
    "snapshot",
    [
        None,
        {"version": 2, "peers": []},
        {"version": 1, "peers": "x"},
        {
            "version": 1,
            "peers": [1, {"id": 5, "addrs": []}, {"id": "zzz0", "addrs": []}, {"id": ME, "addrs": []}],
        },
        {"version": 1, "peers": [{"id": peer(1), "addrs": ["not bytes"]}]},
    ],
)
def test_restore_skips_what_does_not_parse(snapshot: object) -> None:
    node = core()
    assert node.restore(snapshot, 0.0) == 0
    assert node.peers() == []


def test_a_sparse_table_after_bootstrap_refreshes_sooner() -> None:
    node = core(k=20, refresh_interval_s=600.0, sparse_refresh_interval_s=60.0, provider_sweep_interval_s=1e9)
    node.add_peer(peer(1), (addr(peer(1)),), 0.0)
    (send,) = sends(node.bootstrap(0.0))
    assert send.message == Message(type=MessageType.FIND_NODE, key=raw(ME))
    assert answer(node, send, now_s=0.5) == []
    assert node.next_deadline_s() == 60.5
    assert raw(ME) in {s.message.key for s in sends(node.tick(60.5))}


def test_a_held_key_is_answered_for_at_once_and_announced_later() -> None:
    node = core()
    for i in range(1, 5):
        node.add_peer(peer(i), (addr(peer(i)),), 0.0)
    assert get_providers(node, 0.0) == []
    node.hold(KEY, 0.0)  # no lookup yet: the announcement waits its turn
    assert get_providers(node, 0.0) == [ME]
    assert node.active_lookups == 0
    node.hold(KEY, 1.0)  # holding again changes nothing
    assert node.next_deadline_s() <= 22 * HOUR_S
