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
            connected to it, that pulls layers of it over p2p (checked: digest, and
            the puller's exchange byte counter rose by the layer's size). A round of
            a row: start the row's attack (if any) against the provider, wait
            `--warmup-s` (every row alike), pull a layer not pulled before, have a
            new peer from 127.30.0.1 connect to the provider and wait for identify
            ("new peer joins"), stop the attack. `--runs` rounds go through the rows
            no attack, connections, sync streams, identify push in turn (so a
            change in the machine's load falls on every row alike), then `--runs`
            rounds of no attack again ("after all": any lasting harm). Attacks:
              connections    300 TCP connections held open from 127.9.0.1 that
                             never speak (those the provider closes are opened
                             again once a second);
              sync streams   20 silent `/pyrsia/sync/1.0.0` streams from one peer at
                             127.9.1.1 (ended ones opened again every 0.5 s);
              identify push  one peer at 127.9.2.1 pushing `/ipfs/id/push/1.0.0` in
                             a loop, each push a new protocol list.
            Each attack is bounded to 50,000 actions and warm-up + 120 s. Shown per
            row: medians, the provider's CPU time over the rounds' wall time (100 %
            = one core; the attacker's loop runs in this process on the same two
            cores), its largest thread count and RSS seen at a round's end, and the
            rise of its `pyrsia_p2p_refusals_total` counters over the rounds. An
            untimed pull of one more layer comes first, so no row pays for setup.
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
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
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
COLUMNS = (
    "row",
    "pull median",
    "pulls (ms)",
    "new peer joins",
    "provider CPU",
    "provider threads",
    "provider RSS",
    REFUSED_COLUMN,
)
AFTER_ROW = "no attack, after all"
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

    def counts(self) -> dict[str, int]:
        """What the attacker did and saw, by name, for the report."""
        raise NotImplementedError


class ConnectionFlood(Attack):
    """`held` TCP connections from one address that never speak; closed ones reopened each second."""

    name = "connections"
    held = 300

    def setup(self) -> None:
        self.port = int(self.target.p2p_address.split("/tcp/")[1].split("/")[0])
        self.sockets: list[socket.socket] = []
        self.closed_by_node = 0

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
        self._stop.wait(1.0)
        poller = select.poll()  # not select(): descriptors may pass FD_SETSIZE
        for sock in self.sockets:
            poller.register(sock, select.POLLIN)
        ready = {fd for fd, _ in poller.poll(0)}
        for sock in [s for s in self.sockets if s.fileno() in ready]:
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

    def counts(self) -> dict[str, int]:
        return {"opened": self.actions, "closed by the node": self.closed_by_node, "failed": self.errors}


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

    def step(self) -> None:
        alive: list[Stream] = []
        for stream in self.streams:
            try:
                held = stream.read(1, timeout=0) != b""  # b"": the node ended it
            except PeerTimeout:
                held = True  # nothing came and nothing ended
            except PeerError:
                held = False  # reset
            if held:
                alive.append(stream)
            else:
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
        self._stop.wait(0.5)

    def counts(self) -> dict[str, int]:
        return {
            "opened": self.actions,
            "ended by the node": self.ended_by_node,
            "failed to open": self.errors,
            "reconnects": self.reconnects,
        }


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

    def counts(self) -> dict[str, int]:
        return {
            "pushes": self.actions,
            "reset by the node or failed": self.errors,
            "reconnects": self.reconnects,
        }


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


@dataclass(slots=True)
class Row:
    """What one row gathered over its rounds."""

    pulls_s: list[float] = field(default_factory=list)
    joins_s: list[float] = field(default_factory=list)
    cpu_s: float = 0.0
    wall_s: float = 0.0
    threads_max: int = 0
    rss_kib_max: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    attacked: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True, kw_only=True)
class Bench:
    provider: NodeProcess
    puller: NodeProcess
    image: images.Image
    warmup_s: float


