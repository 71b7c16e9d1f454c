"""`pyrsia devnet`: a whole pyrsia network on loopback, started and stopped in one command.

`up` makes DIR/node0 … DIR/node{N-1}. With one authority (the default), node0 is it:
started with no bootstrap, it creates its own one-authority network, and every other
node is a regular node that joins through node0's p2p multiaddr. With `--authorities
A` > 1, node0 … node{A-1} are the authorities: their peer ids (read from the identity
keys `up` makes in their homes) go into DIR/genesis.blk, signed with node0's key, and
every node starts with `--genesis` that file. Authorities start one after another,
each bootstrapping to all those before it, so they end up connected pairwise; regular
nodes bootstrap to node0. `down` keeps DIR/devnet.json (state `stopped`) with the
network's plan (authorities, upstreams), so a later `up` starts that same network
again: same nodes, roles, ports and keys; flags asking for another network are refused
unless `--fresh`, which deletes the old nodes' data and builds anew. The genesis file
is reused while it names the same authorities, so the nodes' logs stay valid. Each node is a detached
`pyrsia daemon` in a session of its own (so a Ctrl-C meant for the shell never reaches
it), bound to 127.0.0.1 only, its output appended to DIR/nodeI/daemon.log.

DIR/devnet.json records a process the moment it exists (rewritten atomically after
every start), so `down` can always find what `up` left behind, even an `up` that was
itself killed. An `up` that fails or is interrupted stops what it started before it
exits. Readiness is the daemon's `ready URL` line and then a `/api/v1/status` that
names the expected peer id, polled against a deadline. A process counts as alive
when `kill(pid, 0)` finds it and, where /proc exists, it is not a zombie and still
runs with that node's home on its command line, so a recycled pid is never signalled.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import typer

from pyrsia.cli import console, layout, options, settings
from pyrsia.errors import ListenError, PyrsiaError, UsageError

if TYPE_CHECKING:
    from nacl.signing import SigningKey

devnet_app = typer.Typer(
    help="Run a local pyrsia network on loopback: authorities and regular nodes.", no_args_is_help=True
)

STATE_FILE = "devnet.json"
GENESIS_FILE = "genesis.blk"
LOG_FILE = "daemon.log"
STATE_FORMAT = 1
AUTHORITY, REGULAR = "authority", "regular"
STARTING, RUNNING, STOPPED = "starting", "running", "stopped"
LOOPBACK = "127.0.0.1"
NODES_MAX = 32
REGULAR_NODES_DEFAULT = 2
READY_TIMEOUT_S = 60.0
STATUS_TIMEOUT_S = 3.0
TERM_TIMEOUT_S = 40.0  # longer than a daemon's own shutdown grace for requests in flight
KILL_TIMEOUT_S = 10.0
POLL_INTERVAL_S = 0.05
LOG_TAIL_LINES = 5
LOG_TAIL_CHARS_MAX = 600
EXAMPLE_IMAGE = "library/alpine:3.18"
# Variables a daemon would read that would change what the devnet decides for it.
_SCRUBBED_ENV = ("PYRSIA_HOME", "PYRSIA_BOOTSTRAP", "PYRSIA_GENESIS")

DIR = typer.Option(
    None,
    "--dir",
    help="Directory holding the nodes and devnet.json (default: $PYRSIA_HOME/devnet, "
    "else ~/.local/share/pyrsia-devnet).",
    file_okay=False,
    show_default=False,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class DevnetNode:
    """One node of the devnet as devnet.json records it."""

    name: str
    role: str
    home: Path
    http_port: int
    p2p_port: int
    peer_id: str
    pid: int = 0
    http_url: str = ""
    p2p: str = ""  # the multiaddr other nodes dial, /ip4/127.0.0.1/tcp/PORT/p2p/PEER_ID

    @property
    def address(self) -> str:
        """`127.0.0.1:PORT`, the form registry clients take."""
        return (self.http_url or f"http://{LOOPBACK}:{self.http_port}").removeprefix("http://")

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "role": self.role,
            "home": str(self.home),
            "http_port": self.http_port,
            "p2p_port": self.p2p_port,
            "peer_id": self.peer_id,
            "pid": self.pid,
            "http_url": self.http_url,
            "p2p": self.p2p,
            "log": str(self.home / LOG_FILE),
        }

    @classmethod
    def from_json(cls, doc: Any) -> DevnetNode:
        """Raises `ValueError` unless `doc` is a node as `to_json` writes it."""
        if not isinstance(doc, dict):
            raise ValueError("a node is not an object")
        node = cls(
            name=_text(doc, "name"),
            role=_text(doc, "role"),
            home=Path(_text(doc, "home")),
            peer_id=_text(doc, "peer_id"),
            http_url=_text(doc, "http_url"),
            p2p=_text(doc, "p2p"),
            http_port=_number(doc, "http_port"),
            p2p_port=_number(doc, "p2p_port"),
            pid=_number(doc, "pid"),
        )
        if node.role not in (AUTHORITY, REGULAR) or not node.home.is_absolute() or node.pid <= 1:
            raise ValueError(f"node {node.name!r} has a bad role, home or process id")
        return node


def _text(doc: dict[str, Any], key: str) -> str:
    value = doc.get(key)
    if not isinstance(value, str):
        raise ValueError(f"{key} is not a string")
    return value


def _number(doc: dict[str, Any], key: str) -> int:
    value = doc.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 2**31:
        raise ValueError(f"{key} is not a whole number")
    return value


# --- devnet.json ----------------------------------------------------------------------


def default_dir(environ: dict[str, str] | None = None) -> Path:
    from pyrsia.config import ENV_HOME, default_home

    env = dict(os.environ) if environ is None else environ
    if env.get(ENV_HOME):
        return default_home(env) / "devnet"
    return default_home(env).with_name("pyrsia-devnet")


def _directory(given: Path | None) -> Path:
    return (given if given is not None else default_dir()).expanduser().absolute()


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    """What a devnet is beyond its processes, kept in devnet.json so a later `up` rebuilds
    the same network: how many of its nodes are authorities, and the upstreams."""

    authorities: int
    docker_upstream: str | None = None
    maven_upstream: str | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "authorities": self.authorities,
            "docker_upstream": self.docker_upstream,
            "maven_upstream": self.maven_upstream,
        }

    @classmethod
    def from_json(cls, doc: Any, nodes: Sequence[DevnetNode]) -> Plan:
        """The recorded plan; a record without one (older pyrsia) tells its authorities by role."""
        if doc is None:
            return cls(authorities=sum(n.role == AUTHORITY for n in nodes))
        if not isinstance(doc, dict):
            raise ValueError("plan is not an object")
        upstreams = [doc.get(key) for key in ("docker_upstream", "maven_upstream")]
        if any(u is not None and not isinstance(u, str) for u in upstreams):
            raise ValueError("an upstream is not a string")
        return cls(
            authorities=_number(doc, "authorities"), docker_upstream=upstreams[0], maven_upstream=upstreams[1]
        )


def _load(directory: Path) -> tuple[str, list[DevnetNode], Plan] | None:
    """(state, nodes, plan) from devnet.json, or None when there is none."""
    path = directory / STATE_FILE
    try:
        doc = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise PyrsiaError(f"cannot read {path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise PyrsiaError(f"{path} is damaged ({exc}); stop its daemons by hand and remove it") from exc
    try:
        if not isinstance(doc, dict) or doc.get("format") != STATE_FORMAT:
            raise ValueError(f"not a devnet record of format {STATE_FORMAT}")
        state, nodes = doc.get("state"), doc.get("nodes")
        if state not in (STARTING, RUNNING, STOPPED) or not isinstance(nodes, list):
            raise ValueError("no state or no node list")
        found = [DevnetNode.from_json(node) for node in nodes]
        return str(state), found, Plan.from_json(doc.get("plan"), found)
    except ValueError as exc:
        raise PyrsiaError(f"{path} is damaged ({exc}); stop its daemons by hand and remove it") from exc


def _save(
    directory: Path, state: str, nodes: Sequence[DevnetNode], plan: Plan, genesis: Path | None = None
) -> None:
    from pyrsia.durable import write_atomic

    doc: dict[str, object] = {
        "format": STATE_FORMAT,
        "state": state,
        "plan": plan.to_json(),
        "nodes": [n.to_json() for n in nodes],
    }
    if genesis is not None:
        doc["genesis"] = str(genesis)
    write_atomic(directory / STATE_FILE, (json.dumps(doc, indent=2) + "\n").encode())


def _forget(directory: Path) -> None:
    try:
        (directory / STATE_FILE).unlink(missing_ok=True)
    except OSError as exc:
        raise PyrsiaError(f"cannot remove {directory / STATE_FILE}: {exc.strerror}") from exc


# --- processes ------------------------------------------------------------------------


def _runs_node(pid: int, home: Path) -> bool:
    """Whether `pid` is a live (not zombie) process running the node at `home`."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: the pid was recycled
        return False
    proc = Path("/proc") / str(pid)
    if not Path("/proc/self").is_dir():
        return True  # no /proc (macOS): kill(pid, 0) is all there is
    try:
        stat = (proc / "stat").read_text()
        argv = (proc / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    # proc(5): the state follows the parenthesised command name, which may hold spaces.
    if stat.rpartition(")")[2].split()[:1] in (["Z"], ["X"]):
        return False
    return os.fsencode(str(home)) in argv


class _Daemon:
    """A node's process: through its `Popen` while `up` holds one, else by pid."""

    def __init__(self, node: DevnetNode, popen: subprocess.Popen[bytes] | None = None) -> None:
        self.node = node
        self.popen = popen

    def alive(self) -> bool:
        if self.popen is not None:
            return self.popen.poll() is None
        return self.node.pid > 0 and _runs_node(self.node.pid, self.node.home)

    def signal(self, signum: int) -> None:
        # The daemon leads its own process group (start_new_session): signal all of it.
        try:
            os.killpg(self.node.pid, signum)
        except (ProcessLookupError, PermissionError):
            with suppress(ProcessLookupError, PermissionError):
                os.kill(self.node.pid, signum)


def _wait_gone(daemons: Sequence[_Daemon], timeout_s: float) -> list[_Daemon]:
    """Polls until none of `daemons` is alive or the deadline passes; returns the living."""
    deadline = time.monotonic() + timeout_s
    while True:
        living = [d for d in daemons if d.alive()]
        if not living or time.monotonic() >= deadline:
            return living
        time.sleep(POLL_INTERVAL_S)


def _stop(daemons: Sequence[_Daemon]) -> dict[str, str]:
    """SIGTERM, wait, SIGKILL what is left, wait; returns how each node ended.

    Raises `PyrsiaError` naming any process still alive after SIGKILL.
    """
    outcome = {d.node.name: "was not running" for d in daemons}
    living = [d for d in daemons if d.alive()]
    for daemon in living:
        daemon.signal(signal.SIGTERM)
        outcome[daemon.node.name] = "stopped"
    stragglers = _wait_gone(living, TERM_TIMEOUT_S)
    for daemon in stragglers:
        daemon.signal(signal.SIGKILL)
        outcome[daemon.node.name] = "killed (it ignored SIGTERM)"
    left = _wait_gone(stragglers, KILL_TIMEOUT_S)
    if left:
        names = ", ".join(f"{d.node.name} (pid {d.node.pid})" for d in left)
        raise PyrsiaError(f"could not stop {names}")
    return outcome


def _pyrsia_command() -> list[str]:
    """How to run this very pyrsia: the single executable itself, or this interpreter."""
    if getattr(sys, "frozen", False):
        return [sys.executable]
    return [sys.executable, "-m", "pyrsia"]


def _daemon_argv(
    node: DevnetNode,
    bootstrap: Sequence[str],
    genesis: Path | None,
    docker_upstream: str | None,
    maven_upstream: str | None,
) -> list[str]:
    argv = [
        *_pyrsia_command(),
        "daemon",
        "--home", str(node.home),
        "--http-host", LOOPBACK,
        "--http-port", str(node.http_port),
        "--p2p-host", LOOPBACK,
        "--p2p-port", str(node.p2p_port),
    ]  # fmt: skip
    if docker_upstream:
        argv += ["--docker-upstream", docker_upstream]
    if maven_upstream:
        argv += ["--maven-upstream", maven_upstream]
    if genesis is not None:
        argv += ["--genesis", str(genesis)]
    for address in bootstrap:
        argv += ["--bootstrap", address]
    return argv


def _genesis_for(directory: Path, members: Sequence[str], key: SigningKey) -> Path:
    """DIR/genesis.blk naming exactly `members` as authorities: the one already there
    when it does (a restarted devnet keeps its network), else a new one signed by `key`."""
    from pyrsia.durable import write_atomic
    from pyrsia.translog.block import Block
    from pyrsia.translog.chain import genesis_block
    from pyrsia.translog.tx import AuthorizedNode

    path = directory / GENESIS_FILE
    try:
        block = Block.decode(path.read_bytes())
    except FileNotFoundError:
        pass
    except (OSError, PyrsiaError) as exc:
        console.warning(f"replacing {path}, which cannot be read as a genesis block: {exc}")
    else:
        named = [tx.payload.peer_id for tx in block.transactions if isinstance(tx.payload, AuthorizedNode)]
        if block.header.height == 0 and named == list(members):
            return path
        console.warning(
            f"replacing {path}: it names other authorities (nodes with an old log will refuse it)"
        )
    write_atomic(path, genesis_block(key, int(time.time()), members).encode())
    return path


def _log_tail(path: Path, offset: int) -> str:
    try:
        with path.open("rb") as log:
            log.seek(offset)
            text = log.read().decode(errors="replace")
    except OSError:
        return "(no output)"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    tail = " | ".join(lines[-LOG_TAIL_LINES:]) or "(no output)"
    return tail if len(tail) <= LOG_TAIL_CHARS_MAX else "…" + tail[-LOG_TAIL_CHARS_MAX:]


def _read_from(path: Path, offset: int) -> list[str]:
    try:
        with path.open("rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace").splitlines()
    except OSError:
        return []


def _p2p_multiaddr(node: DevnetNode, lines: Sequence[str]) -> str:
    """The daemon's own `p2p MULTIADDR` line for loopback, else the one its flags imply."""
    printed = [line.split()[1] for line in lines if line.startswith("p2p ") and len(line.split()) > 1]
    for addr in printed:
        if addr.startswith(f"/ip4/{LOOPBACK}/"):
            return addr
    if printed:
        return printed[0]
    return f"/ip4/{LOOPBACK}/tcp/{node.p2p_port}/p2p/{node.peer_id}"


def _status(url: str, timeout_s: float = STATUS_TIMEOUT_S) -> dict[str, Any]:
    """A node's `/api/v1/status`; raises `PyrsiaError` when it does not answer one."""
    import httpx

    try:
        response = httpx.get(f"{url}/api/v1/status", timeout=timeout_s)
        doc = response.json() if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError) as exc:
        raise PyrsiaError(f"{url} did not answer: {exc}") from exc
    if not isinstance(doc, dict):
        raise PyrsiaError(f"{url}/api/v1/status answered {response.status_code}, not a status")
    return doc


