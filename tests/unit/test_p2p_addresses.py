"""Which addresses a node advertises, which observed addresses it believes, and its address book."""

from __future__ import annotations

import random
import re

import pytest

from pyrsia.errors import ConfigError
from pyrsia.formats.peer_id import peer_id_of
from pyrsia.p2p.swarm.addresses import (
    CIRCUITS_ADVERTISED_MAX,
    AddressBook,
    AddressFilter,
    AdvertisePolicy,
    ObservedAddresses,
    Sighting,
    advertised,
    advertised_circuits,
    dialable,
    kind_of,
    listen_addresses,
    observer_group,
    punch_sightings,
)
from pyrsia.p2p.wire.multiaddr import Multiaddr

PEER = peer_id_of(b"\x01" * 32)
OTHER = peer_id_of(b"\x02" * 32)
INTERFACES = (
    "127.0.0.1",
    "192.0.2.2",
    "::1",
    "fe80::fc:ff:fe00:1",
    "fd00::2",
    "2a00:1450::7",
    "93.184.216.34",
)


def ma(text: str) -> Multiaddr:
    return Multiaddr.parse(text)


def texts(addresses: tuple[Multiaddr, ...]) -> list[str]:
    return [str(a) for a in addresses]


# -- expansion of the bound address -------------------------------------------------


def test_unspecified_ipv4_bind_expands_to_each_ipv4_interface() -> None:
    assert texts(listen_addresses(ma("/ip4/0.0.0.0/tcp/44000"), INTERFACES)) == [
        "/ip4/127.0.0.1/tcp/44000",
        "/ip4/192.0.2.2/tcp/44000",
        "/ip4/93.184.216.34/tcp/44000",
    ]


def test_unspecified_ipv6_bind_expands_to_ipv6_without_link_local_and_ipv4_when_dual_stack() -> None:
    ipv6_only = texts(listen_addresses(ma("/ip6/::/tcp/5"), INTERFACES))
    assert ipv6_only == ["/ip6/::1/tcp/5", "/ip6/fd00::2/tcp/5", "/ip6/2a00:1450::7/tcp/5"]
    dual = texts(listen_addresses(ma("/ip6/::/tcp/5"), INTERFACES, dual_stack=True))
    assert set(dual) == set(ipv6_only) | {
        "/ip4/127.0.0.1/tcp/5",
        "/ip4/192.0.2.2/tcp/5",
        "/ip4/93.184.216.34/tcp/5",
    }


def test_specified_bind_is_itself_and_garbage_interfaces_are_skipped() -> None:
    assert texts(listen_addresses(ma("/ip4/10.0.0.5/tcp/7"), INTERFACES)) == ["/ip4/10.0.0.5/tcp/7"]
    junk = ["not-an-ip", "", "0.0.0.0", "192.0.2.2", "192.0.2.2", "1.2.3.4.5"]
    assert texts(listen_addresses(ma("/ip4/0.0.0.0/tcp/7"), junk)) == ["/ip4/192.0.2.2/tcp/7"]


def test_kinds() -> None:
    cases = {
        "/ip4/127.0.0.1/tcp/1": "loopback",
        "/ip6/::1/tcp/1": "loopback",
        "/ip4/0.0.0.0/tcp/1": "unspecified",
        "/ip4/169.254.1.1/tcp/1": "link-local",
        "/ip6/fe80::1/tcp/1": "link-local",
        "/ip4/10.1.2.3/tcp/1": "private",
        "/ip6/fd00::2/tcp/1": "private",
        "/ip4/8.8.8.8/tcp/1": "public",
        "/ip6/2606:4700::1111/tcp/1": "public",
        "/ip6/::ffff:127.0.0.1/tcp/1": "loopback",
        "/dns4/example.org/tcp/1": "dns",
    }
    assert {text: kind_of(ma(text)) for text in cases} == cases


# -- what is advertised ----------------------------------------------------------------

LISTEN = listen_addresses(ma("/ip4/0.0.0.0/tcp/44000"), INTERFACES) + listen_addresses(
    ma("/ip6/::/tcp/44000"), INTERFACES
)


