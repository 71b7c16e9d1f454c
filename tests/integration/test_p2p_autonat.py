"""AutoNAT v2 between real Hosts on loopback: `reachability = "auto"` finds the answer.

Three servers (every host serves `/libp2p/autonat/2/dial-request`) dial a probing node's
addresses back on connections of their own. A node whose listener answers comes out
public; a node that advertises an address where nothing accepts comes out private,
although it is connected to every server (the dial-back never rides an existing
connection), and then reserves on the relays among its peers as a forced private node does.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyrsia.config import Config
from pyrsia.node.network import host_for
from pyrsia.p2p.behaviours.autonat import messages as m
from pyrsia.p2p.identity import Identity
from pyrsia.p2p.swarm.host import Host, HostConfig
from pyrsia.p2p.wire.multiaddr import tcp
from tests.support.wait import eventually


def _host(**changes: object) -> Host:
    config = HostConfig(listen_host="127.0.0.1", listen_port=0, hole_punching=False, **changes)  # type: ignore[arg-type]
    return Host(Identity.from_seed(os.urandom(32)), config)


@pytest.fixture
def servers() -> Iterator[list[Host]]:
    hosts = [_host().start() for _ in range(3)]
    try:
        yield hosts
    finally:
        for host in hosts:
            host.stop()


def _join(node: Host, servers: list[Host]) -> None:
    for server in servers:
        node.connect(str(server.listen_addrs[0].with_peer(server.peer_id)))
        assert m.DIAL_REQUEST_PROTOCOL in node.wait_identified(server.peer_id).protocols


def test_a_reachable_node_comes_out_public(servers: list[Host]) -> None:
    node = _host(reachability="auto", relay_service=False).start()
    try:
        assert node.stats().reachability == "unknown"
        _join(node, servers)
        eventually(lambda: node.stats().reachability == "public", lambda: f"{node.stats()}")
        assert node.stats().reservations == 0
        assert all(node.is_connected(server.peer_id) for server in servers)
        # Each server dialled back on a connection of its own and closed it when done.
        eventually(lambda: all(len(node._by_peer.get(s.peer_id, [])) == 1 for s in servers))
    finally:
        node.stop()


def test_an_unreachable_node_comes_out_private_and_reserves_on_relays(servers: list[Host]) -> None:
    with socket.socket() as closed:  # bound, never listening: a dial there is refused
        closed.bind(("127.0.0.1", 0))
        dead = tcp("127.0.0.1", closed.getsockname()[1])
        node = _host(reachability="auto", relay_service=False, announce=(dead,)).start()
        try:
            _join(node, servers)
            eventually(lambda: node.stats().reachability == "private", lambda: f"{node.stats()}")
            eventually(lambda: node.stats().reservations == 2, lambda: f"{node.stats()}")
            relayed = node.address_kinds()["relayed"]
            assert len(relayed) == 2 and all(f"/p2p-circuit/p2p/{node.peer_id}" in a for a in relayed)
        finally:
            node.stop()


def test_a_forced_setting_is_not_probed(servers: list[Host]) -> None:
    node = _host(reachability="public", relay_service=False).start()
    try:
        _join(node, servers)
        assert node.stats().reachability == "public"  # the setting, not "unknown" while unasked
    finally:
        node.stop()


@pytest.mark.parametrize("setting", ["auto", "public", "private"])
def test_the_node_passes_the_setting_to_the_host(setting: str, tmp_path: Path) -> None:
    config = Config(home=tmp_path, reachability=setting)
    host = host_for(config, Identity.from_seed(os.urandom(32)))
    try:
        assert host.config.reachability == setting
        assert host.stats().reachability == ("unknown" if setting == "auto" else setting)
    finally:
        host.stop()  # never started: frees its wake-up sockets all the same