class _Launch:
    """One node being started by `up`: its process and where this run's output begins."""

    def __init__(self, node: DevnetNode, popen: subprocess.Popen[bytes], log_offset: int) -> None:
        self.node = node
        self.popen = popen
        self.log_offset = log_offset

    @property
    def log(self) -> Path:
        return self.node.home / LOG_FILE

    def wait_ready(self, deadline: float, timeout_s: float) -> DevnetNode:
        """Polls for the `ready URL` line and a status naming our peer id, until `deadline`."""
        name = self.node.name
        while True:
            lines = _read_from(self.log, self.log_offset)
            ready = next((line.split()[1] for line in lines if line.startswith("ready ")), None)
            if ready is not None:
                try:
                    doc = _status(ready)
                except PyrsiaError:
                    doc = {}
                if doc.get("peer_id") == self.node.peer_id:
                    return replace(self.node, http_url=ready, p2p=_p2p_multiaddr(self.node, lines))
                if doc:
                    raise PyrsiaError(
                        f"{name}: {ready} answers as peer {doc.get('peer_id')!r}, not {self.node.peer_id}"
                    )
            code = self.popen.poll()
            if code is not None:
                tail = _log_tail(self.log, self.log_offset)
                raise PyrsiaError(f"{name} exited with code {code} before it was ready: {tail}")
            if time.monotonic() >= deadline:
                tail = _log_tail(self.log, self.log_offset)
                raise PyrsiaError(f"{name} was not ready within {timeout_s:g} s: {tail}")
            time.sleep(POLL_INTERVAL_S)