def test_loopback_is_not_sent_to_a_remote_peer_when_there_is_anything_else() -> None:
    sent = texts(advertised(listen=LISTEN, remote=ma("/ip4/192.0.2.9/tcp/5555")))
    assert sent[0] == "/ip4/93.184.216.34/tcp/44000"  # public first
    assert set(sent) == {
        "/ip4/192.0.2.2/tcp/44000",
        "/ip4/93.184.216.34/tcp/44000",
        "/ip6/fd00::2/tcp/44000",
        "/ip6/2a00:1450::7/tcp/44000",
    }
    assert texts(advertised(listen=LISTEN)) == sent  # what status shows: the same


def test_a_peer_on_loopback_gets_loopback_first() -> None:
    sent = texts(advertised(listen=LISTEN, remote=ma("/ip4/127.0.0.1/tcp/5555")))
    assert sent[:2] == ["/ip4/127.0.0.1/tcp/44000", "/ip6/::1/tcp/44000"]
    assert "/ip4/192.0.2.2/tcp/44000" in sent


def test_loopback_only_node_advertises_loopback() -> None:
    only = listen_addresses(ma("/ip4/0.0.0.0/tcp/1"), ["127.0.0.1"])
    assert texts(advertised(listen=only, remote=ma("/ip4/192.0.2.9/tcp/2"))) == ["/ip4/127.0.0.1/tcp/1"]


def test_ipv6_link_local_and_unspecified_are_never_sent() -> None:
    listen = (ma("/ip6/fe80::1/tcp/1"), ma("/ip4/0.0.0.0/tcp/1"), ma("/ip4/192.0.2.2/tcp/1"))
    for remote in (None, ma("/ip6/::1/tcp/9"), ma("/ip6/fe80::2/tcp/9")):
        assert texts(advertised(listen=listen, remote=remote)) == ["/ip4/192.0.2.2/tcp/1"]


def test_announce_replaces_discovered_and_observed_addresses() -> None:
    policy = AdvertisePolicy.from_settings(
        announce=["/dns4/node.example.org/tcp/4001", "/ip4/127.0.0.1/tcp/9"]
    )
    sent = advertised(listen=LISTEN, observed=(ma("/ip4/93.184.216.1/tcp/44000"),), policy=policy)
    assert texts(sent) == ["/dns4/node.example.org/tcp/4001", "/ip4/127.0.0.1/tcp/9"]


def test_no_announce_removes_by_cidr_and_by_multiaddr_prefix() -> None:
    policy = AdvertisePolicy.from_settings(no_announce=["192.0.2.0/24", "/ip6/2a00:1450::7", "fd00::2/128"])
    sent = advertised(listen=LISTEN, remote=ma("/ip4/192.0.2.9/tcp/5"), policy=policy)
    assert texts(sent) == ["/ip4/93.184.216.34/tcp/44000"]
    exact = AdvertisePolicy.from_settings(no_announce=["/ip4/93.184.216.34/tcp/44000"])
    assert "/ip4/93.184.216.34/tcp/44000" not in texts(advertised(listen=LISTEN, policy=exact))
    other_port = AdvertisePolicy.from_settings(no_announce=["/ip4/93.184.216.34/tcp/1"])
    assert "/ip4/93.184.216.34/tcp/44000" in texts(advertised(listen=LISTEN, policy=other_port))
    both = AdvertisePolicy.from_settings(
        announce=["/ip4/93.184.216.34/tcp/1"], no_announce=["93.184.216.0/24"]
    )
    assert advertised(listen=LISTEN, policy=both) == ()


def test_observed_addresses_are_advertised_and_everything_is_bounded() -> None:
    many = tuple(ma(f"/ip4/10.{i // 256}.{i % 256}.1/tcp/1") for i in range(5000))
    sent = advertised(listen=many, observed=(ma("/ip4/93.184.216.1/tcp/1"),), addresses_max=32)
    assert len(sent) == 32 and sent[0] == ma("/ip4/93.184.216.1/tcp/1")


