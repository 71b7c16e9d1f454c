"""`pyrsia daemon`: run a node in the foreground until SIGINT or SIGTERM."""

from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path
from types import FrameType

import typer

from pyrsia.cli import console, options
from pyrsia.config import LOG_LEVELS, env_name


def daemon(
    home: Path | None = options.HOME,
    http_host: str | None = typer.Option(
        None,
        "--http-host",
        envvar=env_name("http_host"),
        show_default=False,
        help="Address the HTTP API binds to (default: 127.0.0.1).",
    ),
    http_port: int | None = typer.Option(
        None,
        "--http-port",
        envvar=env_name("http_port"),
        show_default=False,
        help="HTTP port for Docker, Maven and node API clients; 0 picks a free one (default: 7888).",
    ),
    docker_upstream: str | None = typer.Option(
        None,
        "--docker-upstream",
        envvar=env_name("docker_upstream"),
        show_default=False,
        help="Registry to pull through from (default: https://registry-1.docker.io).",
    ),
    maven_upstream: str | None = typer.Option(
        None,
        "--maven-upstream",
        envvar=env_name("maven_upstream"),
        show_default=False,
        help="Maven repository to pull through from (default: https://repo.maven.apache.org/maven2).",
    ),
    http_header_timeout: float | None = typer.Option(
        None,
        "--http-header-timeout",
        envvar=env_name("http_header_timeout_s"),
        show_default=False,
        help="Seconds a client has to send a whole request head (default: 10).",
    ),
    http_idle_timeout: float | None = typer.Option(
        None,
        "--http-idle-timeout",
        envvar=env_name("http_idle_timeout_s"),
        show_default=False,
        help="Seconds an idle keep-alive connection stays open (default: 60).",
    ),
    http_workers: int | None = typer.Option(
        None,
        "--http-workers",
        envvar=env_name("http_workers_max"),
        show_default=False,
        help="Connections served at once (default: 64).",
    ),
    log_level: str | None = typer.Option(
        None,
        "--log-level",
        envvar=env_name("log_level"),
        show_default=False,
        help=f"One of {', '.join(LOG_LEVELS)} (default: info). Logs go to stderr.",
    ),
) -> None:
    """Run a pyrsia node: serve Docker images (/v2/) and Maven artifacts (/maven2/), pulling through.

    With no configuration it starts a one-node network on http://127.0.0.1:7888,
    keeping its data in ~/.local/share/pyrsia.

    Settings come from <home>/pyrsia.toml, then PYRSIA_* environment variables, then these flags.
    """
    from pyrsia import config
    from pyrsia.node.daemon import Node

    cfg = config.load(
        home,
        flags={
            "http_host": http_host,
            "http_port": http_port,
            "docker_upstream": docker_upstream,
            "maven_upstream": maven_upstream,
            "http_header_timeout_s": http_header_timeout,
            "http_idle_timeout_s": http_idle_timeout,
            "http_workers_max": http_workers,
            "log_level": log_level,
        },
    )
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
    console.line(f"home       {cfg.home}")
    console.line(f"docker     {cfg.docker_upstream}")
    console.line(f"maven      {cfg.maven_upstream}")
    console.line(f"ready {info.http_url}")
    try:
        node.wait()
    finally:
        node.close()
    console.info("stopped")


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