class _Interrupts:
    """SIGINT and SIGTERM during `up` become KeyboardInterrupt, except inside `held()`.

    A signal that arrives between starting a process and recording it waits until the
    record is written, so an interrupted `up` always knows every process to stop.
    """

    def __init__(self) -> None:
        self._depth = 0
        self._pending = False
        self._fired = False

    def _handle(self, _signum: int, _frame: FrameType | None) -> None:
        # Only the first signal interrupts: a second Ctrl-C must not cut the cleanup short.
        if self._depth or self._fired:
            self._pending = True
            return
        self._fired = True
        raise KeyboardInterrupt

    @contextmanager
    def installed(self) -> Iterator[None]:
        """Our handlers for the block; a block that fails leaves the command on its way
        out, past its cleanup, so a further signal is then ignored rather than let cut
        the exit short."""
        previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        except BaseException:
            for signum in previous:
                signal.signal(signum, signal.SIG_IGN)
            raise
        for signum, handler in previous.items():
            signal.signal(signum, handler)

    @contextmanager
    def held(self, *, deliver: bool = True) -> Iterator[None]:
        """Defers signals to the end of the block; drops them if not `deliver` (cleanup)."""
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
        if self._pending and not self._depth:
            self._pending = False
            if deliver and not self._fired:
                self._fired = True
                raise KeyboardInterrupt