def round_of(bench: Bench, row: str, layer: str, into: Row) -> None:
    """One pull and one join with `row`'s attack (if any) running; adds to `into`."""
    provider = bench.provider
    counted = refusals(provider)
    began_cpu_s, began_s = cpu_s(provider.pid), time.perf_counter()
    attack: Attack | None = None
    try:
        if row in ATTACKS:
            attack = ATTACKS[row](
                provider, ATTACKER_IPS[row], actions_max=50_000, duration_s_max=bench.warmup_s + 120
            ).start()
            poll(attack.began, f"{row} began", 30)
        time.sleep(bench.warmup_s)  # the attack's head start; every row waits alike, so CPU compares
        into.pulls_s.append(timed_pull(bench.puller, bench.image, layer))
        into.joins_s.append(timed_join(provider))
        state = reading(provider.pid)
        into.cpu_s += cpu_s(provider.pid) - began_cpu_s
        into.wall_s += time.perf_counter() - began_s
    finally:
        if attack is not None:
            attack.stop()
    into.threads_max = max(into.threads_max, state.threads)
    into.rss_kib_max = max(into.rss_kib_max, state.rss_kib)
    for key, value in refusals(provider).items():
        if value > counted.get(key, 0):
            into.refused[key] += value - counted.get(key, 0)
    if attack is not None:
        into.attacked.update(attack.counts())
        if attack.failure is not None:
            into.failures.append(repr(attack.failure))


def attack_table(args: argparse.Namespace, root: Path, console: Console) -> None:
    interleaved = ["no attack", *ATTACKS]
    rows = [*interleaved, AFTER_ROW]
    image = layered("library/bench", 1 + len(rows) * args.runs, args.layer_mib * MIB)
    warmup, *fresh = image.layers_of(image.top)
    layers = iter(fresh)
    gathered = {row: Row() for row in rows}
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
            blob = httpx.get(f"{provider.url}/v2/{image.name}/blobs/{digest}", timeout=120)
            if images.sha256(blob.content) != digest:
                raise SystemExit(f"provider could not pull {digest}")
        registry.stop()  # from here on the layers can only come from the provider
        puller = stack.enter_context(daemon(root / "puller", TREE, *up, "--bootstrap", provider.p2p_address))

        def height(node: NodeProcess) -> int:
            return int(httpx.get(f"{node.url}/api/v1/status", timeout=30).json()["translog"]["height"])

        poll(lambda: height(puller) == height(provider) > 0, "the puller synced the provider's log")
        bench = Bench(provider=provider, puller=puller, image=image, warmup_s=args.warmup_s)
        timed_pull(puller, image, warmup)  # untimed: the first transfer sets up what later ones reuse
        for _ in range(args.runs):
            for row in interleaved:
                round_of(bench, row, next(layers), gathered[row])
        for _ in range(args.runs):
            round_of(bench, AFTER_ROW, next(layers), gathered[AFTER_ROW])
        totals = refusals(provider)

    table = Table(title=f"honest p2p pull of a {args.layer_mib} MiB layer, {args.runs} rounds")
    for column in COLUMNS:
        table.add_column(column, justify="left" if column in ("row", REFUSED_COLUMN) else "right")
    for row, got in gathered.items():
        table.add_row(
            row,
            f"{statistics.median(got.pulls_s) * 1000:.0f} ms",
            " ".join(f"{t * 1000:.0f}" for t in got.pulls_s),
            f"{statistics.median(got.joins_s) * 1000:.0f} ms",
            f"{got.cpu_s / got.wall_s:.0%}",
            str(got.threads_max),
            f"{got.rss_kib_max / 1024:.1f} MiB",
            "\n".join(f"{k} +{v}" for k, v in sorted(got.refused.items())) or "-",
        )
    console.print(table)
    for row in ATTACKS:
        got = gathered[row]
        did = ", ".join(f"{k} {v}" for k, v in got.attacked.items())
        console.print(f"{row} from {ATTACKER_IPS[row]}, over {args.runs} rounds: {did}")
        for failure in got.failures:
            console.print(f"  the attack STOPPED EARLY in a round: {failure}")
    console.print(
        "provider refusals, totals: " + (", ".join(f"{k} {v}" for k, v in sorted(totals.items())) or "none")
    )


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:  # everything started was stopped on the way out
        raise SystemExit(130) from None
