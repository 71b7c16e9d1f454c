"""What a node holds against many peers, and an honest pull while one peer attacks it.

    python benchmarks/p2p_resources.py [--before-tree PATH] [--peers 200] [--runs 5] [--layer-mib 16]

Everything runs on 127.0.0.0/8: each peer or attacker sends from its own address, so
the per-IP and per-/24 limits see them as different hosts.

resources   a real `pyrsia daemon` of the tree before the swarm's resource manager
            (`--before-ref`, cf3e50c; exported with `git archive` into a temporary
            directory unless `--before-tree` names a checkout of it) beside one of
            this tree. For each: the daemon's threads (`/proc/PID/status` Threads) and
            VmRSS once ready and settled, then with `--peers` peers connected and
            identified (Hosts of this tree in this process, peer N dialling from
            127.20.N.1), then after they all left. Settled: two readings 1 s apart
            with the same thread count and RSS within 1 % (at most 30 s; a figure
            marked `~` did not settle).
attacks     a provider daemon (one authority, image pulled through from a local
            `docker-registry`, which is then stopped) and a second daemon, already
            connected to it, that pulls a layer of it over p2p (checked: digest, and
            the puller's exchange byte counter rose by the layer's size). Per row,
            `--runs` times: the honest pull (a layer not pulled before each time),
            then a new peer from 127.30.0.1 connects to the provider and waits for
            identify ("new peer joins"). Rows: no attack; each attack running
            against the provider; no attack again after the last.
              connections    300 TCP connections held open from 127.9.0.1 that
                             never speak (those the provider closes are opened
                             again once a second);
              sync streams   20 silent `/pyrsia/sync/1.0.0` streams from one peer at
                             127.9.1.1 (ended ones opened again every 0.5 s);
              identify push  one peer at 127.9.2.1 pushing `/ipfs/id/push/1.0.0` in
                             a loop, each push a new protocol list.
            Every row waits `--warmup-s` before its first pull (an attack starts
            then) and an attack stops after the row's last join; each is bounded to
            50,000 actions and its row's time. Shown per row: medians, the
            provider's CPU time over the row's wall time (100 % = one core; the
            attacker's loop in this process competes for the same two cores), its
            threads and RSS at the end of the row, and the rise of its
            `pyrsia_p2p_refusals_total` counters during the row. An untimed pull of
            one more layer comes first, so no row pays for setup.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import select
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from pyrsia.errors import PeerError, PeerTimeout
from pyrsia.p2p.behaviours import identify
from pyrsia.p2p.behaviours.sync.core import PROTOCOL_ID as SYNC_PROTOCOL
from pyrsia.p2p.identity import Identity
from pyrsia.p2p.swarm.host import Host, HostConfig, Stream
from tests.support import images
from tests.support.node import NodeProcess
from tests.support.registry import RegistryProcess

TREE = Path(__file__).resolve().parent.parent
MIB = 1 << 20
BEFORE_REF = "cf3e50c"
SETTLE_S_MAX = 30.0
RSS_AGREE = 0.01  # two readings agree when within 1 % of each other
DEADLINE_S = 120.0
CONNECT_WORKERS = 8
ATTACKER_IPS = {"connections": "127.9.0.1", "sync streams": "127.9.1.1", "identify push": "127.9.2.1"}
NEWCOMER_IP = "127.30.0.1"
REFUSALS = re.compile(r'^pyrsia_p2p_refusals_total\{limit="([^"]*)",protocol="([^"]*)"\} (\d+)$', re.M)
RECEIVED = re.compile(r'^pyrsia_exchange_received_bytes_total\{peer="[^"]+"\} (\d+)$', re.M)
REFUSED_COLUMN = "provider refusals during it"
ACCEPT = {"Accept": ", ".join([images.OCI_MANIFEST, images.DOCKER_MANIFEST])}


def poll(condition: Callable[[], bool], what: str, within_s: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + within_s
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"not within {within_s:g} s: {what}")
        time.sleep(0.1)


# -- a daemon's threads and memory -----------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Reading:
    threads: int
    rss_kib: int
    settled: bool = True

    def cells(self) -> tuple[str, str]:
        mark = "" if self.settled else "~"
        return f"{mark}{self.threads}", f"{mark}{self.rss_kib / 1024:.1f} MiB"


def reading(pid: int) -> Reading:
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line
    )
    return Reading(threads=int(fields["Threads"]), rss_kib=int(fields["VmRSS"].split()[0]))


def settled(pid: int) -> Reading:
    """Read every second until two readings agree (same threads, RSS within 1 %)."""
    last = reading(pid)
    deadline = time.monotonic() + SETTLE_S_MAX
    while time.monotonic() < deadline:
        time.sleep(1.0)
        now = reading(pid)
        if now.threads == last.threads and abs(now.rss_kib - last.rss_kib) <= RSS_AGREE * last.rss_kib:
            return now
        last = now
    return Reading(threads=last.threads, rss_kib=last.rss_kib, settled=False)


def cpu_s(pid: int) -> float:
    """User plus system CPU seconds the process has used (`/proc/PID/stat` fields 14, 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peers_of(node: NodeProcess) -> int:
    return int(httpx.get(f"{node.url}/api/v1/status", timeout=30).json()["p2p"]["peers"])


def daemon(home: Path, tree: Path, *flags: str) -> NodeProcess:
    """A daemon running `tree`'s code: `-P` keeps the working directory off sys.path."""
    return NodeProcess(
        home,
        *flags,
        "--log-level",
        "warning",
        command=[sys.executable, "-P", "-m", "pyrsia"],
        env={"PYTHONPATH": str(tree)},
    )


@contextmanager
def before_tree(given: str | None, ref: str, root: Path) -> Iterator[Path]:
    """`given`, or `ref` exported from this repository into `root` (removed with it)."""
    if given:
        yield Path(given).resolve()
        return
    target = root / f"pyrsia-{ref}"
    target.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(TREE), "archive", "--format=tar", ref, "pyrsia"],
        check=True,
        capture_output=True,
    )
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    yield target


