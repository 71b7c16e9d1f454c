"""`pyrsia status` shows a node's p2p addresses by kind."""

from __future__ import annotations

from pyrsia.cli.status import _network


def test_network_lists_listen_announced_and_observed_addresses() -> None:
    shown = _network(
        {
            "authority": False,
            "peers": 2,
            "addresses": ["/ip4/192.0.2.2/tcp/44000/p2p/12D3KooWx"],
            "listen": ["/ip4/127.0.0.1/tcp/44000", "/ip4/192.0.2.2/tcp/44000"],
            "announced": ["/ip4/192.0.2.2/tcp/44000"],
            "observed": [],
        }
    ).splitlines()
    assert shown[1] == "/ip4/192.0.2.2/tcp/44000/p2p/12D3KooWx"
    assert shown[2:] == [
        "listen: /ip4/127.0.0.1/tcp/44000, /ip4/192.0.2.2/tcp/44000",
        "announced: /ip4/192.0.2.2/tcp/44000",
        "observed: -",
    ]


def test_an_older_node_without_kinds_shows_what_it_has() -> None:
    shown = _network({"authority": True, "peers": 0, "addresses": ["/ip4/127.0.0.1/tcp/1/p2p/x"]})
    assert shown.splitlines()[1:] == ["/ip4/127.0.0.1/tcp/1/p2p/x"]
