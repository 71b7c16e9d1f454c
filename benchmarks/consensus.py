"""Committed transactions per second and commit latency of authority daemons on loopback.

    PYTHONPATH=. .venv/bin/python benchmarks/consensus.py [--authorities 4 7] [--clients 64]
        [--files 1000] [--light-files 200] [--file-bytes 1024] [--no-baseline]
        [--py-spy BIN] [--profile DIR]

Every run starts a fresh network of real `pyrsia daemon` processes from one genesis
(as `tests/support/bft.py` does), all with one upstream: a static Maven repository of
small distinct jars (`com/example/bench/<name>/1.0/<name>-1.0.jar`, with `.sha256`,
`.sha1` and `.md5` sidecars) served by nginx. Each authority reaches it under its own
prefix (`/a0/`, `/a1/`, …, symlinks to one tree), so nginx's access log, with
millisecond times, says which authority fetched which file when: the submitter's
pull-through, then each other authority's verification (re-fetch and compare digest,
size and chunk root). The baseline is one daemon with no genesis, its own
one-authority network: the direct path, fetch and commit without consensus.

Per network, after a few warm-up pulls (connections between the authorities open):

  light  one client, sequential, `--light-files` never-seen files, round-robin over the
         authorities: the commit latency of a lone request (target p50 <= 300 ms at 4).
  heavy  `--clients` concurrent clients, each on its own keep-alive connection to one
         authority (client i to authority i mod n), together GETting `--files`
         never-seen files. Each GET returns only once the file's record is committed
         (the pull-through waits for the commit), so records / wall time is committed
         transactions per second (target >= 500 tx/s). Cross-checked: the log's size and
         height before and after, on one node, once every node holds the last block.
         The clients wait for their commits (a closed loop), so tx/s cannot exceed
         clients / mean GET latency; that ceiling is shown beside it.

Latency rows (ms, p50 / p99 over files):

  GET (submit→commit)          GET start to response, as the client sees it
  submitter fetch done         GET start -> the submitter's own fetch of the file done
  1st verification→commit      the first other authority's verification fetch done -> commit
  quorum verified→commit       the fetch completing a quorum (the submitter endorses its
                               own; quorum - 1 others) -> commit: what ordering takes once
                               the transaction could be proposed

Where the time goes: CPU ms per committed transaction of all daemons together, of nginx
and of this client process (from /proc), and the cores busy over the run, beside one
core's speed just before and after it (`cpu_probe.py`); p2p bytes
sent per transaction by all nodes (`/api/v1/peers`), and the consensus messages'
share of it by type (`sent_bytes` in each node's consensus status); how many heights needed a round
after the first (read from the blocks' proposers after the run, so that nothing polls the
daemons while their CPU is counted: each extra round costs at least a propose timeout);
proposals refused (and the last reason each node gave) and peer messages rejected. The upstream
is measured alone first, with the same client against the same files, and its request
rate during each heavy run is shown: it must stay far from its own limit.

`--py-spy BIN` samples authority 0 of every heavy run with py-spy (`--gil`: what the
thread holding the GIL runs, and how much of the time the GIL is held at all) and
prints it by thread, inclusive and by leaf function. `--profile DIR` instead runs
the heavy load once, at the first authority count, with every daemon thread under
cProfile on a CPU-time clock, and prints where authority 0 spent its CPU; cProfile
slows the daemons several-fold, so those figures (and its call counts, which depend
on timing through rebroadcasts) do not compare with an unprofiled run.

Two cores serve every daemon, nginx and the clients: the figures say what this machine
does, and the ratios to the baseline say what consensus costs.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.client
import os
import queue
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks.cpu_probe import ed25519_check_us  # noqa: E402 (once the path is set)
from tests.support.ports import free_port  # noqa: E402

PROFILED = "profiled-daemon"  # argv[1] when this file runs a daemon under cProfile
GROUP_PATH = "com/example/bench"
TARGET_P50_MS = 300.0
TARGET_TX_S = 500.0
WARMUP_PER_AUTHORITY = 3
GET_TIMEOUT_S = 300.0
UPSTREAM_ALONE_S = 3.0
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --- the upstream --------------------------------------------------------------------------


def jar_path(name: str) -> str:
    return f"{GROUP_PATH}/{name}/1.0/{name}-1.0.jar"


def names(prefix: str, count: int) -> list[str]:
    return [f"{prefix}{i}" for i in range(count)]


def write_repo(root: Path, files: Sequence[str], size_bytes: int) -> None:
    """One small jar per name, distinct bytes, with the sidecars Maven publishes."""
    for name in files:
        target = root / jar_path(name)
        target.parent.mkdir(parents=True, exist_ok=True)
        seed = hashlib.sha256(name.encode()).digest()
        data = (seed * (size_bytes // len(seed) + 1))[:size_bytes]
        target.write_bytes(data)
        for algorithm in ("sha256", "sha1", "md5"):
            Path(f"{target}.{algorithm}").write_text(hashlib.new(algorithm, data).hexdigest())


@dataclass
class Nginx:
    url: str
    pid: int
    access_log: Path

    def log_offset(self) -> int:
        return self.access_log.stat().st_size if self.access_log.exists() else 0

    def fetches(self, start: int, end: int | None = None) -> list[tuple[float, int, str]]:
        """(time done, status, uri) of each request logged between two offsets."""
        with self.access_log.open("rb") as log:
            log.seek(start)
            data = log.read() if end is None else log.read(end - start)
        out = []
        for line in data.decode().splitlines():
            msec, status, uri = line.split(" ", 2)
            out.append((float(msec), int(status), uri))
        return out


@contextmanager
def nginx(root: Path, repo: Path, prefixes: int) -> Iterator[Nginx]:
    """nginx serving `repo` under /a0/ … /a<prefixes-1>/, one access-log line per
    request: `$msec $status $uri` (the time the response was sent, in ms)."""
    port = free_port()
    www = root / "www"
    www.mkdir(parents=True)
    for i in range(prefixes):
        (www / f"a{i}").symlink_to(repo)
    (root / "tmp").mkdir()
    conf = root / "nginx.conf"
    conf.write_text(
        f"""worker_processes auto;
