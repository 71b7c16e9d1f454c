"""`pyrsia peers` (alias `pyrsia list`) and `pyrsia ping`: a running node's p2p view."""

from __future__ import annotations

from urllib.parse import quote

import typer

from pyrsia.cli import console, layout, options, settings


def peers(
    node: str | None = options.NODE, json_output: bool | None = options.JSON, wide: bool = options.WIDE
) -> None:
    """List the peers a node is connected to: id, address, direction (direct or relayed), RTT, bytes."""
    node, json_output = settings.node_url(node), settings.wants_json(json_output)
    from pyrsia.cli.client import NodeClient

    found = NodeClient(node).get_json("/api/v1/peers")["peers"]
    if json_output:
        console.as_json(found)
        return
    console.table(
        f"{len(found)} peers of {node}",
        (
            layout.id_column("peer id"),
            layout.Column(header="address", drop=3),
            layout.fixed("direction", drop=5),
            layout.fixed("path"),
            layout.fixed("rtt ms"),
            layout.fixed("in", drop=4),
            layout.fixed("out", drop=4),
            layout.fixed("height", drop=2),
            layout.Column(header="agent", drop=6),
        ),
        (
            (
                p["peer_id"],
                p["address"],
                p["direction"],
                "relayed" if p.get("relayed") else "direct",
                "-" if p["rtt_ms"] is None else f"{p['rtt_ms']:.1f}",
                p["bytes_in"],
                p["bytes_out"],
                "-" if p["height"] is None else p["height"],
                p["agent"],
            )
            for p in found
        ),
        wide=wide,
    )


def ping(
    peer: str = typer.Argument(..., help="A peer id the node knows, or a multiaddr to dial."),
    node: str | None = options.NODE,
    json_output: bool | None = options.JSON,
) -> None:
    """Measure the round trip from a node to a peer over libp2p ping."""
    node, json_output = settings.node_url(node), settings.wants_json(json_output)
    from pyrsia.cli.client import NodeClient

    answer = NodeClient(node).post_json(f"/api/v1/ping?peer={quote(peer, safe='')}")
    if json_output:
        console.as_json(answer)
    else:
        console.line(f"{answer['peer_id']}  {answer['rtt_ms']:.1f} ms")