def peer_host(index: int) -> Host:
    config = HostConfig(listen_host="127.0.0.1", listen_port=0, dial_source=f"127.20.{index}.1")
    return Host(Identity.from_seed(os.urandom(32)), config).start()


@dataclass(frozen=True, slots=True, kw_only=True)
class Resources:
    readings: tuple[Reading, Reading, Reading]  # idle, with the peers, after they left
    counted: int  # peers the daemon said it held


def resources(tree: Path, home: Path, count: int) -> Resources:
    """A daemon of `tree` idle, with `count` peers connected and identified, after they left."""
    with daemon(home, tree) as node:
        idle = settled(node.pid)
        hosts: list[Host] = []
        try:

            def join(index: int) -> None:
                host = peer_host(index)
                hosts.append(host)
                peer = host.connect(node.p2p_address, timeout=60)
                host.wait_identified(peer, timeout=60)

            pool = ThreadPoolExecutor(CONNECT_WORKERS)
            try:
                for done in [pool.submit(join, i) for i in range(count)]:
                    done.result()
            finally:  # on Ctrl-C or a failed join, joins not yet begun never begin
                pool.shutdown(wait=True, cancel_futures=True)
            poll(lambda: peers_of(node) >= count, f"the daemon counts {count} peers")
            loaded = settled(node.pid)
            connected = peers_of(node)
        finally:
            for host in hosts:
                host.stop()
        poll(lambda: peers_of(node) == 0, "every peer left")
        after = settled(node.pid)
    return Resources(readings=(idle, loaded, after), counted=connected)


# -- attacks on a provider ---------------------------------------------------------------------


class Attack:
    """A loop on its own thread until `stop()`, bounded by `actions_max` and `duration_s_max`."""

    name = ""

    def __init__(
        self, target: NodeProcess, source_ip: str, *, actions_max: int, duration_s_max: float
    ) -> None:
        self.target = target
        self.source_ip = source_ip
        self.actions_max = actions_max
        self.duration_s_max = duration_s_max
        self.actions = 0
        self.errors = 0
        self.failure: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"attack-{self.name}", daemon=True)

    def start(self) -> Attack:
        self._thread.start()
        return self

    def began(self) -> bool:
        return self.actions > 0 or self.failure is not None

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)

    def _run(self) -> None:
        deadline = time.monotonic() + self.duration_s_max
        try:
            self.setup()
            while not self._stop.is_set() and time.monotonic() < deadline and self.actions < self.actions_max:
                self.step()
        except (OSError, PeerError) as exc:  # shown beside the row: that attack did not run
            self.failure = exc
        finally:
            self.teardown()

    def setup(self) -> None:
        pass

    def step(self) -> None:
        raise NotImplementedError

    def teardown(self) -> None:
        pass

    def summary(self) -> str:
        raise NotImplementedError