# --- ports ----------------------------------------------------------------------------


EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
QUIET_PORT_MIN = 10_000  # below it sit the well-known services a machine may run
QUIET_PORTS_MIN = 1_000  # a stretch shorter than this is not worth picking from


def quiet_ports(ephemeral: tuple[int, int] | None) -> range | None:
    """Ports a devnet may take that the kernel never hands out by itself (outside its
    ephemeral range, which every outgoing connection and every port-0 listener draws
    from): below the range, else above it; None if neither leaves room."""
    if ephemeral is None:
        return None
    low, high = ephemeral
    below = range(QUIET_PORT_MIN, low)
    above = range(max(high + 1, QUIET_PORT_MIN), 65536)
    best = max(below, above, key=len)
    return best if len(best) >= QUIET_PORTS_MIN else None


def _ephemeral_range() -> tuple[int, int] | None:
    try:
        low, high = (int(part) for part in EPHEMERAL_RANGE_FILE.read_text().split())
    except (OSError, ValueError):
        return None
    return low, high


def free_ports(count: int, host: str = LOOPBACK) -> list[int]:
    """`count` distinct ports free on `host`, all held open at once while they are picked.
    Taken at random outside the kernel's ephemeral range where it is known: a port picked
    there could be taken by any outgoing connection before its listener binds it, or by
    the time a devnet comes up again on the same ports."""
    quiet = quiet_ports(_ephemeral_range())
    candidates = random.sample(quiet, min(len(quiet), 64 * count)) if quiet is not None else []
    sockets: list[socket.socket] = []
    try:
        for port in [*candidates, *[0] * count]:  # port 0: the kernel's pick, if none are free
            if len(sockets) == count:
                break
            sock = socket.socket()
            try:
                sock.bind((host, port))
            except OSError:
                sock.close()
                continue
            sockets.append(sock)
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _check_free(port: int, base_port: int) -> None:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOOPBACK, port))
        except OSError as exc:
            raise ListenError(
                f"port {port} on {LOOPBACK} is taken ({exc.strerror}); choose another --base-port than "
                f"{base_port}"
            ) from exc