@pytest.mark.parametrize(
    ("announce", "no_announce", "message"),
    [
        (["/ip4/1.2.3/tcp/1"], [], "announce: '/ip4/1.2.3/tcp/1' is not a multiaddr"),
        (["/ip4/1.2.3.4"], [], "announce: '/ip4/1.2.3.4' is not /ip4"),
        (["/bogus/1"], [], "announce: '/bogus/1' is not a multiaddr"),
        ([], ["10.0.0.0/33"], "no_announce: '10.0.0.0/33' is neither a multiaddr nor a CIDR"),
        ([], ["/ip4/x"], "no_announce: '/ip4/x' is not a multiaddr"),
    ],
)
def test_bad_policy_entries_are_one_clear_config_error(
    announce: list[str], no_announce: list[str], message: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)) as raised:
        AdvertisePolicy.from_settings(announce=announce, no_announce=no_announce)
    assert "\n" not in raised.value.message


def test_filter_matches_ipv4_mapped_addresses_against_ipv4_networks() -> None:
    assert AddressFilter.parse("10.0.0.0/8").matches(ma("/ip6/::ffff:10.1.1.1/tcp/1"))
    assert not AddressFilter.parse("10.0.0.0/8").matches(ma("/dns4/ten.example/tcp/1"))


# -- observed addresses ---------------------------------------------------------------


def observe(
    book: ObservedAddresses, observed: str, observer: str, now: float = 0.0, inbound: bool = False
) -> bool:
    return book.record(observed=ma(observed), observer=ma(observer), inbound=inbound, now_s=now)


def test_an_address_is_observed_only_after_two_distinct_observer_groups() -> None:
    book = ObservedAddresses(listen_port=44000)
    assert observe(book, "/ip4/198.51.100.7/tcp/51234", "/ip4/203.0.113.1/tcp/44000")
    assert book.confirmed(1.0) == ()
    # Same /24: the same group, however many hosts.
    assert observe(book, "/ip4/198.51.100.7/tcp/40000", "/ip4/203.0.113.200/tcp/44000")
    assert book.confirmed(1.0) == ()
    assert observe(book, "/ip4/198.51.100.7/tcp/33333", "/ip4/192.0.2.50/tcp/44000")
    # Outbound connections: the observed port is ephemeral, our listen port is used.
    assert texts(book.confirmed(1.0)) == ["/ip4/198.51.100.7/tcp/44000"]


def test_inbound_observations_keep_the_port_they_reached_us_on() -> None:
    book = ObservedAddresses(listen_port=44000)
    observe(book, "/ip4/198.51.100.7/tcp/4001", "/ip4/203.0.113.1/tcp/1", inbound=True)
    observe(book, "/ip4/198.51.100.7/tcp/4001", "/ip4/192.0.2.1/tcp/1", inbound=True)
    assert texts(book.confirmed(0.0)) == ["/ip4/198.51.100.7/tcp/4001"]


def test_one_lying_observer_never_gets_its_address_advertised() -> None:
    book = ObservedAddresses(listen_port=44000)
    liar_ips = [f"/ip4/203.0.113.{i}/tcp/{1000 + i}" for i in range(1, 255)]
    for i in range(5000):
        observe(book, "/ip4/6.6.6.6/tcp/1", liar_ips[i % len(liar_ips)], now=float(i), inbound=bool(i % 2))
        observe(book, f"/ip4/6.6.{i % 256}.{i // 256 % 256}/tcp/1", liar_ips[i % 7], now=float(i))
    assert book.confirmed(5000.0) == ()
    assert book.groups == 1
    # Over IPv6 the liar's whole /48 (65,536 /64s) is one group too.
    for i in range(300):
        observe(book, "/ip6/2001:db8:6::6/tcp/1", f"/ip6/2001:db8:1:{i:x}::{i:x}/tcp/1", now=5000.0)
    assert book.confirmed(5000.0) == ()