class ConnectionFlood(Attack):
    """`held` TCP connections from one address that never speak; closed ones reopened each second."""

    name = "connections"
    held = 300

    def setup(self) -> None:
        self.port = int(self.target.p2p_address.split("/tcp/")[1].split("/")[0])
        self.sockets: list[socket.socket] = []
        self.closed_by_node = 0
        self.open_now = 0

    def step(self) -> None:
        while len(self.sockets) < self.held and self.actions < self.actions_max:
            self.actions += 1
            try:
                sock = socket.create_connection(
                    ("127.0.0.1", self.port), timeout=2, source_address=(self.source_ip, 0)
                )
            except OSError:
                self.errors += 1
                break
            sock.setblocking(False)
            self.sockets.append(sock)
        self.open_now = len(self.sockets)
        self._stop.wait(1.0)
        readable, _, _ = select.select(self.sockets, [], [], 0)
        for sock in readable:
            try:
                gone = sock.recv(65536) == b""
            except BlockingIOError:
                gone = False
            except OSError:
                gone = True
            if gone:
                self.closed_by_node += 1
                self.sockets.remove(sock)
                sock.close()

    def teardown(self) -> None:
        for sock in getattr(self, "sockets", []):
            sock.close()

    def summary(self) -> str:
        closed, now = self.closed_by_node, self.open_now
        return f"{self.actions} opened, {closed} closed by the node, {now} open at the end"


class HostAttack(Attack):
    def setup(self) -> None:
        config = HostConfig(listen_host="127.0.0.1", listen_port=0, dial_source=self.source_ip)
        self.host = Host(Identity.from_seed(os.urandom(32)), config).start()
        self.peer = self.host.connect(self.target.p2p_address, timeout=30)
        self.reconnects = 0

    def reconnect(self) -> None:
        if not self.host.is_connected(self.peer):
            self.reconnects += 1
            with contextlib.suppress(PeerError):
                self.host.connect(self.target.p2p_address, timeout=30)

    def teardown(self) -> None:
        if hasattr(self, "host"):
            self.host.stop()


class SilentStreams(HostAttack):
    """`held` streams of one protocol from one peer that never send a byte."""

    name = "sync streams"
    held = 20

    def setup(self) -> None:
        super().setup()
        self.streams: list[Stream] = []
        self.ended_by_node = 0
        self.open_now = 0

    def step(self) -> None:
        alive: list[Stream] = []
        for stream in self.streams:
            try:
                stream.read(1, timeout=0)
            except PeerTimeout:
                alive.append(stream)  # nothing came and nothing ended: still held
                continue
            except PeerError:
                pass
            self.ended_by_node += 1
        self.streams = alive
        while len(self.streams) < self.held and self.actions < self.actions_max:
            self.actions += 1
            try:
                self.streams.append(self.host.open_stream(self.peer, [SYNC_PROTOCOL], timeout=10))
            except PeerError:
                self.errors += 1
                self.reconnect()
                break
        self.open_now = len(self.streams)
        self._stop.wait(0.5)

    def summary(self) -> str:
        return (
            f"{self.actions} opened, {self.ended_by_node} ended by the node, {self.open_now} open at the end"
        )


class IdentifyPushLoop(HostAttack):
    """Identify pushes one after another, each announcing a different protocol list."""

    name = "identify push"

    def step(self) -> None:
        self.actions += 1
        info = identify.IdentifyInfo(
            agent_version="bench-attacker", protocols=(f"/bench/{self.actions}/1.0.0", SYNC_PROTOCOL)
        )
        try:
            stream = self.host.open_stream(self.peer, [identify.PUSH_PROTOCOL_ID], timeout=10)
            stream.write(identify.encode_message(info), timeout=10)
            stream.close()
        except PeerError:
            self.errors += 1
            self.reconnect()

    def summary(self) -> str:
        return f"{self.actions} pushes, {self.errors} reset by the node or failed to open"


ATTACKS: dict[str, type[Attack]] = {
    "connections": ConnectionFlood,
    "sync streams": SilentStreams,
    "identify push": IdentifyPushLoop,
}


