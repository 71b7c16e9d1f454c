"""`pyrsia daemon`: run a node in the foreground until SIGINT or SIGTERM.

Its options are not written out here: there is one per `config.SETTINGS` entry, built
from it (flag, `PYRSIA_*` variable, bounds, help with the default), so a new setting
is a new flag without touching this file. Flags left out are None, and `config.load`
lets the file and the environment decide those.
"""

from __future__ import annotations

import inspect
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import typer
from typer import _click  # the click typer vendors: its help formatter is what prints --help
from typer.core import TyperCommand

from pyrsia.cli import console, options
from pyrsia.config import SETTINGS, Setting

OPTION_COLUMN_MAX = 26


class _Formatter(_click.HelpFormatter):
    """Help with a narrower option column: at 80 columns click leaves 44 for the text, which
    cuts `PYRSIA_KAD_PROVIDER_RECORDS_PER_IP_GROUP_MAX]` in two; this leaves 48."""

    def write_dl(self, rows: Sequence[tuple[str, str]], col_max: int = 30, col_spacing: int = 2) -> None:
        super().write_dl(rows, col_max=min(col_max, OPTION_COLUMN_MAX), col_spacing=col_spacing)


class _Context(_click.Context):
    formatter_class = _Formatter


class DaemonCommand(TyperCommand):
    """`pyrsia daemon`'s command: a typer command whose help has room for long variable names."""

    context_class = _Context


def _metavar(setting: Setting) -> str:
    """What the value looks like: a bool setting takes `true` or `false`, as in pyrsia.toml."""
    if setting.kind is bool:
        return "true|false"
    return "<str>" if setting.kind is tuple else f"<{setting.kind.__name__}>"


def _option(setting: Setting) -> Any:
    """The `pyrsia daemon` option of one setting, with its variable, default and bounds."""
    numeric = setting.kind in (int, float)
    choices = f" One of {', '.join(setting.choices)}." if setting.choices else ""
    return typer.Option(
        None,
        setting.flag,
        envvar=setting.env,
        help=f"{setting.help}{choices} (default: {setting.default_text})",
        show_default=False,
        metavar=_metavar(setting),
        min=setting.minimum if numeric else None,
        max=setting.maximum if numeric else None,
    )


def daemon(home: Path | None = options.HOME, **flags: Any) -> None:
    """Run a pyrsia node: serve Docker images (/v2/) and Maven artifacts (/maven2/), pulling through.

    With no configuration it starts a one-node network on http://127.0.0.1:7888,
    keeping its data in ~/.local/share/pyrsia.

    Settings come from <home>/pyrsia.toml, then PYRSIA_* environment variables, then these flags.
    """
    from pyrsia import config
    from pyrsia.node.daemon import Node

    # A node shuts down in its own time (`stop` below); while it starts, Ctrl-C unwinds
    # it as Python does, with no watchdog cutting its cleanup short.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    cfg = config.load(home, flags=flags)
    _setup_logging(cfg.log_level)
    node = Node(cfg)
    info = node.start()

    def stop(signum: int, _frame: FrameType | None) -> None:
        console.info(f"received {signal.Signals(signum).name}, shutting down")
        node.request_stop()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    console.line(f"peer id    {info.peer_id}")
    for address in info.addresses:
        console.line(f"address    {address}")
    for address in info.p2p_addresses:
        console.line(f"p2p        {address}")
    console.line(f"home       {cfg.home}")
    console.line(f"docker     {cfg.docker_upstream}")
    console.line(f"maven      {cfg.maven_upstream_id}={cfg.maven_upstream}")
    for repository in cfg.maven_repositories:
        console.line(f"maven      {repository}")
    console.line(f"ready {info.http_url}")
    try:
        node.wait()
    finally:
        node.close()
    console.info("stopped")


# typer reads a command's options from its signature: one keyword parameter per setting.
_PARAMETERS = [
    inspect.Parameter("home", inspect.Parameter.KEYWORD_ONLY, default=options.HOME, annotation=Path | None),
    *(
        inspect.Parameter(
            s.name,
            inspect.Parameter.KEYWORD_ONLY,
            default=_option(s),
            # A bool takes a value (`--serve-artifacts false`), as in pyrsia.toml.
            annotation=list[str] | None if s.kind is tuple else (str if s.kind is bool else s.kind) | None,
        )
        for s in SETTINGS.values()
    ),
]
daemon.__signature__ = inspect.Signature(_PARAMETERS, return_annotation=None)  # type: ignore[attr-defined]
daemon.__annotations__ = {p.name: p.annotation for p in _PARAMETERS} | {"return": None}


def _setup_logging(level: str) -> None:
    handler: logging.Handler
    if sys.stderr.isatty():
        from rich.logging import RichHandler

        handler = RichHandler(console=console.err, show_path=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