pid {root}/nginx.pid;
error_log {root}/error.log;
daemon off;
events {{ worker_connections 4096; }}
http {{
  log_format bench '$msec $status $uri';
  access_log {root}/access.log bench;
  sendfile on;
  keepalive_requests 1000000;
  keepalive_timeout 300s;
  default_type application/octet-stream;
  client_body_temp_path {root}/tmp; proxy_temp_path {root}/tmp; fastcgi_temp_path {root}/tmp;
  uwsgi_temp_path {root}/tmp; scgi_temp_path {root}/tmp;
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    root {www};
  }}
}}
"""
    )
    process = subprocess.Popen(["nginx", "-c", str(conf)], stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"nginx did not start: {(root / 'error.log').read_text(errors='replace')}")
            time.sleep(0.02)
        yield Nginx(url, process.pid, root / "access.log")
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --- CPU accounting ------------------------------------------------------------------------


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a live process (all its threads); 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            found += [int(p) for p in (task / "children").read_text().split()]
    return found


@dataclass
class CpuMeter:
    daemons: list[int]
    nginx: list[int]
    start: dict[str, float] = field(default_factory=dict)

    def _now(self) -> dict[str, float]:
        return {
            "daemons": sum(cpu_s(p) for p in self.daemons),
            "nginx": sum(cpu_s(p) for p in self.nginx),
            "client": sum(os.times()[:2]),
        }

    def __enter__(self) -> CpuMeter:
        self.start = self._now()
        return self

    def __exit__(self, *exc: object) -> None:
        end = self._now()
        self.used = {k: end[k] - self.start[k] for k in end}


# --- clients -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sample:
    name: str
    authority: int
    start: float
    end: float
    status: int


class Client:
    """One keep-alive HTTP/1.1 connection, reopened if the server closes it."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self._host, self._port = parts.hostname or "127.0.0.1", parts.port or 80
        self._conn: http.client.HTTPConnection | None = None

    def get(self, path: str) -> int:
        for attempt in range(2):
            if self._conn is None:
                self._conn = http.client.HTTPConnection(self._host, self._port, timeout=GET_TIMEOUT_S)
            try:
                self._conn.request("GET", path)
                response = self._conn.getresponse()
                response.read()
                if response.will_close:
                    self.close()
                return response.status
            except (http.client.HTTPException, ConnectionError):
                self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def run_load(
    urls: Sequence[str], files: Sequence[str], clients: int, prefix: str = "/maven2/"
) -> list[Sample]:
    """`clients` threads, client i on a connection to urls[i mod n], take the next file
    from one shared queue until none are left."""
    work: queue.SimpleQueue[str] = queue.SimpleQueue()
    for name in files:
        work.put(name)
    samples: list[Sample] = []
    lock = threading.Lock()
    ready = threading.Barrier(clients + 1)

    def client(i: int) -> None:
        authority = i % len(urls)
        conn = Client(urls[authority])
        mine: list[Sample] = []
        ready.wait()
        try:
            while True:
                try:
                    name = work.get_nowait()
                except queue.Empty:
                    break
                start = time.time()
                try:
                    status = conn.get(prefix + jar_path(name))
                except (OSError, http.client.HTTPException):
                    status = 0
                mine.append(Sample(name, authority, start, time.time(), status))
        finally:
            conn.close()
            with lock:
                samples.extend(mine)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    ready.wait()
    for t in threads:
        t.join()
    return samples