def refusals(node: NodeProcess) -> dict[str, int]:
    text = httpx.get(f"{node.url}/metrics", timeout=30).text
    return {
        (f"{limit}:{protocol}" if protocol else limit): int(value)
        for limit, protocol, value in REFUSALS.findall(text)
    }


def received(node: NodeProcess) -> int:
    return sum(int(v) for v in RECEIVED.findall(httpx.get(f"{node.url}/metrics", timeout=30).text))


def layered(name: str, count: int, layer_bytes: int) -> images.Image:
    """An image of `count` layers of seeded random bytes (nodes never unpack layers)."""
    image = images.Image(name, "1.0")
    rng = random.Random(7)
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers"}}).encode()
    image.blobs[images.sha256(config)] = config
    layers = []
    for _ in range(count):
        blob = rng.randbytes(layer_bytes)
        image.blobs[images.sha256(blob)] = blob
        layers.append({"mediaType": images.DOCKER_LAYER, "digest": images.sha256(blob), "size": len(blob)})
    doc = {
        "schemaVersion": 2,
        "mediaType": images.DOCKER_MANIFEST,
        "config": {"mediaType": images.DOCKER_CONFIG, "digest": images.sha256(config), "size": len(config)},
        "layers": layers,
    }
    body = json.dumps(doc, sort_keys=True).encode()
    image.top, image.top_media_type = images.sha256(body), images.DOCKER_MANIFEST
    image.manifests[image.top] = (images.DOCKER_MANIFEST, body)
    return image


def timed_pull(node: NodeProcess, image: images.Image, digest: str) -> float:
    """Seconds for `node` to serve a layer it does not hold; checks it came over p2p."""
    before = received(node)
    started = time.perf_counter()
    response = httpx.get(f"{node.url}/v2/{image.name}/blobs/{digest}", timeout=300)
    seconds = time.perf_counter() - started
    if response.status_code != 200 or images.sha256(response.content) != digest:
        raise SystemExit(f"pull of {digest} failed: {response.status_code}")
    if received(node) - before < len(image.blobs[digest]):
        raise SystemExit(f"{digest} did not come from a peer")
    return seconds


def timed_join(node: NodeProcess) -> float:
    """Seconds for a new peer (from its own address) to connect to `node` and be identified."""
    config = HostConfig(listen_host="127.0.0.1", listen_port=0, dial_source=NEWCOMER_IP)
    host = Host(Identity.from_seed(os.urandom(32)), config).start()
    try:
        started = time.perf_counter()
        peer = host.connect(node.p2p_address, timeout=60)
        host.wait_identified(peer, timeout=60)
        return time.perf_counter() - started
    finally:
        host.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--before-tree", help=f"a checkout of {BEFORE_REF} (default: git archive into a tmp dir)"
    )
    parser.add_argument("--before-ref", default=BEFORE_REF, help="the commit before the resource manager")
    parser.add_argument("--peers", type=int, default=200, help="peers connected at once (at most 250)")
    parser.add_argument("--runs", type=int, default=5, help="honest pulls (and joins) per row")
    parser.add_argument("--layer-mib", type=int, default=16, help="size of each layer pulled")
    parser.add_argument("--warmup-s", type=float, default=3.0, help="an attack runs this long before pulls")
    parser.add_argument("--skip", choices=["resources", "attacks"], help="leave one part out")
    args = parser.parse_args()
    if not 1 <= args.peers <= 250:
        parser.error("--peers: 1 to 250 (one source /24 each under 127.20.0.0/16)")
    console = Console(width=180)
    with tempfile.TemporaryDirectory(prefix="pyrsia-res-bench-") as tmp:
        root = Path(tmp)
        if args.skip != "resources":
            with before_tree(args.before_tree, args.before_ref, root) as before:
                measured: dict[str, Resources] = {}
                for label, tree in ((f"before ({args.before_ref})", before), ("after (this tree)", TREE)):
                    started = time.perf_counter()
                    measured[label] = resources(tree, root / label.split()[0], args.peers)
                    console.print(f"{label}: measured in {time.perf_counter() - started:.0f} s")
            table = Table(title=f"daemon threads and RSS, {args.peers} peers")
            table.add_column("state")
            for label in measured:
                table.add_column(f"threads {label.split()[0]}", justify="right")
                table.add_column(f"RSS {label.split()[0]}", justify="right")
            for row, name in enumerate(("idle", f"{args.peers} peers", "after they left")):
                cells = [c for label in measured for c in measured[label].readings[row].cells()]
                table.add_row(name, *cells)
            console.print(table)
            counted = ", ".join(f"{label.split()[0]} {m.counted}" for label, m in measured.items())
            console.print(f"peers the daemon counted while connected: {counted}")
        if args.skip != "attacks":
            attack_table(args, root, console)