def _ports(count: int, base_port: int | None) -> list[tuple[int, int]]:
    """(HTTP, p2p) port of each node: free ones, or base+2i and base+2i+1."""
    if base_port is None:
        picked = free_ports(2 * count)
        return [(picked[2 * i], picked[2 * i + 1]) for i in range(count)]
    if base_port + 2 * count - 1 > 65535:
        raise UsageError(f"--base-port {base_port} leaves no room for {count} nodes (2 ports each)")
    pairs = [(base_port + 2 * i, base_port + 2 * i + 1) for i in range(count)]
    for http_port, p2p_port in pairs:
        _check_free(http_port, base_port)
        _check_free(p2p_port, base_port)
    return pairs


# --- which nodes: new ones, or the recorded network again ------------------------------


def _new_nodes(
    directory: Path, authorities: int, nodes: int | None, base_port: int | None
) -> list[DevnetNode]:
    from pyrsia.node.home import ensure_home, load_identity

    if nodes is None:
        nodes = min(authorities + REGULAR_NODES_DEFAULT, NODES_MAX)
    if nodes < authorities:
        raise UsageError(
            f"--nodes {nodes} counts every node, so it cannot be fewer than --authorities {authorities}"
        )
    planned = []
    for index, (http_port, p2p_port) in enumerate(_ports(nodes, base_port)):
        home = directory / f"node{index}"
        ensure_home(home)
        planned.append(
            DevnetNode(
                name=f"node{index}",
                role=AUTHORITY if index < authorities else REGULAR,
                home=home,
                http_port=http_port,
                p2p_port=p2p_port,
                peer_id=load_identity(home).peer_id,  # as the daemon will load it, and `pyrsia id` shows it
            )
        )
    return planned


def _reuse(
    directory: Path,
    recorded: Sequence[DevnetNode],
    plan: Plan,
    asked: Plan,
    nodes: int | None,
    base_port: int | None,
) -> tuple[Plan, list[DevnetNode]]:
    """The recorded network, checked: flags that ask for another one are refused (that is
    `--fresh`), and so are a node whose key changed or a port now taken."""
    from pyrsia.node.home import IDENTITY_FILE, load_identity

    differs = [
        f"{flag} {wanted} (it has {had})"
        for flag, wanted, had in (
            ("--nodes", nodes, len(recorded)),
            ("--authorities", asked.authorities, plan.authorities),
            ("--docker-upstream", asked.docker_upstream, plan.docker_upstream),
            ("--maven-upstream", asked.maven_upstream, plan.maven_upstream),
            ("--base-port", base_port, recorded[0].http_port if recorded else None),
        )
        if wanted is not None and wanted != had
    ]
    if differs:
        raise UsageError(
            f"{directory} holds a devnet built otherwise: {'; '.join(differs)}. Leave those flags out to "
            "start it again, or add --fresh to build a new one"
        )
    for node in recorded:
        if not (node.home / IDENTITY_FILE).exists() or load_identity(node.home).peer_id != node.peer_id:
            raise PyrsiaError(
                f"{node.name} in {node.home} no longer has the key devnet.json records; "
                "pyrsia devnet up --fresh builds a new network"
            )
        for port in (node.http_port, node.p2p_port):
            with socket.socket() as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    sock.bind((LOOPBACK, port))
                except OSError as exc:
                    raise ListenError(
                        f"port {port} of {node.name} is taken ({exc.strerror}); free it, or "
                        "pyrsia devnet up --fresh builds a new network on other ports"
                    ) from exc
    return plan, [replace(n, pid=0, http_url="", p2p="") for n in recorded]


