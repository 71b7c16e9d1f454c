"""`pyrsia config`: the client's settings, or (with --node) a node's `pyrsia.toml`."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import typer

from pyrsia.cli import console, options, settings

config_app = typer.Typer(
    help="Show and change settings: this client's, or a node's with --node.", no_args_is_help=True
)
# Only an explicit flag selects a node here: PYRSIA_NODE must not silently turn
# `pyrsia config set` on the client into a change on a node.
TARGET_NODE = typer.Option(
    None,
    "--node",
    show_default=False,
    help="Work on this node's settings (admin call) instead of the client's.",
)


def _node_settings(node: str, home: Path | None, token: str | None) -> dict[str, object]:
    from pyrsia.cli.client import NodeClient

    return dict(NodeClient(node, admin_token=token, home=home).get_json("/api/v1/config", admin=True))


@config_app.command(
    "show", epilog="Examples: pyrsia config show;  pyrsia config show --node http://127.0.0.1:7888"
)
def show(
    node: str | None = TARGET_NODE,
    home: Path | None = options.HOME,
    admin_token: str | None = options.ADMIN_TOKEN,
    json_output: bool | None = options.JSON,
) -> None:
    """Show every setting with its value."""
    values = _node_settings(node, home, admin_token) if node else dict(settings.load())
    if settings.wants_json(json_output):
        console.as_json(values)
    else:
        title = f"settings of the node at {node}" if node else f"client settings ({settings.path()})"
        console.key_values(title, sorted(values.items()))


@config_app.command("get", epilog="Example: pyrsia config get node")
def get(
    key: str = typer.Argument(..., help="Setting name."),
    node: str | None = TARGET_NODE,
    home: Path | None = options.HOME,
    admin_token: str | None = options.ADMIN_TOKEN,
) -> None:
    """Print one setting's value."""
    from pyrsia.config import unknown_setting

    values = _node_settings(node, home, admin_token) if node else dict(settings.load())
    if key not in values:
        raise unknown_setting(key, values)
    console.line(str(values[key]))


@config_app.command(
    "set",
    epilog="Examples: pyrsia config set node http://10.0.0.5:7888;  "
    "pyrsia config set http_port 8080 --node http://127.0.0.1:7888",
)
def set_(
    key: str = typer.Argument(..., help="Setting name."),
    value: str = typer.Argument(..., help="New value; checked before it is stored."),
    node: str | None = TARGET_NODE,
    home: Path | None = options.HOME,
    admin_token: str | None = options.ADMIN_TOKEN,
) -> None:
    """Change one setting (a node's takes effect when it restarts)."""
    if node:
        from pyrsia.cli.client import NodeClient

        client = NodeClient(node, admin_token=admin_token, home=home)
        answer = client.put_json("/api/v1/config", {"key": key, "value": value}, admin=True)
        console.success(
            f"{key} = {answer['value']} written to {answer['file']}; restart the node to apply it"
        )
    else:
        stored = settings.save(key, value)
        console.success(f"{key} = {stored}")


@config_app.command("edit", epilog="Examples: pyrsia config edit;  pyrsia config edit --home /var/lib/pyrsia")
def edit(
    home: Path | None = typer.Option(
        None,
        "--home",
        show_default=False,
        help="Edit this node home's pyrsia.toml instead of the client's file.",
    ),
) -> None:
    """Open the settings file in $EDITOR, then check it."""
    from pyrsia import config
    from pyrsia.errors import ConfigError, UsageError

    target = home / config.CONFIG_FILE if home else settings.path()
    target.parent.mkdir(parents=True, exist_ok=True)
    target.touch(exist_ok=True)
    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
    try:
        subprocess.run([*shlex.split(editor), str(target)], check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise UsageError(f"editor {editor!r} failed: {exc}") from exc
    try:
        config.load(home, environ={}) if home else settings.load()
    except ConfigError as exc:
        raise ConfigError(f"{target} is not valid now: {exc.message}") from exc
    console.success(f"{target} is valid")
