"""A real daemon bound to 0.0.0.0 advertises the machine's routable addresses.

A peer that reaches the daemon over a non-loopback interface hears, in identify, the
interface addresses and not loopback; a peer on loopback hears loopback first. The
`announce` and `no_announce` settings change what peers hear, and `pyrsia status`
shows the addresses by kind. The daemon's printed `p2p` line is routable.
"""

from __future__ import annotations

import ipaddress
import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from pyrsia.p2p.identity import Identity
from pyrsia.p2p.swarm.host import Host, HostConfig
from pyrsia.p2p.swarm.interfaces import interface_addresses
from pyrsia.p2p.wire.multiaddr import Multiaddr
from tests.support.node import NodeProcess

TIMEOUT_S = 20.0


def routable_ipv4() -> str | None:
    for found in interface_addresses():
        if found.version == 4 and not ipaddress.ip_address(found.ip).is_loopback:
            return found.ip
    return None


MACHINE_IP = routable_ipv4()
needs_interface = pytest.mark.skipif(
    MACHINE_IP is None, reason="this machine has no non-loopback IPv4 address"
)


@pytest.fixture
def peer() -> Iterator[Host]:
    host = Host(Identity.from_seed(os.urandom(32)), HostConfig(listen_host="0.0.0.0", listen_port=0)).start()
    try:
        yield host
    finally:
        host.stop()


def identify_as_seen(peer: Host, node: NodeProcess, via_ip: str) -> list[str]:
    """The daemon's listen addresses, as it told `peer` when dialled at `via_ip`."""
    listen = p2p_status(node)["listen"]  # the bound port, whatever is announced
    assert isinstance(listen, list) and listen
    endpoint = Multiaddr.parse(listen[0]).tcp_endpoint()
    peer_id = Multiaddr.parse(node.p2p_address).peer_id
    assert endpoint is not None and peer_id is not None
    target = Multiaddr.parse(f"/ip4/{via_ip}/tcp/{endpoint[1]}/p2p/{peer_id}")
    peer_id = peer.connect(target, timeout=TIMEOUT_S)
    info = peer.wait_identified(peer_id, timeout=TIMEOUT_S)
    return [str(a.without_peer()) for a in info.listen_addrs]


def p2p_status(node: NodeProcess) -> dict[str, object]:
    response = httpx.get(f"{node.url}/api/v1/status", timeout=10)
    response.raise_for_status()
    doc = response.json()["p2p"]
    assert isinstance(doc, dict)
    return doc


@needs_interface
def test_a_node_on_all_interfaces_advertises_them_to_a_remote_peer(tmp_path: Path, peer: Host) -> None:
    with NodeProcess(tmp_path / "node", "--p2p-host", "0.0.0.0") as node:
        printed = Multiaddr.parse(node.p2p_address)
        assert printed.value_of("ip4") == MACHINE_IP, node.output()
        port = printed.tcp_endpoint()[1]  # type: ignore[index]
        heard = identify_as_seen(peer, node, str(MACHINE_IP))
        assert f"/ip4/{MACHINE_IP}/tcp/{port}" in heard
        assert f"/ip4/127.0.0.1/tcp/{port}" not in heard
        status = p2p_status(node)
        assert f"/ip4/127.0.0.1/tcp/{port}" in status["listen"]  # type: ignore[operator]
        assert f"/ip4/{MACHINE_IP}/tcp/{port}" in status["announced"]  # type: ignore[operator]
        assert f"/ip4/127.0.0.1/tcp/{port}" not in status["announced"]  # type: ignore[operator]
        assert status["observed"] == []  # one observer is never enough


@needs_interface
def test_a_peer_on_loopback_hears_loopback_first(tmp_path: Path, peer: Host) -> None:
    with NodeProcess(tmp_path / "node", "--p2p-host", "0.0.0.0") as node:
        port = Multiaddr.parse(node.p2p_address).tcp_endpoint()[1]  # type: ignore[index]
        heard = identify_as_seen(peer, node, "127.0.0.1")
        assert heard[0] == f"/ip4/127.0.0.1/tcp/{port}"
        assert f"/ip4/{MACHINE_IP}/tcp/{port}" in heard