def _purge(directory: Path, homes: Sequence[Path]) -> None:
    """Delete nodes' data, the genesis block and the record: nothing of the old network is left."""
    import shutil

    for home in homes:
        try:
            shutil.rmtree(home)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise PyrsiaError(f"cannot delete {home}: {exc.strerror}") from exc
    try:
        (directory / GENESIS_FILE).unlink(missing_ok=True)
    except OSError as exc:
        raise PyrsiaError(f"cannot delete {directory / GENESIS_FILE}: {exc.strerror}") from exc
    _forget(directory)


# --- commands -------------------------------------------------------------------------


@devnet_app.command(
    "up",
    epilog="Examples: pyrsia devnet up --nodes 3 --docker-upstream http://127.0.0.1:5000;  "
    "pyrsia devnet up --authorities 4 --nodes 6",
)
def up(
    nodes: int | None = typer.Option(
        None,
        "--nodes",
        min=1,
        max=NODES_MAX,
        show_default=False,
        help="Nodes to start, authorities included "
        f"(default: the authorities and {REGULAR_NODES_DEFAULT} regular nodes).",
    ),
    authorities: int | None = typer.Option(
        None,
        "--authorities",
        min=1,
        max=NODES_MAX,
        show_default=False,
        help="How many of the nodes (node0, node1, …) are authorities, sharing one genesis block "
        "(default: 1).",
    ),
    directory: Path | None = DIR,
    docker_upstream: str | None = typer.Option(
        None, "--docker-upstream", help="Registry every node pulls images through from (default: Docker Hub)."
    ),
    maven_upstream: str | None = typer.Option(
        None,
        "--maven-upstream",
        help="Maven repository every node pulls through from (default: Central).",
    ),
    base_port: int | None = typer.Option(
        None,
        "--base-port",
        min=1,
        max=65535,
        help="Node i gets HTTP port BASE+2i and p2p port BASE+2i+1 (default: free ports).",
    ),
    timeout_s: float = typer.Option(
        READY_TIMEOUT_S, "--timeout", min=1, max=3600, help="Seconds each node has to become ready."
    ),
    fresh: bool = typer.Option(
        False,
        "--fresh",
        help="Build a new network even if DIR/devnet.json records one: the recorded nodes' data "
        "(keys, logs, blobs) is deleted first.",
    ),
) -> None:
    """Start a network of pyrsia nodes on 127.0.0.1: the first --authorities are its authorities,
    the others regular nodes joining through node0.

    Each node is a detached `pyrsia daemon` with its home in DIR/nodeI and its output in
    DIR/nodeI/daemon.log; DIR/devnet.json records them for `status` and `down`. With
    several authorities, DIR/genesis.blk names them and every node starts from it.

    After `pyrsia devnet down`, `up` starts the same network again (its nodes, roles,
    ports and upstreams, as devnet.json records them); --fresh builds a new one.
    """
    from pyrsia.config import check_url
    from pyrsia.node.home import load_identity

    directory = _directory(directory)
    docker_upstream = check_url("--docker-upstream", docker_upstream) if docker_upstream else None
    maven_upstream = check_url("--maven-upstream", maven_upstream) if maven_upstream else None
    previous = _load(directory)
    if previous is not None and any(_Daemon(n).alive() for n in previous[1]):
        raise PyrsiaError(f"a devnet is already running in {directory}; run pyrsia devnet down")
    if previous is not None and fresh:
        _purge(directory, [n.home for n in previous[1]])
        previous = None
    if previous is not None and previous[0] == STARTING:
        previous = None  # an `up` killed half way recorded only some nodes: plan them anew
    reused = previous is not None
    if previous is not None:
        asked = Plan(
            authorities=authorities or previous[2].authorities,
            docker_upstream=docker_upstream or previous[2].docker_upstream,
            maven_upstream=maven_upstream or previous[2].maven_upstream,
        )
        plan, planned = _reuse(directory, previous[1], previous[2], asked, nodes, base_port)
    else:
        plan = Plan(
            authorities=authorities or 1, docker_upstream=docker_upstream, maven_upstream=maven_upstream
        )
        planned = _new_nodes(directory, plan.authorities, nodes, base_port)
    authorities, nodes = plan.authorities, len(planned)
    docker_upstream, maven_upstream = plan.docker_upstream, plan.maven_upstream
    genesis = None
    if authorities > 1:
        founder = load_identity(planned[0].home).signing_key
        genesis = _genesis_for(directory, [n.peer_id for n in planned[:authorities]], founder)
    env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED_ENV}
    launches: list[_Launch] = []
    interrupts = _Interrupts()

    def record(state: str) -> None:
        done = {started.node.name: started.node for started in launches}
        _save(directory, state, [done[n.name] for n in planned if n.name in done], plan, genesis)

    def start(node: DevnetNode, bootstrap: Sequence[str]) -> None:
        log = node.home / LOG_FILE
        argv = _daemon_argv(node, bootstrap, genesis, docker_upstream, maven_upstream)
        with interrupts.held():
            try:
                offset = log.stat().st_size if log.exists() else 0
                with log.open("ab") as out:
                    popen = subprocess.Popen(
                        argv,
                        stdin=subprocess.DEVNULL,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        env=env,
                        start_new_session=True,
                    )
            except OSError as exc:
                raise PyrsiaError(f"cannot start {node.name} ({argv[0]}): {exc.strerror}") from exc
            launches.append(_Launch(replace(node, pid=popen.pid), popen, offset))
            record(STARTING)

    def wait(started: _Launch, deadline: float) -> None:
        started.node = started.wait_ready(deadline, timeout_s)
        with interrupts.held():
            record(STARTING)

    with interrupts.installed():
        try:
            with console.status_spinner(f"starting {nodes} pyrsia nodes in {directory}"):
                # One at a time, each dialling every authority already up: a full mesh.
                for node in planned[:authorities]:
                    start(node, [started.node.p2p for started in launches])
                    wait(launches[-1], time.monotonic() + timeout_s)
                first = launches[0].node
                for node in planned[authorities:]:
                    start(node, [first.p2p])
                deadline = time.monotonic() + timeout_s
                for started in launches[authorities:]:
                    wait(started, deadline)
                with interrupts.held():
                    record(RUNNING)
        except BaseException as exc:
            with interrupts.held(deliver=False):
                _stop([_Daemon(s.node, s.popen) for s in launches])
                if reused:  # the network stays recorded, to be started again
                    _save(directory, STOPPED, previous[1] if previous else planned, plan, genesis)
                else:
                    _forget(directory)
            if isinstance(exc, KeyboardInterrupt):
                console.error(f"interrupted; stopped the {len(launches)} node(s) started in {directory}")
                raise typer.Exit(130) from None
            raise
    _show_network(directory, [s.node for s in launches], reused=reused)


