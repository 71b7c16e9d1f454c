"""`pyrsia registries`, `registries add HOST` and `registries remove HOST`.

The Docker registries a network vouches for start as its genesis lists them and change
only by consensus, like the authority set: `registries add HOST`, run against an
authority with its admin token, records that this node's admin approves the change and
submits AddRegistry; other authorities endorse it only when their own admins approved
the same host, and once committed the list changes from the next height on.
`registries remove HOST` is the same for RemoveRegistry (docker.io and the last
registry are never removed; records already logged for a removed registry stay
valid). `registries` alone shows the list in force, the height each host entered it,
this node's approvals and the changes still gathering endorsements. Calls go to
`/api/v1/registries` (see `pyrsia.registry.api`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from pyrsia.cli import console, layout, options, settings

SHORT_CHARS = 20
HOST_ARGUMENT = typer.Argument(..., metavar="HOST", help="Registry host, as in image names (ghcr.io).")

registries_app = typer.Typer(
    help="The Docker registries the network vouches for, and changes to them by consensus.",
    invoke_without_command=True,
)


@registries_app.callback()
def registries(
    ctx: typer.Context,
    node: str | None = options.NODE,
    json_output: bool | None = options.JSON,
) -> None:
    """List the registries in force with the height each entered, approvals and pending changes."""
    if ctx.invoked_subcommand is not None:
        return
    from pyrsia.cli.client import NodeClient
    from pyrsia.registry.api import REGISTRIES

    doc = NodeClient(settings.node_url(node)).get_json(REGISTRIES)
    if settings.wants_json(json_output):
        console.as_json(doc)
        return
    render(doc)


def _change(
    host: str, *, remove: bool, node: str | None, home: Path | None, admin_token: str | None
) -> dict[str, Any]:
    from pyrsia.cli.client import NodeClient
    from pyrsia.registry.api import REGISTRIES, check_registry

    host = check_registry(host.lower())  # case folds as in image names; nothing else is mended
    client = NodeClient(node, admin_token=admin_token, home=home)
    body = {"host": host, "action": "remove" if remove else "add"}
    return dict(client.post_json(REGISTRIES, body, admin=True))


def _show_change(answer: dict[str, Any], json_output: bool | None) -> None:
    if settings.wants_json(json_output):
        console.as_json(answer)
        return
    verb = "removing" if answer["action"] == "remove" else "adding"
    console.success(f"this node's admin approves {verb} registry {answer['host']}")
    if answer["state"] == "committed":
        console.line(f"committed at height {answer['height']}; in force from the next height")
    elif answer["tx_id"]:
        console.line(
            f"transaction {answer['tx_id']} is pending: it commits once a quorum of authorities "
            "endorse it (each after its own admin approved the same host); see `pyrsia registries`"
        )
    else:
        console.line("recorded: this node endorses the change when another authority submits it")


@registries_app.command(epilog="Example: pyrsia registries add ghcr.io --home /var/lib/pyrsia")
def add(
    host: str = HOST_ARGUMENT,
    node: str | None = options.NODE,
    home: Path | None = options.HOME,
    admin_token: str | None = options.ADMIN_TOKEN,
    json_output: bool | None = options.JSON,
) -> None:
    """Approve vouching for a registry and submit the change (on an authority; admin token).

    It takes effect once a quorum of authorities endorse it, each because its own admin
    ran this command for the same host.
    """
    _show_change(_change(host, remove=False, node=node, home=home, admin_token=admin_token), json_output)


@registries_app.command(epilog="Example: pyrsia registries remove quay.io --home /var/lib/pyrsia")
def remove(
    host: str = HOST_ARGUMENT,
    node: str | None = options.NODE,
    home: Path | None = options.HOME,
    admin_token: str | None = options.ADMIN_TOKEN,
    json_output: bool | None = options.JSON,
) -> None:
    """Approve no longer vouching for a registry and submit the change (admin token).

    Records already in the log for it stay valid; new ones are refused. docker.io is
    never removed.
    """
    _show_change(_change(host, remove=True, node=node, home=home, admin_token=admin_token), json_output)


def render(doc: dict[str, Any]) -> None:
    """The registries document as three tables."""
    agreed: list[dict[str, Any]] = list(doc["registries"])
    upstreams: dict[str, str] = doc.get("upstreams", {})
    console.table(
        f"{len(agreed)} registries agreed at height {doc['height']}, quorum {doc['quorum']}",
        (layout.fixed("host"), layout.fixed("since height"), layout.Column(header="upstream here", drop=1)),
        ((r["host"], str(r["since"]), upstreams.get(r["host"], "")) for r in agreed),
    )
    approvals = doc["approvals"]
    console.table(
        f"approved by this node's admin ({len(approvals)})",
        (layout.fixed("host"), layout.fixed("action")),
        ((a["registry"], a["action"]) for a in approvals),
    )
    pending = doc["pending"]
    console.table(
        f"pending registry changes ({len(pending)})",
        (
            layout.fixed("host"),
            layout.fixed("action"),
            layout.Column(header="endorsed by", drop=3),
            layout.fixed("submitter", drop=2),
            layout.fixed("tx id", drop=1),
        ),
        (
            (
                p["host"],
                p["action"],
                [f"{len(p['endorsed_by'])} of {doc['quorum']} needed", *map(_short, p["endorsed_by"])],
                _short(p["submitter"]),
                _short(p["tx_id"]),
            )
            for p in pending
        ),
    )


def _short(text: str) -> str:
    """A peer id or transaction id cut to what tells it apart in a table (`--json` has it whole)."""
    return text if len(text) <= SHORT_CHARS else text[:SHORT_CHARS] + "…"