def test_one_group_backs_one_candidate_at_a_time() -> None:
    book = ObservedAddresses(listen_port=1)
    observe(book, "/ip4/198.51.100.7/tcp/1", "/ip4/203.0.113.1/tcp/1")
    observe(book, "/ip4/198.51.100.7/tcp/1", "/ip4/192.0.2.1/tcp/1")
    assert len(book.confirmed(0.0)) == 1
    observe(book, "/ip4/198.51.100.8/tcp/1", "/ip4/192.0.2.1/tcp/1")  # changes its mind
    assert book.confirmed(0.0) == ()


def test_observations_expire_after_their_ttl_unless_renewed() -> None:
    book = ObservedAddresses(listen_port=1, ttl_s=100.0)
    observe(book, "/ip4/198.51.100.7/tcp/1", "/ip4/203.0.113.1/tcp/1", now=0.0)
    observe(book, "/ip4/198.51.100.7/tcp/1", "/ip4/192.0.2.1/tcp/1", now=50.0)
    assert len(book.confirmed(100.0)) == 1
    assert book.confirmed(100.5) == ()  # the first vote is 100.5 s old
    observe(book, "/ip4/198.51.100.7/tcp/1", "/ip4/203.0.113.1/tcp/1", now=120.0)
    assert len(book.confirmed(150.0)) == 1
    assert book.confirmed(221.0) == () and book.groups == 0


def test_unusable_observations_are_refused_by_name() -> None:
    book = ObservedAddresses(listen_port=1)
    assert not observe(book, "/ip4/198.51.100.7/tcp/1", "/ip4/127.0.0.1/tcp/1")
    assert not observe(book, "/ip4/198.51.100.7/tcp/1", "/dns4/x.example/tcp/1")
    assert not observe(book, "/ip4/127.0.0.1/tcp/1", "/ip4/203.0.113.1/tcp/1")
    assert not observe(book, "/ip6/fe80::1/tcp/1", "/ip4/203.0.113.1/tcp/1")
    assert not observe(book, "/ip4/0.0.0.0/tcp/1", "/ip4/203.0.113.1/tcp/1")
    assert not observe(book, "/ip4/198.51.100.7/udp/1/quic-v1", "/ip4/203.0.113.1/tcp/1")
    assert not observe(book, "/dns4/me.example/tcp/1", "/ip4/203.0.113.1/tcp/1")
    assert dict(book.refused) == {
        "observer_not_routable": 2,
        "observed_not_routable": 3,
        "observed_not_tcp_ip": 2,
    }
    assert book.groups == 0


def test_observer_groups_and_confirmed_addresses_are_bounded() -> None:
    book = ObservedAddresses(listen_port=1, groups_max=64, addresses_max=4)
    for i in range(10_000):
        observe(
            book,
            f"/ip4/198.51.{i % 20}.1/tcp/1",
            f"/ip4/{10 + i // 65536}.{i // 256 % 256}.{i % 256}.1/tcp/1",
        )
    assert book.groups == 64
    assert book.refused["observer_groups_full"] == 10_000 - 64
    assert len(book.confirmed(0.0)) == 4


def test_observer_groups_are_slash_24_and_slash_48() -> None:
    assert observer_group(ma("/ip4/203.0.113.77/tcp/1")) == "203.0.113.0/24"
    assert observer_group(ma("/ip6/2001:db8:1:2ff::1/tcp/1")) == "2001:db8:1::/48"
    assert observer_group(ma("/ip6/::ffff:203.0.113.77/tcp/1")) == "203.0.113.0/24"
    assert observer_group(ma("/dns4/a.example/tcp/1")) is None