def _show_network(directory: Path, nodes: Sequence[DevnetNode], *, reused: bool = False) -> None:
    console.table(
        f"pyrsia devnet in {directory}",
        [
            layout.fixed("node"),
            layout.fixed("role"),
            layout.id_column("peer id"),
            layout.fixed("HTTP"),
            layout.Column(header="p2p", drop=1),
        ],
        [[n.name, n.role, n.peer_id, n.http_url, n.p2p] for n in nodes],
    )
    authorities = [n.name for n in nodes if n.role == AUTHORITY]
    regulars = [n.name for n in nodes if n.role == REGULAR]
    dir_flag = "" if directory == _directory(None) else f" --dir {directory}"
    if reused:
        console.info(
            f"started the devnet recorded in {directory / STATE_FILE} again (--fresh builds a new one)"
        )
    client = next((n for n in nodes if n.role == REGULAR), nodes[0])
    where = "a regular node" if client.role == REGULAR else "an authority"
    author = nodes[0]
    for text in (
        f"{len(nodes)} nodes: {_counted(authorities, 'authority', 'authorities')}"
        + (f", {_counted(regulars, 'regular node', 'regular nodes')}" if regulars else ""),
        "",
        f"Pull through {client.name}, {where}:",
        f"  podman pull --tls-verify=false {client.address}/{EXAMPLE_IMAGE}",
        "Docker, in /etc/docker/daemon.json:",
        f'  {{ "registry-mirrors": ["{client.http_url}"], "insecure-registries": ["{client.address}"] }}',
        "Maven, in ~/.m2/settings.xml:",
        f"  <settings><mirrors><mirror><id>pyrsia</id><mirrorOf>*</mirrorOf>"
        f"<url>{client.http_url}/maven2/</url></mirror></mirrors></settings>",
        f"Look at {client.name} (every pyrsia command takes --node):",
        f"  pyrsia status --node {client.http_url}",
        f"  pyrsia peers --node {client.http_url}",
        f"  pyrsia log search --node {client.http_url}",
        f"Publish through {author.name}, an authority, and follow each authority's verdict:",
        f"  pyrsia build docker {EXAMPLE_IMAGE} --wait --node {author.http_url} --home {author.home}",
        f"Check it with `pyrsia devnet status{dir_flag}`, stop it with `pyrsia devnet down{dir_flag}`.",
    ):
        console.line(text)


