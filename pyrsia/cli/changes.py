"""What the authority set and the registry list share on the command line: changes by consensus.

Both change only when a quorum of authorities endorse a change, each because its own
admin approved the same one. `show_change` prints what `POST` answered; `approvals`
and `pending` render this node's approvals and the changes still gathering
endorsements, keyed by what changes (a peer id, a registry host).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pyrsia.cli import console, layout, settings

SHORT_CHARS = 20


def short(text: str) -> str:
    """A peer id or transaction id cut to what tells it apart in a table (`--json` has it whole)."""
    return text if len(text) <= SHORT_CHARS else text[:SHORT_CHARS] + "…"


def submit(
    path: str,
    key: dict[str, str],
    *,
    remove: bool,
    node: str | None,
    home: Path | None,
    admin_token: str | None,
) -> dict[str, Any]:
    """POST one approval (`key` names what changes) to `path` with the admin token; the answer as a dict."""
    from pyrsia.cli.client import NodeClient

    client = NodeClient(node, admin_token=admin_token, home=home)
    return dict(client.post_json(path, {**key, "action": "remove" if remove else "add"}, admin=True))


def show_change(
    answer: dict[str, Any], json_output: bool | None, *, what: str, same: str, listing: str
) -> None:
    """`what`: the change in words ("registry ghcr.io"); `same`: what other admins must approve
    ("the same host"); `listing`: the command that shows pending changes."""
    if settings.wants_json(json_output):
        console.as_json(answer)
        return
    verb = "removing" if answer["action"] == "remove" else "adding"
    console.success(f"this node's admin approves {verb} {what}")
    if answer["state"] == "committed":
        console.line(f"committed at height {answer['height']}; in force from the next height")
    elif answer["tx_id"]:
        console.line(
            f"transaction {answer['tx_id']} is pending: it commits once a quorum of authorities "
            f"endorse it (each after its own admin approved {same}); see `{listing}`"
        )
    else:
        console.line("recorded: this node endorses the change when another authority submits it")


def approvals(key: layout.Column, field: str, rows: Sequence[dict[str, Any]]) -> None:
    console.table(
        f"approved by this node's admin ({len(rows)})",
        (key, layout.fixed("action")),
        ((a[field], a["action"]) for a in rows),
    )


def pending(title: str, key: layout.Column, field: str, rows: Sequence[dict[str, Any]], quorum: int) -> None:
    console.table(
        f"{title} ({len(rows)})",
        (
            key,
            layout.fixed("action"),
            layout.Column(header="endorsed by", drop=3),
            layout.fixed("submitter", drop=2),
            layout.fixed("tx id", drop=1),
        ),
        (
            (
                p[field],
                p["action"],
                [f"{len(p['endorsed_by'])} of {quorum} needed", *map(short, p["endorsed_by"])],
                short(p["submitter"]),
                short(p["tx_id"]),
            )
            for p in rows
        ),
    )