def attack_table(args: argparse.Namespace, root: Path, console: Console) -> None:
    rows = ["no attack", *ATTACKS, "after the attacks"]
    image = layered("library/bench", 1 + len(rows) * args.runs, args.layer_mib * MIB)
    warmup, *layers = image.layers_of(image.top)
    table = Table(title=f"honest p2p pull of a {args.layer_mib} MiB layer, median of {args.runs}")
    for column in (
        "row",
        "pull median",
        "runs (ms)",
        "new peer joins",
        "provider CPU",
        "provider threads",
        "provider RSS",
        REFUSED_COLUMN,
    ):
        table.add_column(column, justify="left" if column in ("row", REFUSED_COLUMN) else "right")
    notes: list[str] = []
    with ExitStack() as stack:
        registry = stack.enter_context(RegistryProcess(root / "upstream"))
        images.push(registry.url, image)
        up = ("--docker-upstream", registry.url)
        provider = stack.enter_context(daemon(root / "provider", TREE, *up))
        manifest = httpx.get(
            f"{provider.url}/v2/{image.name}/manifests/{image.tag}", headers=ACCEPT, timeout=60
        )
        if manifest.status_code != 200:
            raise SystemExit(f"provider could not pull the manifest: {manifest.text}")
        for digest in image.blobs:
            got = httpx.get(f"{provider.url}/v2/{image.name}/blobs/{digest}", timeout=120)
            if images.sha256(got.content) != digest:
                raise SystemExit(f"provider could not pull {digest}")
        registry.stop()  # from here on the layers can only come from the provider
        puller = stack.enter_context(daemon(root / "puller", TREE, *up, "--bootstrap", provider.p2p_address))

        def height(node: NodeProcess) -> int:
            return int(httpx.get(f"{node.url}/api/v1/status", timeout=30).json()["translog"]["height"])

        poll(lambda: height(puller) == height(provider) > 0, "the puller synced the provider's log")
        timed_pull(puller, image, warmup)  # untimed: the first transfer sets up what later ones reuse
        for index, row in enumerate(rows):
            attack: Attack | None = None
            counted = refusals(provider)
            began_cpu_s, began_s = cpu_s(provider.pid), time.perf_counter()
            try:
                if row in ATTACKS:
                    attack = ATTACKS[row](
                        provider,
                        ATTACKER_IPS[row],
                        actions_max=50_000,
                        duration_s_max=args.warmup_s + args.runs * 60 + 30,
                    ).start()
                    poll(attack.began, f"{row} began", 30)
                time.sleep(args.warmup_s)  # the attack's head start; every row waits alike, so CPU compares
                took: list[float] = []
                joins: list[float] = []
                for run in range(args.runs):
                    took.append(timed_pull(puller, image, layers[index * args.runs + run]))
                    joins.append(timed_join(provider))
                state = reading(provider.pid)
                busy = (cpu_s(provider.pid) - began_cpu_s) / (time.perf_counter() - began_s)
            finally:
                if attack is not None:
                    attack.stop()
            now = refusals(provider)
            rose = {k: v - counted.get(k, 0) for k, v in now.items() if v > counted.get(k, 0)}
            threads, rss = state.cells()
            table.add_row(
                row,
                f"{statistics.median(took) * 1000:.0f} ms",
                " ".join(f"{t * 1000:.0f}" for t in took),
                f"{statistics.median(joins) * 1000:.0f} ms",
                f"{busy:.0%}",
                threads,
                rss,
                "\n".join(f"{k} +{v}" for k, v in sorted(rose.items())) or "-",
            )
            if attack is not None:
                failed = f"; STOPPED EARLY: {attack.failure!r}" if attack.failure else ""
                notes.append(f"{row} from {attack.source_ip}: {attack.summary()}{failed}")
        totals = refusals(provider)
    console.print(table)
    for note in notes:
        console.print(note)
    console.print(
        "provider refusals, totals: " + (", ".join(f"{k} {v}" for k, v in sorted(totals.items())) or "none")
    )


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:  # everything started was stopped on the way out
        raise SystemExit(130) from None