def run_sequential(urls: Sequence[str], files: Sequence[str]) -> list[Sample]:
    conns = [Client(url) for url in urls]
    samples = []
    try:
        for k, name in enumerate(files):
            authority = k % len(urls)
            start = time.time()
            status = conns[authority].get("/maven2/" + jar_path(name))
            samples.append(Sample(name, authority, start, time.time(), status))
    finally:
        for conn in conns:
            conn.close()
    return samples


# --- daemons -------------------------------------------------------------------------------


def daemon_command(profile_dir: Path | None, name: str) -> list[str] | None:
    if profile_dir is None:
        return None
    return [sys.executable, str(Path(__file__).resolve()), PROFILED, str(profile_dir / f"{name}.pstats")]


@dataclass
class Network:
    nodes: list[object]  # NodeProcess
    urls: list[str]
    pids: list[int]
    peer_ids: list[str]


@contextmanager
def network(root: Path, upstream: str, n: int, *, baseline: bool, profile: Path | None) -> Iterator[Network]:
    """n authority daemons from one genesis, or (baseline) one daemon that is its own
    one-authority network. Authority i fetches from the upstream under /a<i>/."""
    from tests.support.bft import Member, peers, prepare, write_genesis
    from tests.support.node import NodeProcess

    common = ("--log-level", "warning", "--request-timeout", str(int(GET_TIMEOUT_S)))
    with ExitStack() as stack:
        nodes: list[NodeProcess] = []
        if baseline:
            node = NodeProcess(
                root / "single",
                "--maven-upstream", f"{upstream}/a0", *common,
                command=daemon_command(profile, "single"),
            )  # fmt: skip
            nodes.append(stack.enter_context(node))
        else:
            homes = [root / f"authority-{i}" for i in range(n)]
            genesis = write_genesis(root / "genesis.blk", [prepare(home) for home in homes])
            for i, home in enumerate(homes):
                bootstrap = ["--bootstrap", nodes[0].p2p_address] if nodes else []
                node = NodeProcess(
                    home, "--genesis", str(genesis), *bootstrap,
                    "--maven-upstream", f"{upstream}/a{i}", *common,
                    command=daemon_command(profile, f"authority-{i}"),
                )  # fmt: skip
                nodes.append(stack.enter_context(node))
            deadline = time.monotonic() + 60
            for node in nodes:
                while peers(Member(node, "")) < 1:
                    if time.monotonic() > deadline:
                        raise SystemExit(f"{node.home.name} found no peer:\n{node.output()[-3000:]}")
                    time.sleep(0.1)
        yield Network(
            list(nodes),
            [node.url for node in nodes],
            [node.pid for node in nodes],
            [str(status_doc(node.url)["peer_id"]) for node in nodes],
        )


def status_doc(url: str) -> dict[str, Any]:
    import httpx

    doc: dict[str, Any] = httpx.get(f"{url}/api/v1/status", timeout=30).json()
    return doc


def status(url: str) -> dict[str, int]:
    doc = status_doc(url)
    translog, consensus = doc["translog"], doc["consensus"]
    sent = consensus.get("sent_bytes") or {}
    by_protocol = (doc.get("p2p") or {}).get("bytes_by_protocol") or {}
    return {
        **{f"proto:{protocol}": int(size["out"]) for protocol, size in by_protocol.items()},
        "height": int(translog["height"]),
        "size": int(translog["size"]),
        "proposals_refused": int(consensus["proposals_refused"]),
        "messages_rejected": int(consensus["messages_rejected"]),
        **{f"sent:{kind}": int(size) for kind, size in sent.items()},
    }


def last_refusal(url: str) -> str:
    """Why the node last refused a proposal (its consensus status says)."""
    return str(status_doc(url)["consensus"]["last_refusal"])


def block_sizes(url: str, first: int, last: int) -> list[int]:
    import httpx

    sizes = []
    with httpx.Client(timeout=30) as http:
        for height in range(first, last + 1):
            sizes.append(len(http.get(f"{url}/api/v1/log/blocks/{height}").json()["transactions"]))
    return sizes