@pytest.mark.parametrize("seed", range(30))
def test_no_fewer_than_two_honest_groups_ever_confirm_an_address(seed: int) -> None:
    """Random interleavings of one liar (many hosts in one /24) and k honest groups."""
    rng = random.Random(seed)
    honest = rng.randrange(0, 4)
    book = ObservedAddresses(listen_port=44000)
    events = [("liar", i) for i in range(rng.randrange(1, 200))] + [("honest", i) for i in range(honest)]
    rng.shuffle(events)
    for who, i in events:
        if who == "liar":
            observe(book, "/ip4/6.6.6.6/tcp/9", f"/ip4/203.0.113.{rng.randrange(1, 255)}/tcp/1", now=1.0)
        else:
            observe(book, "/ip4/198.51.100.7/tcp/9", f"/ip4/192.0.{i}.1/tcp/1", now=1.0)
    confirmed = texts(book.confirmed(1.0))
    assert "/ip4/6.6.6.6/tcp/44000" not in confirmed, f"seed={seed}"
    assert confirmed == (["/ip4/198.51.100.7/tcp/44000"] if honest >= 2 else []), f"seed={seed}"


# -- the address book -----------------------------------------------------------------


def test_identify_replaces_a_peers_list_rather_than_merging() -> None:
    book = AddressBook()
    book.set_identified(PEER, [ma("/ip4/192.0.2.1/tcp/1"), ma("/ip4/192.0.2.1/tcp/2")], now_s=0.0)
    book.set_identified(PEER, [ma("/ip4/192.0.2.1/tcp/3")], now_s=1.0)
    assert texts(book.addresses(PEER, now_s=1.0)) == ["/ip4/192.0.2.1/tcp/3"]


def test_a_peer_pushing_thousands_of_addresses_keeps_a_bounded_entry() -> None:
    book = AddressBook(addresses_per_peer_max=16)
    for push in range(200):
        flood = (ma(f"/ip4/10.{push}.{i // 256}.{i % 256}/tcp/1") for i in range(5000))
        book.set_identified(PEER, flood, now_s=float(push))
    found = book.addresses(PEER, now_s=200.0)
    assert len(found) == 16 and found[0] == ma("/ip4/10.199.0.0/tcp/1")
    assert book.refused["addresses_per_peer_full"] == 200


def test_garbage_and_undialable_addresses_are_refused() -> None:
    book = AddressBook()
    addresses = [
        ma("/ip4/0.0.0.0/tcp/1"),
        ma("/ip6/fe80::1/tcp/1"),
        ma("/ip4/192.0.2.1/udp/1/quic-v1"),
        ma(f"/ip4/192.0.2.1/tcp/1/p2p/{OTHER}/p2p-circuit"),
        ma(f"/ip4/192.0.2.1/tcp/1/p2p/{OTHER}"),
        ma(f"/ip4/192.0.2.1/tcp/2/p2p/{PEER}"),
        ma("/dns4/peer.example/tcp/3"),
    ]
    book.set_identified(PEER, addresses, now_s=0.0)
    # A circuit through a relay (OTHER) is one of PEER's addresses; OTHER's own address is not.
    assert texts(book.addresses(PEER, now_s=0.0)) == [
        f"/ip4/192.0.2.1/tcp/1/p2p/{OTHER}/p2p-circuit",
        "/ip4/192.0.2.1/tcp/2",
        "/dns4/peer.example/tcp/3",
    ]
    assert dict(book.refused) == {"address_not_dialable": 3, "address_of_another_peer": 1}
    assert not dialable(ma("/ip4/192.0.2.1/udp/1"))


def test_other_sources_are_kept_apart_and_expire_on_their_own() -> None:
    book = AddressBook(identify_ttl_s=100.0, other_ttl_s=10.0)
    book.add(PEER, [ma("/ip4/192.0.2.1/tcp/9")], now_s=0.0)
    book.set_identified(PEER, [ma("/ip4/192.0.2.1/tcp/1")], now_s=0.0)
    book.set_identified(PEER, [ma("/ip4/192.0.2.1/tcp/2")], now_s=5.0)  # replaces tcp/1, not tcp/9
    assert texts(book.addresses(PEER, now_s=5.0)) == ["/ip4/192.0.2.1/tcp/2", "/ip4/192.0.2.1/tcp/9"]
    book.add(PEER, [ma("/ip4/192.0.2.1/tcp/8")], now_s=6.0)
    assert texts(book.addresses(PEER, now_s=12.0)) == ["/ip4/192.0.2.1/tcp/2", "/ip4/192.0.2.1/tcp/8"]
    assert texts(book.addresses(PEER, now_s=16.0)) == ["/ip4/192.0.2.1/tcp/2"]
    assert book.addresses(PEER, now_s=105.0) == ()
    assert len(book) == 0