@needs_interface
def test_announce_replaces_and_no_announce_removes_what_a_peer_hears(tmp_path: Path, peer: Host) -> None:
    announce = ["--announce", "/ip4/198.51.100.7/tcp/4001", "--announce", "/dns4/node.example.org/tcp/4001"]
    with NodeProcess(tmp_path / "a", "--p2p-host", "0.0.0.0", *announce) as node:
        assert node.p2p_address.startswith("/ip4/198.51.100.7/tcp/4001/p2p/")
        assert identify_as_seen(peer, node, str(MACHINE_IP)) == [
            "/ip4/198.51.100.7/tcp/4001",
            "/dns4/node.example.org/tcp/4001",
        ]
        assert p2p_status(node)["announced"] == [
            "/ip4/198.51.100.7/tcp/4001",
            "/dns4/node.example.org/tcp/4001",
        ]
    network = str(ipaddress.ip_network(f"{MACHINE_IP}/24", strict=False))
    with NodeProcess(tmp_path / "b", "--p2p-host", "0.0.0.0", "--no-announce", network) as node:
        heard = identify_as_seen(peer, node, str(MACHINE_IP))
        assert heard, node.output()
        assert not any(a.startswith(f"/ip4/{MACHINE_IP}/") for a in heard)


def test_a_bad_announce_is_one_clear_error(tmp_path: Path) -> None:
    node = NodeProcess(tmp_path / "bad", "--announce", "1.2.3.4:4001")
    with pytest.raises(RuntimeError, match="did not become ready"):
        node.start()
    lines = [line for line in node.output().splitlines() if "announce" in line]
    assert len(lines) == 1 and "'1.2.3.4:4001' is not a multiaddr" in lines[0], node.output()


def test_ipv6_listener_on_all_interfaces_takes_ipv6_and_ipv4_dials(tmp_path: Path) -> None:
    identity = Identity.from_seed(os.urandom(32))
    listener = Host(identity, HostConfig(listen_host="::", listen_port=0)).start()
    dialers = [Host(Identity.from_seed(os.urandom(32)), HostConfig(listen_host="::1", listen_port=0)).start()]
    dialers.append(
        Host(Identity.from_seed(os.urandom(32)), HostConfig(listen_host="127.0.0.1", listen_port=0)).start()
    )
    try:
        port = listener.listen_port
        kinds = listener.address_kinds()
        assert f"/ip6/::1/tcp/{port}" in kinds["listen"] and f"/ip4/127.0.0.1/tcp/{port}" in kinds["listen"]
        for dialer, via in zip(dialers, ("/ip6/::1", "/ip4/127.0.0.1"), strict=True):
            assert (
                dialer.connect(f"{via}/tcp/{port}/p2p/{identity.peer_id}", timeout=TIMEOUT_S)
                == identity.peer_id
            )
            seen = listener.wait_identified(dialer.peer_id, timeout=TIMEOUT_S)
            assert str(seen.address).startswith(via + "/tcp/")  # IPv4 peers are not shown IPv4-mapped
            heard = [str(a) for a in dialer.wait_identified(identity.peer_id, timeout=TIMEOUT_S).listen_addrs]
            assert heard[0].startswith(via + "/"), heard  # a peer on loopback hears its own family's loopback
    finally:
        for host in (*dialers, listener):
            host.stop()


def test_a_dead_address_first_does_not_hold_up_the_live_one(peer: Host) -> None:
    identity = Identity.from_seed(os.urandom(32))
    config = HostConfig(listen_host="127.0.0.1", listen_port=0)
    target = Host(identity, config).start()
    # A listener that never accepts: its connects hang in the backlog, never handshake.
    import socket

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(0)
    try:
        dead = Multiaddr.parse(f"/ip4/127.0.0.1/tcp/{silent.getsockname()[1]}")
        peer.add_addresses(identity.peer_id, [dead, *target.listen_addrs])
        assert peer.known_addresses(identity.peer_id)[0] == dead
        started = time.monotonic()
        stream = peer.open_stream(identity.peer_id, ["/ipfs/ping/1.0.0"], timeout=TIMEOUT_S)
        took = time.monotonic() - started
        stream.reset()
        # Far less than the per-address timeout (5 s): the next address started after the stagger.
        assert took < 2.5, took
        assert peer.is_connected(identity.peer_id)
    finally:
        silent.close()
        target.stop()