def wait_heights(urls: Sequence[str], height: int, within_s: float = 60.0) -> None:
    deadline = time.monotonic() + within_s
    for url in urls:
        while status(url)["height"] < height:
            if time.monotonic() > deadline:
                raise SystemExit(f"{url} did not reach height {height} within {within_s:g} s")
            time.sleep(0.1)


# --- analysis ------------------------------------------------------------------------------


def pct(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@dataclass
class Breakdown:
    get_ms: list[float]
    fetch_ms: list[float]
    first_verify_ms: list[float]
    quorum_verify_ms: list[float]


def breakdown(samples: Sequence[Sample], fetches: Sequence[tuple[float, int, str]], n: int) -> Breakdown:
    """Joins each GET with the upstream's log of who fetched that jar when."""
    from pyrsia.translog.block import quorum

    done: dict[str, dict[int, float]] = {}
    for when, status, uri in fetches:
        if status != 200 or not uri.endswith(".jar"):
            continue
        prefix, _, rest = uri.lstrip("/").partition("/")
        name = rest.rsplit("/", 1)[-1].removesuffix("-1.0.jar")
        done.setdefault(name, {}).setdefault(int(prefix[1:]), when)
    need = quorum(n) - 1  # verifiers beside the submitter, who endorses its own at once
    out = Breakdown([], [], [], [])
    for s in samples:
        if s.status != 200:
            continue
        out.get_ms.append((s.end - s.start) * 1000)
        by = done.get(s.name, {})
        if s.authority in by:
            out.fetch_ms.append((by[s.authority] - s.start) * 1000)
        verifiers = sorted(t for a, t in by.items() if a != s.authority)
        if n > 1 and verifiers:
            out.first_verify_ms.append((s.end - verifiers[0]) * 1000)
            if len(verifiers) >= need:
                out.quorum_verify_ms.append((s.end - verifiers[need - 1]) * 1000)
    return out


def ms(values: Sequence[float]) -> str:
    if not values:
        return "-"
    return f"{pct(values, 0.5):.0f} / {pct(values, 0.99):.0f}"


@dataclass
class Heavy:
    label: str
    n: int
    ok: int
    failed: int
    wall_s: float
    blocks: int
    records: int
    block_txs: list[int]
    cpu: dict[str, float]
    upstream_requests: int
    counters: dict[str, int]  # `counters` over the heavy run
    rounds: str  # `late_rounds`
    timing: Breakdown
    probe: tuple[float, float]  # `cpu_probe` before and after the heavy run
    refusals: list[str] = field(default_factory=list)  # each node's last proposal refusal, if it grew

    @property
    def tx_s(self) -> float:
        return self.ok / self.wall_s


@dataclass
class Light:
    label: str
    n: int
    failed: int
    timing: Breakdown


def measure(
    net: Network,
    web: Nginx,
    n: int,
    label: str,
    clients: int,
    heavy: Sequence[str],
    light: Sequence[str],
    spy: Spy | None = None,
) -> tuple[Heavy, Light | None]:
    warm = names("w", WARMUP_PER_AUTHORITY * len(net.urls))
    for sample in run_sequential(net.urls, warm):
        if sample.status != 200:
            raise SystemExit(
                f"warm-up pull of {sample.name} through authority {sample.authority}: {sample.status}"
            )
    light_result = None
    if light:
        offset = web.log_offset()
        samples = run_sequential(net.urls, light)
        time.sleep(0.5)  # the last verifications' log lines
        light_result = Light(
            label, n, sum(s.status != 200 for s in samples), breakdown(samples, web.fetches(offset), n)
        )
    before = status(net.urls[0])
    counted = counters(net.urls)
    offset = web.log_offset()
    nginx_pids = [web.pid, *children(web.pid)]
    spying = spy.recording(net.pids[0]) if spy else contextlib.nullcontext()
    probe_before = ed25519_check_us()
    with CpuMeter(net.pids, nginx_pids) as meter, spying:
        started = time.time()
        samples = run_load(net.urls, heavy, clients)
        wall = max(s.end for s in samples) - started
    probe = probe_before, ed25519_check_us()
    ok = sum(s.status == 200 for s in samples)
    final = max(status(url)["height"] for url in net.urls)
    wait_heights(net.urls, final)
    after = status(net.urls[0])
    time.sleep(0.5)
    counted = {k: v - counted.get(k, 0) for k, v in counters(net.urls).items()}
    refusals = [f"{url}: {last_refusal(url)}" for url in net.urls if counted.get(f"refused:{url}", 0) > 0]

    fetches = web.fetches(offset)
    rounds = late_rounds(net.urls[0], before["height"] + 1, after["height"], net.peer_ids) if n > 1 else "-"
    in_window = sum(1 for when, _, _ in fetches if when <= started + wall)
    return (
        Heavy(
            label=label,
            n=n,
            ok=ok,
            failed=len(samples) - ok,
            wall_s=wall,
            blocks=after["height"] - before["height"],
            records=after["size"] - before["size"],
            block_txs=block_sizes(net.urls[0], before["height"] + 1, after["height"]),
            cpu=meter.used,
            upstream_requests=in_window,
            counters=counted,
            rounds=rounds,
            timing=breakdown(samples, fetches, n),
            probe=probe,
            refusals=refusals,
        ),
        light_result,
    )


def counters(urls: Sequence[str]) -> dict[str, int]:
    """Totals over every node: proposals refused, peer messages rejected, p2p bytes sent."""
    import httpx

    out = {"proposals_refused": 0, "messages_rejected": 0, "p2p_bytes_out": 0}
    for url in urls:
        doc = status(url)
        out["proposals_refused"] += doc["proposals_refused"]
        out[f"refused:{url}"] = doc["proposals_refused"]
        out["messages_rejected"] += doc["messages_rejected"]
        for key, size in doc.items():
            if key.startswith(("sent:", "proto:")):  # consensus messages by type; stream bytes by protocol
                out[key] = out.get(key, 0) + size
        found = httpx.get(f"{url}/api/v1/peers", timeout=30).json()["peers"]
        out["p2p_bytes_out"] += sum(int(p["bytes_out"]) for p in found)
    return out


def late_rounds(url: str, first: int, last: int, authorities: Sequence[str]) -> str:
    """Which heights were decided past round 0, read from the blocks after the run (nothing
    polls the nodes meanwhile): the proposer of round r at height h is
    sorted(authorities)[(h + r) % n], so a block whose proposer is not round 0's took a
    later round (a silent or late proposer, or a lost vote: each costs at least the
    propose timeout). A value re-proposed in a later round keeps its first proposer, so
    this is the round it was first proposed in: a lower bound."""
    import httpx

    ordered = sorted(authorities)
    rounds = []
    with httpx.Client(timeout=30) as http:
        for height in range(first, last + 1):
            proposer = http.get(f"{url}/api/v1/log/blocks/{height}").json()["proposer"]
            rounds.append((ordered.index(proposer) - height) % len(ordered))
    late = sum(1 for r in rounds if r > 0)
    return f"{late} of {len(rounds)} (max {max(rounds, default=0)})"


def upstream_alone(
    web: Nginx, files: Sequence[str], clients: int, seconds: float
) -> tuple[float, float, float]:
    """The upstream by itself: each client GETs a file's .sha256 then the file (what a
    node's fetch asks) for `seconds`; returns requests/s, p50 ms per pair, nginx CPU s
    per 1000 requests."""
    stop = time.monotonic() + seconds
    counts = [0] * clients
    pairs: list[float] = []
    lock = threading.Lock()
    nginx_pids = [web.pid, *children(web.pid)]

    def client(i: int) -> None:
        conn = Client(web.url)
        mine = []
        k = i
        try:
            while time.monotonic() < stop:
                path = f"/a0/{jar_path(files[k % len(files)])}"
                start = time.perf_counter()
                for p in (path + ".sha256", path):
                    if conn.get(p) != 200:
                        raise SystemExit(f"nginx: {p} not served")
                mine.append((time.perf_counter() - start) * 1000)
                counts[i] += 2
                k += clients
        finally:
            conn.close()
            with lock:
                pairs.extend(mine)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    cpu_before = sum(cpu_s(p) for p in nginx_pids)
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    cpu = sum(cpu_s(p) for p in nginx_pids) - cpu_before
    requests = sum(counts)
    return requests / elapsed, statistics.median(pairs), cpu / requests * 1000


# --- profiling -----------------------------------------------------------------------------


def profiled_daemon(out: str, argv: list[str]) -> None:
    """Runs the pyrsia CLI with every thread under its own cProfile.Profile on a CPU-time
    clock (`time.thread_time`: waiting costs nothing), merged into `out` at exit."""
    import cProfile
    import pstats

    profilers: list[cProfile.Profile] = []
    lock = threading.Lock()
    original = threading.Thread.run

    def run(self: threading.Thread) -> None:
        profiler = cProfile.Profile(time.thread_time)
        with lock:
            profilers.append(profiler)
        profiler.enable()
        try:
            original(self)
        finally:
            profiler.disable()

    threading.Thread.run = run  # type: ignore[method-assign]
    main_profiler = cProfile.Profile(time.thread_time)
    profilers.append(main_profiler)
    sys.argv = ["pyrsia", *argv]
    from pyrsia.cli.app import main

    main_profiler.enable()
    try:
        main()
    except SystemExit:
        pass
    finally:
        main_profiler.disable()
        with lock:
            merged = pstats.Stats(profilers[0])
            for profiler in profilers[1:]:
                with contextlib.suppress(TypeError):  # a profiler that saw nothing
                    merged.add(profiler)
        merged.dump_stats(out)


def print_profile(path: Path, top: int) -> None:
    import pstats

    if not path.exists():
        print(f"(no profile at {path})")
        return
    stats = pstats.Stats(str(path))
    print(f"\n{path.name}: {stats.total_tt:.1f} CPU s in all threads (cProfile, thread CPU clock)")  # type: ignore[attr-defined]
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)


