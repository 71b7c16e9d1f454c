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
NODE = typer.Option(DEFAULT_NODE_URL, "--node", envvar=ENV_NODE, help="URL of the pyrsia node to talk to.")
ADMIN_TOKEN = typer.Option(
    None,
    "--admin-token",
    envvar=ENV_ADMIN_TOKEN,
    show_default=False,
    help="Admin token for calls that change a node (default: read from --home).",
)
JSON = typer.Option(False, "--json", help="Print machine-readable JSON instead of a table.")
