"""`pyrsia status`: what a running node says about itself."""

from __future__ import annotations

from pathlib import Path

import typer

from pyrsia.cli import console, options, settings


def status(
    node: str | None = options.NODE,
    json_output: bool | None = options.JSON,
    show_settings: bool = typer.Option(
        False, "--settings", help="Also show the node's settings (admin call)."
    ),
    home: Path | None = options.HOME,
    admin_token: str | None = options.ADMIN_TOKEN,
) -> None:
    """Show a node's peer id, addresses, version, uptime and storage."""
    node, json_output = settings.node_url(node), settings.wants_json(json_output)
    from pyrsia.cli.client import NodeClient

    client = NodeClient(node, admin_token=admin_token, home=home)
    doc = client.get_json("/api/v1/status")
    if show_settings:
        doc["settings"] = client.get_json("/api/v1/config", admin=True)
    if json_output:
        console.as_json(doc)
        return
    rows: list[tuple[str, object]] = [
        ("peer id", doc["peer_id"]),
        ("addresses", doc["addresses"]),
        ("http", doc["http_url"]),
        ("version", doc["version"]),
        ("uptime", _duration(float(doc["uptime_seconds"]))),
        ("blobs stored", f"{doc['blobs_stored']} ({_size(int(doc['blob_bytes']))})"),
        ("transparency log", f"height {doc['translog']['height']}, {doc['translog']['size']} entries"),
        ("network", _network(doc.get("p2p"))),
        ("docker upstream", doc["upstreams"]["docker"]),
        ("maven upstream", doc["upstreams"]["maven"]),
    ]
    if show_settings:
        rows.append(("settings", doc["settings"]))
    console.key_values(f"pyrsia node at {node}", rows)


def _network(p2p: object) -> str:
    if not isinstance(p2p, dict):
        return "-"
    role = "authority" if p2p.get("authority") else "regular node"
    lines = [
        f"{role}, {p2p.get('peers')} peers, {p2p.get('dht_peers')} in the DHT, "
        f"{p2p.get('provided_keys')} blobs provided, genesis {str(p2p.get('genesis'))[:16]}",
        *(str(a) for a in p2p.get("addresses", [])),
    ]
    if p2p.get("reachability"):
        lines.append(f"reachability: {p2p['reachability']}")
    # Where the node listens, what it tells peers, what peers agree they see, and the
    # circuit addresses relays hold for it.
    for kind in ("listen", "announced", "observed", "relayed"):
        found = p2p.get(kind)
        if isinstance(found, list):
            lines.append(f"{kind}: {', '.join(str(a) for a in found) or '-'}")
    punch = p2p.get("holepunch")
    if isinstance(punch, dict):
        lines.append(
            f"hole punching: {punch.get('attempts', 0)} dials, {punch.get('successes', 0)} direct, "
            f"{punch.get('failures', 0)} failed"
        )
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s"


def _size(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")
