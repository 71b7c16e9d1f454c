"""AutoNAT v1 between real Hosts on loopback: servers without v2 still decide "auto".

Every Host serves both versions and asks v2 first; here the three servers stop
offering v2 (its protocol is taken off before they start, as a peer that speaks only
v1 would be), so the probing node asks them over `/libp2p/autonat/1.0.0`, one address
a request, and their answers are the votes of the shared tally: public when its
listener answers, private when it advertises an address where nothing accepts.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest

from pyrsia.p2p.behaviours.autonat import messages as v2
from pyrsia.p2p.behaviours.autonat import v1
from pyrsia.p2p.identity import Identity
from pyrsia.p2p.swarm.host import Host, HostConfig
from pyrsia.p2p.wire.multiaddr import tcp
from tests.support.wait import eventually


def _host(**changes: object) -> Host:
    config = HostConfig(listen_host="127.0.0.1", listen_port=0, hole_punching=False, **changes)  # type: ignore[arg-type]
    return Host(Identity.from_seed(os.urandom(32)), config)


@pytest.fixture
def servers() -> Iterator[list[Host]]:
    hosts = []
    for _ in range(3):
        host = _host()
        del host._by_protocol[v2.DIAL_REQUEST_PROTOCOL]  # a v1-only server
        hosts.append(host.start())
    try:
        yield hosts
    finally:
        for host in hosts:
            host.stop()


def _join(node: Host, servers: list[Host]) -> None:
    for server in servers:
        node.connect(str(server.listen_addrs[0].with_peer(server.peer_id)))
        protocols = node.wait_identified(server.peer_id).protocols
        assert v1.PROTOCOL in protocols and v2.DIAL_REQUEST_PROTOCOL not in protocols


def test_v1_servers_find_a_reachable_node_public(servers: list[Host]) -> None:
    node = _host(reachability="auto", relay_service=False).start()
    try:
        _join(node, servers)
        eventually(lambda: node.stats().reachability == "public", lambda: f"{node.stats()}", within_s=60)
        assert node._autonat_v1_client.results[v1.RESULT_REACHABLE] == 3
        assert node._autonat_client.status(node.listen_addrs[0]) == "reachable"
    finally:
        node.stop()


def test_v1_servers_find_an_unreachable_node_private(servers: list[Host]) -> None:
    with socket.socket() as closed:  # bound, never listening: a dial there is refused
        closed.bind(("127.0.0.1", 0))
        dead = tcp("127.0.0.1", closed.getsockname()[1])
        node = _host(reachability="auto", relay_service=False, announce=(dead,)).start()
        try:
            _join(node, servers)
            eventually(lambda: node.stats().reachability == "private", lambda: f"{node.stats()}", within_s=60)
            assert node._autonat_v1_client.results[v1.RESULT_UNREACHABLE] == 3
            assert node._autonat_client.status(dead) == "unreachable"
        finally:
            node.stop()