@dataclass
class Spy:
    """py-spy sampling one daemon through a heavy run: only the thread holding the GIL
    (`--gil`), so the samples say what the daemon's one interpreter spends itself on, and
    their count over the run's length how much of the time the GIL was held at all."""

    binary: str
    out: Path
    seconds: float = 0.0

    @contextmanager
    def recording(self, pid: int) -> Iterator[None]:
        argv = [self.binary, "record", "--pid", str(pid), "--rate", "200", "--nonblocking",
                "--gil", "--nolineno", "--format", "raw", "--output", str(self.out)]  # fmt: skip
        process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)  # attached
        started = time.monotonic()
        try:
            yield
        finally:
            self.seconds = time.monotonic() - started
            process.send_signal(signal.SIGINT)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def summary(self, top: int) -> str:
        """Where the sampled daemon's threads were busy: by thread (the first pyrsia frame
        of the stack), by function including callees, and by leaf function."""
        if not self.out.exists():
            return f"(py-spy wrote nothing to {self.out})"
        total = 0
        by_thread: dict[str, int] = {}
        inclusive: dict[str, int] = {}
        leaf: dict[str, int] = {}
        for line in self.out.read_text().splitlines():
            stack, _, count_text = line.rpartition(" ")
            if not stack or not count_text.isdigit():
                continue
            count = int(count_text)
            frames = stack.split(";")
            total += count
            entry = next((f for f in frames if "pyrsia/" in f or "(pyrsia" in f), frames[0])
            by_thread[entry] = by_thread.get(entry, 0) + count
            for frame in set(frames):
                inclusive[frame] = inclusive.get(frame, 0) + count
            leaf[frames[-1]] = leaf.get(frames[-1], 0) + count
        if not total:
            return "(no samples)"

        def block(title: str, counts: dict[str, int]) -> str:
            rows = sorted(counts.items(), key=lambda kv: -kv[1])[:top]
            return f"{title}\n" + "\n".join(f"  {c / total * 100:5.1f}%  {f}" for f, c in rows)

        return "\n".join(
            [
                f"py-spy --gil, authority 0: {total} samples at 200 Hz over {self.seconds:.1f} s: "
                f"the GIL was held {total / 200 / max(self.seconds, 1e-9) * 100:.0f}% of the time",
                block("by thread entry:", by_thread),
                block("inclusive (function and what it calls):", inclusive),
                block("self (leaf function):", leaf),
            ]
        )


