"""Rebuilds from source: one alone vs four at once, and the node's HTTP latency meanwhile.

    sudo PYTHONPATH=. .venv/bin/python benchmarks/source_build.py [--runs 2] [--parallel 4]

A small Maven project (`tests/support/source_repo.py`: one class, commons-lang3) is
served by `git daemon` on loopback and rebuilt by `pyrsia.sourcebuild.run_source_build`
in the sandbox (bubblewrap, an unprivileged uid, its own capped filesystem), its
dependencies and plugins through a running `pyrsia daemon` (Maven upstream: Debian's
`/usr/share/maven-repo` over HTTP) — as an authority builds. One warm-up build fills the
node's store first, so every timed build downloads from a warm node.

    1 build          the wall time of one rebuild, alone (`--runs` times, median)
    N in parallel    the same spec in N work dirs at once, each its own uid, as N
                     authorities on one machine would: time until the last finishes
                     (and the median of the N), per round

Meanwhile one client (keep-alive, sequential) asks the same daemon for `GET /v2/` and
for a Docker manifest by tag (pulled through from a local `docker-registry` before), and
the p50/p99 of each are compared idle vs while the N builds run. The machine's cores
are shared with the builds, so this is what other clients of an authority feel while
it rebuilds. Root is needed (the sandbox drops to unprivileged uids and mounts each
build's filesystem); so are git, bwrap, setpriv, prlimit, socat, mvn and docker-registry.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.blob_serve import registry
from benchmarks.manifest_get import ACCEPT, REPO, TAG, push_image
from pyrsia.sourcebuild.plan import SourceBuildResult
from pyrsia.sourcebuild.sandbox import MirrorAddress, probe_toolchain, run_source_build
from pyrsia.sourcebuild.spec import BuildSpec, Toolchain, spec_from_fields
from tests.support.node import NodeProcess
from tests.support.source_repo import GitDaemon, MavenMirror, hello_project, make_repository

UID_BASE = 4700  # apart from the test suite's uids: RLIMIT_NPROC counts per uid


@dataclass(kw_only=True)
class Latencies:
    v2_ms: list[float] = field(default_factory=list)
    manifest_ms: list[float] = field(default_factory=list)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def sample_latency(node_url: str, until: Callable[[], bool], count_min: int) -> Latencies:
    """Alternate GET /v2/ and the manifest on one keep-alive client until `until()` and at
    least `count_min` of each; every answer must be 200."""
    found = Latencies()
    with httpx.Client(base_url=node_url, timeout=60) as client:
        while not until() or len(found.v2_ms) < count_min:
            for path, headers, into in (
                ("/v2/", {}, found.v2_ms),
                (f"/v2/{REPO}/manifests/{TAG}", {"Accept": ACCEPT}, found.manifest_ms),
            ):
                started = time.perf_counter()
                answer = client.get(path, headers=headers)
                into.append((time.perf_counter() - started) * 1000)
                if answer.status_code != 200:
                    raise SystemExit(f"GET {path} answered {answer.status_code}")
    return found


def sample_into(found: list[Latencies], node_url: str, done: threading.Event) -> None:
    found.append(sample_latency(node_url, done.is_set, 1))


def build_once(spec: BuildSpec, work: Path, mirror: MirrorAddress, toolchain: Toolchain, uid: int) -> float:
    started = time.monotonic()
    result: SourceBuildResult = run_source_build(
        spec, work_dir=work, mirror=mirror, toolchain=toolchain, uid=uid
    )
    elapsed = time.monotonic() - started
    if [f.name for f in result.outputs] != ["hello-1.0.jar", "hello-1.0.pom"]:
        raise SystemExit(f"unexpected outputs {result.outputs}")
    shutil.rmtree(work, ignore_errors=True)
    return elapsed


def build_parallel(
    spec: BuildSpec, root: Path, mirror: MirrorAddress, toolchain: Toolchain, count: int, tag: str
) -> tuple[float, list[float]]:
    times: list[float] = [0.0] * count
    errors: list[BaseException] = []

    def one(index: int) -> None:
        try:
            times[index] = build_once(spec, root / f"{tag}-{index}", mirror, toolchain, UID_BASE + 1 + index)
        except BaseException as exc:  # reported below, on the main thread
            errors.append(exc)

    started = time.monotonic()
    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return time.monotonic() - started, times


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=2, help="rounds of (1 build, N in parallel)")
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--idle-requests", type=int, default=300, help="of each kind, idle")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit(
            "run as root: the sandbox drops to unprivileged uids and mounts each build's filesystem"
        )
    console = Console()
    toolchain = probe_toolchain()
    root = Path(tempfile.mkdtemp(prefix="pyrsia-bench-srcbuild-", dir="/tmp"))
    root.chmod(0o755)  # the build uids must reach their work dirs
    try:
        with contextlib.ExitStack() as stack:
            (root / "git").mkdir()
            make_repository(root / "git", "hello", hello_project())
            served = stack.enter_context(GitDaemon(root / "git"))
            upstream = stack.enter_context(MavenMirror())
            registry_url, _ = stack.enter_context(registry(root / "registry"))
            push_image(registry_url, 5)
            flags = ["--maven-upstream", f"http://127.0.0.1:{upstream.port}/maven2/"]
            flags += ["--docker-upstream", registry_url, "--log-level", "warning"]
            node = stack.enter_context(NodeProcess(root / "node", *flags))
            mirror = MirrorAddress(host="127.0.0.1", port=int(node.url.rsplit(":", 1)[1]))
            spec = spec_from_fields(
                {
                    "groupId": "com.example", "artifactId": "hello", "version": "1.0",
                    "gitRepo": served.url("hello"), "gitTag": "v1.0", "tool": "mvn", "jdk": "17",
                    "command": "mvn package -DskipTests",
                }
            )  # fmt: skip
            with console.status("warm-up: one build through the node, the manifest pulled through"):
                warm_s = build_once(spec, root / "warm", mirror, toolchain, UID_BASE)
                sample_latency(node.url, lambda: True, 5)
            console.print(f"warm-up build (cold node): {warm_s:.1f} s")
            idle = Latencies()
            busy = Latencies()
            alone: list[float] = []
            together: list[float] = []
            each: list[float] = []
            for round_no in range(args.runs):
                with console.status(f"round {round_no + 1}/{args.runs}: idle latency"):
                    got = sample_latency(node.url, lambda: True, args.idle_requests)
                    idle.v2_ms += got.v2_ms
                    idle.manifest_ms += got.manifest_ms
                with console.status(f"round {round_no + 1}/{args.runs}: one build"):
                    alone.append(build_once(spec, root / f"alone-{round_no}", mirror, toolchain, UID_BASE))
                with console.status(f"round {round_no + 1}/{args.runs}: {args.parallel} builds in parallel"):
                    done = threading.Event()
                    sampled: list[Latencies] = []
                    sampler = threading.Thread(target=sample_into, args=(sampled, node.url, done))
                    sampler.start()
                    try:
                        wall, times = build_parallel(
                            spec, root, mirror, toolchain, args.parallel, f"par{round_no}"
                        )
                    finally:
                        done.set()
                        sampler.join()
                    together.append(wall)
                    each += times
                    busy.v2_ms += sampled[0].v2_ms
                    busy.manifest_ms += sampled[0].manifest_ms
    finally:
        shutil.rmtree(root, ignore_errors=True)
    report(console, args, alone, together, each, idle, busy)


def report(
    console: Console,
    args: argparse.Namespace,
    alone: list[float],
    together: list[float],
    each: list[float],
    idle: Latencies,
    busy: Latencies,
) -> None:
    load = Path("/proc/loadavg").read_text().split()[0]
    table = Table(title=f"source rebuilds, {args.runs} rounds, {os.cpu_count()} cores, 1-min load {load}")
    for column in ("measure", "value", "vs 1 build / idle"):
        table.add_column(column, justify="left" if column == "measure" else "right")
    one = statistics.median(alone)
    table.add_row("1 build, wall s (median)", f"{one:.1f}", "1.00")
    last = statistics.median(together)
    table.add_row(f"{args.parallel} in parallel, until the last, s", f"{last:.1f}", f"{last / one:.2f}")
    mid = statistics.median(each)
    table.add_row(f"{args.parallel} in parallel, each (median), s", f"{mid:.1f}", f"{mid / one:.2f}")
    for name, quiet, loaded in (
        ("GET /v2/", idle.v2_ms, busy.v2_ms),
        ("GET manifest by tag", idle.manifest_ms, busy.manifest_ms),
    ):
        for label, fraction in (("p50", 0.5), ("p99", 0.99)):
            calm, under = percentile(quiet, fraction), percentile(loaded, fraction)
            table.add_row(f"{name} {label} ms, idle", f"{calm:.1f}", "1.00")
            table.add_row(
                f"{name} {label} ms, during {args.parallel} builds", f"{under:.1f}", f"{under / calm:.2f}"
            )
    console.print(table)
    console.print(
        f"requests: idle {len(idle.v2_ms)} + {len(idle.manifest_ms)}, "
        f"during builds {len(busy.v2_ms)} + {len(busy.manifest_ms)}; "
        f"1 build runs: {', '.join(f'{x:.1f}' for x in alone)}; "
        f"parallel runs: {', '.join(f'{x:.1f}' for x in together)}"
    )


if __name__ == "__main__":
    main()