def _counted(names: Sequence[str], one: str, many: str) -> str:
    """`1 authority (node0)`, `2 regular nodes (node1, node2)`."""
    return f"{len(names)} {one if len(names) == 1 else many} ({', '.join(names)})"


@devnet_app.command("status", epilog="Example: pyrsia devnet status --json")
def status(directory: Path | None = DIR, json_output: bool | None = options.JSON) -> None:
    """Show whether each devnet node's process is alive and what its /api/v1/status says."""
    directory = _directory(directory)
    json_output = settings.wants_json(json_output)
    loaded = _load(directory)
    if loaded is None:
        raise PyrsiaError(f"no devnet in {directory}; start one with pyrsia devnet up")
    state, nodes, _plan = loaded
    rows = [_probe(node) for node in nodes]
    if json_output:
        console.as_json({"dir": str(directory), "state": state, "nodes": rows})
        return
    console.table(
        f"pyrsia devnet in {directory} ({state})",
        [
            layout.fixed("node"),
            layout.fixed("role"),
            layout.fixed("pid", drop=2),
            layout.fixed("process"),
            layout.id_column("peer id"),
            "HTTP",
            layout.fixed("log height"),
            layout.fixed("peers", drop=1),
        ],
        [
            [
                r["name"],
                _role_shown(r),
                r["pid"],
                "alive" if r["alive"] else "gone",
                r["peer_id"],
                r["http_url"] if r["error"] is None else f"{r['http_url']} ({r['error']})",
                "-" if r["height"] is None else r["height"],
                "-" if r["peers"] is None else r["peers"],
            ]
            for r in rows
        ],
    )


def _role_shown(row: dict[str, Any]) -> str:
    """The recorded role, and what the node itself says when that differs."""
    says = row["is_authority"]
    if says is None or says == (row["role"] == AUTHORITY):
        return str(row["role"])
    return f"{row['role']} (node says {AUTHORITY if says else REGULAR})"


def _probe(node: DevnetNode) -> dict[str, Any]:
    row: dict[str, Any] = {
        "name": node.name,
        "role": node.role,
        "pid": node.pid,
        "home": str(node.home),
        "http_url": node.http_url,
        "p2p": node.p2p,
        "peer_id": node.peer_id,
        "alive": _Daemon(node).alive(),
        "answers": False,
        "height": None,
        "peers": None,
        "is_authority": None,
        "error": None,
    }
    if not row["alive"]:
        row["error"] = "process not running"
        return row
    if not node.http_url:
        row["error"] = "not ready yet"
        return row
    try:
        doc = _status(node.http_url)
    except PyrsiaError as exc:
        row["error"] = exc.message
        return row
    translog, p2p = doc.get("translog"), doc.get("p2p")
    row["answers"] = doc.get("peer_id") == node.peer_id
    if not row["answers"]:
        row["error"] = f"answers as peer {doc.get('peer_id')!r}"
    row["height"] = translog.get("height") if isinstance(translog, dict) else None
    row["peers"] = p2p.get("peers") if isinstance(p2p, dict) else None
    authority = p2p.get("authority") if isinstance(p2p, dict) else None
    row["is_authority"] = authority if isinstance(authority, bool) else None
    return row


@devnet_app.command("down", epilog="Example: pyrsia devnet down --purge")
def down(
    directory: Path | None = DIR,
    purge: bool = typer.Option(False, "--purge", help="Also delete the nodes' data (keys, logs, blobs)."),
) -> None:
    """Stop every node of the devnet (SIGTERM, then SIGKILL after a deadline); keeps their data,
    and devnet.json, so `pyrsia devnet up` starts the same network again (not with --purge)."""
    directory = _directory(directory)
    loaded = _load(directory)
    if loaded is None or (loaded[0] == STOPPED and not any(_Daemon(n).alive() for n in loaded[1])):
        console.info(f"no devnet running in {directory}")
    else:
        state, nodes, plan = loaded
        outcome = _stop([_Daemon(node) for node in nodes])
        genesis = directory / GENESIS_FILE if plan.authorities > 1 else None
        if state == STARTING:
            _forget(directory)  # an `up` that never finished: nothing worth starting again
        else:
            _save(directory, STOPPED, nodes, plan, genesis)
        for node in nodes:
            console.line(f"{node.name} ({node.role}, pid {node.pid}): {outcome[node.name]}")
    if purge:
        homes = sorted(p for p in directory.glob("node*") if p.is_dir() and p.name[4:].isdigit())
        _purge(directory, homes)
        with suppress(OSError):  # not empty (something else lives there) or already gone
            directory.rmdir()
        console.line(f"deleted the data of {len(homes)} node(s) in {directory}")