# --- report --------------------------------------------------------------------------------


def report(
    heavy: Sequence[Heavy],
    light: Sequence[Light],
    alone: tuple[float, float, float],
    cores: int,
    clients: int,
) -> None:
    """One column per network, one row per figure (ratios against the one-node baseline)."""
    from rich.console import Console
    from rich.table import Table

    console = Console(width=160)
    rate, pair_ms, nginx_cpu = alone
    console.print(
        f"upstream alone (nginx, {UPSTREAM_ALONE_S:g} s, {clients} clients, .sha256 + .jar pairs): "
        f"{rate:,.0f} requests/s, p50 {pair_ms:.1f} ms per pair, "
        f"nginx {nginx_cpu:.3f} CPU s per 1000 requests"
    )
    base = next((h for h in heavy if h.n == 1), None)
    lbase = next((r for r in light if r.n == 1), None)
    table = Table(title=f"heavy load: {clients} clients, each GET returns once its record is committed")
    table.add_column("")
    for h in heavy:
        table.add_column(h.label, justify="right")

    def row(name: str, cells: Sequence[str]) -> None:
        table.add_row(name, *cells)

    def cpu(h: Heavy, k: str) -> str:
        return f"{h.cpu[k] / max(h.ok, 1) * 1000:.1f}"

    row("files committed / failed", [f"{h.ok} / {h.failed}" for h in heavy])
    row("wall s", [f"{h.wall_s:.1f}" for h in heavy])
    row("committed tx/s", [f"{h.tx_s:.1f}" for h in heavy])
    row("  ÷ 1 node", [f"{h.tx_s / base.tx_s:.2f}" if base and base.ok else "-" for h in heavy])
    row("  clients ÷ mean GET s", [f"{clients / (statistics.fmean(h.timing.get_ms) / 1000):.1f}"
                                  if h.timing.get_ms else "-" for h in heavy])  # fmt: skip
    row(
        "log Δ records (node 0)", [f"{h.records}" + ("" if h.records == h.ok else " ≠ files!") for h in heavy]
    )
    row("blocks", [str(h.blocks) for h in heavy])
    row("tx/block mean / max", [f"{h.records / h.blocks:.1f} / {max(h.block_txs, default=0)}"
                                if h.blocks else "-" for h in heavy])  # fmt: skip
    row("heights past round 0", [h.rounds for h in heavy])
    row("GET (submit→commit) ms p50/p99", [ms(h.timing.get_ms) for h in heavy])
    row("  ÷ 1 node p50", [f"{pct(h.timing.get_ms, 0.5) / pct(base.timing.get_ms, 0.5):.1f}"
                           if base else "-" for h in heavy])  # fmt: skip
    row("submitter fetch done ms", [ms(h.timing.fetch_ms) for h in heavy])
    row("1st verification→commit ms", [ms(h.timing.first_verify_ms) for h in heavy])
    row("quorum verified→commit ms", [ms(h.timing.quorum_verify_ms) for h in heavy])
    row("CPU ms/tx: all daemons", [cpu(h, "daemons") for h in heavy])
    row("CPU ms/tx: nginx", [cpu(h, "nginx") for h in heavy])
    row("CPU ms/tx: this client", [cpu(h, "client") for h in heavy])
    row("cores busy (of " + str(cores) + ")", [f"{sum(h.cpu.values()) / h.wall_s:.2f}" for h in heavy])
    row("cpu probe: µs per Ed25519 check", [f"{h.probe[0]:.0f} / {h.probe[1]:.0f}" for h in heavy])
    row("upstream requests/s", [f"{h.upstream_requests / h.wall_s:,.0f}" for h in heavy])
    row(
        "p2p KiB sent/tx (all nodes)",
        [f"{h.counters['p2p_bytes_out'] / max(h.ok, 1) / 1024:.1f}" for h in heavy],
    )

    def by_type(h: Heavy) -> str:
        sent = sorted(
            ((k.removeprefix("sent:"), v) for k, v in h.counters.items() if k.startswith("sent:") and v > 0),
            key=lambda kv: -kv[1],
        )
        return " ".join(f"{k} {v / max(h.ok, 1) / 1024:.1f}" for k, v in sent[:4]) or "-"

    row("  consensus KiB/tx by type", [by_type(h) for h in heavy])

    def by_protocol(h: Heavy) -> str:
        sent = sorted(
            (
                (k.removeprefix("proto:"), v)
                for k, v in h.counters.items()
                if k.startswith("proto:") and v > 0
            ),
            key=lambda kv: -kv[1],
        )
        return " ".join(f"{k.rsplit('/', 2)[-2] if k.count('/') >= 2 else k} {v / max(h.ok, 1) / 1024:.1f}"
                        for k, v in sent[:4]) or "-"  # fmt: skip

    row("  stream KiB/tx by protocol", [by_protocol(h) for h in heavy])
    refused = [f"{h.counters['proposals_refused']} / {h.counters['messages_rejected']}" for h in heavy]
    row("proposals refused / msgs rejected", refused)
    console.print(table)
    if light:
        table = Table(title="light load: one client, sequential, round-robin over the authorities")
        table.add_column("")
        for r in light:
            table.add_column(r.label, justify="right")
        row("files committed / failed", [f"{len(r.timing.get_ms)} / {r.failed}" for r in light])
        row("GET (submit→commit) ms p50/p99", [ms(r.timing.get_ms) for r in light])
        row("  ÷ 1 node p50", [f"{pct(r.timing.get_ms, 0.5) / pct(lbase.timing.get_ms, 0.5):.1f}"
                               if lbase else "-" for r in light])  # fmt: skip
        row("submitter fetch done ms", [ms(r.timing.fetch_ms) for r in light])
        row("1st verification→commit ms", [ms(r.timing.first_verify_ms) for r in light])
        row("quorum verified→commit ms", [ms(r.timing.quorum_verify_ms) for r in light])
        console.print(table)
    four_light = next((r for r in light if r.n == 4), None)
    four_heavy = next((h for h in heavy if h.n == 4), None)
    if four_light is not None:
        p50 = pct(four_light.timing.get_ms, 0.5)
        verdict = "met" if p50 <= TARGET_P50_MS else "NOT met"
        console.print(
            f"target p50 commit latency <= {TARGET_P50_MS:.0f} ms at 4 authorities (light load): "
            f"{p50:.0f} ms, {verdict}"
        )
    for h in heavy:
        for refusal in h.refusals:
            console.print(f"{h.label}: a proposal refused, the last at {refusal}")
    if four_heavy is not None:
        verdict = "met" if four_heavy.tx_s >= TARGET_TX_S else "NOT met"
        console.print(
            f"target >= {TARGET_TX_S:.0f} committed tx/s at 4 authorities: "
            f"{four_heavy.tx_s:.0f} tx/s, {verdict}"
        )


