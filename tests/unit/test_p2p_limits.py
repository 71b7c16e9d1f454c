"""The resource manager's verdicts: per IP, per subnet, handshakes, reserved room, trimming."""

from __future__ import annotations

import ipaddress

import pytest

from pyrsia.p2p.behaviours.kad.addresses import ip_group
from pyrsia.p2p.ipnet import SITE_V6_PREFIX, network_of
from pyrsia.p2p.swarm import limits
from pyrsia.p2p.swarm.limits import Limits, ResourceManager, subnet_of


def test_subnets_are_slash_24_and_slash_64() -> None:
    assert subnet_of("203.0.113.77") == "203.0.113.0/24"
    assert subnet_of("2001:db8:1:2:3:4:5:6") == "2001:db8:1:2::/64"
    assert subnet_of("::ffff:198.51.100.9") == "198.51.100.0/24"


def test_one_ip_is_held_to_its_limit_and_others_still_enter() -> None:
    rm = ResourceManager(Limits(connections_per_ip_max=3, connections_per_subnet_max=100))
    verdicts = [rm.admit_inbound(n, "198.51.100.9", 0.0) for n in range(10)]
    assert verdicts == [None] * 3 + [limits.PER_IP] * 7
    assert rm.admit_inbound(99, "198.51.100.10", 0.0) is None
    assert rm.refusals[limits.PER_IP] == 7
    rm.closed(0)
    assert rm.admit_inbound(100, "198.51.100.9", 0.0) is None


def test_a_subnet_is_held_to_its_limit() -> None:
    rm = ResourceManager(Limits(connections_per_ip_max=2, connections_per_subnet_max=5))
    admitted = sum(rm.admit_inbound(n, f"198.51.100.{n}", 0.0) is None for n in range(1, 50))
    assert admitted == 5
    assert rm.admit_inbound(500, "198.51.101.1", 0.0) is None


def test_allow_listed_prefixes_skip_the_address_limits_but_not_the_handshake_limit() -> None:
    rm = ResourceManager(Limits(connections_per_ip_max=1, handshakes_inbound_max=4, allow=("10.0.0.0/8",)))
    verdicts = [rm.admit_inbound(n, "10.1.2.3", 0.0) for n in range(6)]
    assert verdicts == [None] * 4 + [limits.HANDSHAKES] * 2


def test_handshakes_in_flight_are_bounded_and_freed_once_established() -> None:
    rm = ResourceManager(Limits(handshakes_inbound_max=2))
    assert rm.admit_inbound(1, "198.51.100.1", 0.0) is None
    assert rm.admit_inbound(2, "198.51.100.2", 0.0) is None
    assert rm.admit_inbound(3, "198.51.100.3", 0.0) == limits.HANDSHAKES
    assert rm.established(1, known=False, now_s=0.0) is None
    assert rm.admit_inbound(4, "198.51.100.4", 0.0) is None


def _fill(rm: ResourceManager, count: int, now_s: float) -> None:
    for n in range(count):
        assert rm.admit_inbound(n, f"198.51.{n}.1", now_s) is None
        assert rm.established(n, known=False, now_s=now_s) is None


def test_known_peers_have_reserved_room() -> None:
    rm = ResourceManager(Limits(connections_inbound_max=6, reserved_known=2, idle_trim_s=1000))
    _fill(rm, 4, 0.0)
    assert rm.admit_inbound(10, "203.0.113.1", 0.0) is None
    assert rm.established(10, known=False, now_s=0.0) == limits.INBOUND
    rm.closed(10)
    for n in (11, 12):
        assert rm.admit_inbound(n, f"203.0.113.{n}", 0.0) is None
        assert rm.established(n, known=True, now_s=0.0) is None
    assert rm.admit_inbound(13, "203.0.113.13", 0.0) is None
    assert rm.established(13, known=True, now_s=0.0) == limits.INBOUND


def test_the_longest_idle_unknown_connection_makes_room_only_when_full() -> None:
    rm = ResourceManager(Limits(connections_inbound_max=5, reserved_known=1, idle_trim_s=30))
    _fill(rm, 3, 0.0)
    assert rm.idle_victim(100.0) is None  # not full yet
    assert rm.admit_inbound(3, "198.51.3.1", 0.0) is None
    assert rm.established(3, known=False, now_s=0.0) is None
    rm.used(0, 20.0)
    rm.used(1, 25.0)
    assert rm.idle_victim(40.0) == 2  # idle since 0
    assert rm.idle_victim(10.0) is None  # nobody idle for 30 s yet
    rm.used(2, 26.0)
    rm.used(3, 27.0)
    assert rm.idle_victim(49.0) is None  # the longest idle (conn 0, since 20) is below 30 s
    assert rm.idle_victim(52.0) == 0
    rm.closed(0)
    assert rm.idle_victim(52.0) is None  # no longer full


def test_streams_per_peer_per_protocol() -> None:
    rm = ResourceManager()
    assert [rm.open_stream("p", "/x", 2) for _ in range(3)] == [None, None, limits.STREAMS_PER_PEER]
    assert rm.open_stream("q", "/x", 2) is None
    assert rm.open_stream("p", "/y", 2) is None
    rm.close_stream("p", "/x")
    assert rm.open_stream("p", "/x", 2) is None
    assert rm.refusals["streams_per_peer:/x"] == 1


def test_reserved_room_must_leave_room_for_others() -> None:
    with pytest.raises(ValueError):
        Limits(connections_inbound_max=4, reserved_known=4)


def test_every_grouping_counts_an_ipv4_mapped_address_as_its_ipv4_network() -> None:
    mapped = ipaddress.ip_address("::ffff:198.51.100.9")
    assert network_of(mapped, v6_prefix=SITE_V6_PREFIX) == "198.51.100.0/24"
    assert ip_group(mapped) == "198.51.100.0/24"
    assert network_of(ipaddress.ip_address("2001:db8:1:2::9"), v6_prefix=SITE_V6_PREFIX) == "2001:db8:1::/48"
