"""Root of the `pyrsia` command line.

Each command group lives in its own module and is registered here. Heavy imports
(the daemon, httpx) happen inside command bodies so `pyrsia --help` stays fast.
Every `PyrsiaError` ends here as one red line and its exit code (2 for usage and
config, 1 otherwise); a traceback is shown only with `--debug`. Ctrl-C ends here too
(`pyrsia.cli.interrupt`): partial files removed, exit code 130.
"""

from __future__ import annotations

import sys

import typer

from pyrsia import __version__
from pyrsia.cli import console, interrupt
from pyrsia.cli.authorities import authorities, authorize, authorize_node, deauthorize_node
from pyrsia.cli.bench import bench_app
from pyrsia.cli.build import build_app
from pyrsia.cli.configure import config_app
from pyrsia.cli.daemon import DaemonCommand, daemon
from pyrsia.cli.devnet import devnet_app
from pyrsia.cli.genesis import genesis
from pyrsia.cli.identity import identity
from pyrsia.cli.log import inspect_app, log_app
from pyrsia.cli.peers import peers, ping
from pyrsia.cli.pull import pull_app
from pyrsia.cli.registries import registries_app
from pyrsia.cli.setup import setup_app
from pyrsia.cli.status import status
from pyrsia.errors import PyrsiaError

app = typer.Typer(
    name="pyrsia",
    help="pyrsia: Docker images and Maven artifacts from a peer-to-peer network, vouched for by a "
    "transparency log.\n\nStart a node with `pyrsia daemon`, then point docker, podman, "
    "skopeo or mvn at http://localhost:7888.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.command(cls=DaemonCommand, epilog="Example: pyrsia daemon --home /tmp/node1 --http-port 7888")(daemon)
app.command(epilog="Example: pyrsia status --json")(status)
app.command("id", epilog="Example: pyrsia id --home /tmp/node1")(identity)
app.command(epilog="Example: pyrsia peers --json")(peers)
app.command("list", epilog="Example: pyrsia list", help="Alias of `pyrsia peers`.")(peers)
app.command(epilog="Example: pyrsia ping /ip4/127.0.0.1/tcp/44000/p2p/12D3KooW…")(ping)
app.command(
    epilog="Example: pyrsia genesis --authority 12D3KooWA… --authority 12D3KooWB… "
    "--authority 12D3KooWC… --authority 12D3KooWD… --origin example.org/pyrsia -o genesis.blk"
)(genesis)
app.command(
    "authorize-node",
    epilog="Example: pyrsia authorize-node 12D3KooWE… --node http://127.0.0.1:7888 --home /var/lib/pyrsia",
)(authorize_node)
app.command(epilog="Example: pyrsia authorize --peer 12D3KooWE… --home /var/lib/pyrsia")(authorize)
app.command("deauthorize-node", epilog="Example: pyrsia deauthorize-node 12D3KooWE… --home /var/lib/pyrsia")(
    deauthorize_node
)
app.command(epilog="Examples: pyrsia authorities;  pyrsia authorities --json --node http://127.0.0.1:7888")(
    authorities
)
app.add_typer(build_app, name="build")
app.add_typer(pull_app, name="pull")
app.add_typer(bench_app, name="bench")
app.add_typer(config_app, name="config")
app.add_typer(log_app, name="log")
app.add_typer(inspect_app, name="inspect-log")
app.add_typer(devnet_app, name="devnet")
app.add_typer(setup_app, name="setup")
app.add_typer(
    registries_app,
    name="registries",
    epilog="Examples: pyrsia registries;  pyrsia registries add ghcr.io;  pyrsia registries remove quay.io",
)


def _show_version(value: bool) -> None:
    if value:
        console.line(f"pyrsia {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(
        False, "--version", "-V", help="Print the version and exit.", callback=_show_version, is_eager=True
    ),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors."),
) -> None:
    """Top-level options shared by every command."""


def main() -> None:
    interrupt.install()
    try:
        app()
    except interrupt.Interrupted:
        console.error("interrupted")
        interrupt.abort()
    except PyrsiaError as error:
        if "--debug" in sys.argv:
            raise
        console.error(error.message)
        sys.exit(error.exit_code)
