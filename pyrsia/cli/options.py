"""Options shared by several commands, declared once so names and env vars never drift."""

from __future__ import annotations

import typer

from pyrsia.config import DEFAULT_NODE_URL, ENV_ADMIN_TOKEN, ENV_HOME, ENV_NODE

HOME = typer.Option(
    None,
    "--home",
    envvar=ENV_HOME,
    help="Node data directory (default: ~/.local/share/pyrsia).",
    file_okay=False,
    show_default=False,
)
NODE = typer.Option(
    None,
    "--node",
    envvar=ENV_NODE,
    show_default=False,
    help=f"URL of the pyrsia node to talk to (default: client setting `node`, else {DEFAULT_NODE_URL}).",
)
ADMIN_TOKEN = typer.Option(
    None,
    "--admin-token",
    envvar=ENV_ADMIN_TOKEN,
    show_default=False,
    help="Admin token for calls that change a node (default: read from --home).",
)
JSON = typer.Option(
    None,
    "--json/--table",
    show_default=False,
    help="Print JSON for scripts, or a table for people (default: client setting `output`, else table).",
)
WIDE = typer.Option(
    False,
    "--wide",
    "-w",
    help="Show every column and every value whole, however wide the table gets.",
)
