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

from pyrsia.cli import changes, console, layout, options, settings

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
    from pyrsia.registry.api import REGISTRIES, check_registry

    host = check_registry(host.lower())  # case folds as in image names; nothing else is mended
    return changes.submit(
        REGISTRIES, {"host": host}, remove=remove, node=node, home=home, admin_token=admin_token
    )


def _show_change(answer: dict[str, Any], json_output: bool | None) -> None:
    what = f"registry {answer['host']}"
    changes.show_change(answer, json_output, what=what, same="the same host", listing="pyrsia registries")


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
    changes.approvals(layout.fixed("host"), "registry", doc["approvals"])
    changes.pending("pending registry changes", layout.fixed("host"), "host", doc["pending"], doc["quorum"])