# --- main ----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--authorities", type=int, nargs="+", default=[4, 7], help="network sizes (default 4 7)"
    )
    parser.add_argument(
        "--clients", type=int, default=64, help="concurrent clients in the heavy run (default 64)"
    )
    parser.add_argument(
        "--files", type=int, default=1000, help="files pulled in each heavy run (default 1000)"
    )
    parser.add_argument(
        "--light-files",
        type=int,
        default=200,
        help="files pulled one by one in each light run; 0 skips (default 200)",
    )
    parser.add_argument("--file-bytes", type=int, default=1024, help="size of each jar (default 1024)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the one-daemon baseline")
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="profile every daemon (cProfile per thread, CPU clock) through one heavy run at the first "
        "authority count, write DIR/<node>.pstats and print authority 0's top functions",
    )
    parser.add_argument(
        "--profile-top", type=int, default=30, help="functions shown per profile (default 30)"
    )
    parser.add_argument(
        "--py-spy",
        metavar="BIN",
        help="sample authority 0 of every heavy run with this py-spy binary (200 Hz, non-blocking) and print "
        "where its busy threads were",
    )
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    heavy_files, light_files = names("h", args.files), names("l", args.light_files)
    warm_files = names("w", WARMUP_PER_AUTHORITY * max(args.authorities))
    with tempfile.TemporaryDirectory(prefix="pyrsia-consensus-bench-") as tmp:
        root = Path(tmp)
        root.chmod(0o755)  # nginx's workers may run as another user
        repo = root / "repo"
        write_repo(repo, [*heavy_files, *light_files, *warm_files], args.file_bytes)
        with nginx(root / "nginx", repo, max(args.authorities)) as web:
            alone = upstream_alone(web, heavy_files, args.clients, UPSTREAM_ALONE_S)
            print(f"upstream alone: {alone[0]:,.0f} requests/s", flush=True)
            if args.profile is not None:
                args.profile.mkdir(parents=True, exist_ok=True)
                n = args.authorities[0]
                with network(
                    root / "profiled", web.url, n, baseline=False, profile=args.profile.resolve()
                ) as net:
                    h, _ = measure(net, web, n, f"{n} authorities (profiled)", args.clients, heavy_files, ())
                report([h], [], alone, cores, args.clients)
                print_profile(args.profile / "authority-0.pstats", args.profile_top)
                return
            heavy: list[Heavy] = []
            light: list[Light] = []
            spied: list[tuple[str, Spy]] = []
            sizes = ([1] if not args.no_baseline else []) + list(args.authorities)
            for n in sizes:
                label = "1 node (no consensus)" if n == 1 else f"{n} authorities"
                print(f"running {label} …", flush=True)
                spy = Spy(args.py_spy, root / f"py-spy-{n}.txt") if args.py_spy else None
                with network(root / f"net-{n}", web.url, n, baseline=n == 1, profile=None) as net:
                    h, lr = measure(net, web, n, label, args.clients, heavy_files, light_files, spy)
                if spy is not None:
                    spied.append((label, spy))
                heavy.append(h)
                if lr is not None:
                    light.append(lr)
                print(f"  {h.tx_s:.0f} tx/s, GET p50/p99 {ms(h.timing.get_ms)} ms", flush=True)
            report(heavy, light, alone, cores, args.clients)
            for label, spy in spied:
                print(f"\n== {label}, heavy run ==\n{spy.summary(args.profile_top)}")


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == PROFILED:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        profiled_daemon(sys.argv[2], sys.argv[3:])
    else:
        main()
