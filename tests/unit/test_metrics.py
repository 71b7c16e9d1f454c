"""Prometheus text rendering: the format's lines, escaping and numbers."""

from __future__ import annotations

import pytest

from pyrsia.artifacts.exchange_service import ExchangeSnapshot, Transfer
from pyrsia.registry.metrics import Family, Sample, exchange_families, p2p_families, render, upstream_families
from pyrsia.upstream.transport import PoolStats


def test_families_render_as_help_type_and_samples() -> None:
    text = render(
        [
            Family(name="a_total", help="Things.\nMore", kind="counter", samples=(Sample(value=3),)),
            Family(
                name="b",
                help="back\\slash",
                kind="gauge",
                samples=(
                    Sample(value=0.5, labels=(("peer", 'x"y\\z\n'), ("kind", "k"))),
                    Sample(value=float("inf")),
                    Sample(value=float("nan")),
                ),
            ),
        ]
    )
    assert text == (
        "# HELP a_total Things.\\nMore\n"
        "# TYPE a_total counter\n"
        "a_total 3\n"
        "# HELP b back\\\\slash\n"
        "# TYPE b gauge\n"
        'b{peer="x\\"y\\\\z\\n",kind="k"} 0.5\n'
        "b +Inf\n"
        "b NaN\n"
    )
    assert render([]) == ""


def test_bad_names_are_our_bug() -> None:
    with pytest.raises(AssertionError):
        render([Family(name="bad-name", help="", kind="gauge", samples=())])
    with pytest.raises(AssertionError):
        render([Family(name="ok", help="", kind="gauge", samples=(Sample(value=1, labels=(("__x", "y"),)),))])


def test_exchange_snapshot_to_families() -> None:
    snapshot = ExchangeSnapshot(
        served_bytes_by_peer={"12D3KooWb": 20, "12D3KooWa": 10},
        received_bytes_by_peer={"12D3KooWc": 5},
        bytes_by_source={"local": 1, "peer": 5, "upstream": 0},
        serving_peers=2,
        evictions=1,
        transfers=(Transfer(digest="sha256:ab", size=4, chunks=4, verified=1, providers=("p",)),),
    )
    text = render(exchange_families(snapshot))
    lines = text.splitlines()
    assert 'pyrsia_exchange_served_bytes_total{peer="12D3KooWa"} 10' in lines
    assert lines.index('pyrsia_exchange_served_bytes_total{peer="12D3KooWa"} 10') < lines.index(
        'pyrsia_exchange_served_bytes_total{peer="12D3KooWb"} 20'
    )
    assert 'pyrsia_blob_bytes_total{source="peer"} 5' in lines
    assert "pyrsia_exchange_serving_peers 2" in lines
    assert "pyrsia_exchange_evictions_total 1" in lines
    assert 'pyrsia_exchange_transfer_verified_ratio{digest="sha256:ab"} 0.25' in lines
    assert "# TYPE pyrsia_exchange_transfers gauge" in lines


def test_p2p_refusals_carry_their_limit_and_protocol() -> None:
    text = render(
        p2p_families(
            peers_by_direction={"inbound": 3, "outbound": 1},
            refusals={"connections_per_ip": 92, "streams_per_peer:/pyrsia/sync/1.0.0": 4},
        )
    )
    assert 'pyrsia_p2p_peers{direction="inbound"} 3' in text
    assert 'pyrsia_p2p_refusals_total{limit="connections_per_ip",protocol=""} 92' in text
    assert 'pyrsia_p2p_refusals_total{limit="streams_per_peer",protocol="/pyrsia/sync/1.0.0"} 4' in text


def test_relay_counters_and_reservations_are_exported() -> None:
    text = render(
        p2p_families(
            peers_by_direction={},
            refusals={},
            relay={"bytes_relayed": 805306368, "circuits_spliced": 3},
            reservations=2,
        )
    )
    assert 'pyrsia_p2p_relay_total{event="bytes_relayed"} 805306368' in text
    assert 'pyrsia_p2p_relay_total{event="circuits_spliced"} 3' in text
    assert "pyrsia_p2p_relay_reservations 2" in text


def test_stream_bytes_are_exported_by_direction_and_protocol() -> None:
    text = render(
        p2p_families(
            peers_by_direction={},
            refusals={},
            protocol_bytes={"in": {"/pyrsia/consensus/3.0.0": 2048}, "out": {"/ipfs/kad/1.0.0": 512}},
        )
    )
    assert "# TYPE pyrsia_p2p_protocol_bytes_total counter" in text
    assert 'pyrsia_p2p_protocol_bytes_total{direction="in",protocol="/pyrsia/consensus/3.0.0"} 2048' in text
    assert 'pyrsia_p2p_protocol_bytes_total{direction="out",protocol="/ipfs/kad/1.0.0"} 512' in text


def test_upstream_pools_are_exported_by_url_and_state() -> None:
    text = render(
        upstream_families(
            {
                "https://repo.maven.apache.org/maven2": PoolStats(open=5, idle=2, waiting=0),
                "https://registry-1.docker.io": PoolStats(open=100, idle=0, waiting=7),
            }
        )
    )
    assert "# TYPE pyrsia_upstream_connections gauge" in text
    hub, central = (
        'upstream="https://registry-1.docker.io"',
        'upstream="https://repo.maven.apache.org/maven2"',
    )
    assert f'pyrsia_upstream_connections{{{central},state="busy"}} 3' in text
    assert f'pyrsia_upstream_connections{{{central},state="idle"}} 2' in text
    assert f'pyrsia_upstream_connections{{{hub},state="busy"}} 100' in text
    assert f"pyrsia_upstream_fetches_waiting{{{hub}}} 7" in text
    assert f"pyrsia_upstream_fetches_waiting{{{central}}} 0" in text