def test_bootstrap_addresses_are_permanent() -> None:
    book = AddressBook(peers_max=2, identify_ttl_s=1.0)
    book.add_permanent(PEER, [ma("/ip4/192.0.2.1/tcp/44000")])
    for i in range(100):
        book.set_identified(peer_id_of(bytes([i + 3]) * 32), [ma("/ip4/192.0.2.2/tcp/1")], now_s=float(i))
    book.set_identified(PEER, [ma("/ip4/192.0.2.1/tcp/5")], now_s=0.0)
    book.forget(PEER)
    book.expire(10_000.0)
    assert texts(book.addresses(PEER, now_s=10_000.0)) == ["/ip4/192.0.2.1/tcp/44000"]


def test_peers_are_bounded_least_recently_used_first() -> None:
    book = AddressBook(peers_max=3)
    peers = [peer_id_of(bytes([i + 1]) * 32) for i in range(5)]
    for peer in peers[:3]:
        book.add(peer, [ma("/ip4/192.0.2.1/tcp/1")], now_s=0.0)
    assert book.addresses(peers[0], now_s=0.0)  # used: now the most recent
    book.add(peers[3], [ma("/ip4/192.0.2.1/tcp/1")], now_s=0.0)
    book.add(peers[4], [ma("/ip4/192.0.2.1/tcp/1")], now_s=0.0)
    assert [bool(book.addresses(p, now_s=0.0)) for p in peers] == [True, False, False, True, True]
    assert book.refused["peers_full"] == 2 and len(book) == 3


def test_other_source_addresses_per_peer_are_bounded_oldest_out() -> None:
    book = AddressBook(addresses_per_peer_max=4)
    for i in range(1000):
        book.add(PEER, [ma(f"/ip4/192.0.2.1/tcp/{i + 1}")], now_s=float(i))
    assert texts(book.addresses(PEER, now_s=1000.0)) == [
        f"/ip4/192.0.2.1/tcp/{p}" for p in (997, 998, 999, 1000)
    ]


def test_what_the_settings_accept_the_policy_parses() -> None:
    from pyrsia.config import check_address

    entries = [
        "/ip4/198.51.100.7/tcp/4001",
        "/ip6/::1/tcp/1",
        f"/dns/a.example/tcp/65535/p2p/{PEER}",
        f"/ip4/1.2.3.4/tcp/1/ipfs/{PEER}",
        "/ip4/1.2.3.4/tcp/1/p2p/abc",
        "/dns6/x/tcp/1/",
        "/ip4/1.2.3.4/tcp/01",
        "/ip4/1.2.3.4/tcp/1/p2p/1",
    ]
    for text in entries:
        try:
            check_address("announce", text)
        except ConfigError:
            continue
        assert AdvertisePolicy.from_settings(announce=[text]).announce, text
    for text in [*entries, "/ip4/1.2.3.4", "10.0.0.0/8", "::/0", "1.2.3.4", "/ip6/fe80::1"]:
        try:
            check_address("no_announce", text, cidr_ok=True)
        except ConfigError:
            continue
        assert AdvertisePolicy.from_settings(no_announce=[text]).no_announce, text


def test_the_remote_peers_family_comes_first_within_a_kind() -> None:
    over_ipv6 = texts(advertised(listen=LISTEN, remote=ma("/ip6/2a00:1450::99/tcp/5")))
    assert over_ipv6[:2] == ["/ip6/2a00:1450::7/tcp/44000", "/ip4/93.184.216.34/tcp/44000"]
    assert over_ipv6[2:] == ["/ip6/fd00::2/tcp/44000", "/ip4/192.0.2.2/tcp/44000"]
    on_loopback6 = texts(advertised(listen=LISTEN, remote=ma("/ip6/::1/tcp/5")))
    assert on_loopback6[:2] == ["/ip6/::1/tcp/44000", "/ip4/127.0.0.1/tcp/44000"]


