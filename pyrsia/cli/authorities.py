"""`pyrsia authorize-node`, `authorize --peer`, `deauthorize-node` and `authorities`.

The authority set changes only by consensus: `authorize-node PEER_ID`, run against an
authority with its admin token, records that this node's admin approves the candidate
and submits AddAuthorizedNode; other authorities endorse it only when their own admins
approved the same peer, and once committed the set changes from the next height on.
`deauthorize-node` is the same for RemoveAuthorizedNode. `authorities` shows the set in
force, its quorum, this node's approvals and the changes still gathering endorsements.
Calls go to `/api/v1/authorities` (see `pyrsia.registry.api`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from pyrsia.cli import changes, console, layout, options, settings

PEER_ARGUMENT = typer.Argument(..., metavar="PEER_ID", help="Peer id of the node (`pyrsia id` on it).")


def _change(
    peer_id: str, *, remove: bool, node: str | None, home: Path | None, admin_token: str | None
) -> dict[str, Any]:
    from pyrsia.registry.api import AUTHORITIES, check_peer_id

    check_peer_id(peer_id)
    key = {"peer_id": peer_id}
    return changes.submit(AUTHORITIES, key, remove=remove, node=node, home=home, admin_token=admin_token)


def _show_change(answer: dict[str, Any], json_output: bool | None) -> None:
    what = f"{answer['peer_id']} as an authority"
    changes.show_change(answer, json_output, what=what, same="the same peer", listing="pyrsia authorities")


def authorize_node(
    peer_id: str = PEER_ARGUMENT,
    node: str | None = options.NODE,
    home: Path | None = options.HOME,
    admin_token: str | None = options.ADMIN_TOKEN,
    json_output: bool | None = options.JSON,
) -> None:
    """Approve a node as an authority and submit the change (on an authority; admin token).

    It takes effect once a quorum of authorities endorse it, each because its own admin
    ran this command for the same peer id.
    """
    answer = _change(peer_id, remove=False, node=node, home=home, admin_token=admin_token)
    _show_change(answer, json_output)


def authorize(
    peer: str = typer.Option(..., "--peer", metavar="PEER_ID", help="Peer id of the node to authorize."),
    node: str | None = options.NODE,
    home: Path | None = options.HOME,
    admin_token: str | None = options.ADMIN_TOKEN,
    json_output: bool | None = options.JSON,
) -> None:
    """Alias of `pyrsia authorize-node PEER_ID`."""
    answer = _change(peer, remove=False, node=node, home=home, admin_token=admin_token)
    _show_change(answer, json_output)


def deauthorize_node(
    peer_id: str = PEER_ARGUMENT,
    node: str | None = options.NODE,
    home: Path | None = options.HOME,
    admin_token: str | None = options.ADMIN_TOKEN,
    json_output: bool | None = options.JSON,
) -> None:
    """Approve removing an authority and submit the change (on an authority; admin token)."""
    answer = _change(peer_id, remove=True, node=node, home=home, admin_token=admin_token)
    _show_change(answer, json_output)


def authorities(node: str | None = options.NODE, json_output: bool | None = options.JSON) -> None:
    """List the authorities in force with their quorum, this node's approvals and pending changes."""
    from pyrsia.cli.client import NodeClient
    from pyrsia.registry.api import AUTHORITIES

    node = settings.node_url(node)
    doc = NodeClient(node).get_json(AUTHORITIES)
    if settings.wants_json(json_output):
        console.as_json(doc)
        return
    render(doc)


def render(doc: dict[str, Any]) -> None:
    """The authorities document as three tables and a line about this node."""
    members: list[str] = list(doc["authorities"])
    me = doc["me"]
    console.table(
        f"{len(members)} authorities at height {doc['height']}, quorum {doc['quorum']}",
        (layout.id_column("peer id"), layout.fixed("this node")),
        ((peer, "yes" if peer == me else "") for peer in members),
    )
    changes.approvals(layout.id_column("peer id"), "peer_id", doc["approvals"])
    changes.pending(
        "pending authority changes", layout.id_column("peer id"), "peer_id", doc["pending"], doc["quorum"]
    )
    role = "an authority" if doc["is_authority"] else "not an authority"
    console.line(f"this node {me} is {role}")