def test_circuit_addresses_through_one_dialable_relay_are_dialable() -> None:
    relay = "12D3KooWMfQHV1T9WmipTMYNyPm252fV4K8q92iw6SYq6zcf9Zge"
    peer = "12D3KooWByFxDL4r95cz1vWicp42uSiU9EXdTQndEpvb4ULk5s3R"
    good = Multiaddr.parse(f"/ip4/198.51.100.7/tcp/44000/p2p/{relay}/p2p-circuit/p2p/{peer}")
    assert dialable(good)
    assert dialable(Multiaddr.parse(f"/ip4/198.51.100.7/tcp/44000/p2p/{relay}/p2p-circuit"))
    assert not dialable(Multiaddr.parse(f"/ip4/0.0.0.0/tcp/44000/p2p/{relay}/p2p-circuit"))
    assert not dialable(Multiaddr.parse(f"/ip4/198.51.100.7/tcp/44000/p2p-circuit/p2p/{peer}"))
    chained = f"/ip4/198.51.100.7/tcp/1/p2p/{relay}/p2p-circuit/p2p/{peer}/p2p-circuit/p2p/{relay}"
    assert not dialable(Multiaddr.parse(chained))


def test_circuit_addresses_follow_the_loopback_rule_by_their_relay_and_are_bounded() -> None:
    suffix = f"/p2p/{OTHER}/p2p-circuit/p2p/{PEER}"
    on_loopback = Multiaddr.parse(f"/ip4/127.0.0.1/tcp/4001{suffix}")
    routable = [Multiaddr.parse(f"/ip4/198.51.100.{i}/tcp/4001{suffix}") for i in range(1, 40)]
    remote = Multiaddr.parse("/ip4/192.0.2.9/tcp/50000")
    assert advertised_circuits([on_loopback, routable[0]], remote=remote) == (routable[0],)
    assert advertised_circuits([on_loopback, routable[0]]) == (routable[0],)
    loopback_remote = Multiaddr.parse("/ip4/127.0.0.1/tcp/50000")
    assert advertised_circuits([on_loopback, routable[0]], remote=loopback_remote) == (
        on_loopback,
        routable[0],
    )
    assert advertised_circuits([on_loopback], remote=remote) == (on_loopback,)  # nothing else to offer
    assert advertised_circuits([*routable, *routable]) == tuple(routable[:CIRCUITS_ADVERTISED_MAX])


def test_punch_sightings_put_relays_first_and_give_one_observer_group_one_place() -> None:
    def seen(candidate: str, observer: str, *, relay: bool = False) -> Sighting:
        return Sighting(candidate=Multiaddr.parse(candidate), observer=Multiaddr.parse(observer), relay=relay)

    true = "/ip4/198.51.100.7/tcp/44000"
    liars = [seen(f"/ip4/1.0.0.{n}/tcp/4001", f"/ip4/203.0.113.{n}/tcp/5000") for n in range(1, 20)]
    offered = punch_sightings(
        [
            *liars,  # one /24: one place, for its most reported candidate (1.0.0.1, twice)
            seen(true, "/ip4/192.0.2.1/tcp/4001", relay=True),
            seen("/ip4/198.51.100.8/tcp/44000", "/ip4/192.0.2.50/tcp/4001"),
            seen("/ip4/198.51.100.8/tcp/44000", "/ip6/2001:db8::1/tcp/4001"),
            seen("/ip4/1.0.0.1/tcp/4001", "/ip4/203.0.113.1/tcp/5001"),
        ]
    )
    assert [str(a) for a in offered] == [true, "/ip4/198.51.100.8/tcp/44000", "/ip4/1.0.0.1/tcp/4001"]
    assert punch_sightings([]) == ()
