"""Small requests: manifest GETs per second, pyrsia vs docker-registry serving the same image.

    python benchmarks/manifest_get.py [--runs 3] [--duration-s 10] [--connections 32]
                                      [--layers 5] [--before REF] [--py-spy BIN --profile-out DIR]

One image (a Docker schema 2 manifest naming a config and `--layers` small layers) is
pushed to docker-registry and pulled through a fresh pyrsia node once, so both serve
the same manifest bytes. Then `wrk` (Debian's package) drives each with `--connections`
keep-alive connections for `--duration-s` seconds, several targets per round:

    pyrsia tag        GET /v2/<repo>/manifests/bench
    registry tag      the same from docker-registry (access log off, in-memory cache)
    pyrsia digest     GET /v2/<repo>/manifests/sha256:…
    registry digest   the same from docker-registry
    pyrsia /v2/       the version check: what the HTTP server alone costs per request
    before tag        with `--before REF`: the tag GET from a second daemon running REF's
                      code (exported with `git archive`), pulled through the same way

Targets are interleaved (A B A B …) and the order rotates each round, so drift from
other work on the machine hits all alike; the ratio is taken per round, then the
median. Both servers are asked with the same Accept list. wrk and the servers share
the machine's cores, so the server's CPU milliseconds per thousand requests (from
/proc schedstat) are shown too: they move less than req/s when the machine is busy.
The 1-minute load average before each round is printed beside the figures.

`--py-spy BIN` samples the pyrsia daemon during one extra wrk run by tag and writes
`BIN record --format raw` output under `--profile-out`; the top frames (own samples and
inclusive share of the pyrsia functions) are printed.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import hashlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.blob_serve import cpu_s, process_tree, registry
from tests.support.node import NodeProcess

TREE = Path(__file__).resolve().parent.parent
REPO = "bench/small"
TAG = "bench"
MEDIA_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
ACCEPT = f"{MEDIA_MANIFEST}, application/vnd.oci.image.manifest.v1+json"


@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    name: str
    url: str
    pid: int
    headers: tuple[str, ...] = ()


@dataclass(kw_only=True)
class Samples:
    rps: list[float] = field(default_factory=list)
    cpu_ms_per_k: list[float] = field(default_factory=list)


def push_blob(client: httpx.Client, body: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    started = client.post(f"/v2/{REPO}/blobs/uploads/")
    started.raise_for_status()
    location = httpx.URL(started.headers["Location"]).copy_add_param("digest", digest)
    client.put(
        location, content=body, headers={"Content-Type": "application/octet-stream"}
    ).raise_for_status()
    return digest


def push_image(registry_url: str, layers: int) -> tuple[str, int]:
    """A config and `layers` small distinct layers, tagged `bench`; (manifest digest, size)."""
    with httpx.Client(base_url=registry_url, timeout=60) as client:
        config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers"}}).encode()
        config_digest = push_blob(client, config)
        descriptors = []
        for i in range(layers):
            body = os.urandom(1024) + i.to_bytes(4, "big")
            descriptors.append(
                {
                    "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                    "digest": push_blob(client, body),
                    "size": len(body),
                }
            )
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": MEDIA_MANIFEST,
                "config": {
                    "mediaType": "application/vnd.docker.container.image.v1+json",
                    "digest": config_digest,
                    "size": len(config),
                },
                "layers": descriptors,
            }
        ).encode()
        client.put(
            f"/v2/{REPO}/manifests/{TAG}", content=manifest, headers={"Content-Type": MEDIA_MANIFEST}
        ).raise_for_status()
    return "sha256:" + hashlib.sha256(manifest).hexdigest(), len(manifest)


def export_tree(ref: str, root: Path) -> Path:
    """REF's `pyrsia` package, exported from this repository into `root`."""
    target = root / "before-tree"
    target.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(TREE), "archive", "--format=tar", ref, "pyrsia"], check=True, capture_output=True
    )
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    return target


def wrk(url: str, headers: tuple[str, ...], seconds: int, connections: int, threads: int) -> float:
    """Requests per second; any non-2xx answer or socket error fails the benchmark."""
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s"]
    for header in headers:
        argv += ["-H", header]
    out = subprocess.run([*argv, url], capture_output=True, text=True, check=True).stdout
    if "Non-2xx" in out or "Socket errors" in out:
        raise SystemExit(f"wrk saw errors from {url}:\n{out}")
    found = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if found is None:
        raise SystemExit(f"no Requests/sec in wrk's output:\n{out}")
    return float(found.group(1))


def load_1m() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def measure(
    targets: list[Target], args: argparse.Namespace, console: Console
) -> tuple[dict[str, Samples], list[float]]:
    samples = {t.name: Samples() for t in targets}
    loads = []
    for round_no in range(args.runs):
        loads.append(load_1m())
        shift = round_no % len(targets)
        with console.status(f"round {round_no + 1}/{args.runs} (load {loads[-1]:.1f})"):
            for target in targets[shift:] + targets[:shift]:
                pids = process_tree(target.pid)
                before = cpu_s(pids)
                rps = wrk(target.url, target.headers, args.duration_s, args.connections, args.threads)
                used_s = cpu_s(pids) - before
                samples[target.name].rps.append(rps)
                samples[target.name].cpu_ms_per_k.append(used_s * 1e6 / (rps * args.duration_s))
    return samples, loads


def profile(py_spy: str, target: Target, args: argparse.Namespace, out_dir: Path) -> Path:
    """One wrk run with py-spy sampling the daemon; the raw (collapsed) stacks."""
    out_dir.mkdir(parents=True, exist_ok=True)
    raw = out_dir / "pyrsia-manifest-get.txt"
    spy = subprocess.Popen(
        [py_spy, "record", "--gil", "--format", "raw", "--rate", "250",
         "--duration", str(args.duration_s + 1), "--output", str(raw), "--pid", str(target.pid)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wrk(target.url, target.headers, args.duration_s, args.connections, args.threads)
    finally:
        spy.wait(timeout=120)
    return raw


def summarize_profile(raw: Path, console: Console, top: int = 25) -> None:
    """Own samples per frame (line) and inclusive share per function, over the samples of the
    thread holding the GIL (`--gil`): where the daemon's Python time goes."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        own[frames[-1]] += count
        for function in {_function(f) for f in frames}:
            inclusive[function] += count
    if total == 0:
        console.print("py-spy took no samples")
        return
    table = Table(title=f"py-spy: own samples ({total} while holding the GIL)")
    table.add_column("frame")
    table.add_column("share", justify="right")
    for frame, count in own.most_common(top):
        table.add_row(frame[:110], f"{100 * count / total:.1f}%")
    console.print(table)
    table = Table(title="py-spy: inclusive share per function")
    table.add_column("frame")
    table.add_column("share", justify="right")
    shown = [(f, c) for f, c in inclusive.most_common() if not f.startswith(("Thread.", "<module>"))]
    for frame, count in shown[:top]:
        table.add_row(frame[:110], f"{100 * count / total:.1f}%")
    console.print(table)


def _function(frame: str) -> str:
    """`Cls.fn (path.py:123)` -> `Cls.fn (path.py)`."""
    return re.sub(r":\d+\)$", ")", frame)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration-s", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--layers", type=int, default=5)
    parser.add_argument("--before", default="", help="a git ref: also measure a daemon of that code")
    parser.add_argument("--py-spy", default="", help="py-spy binary: profile the daemon during one run")
    parser.add_argument("--profile-out", type=Path, default=Path("."))
    parser.add_argument("--profile-target", default="pyrsia tag", help="which target: `before tag` too")
    parser.add_argument("--only-profile", action="store_true", help="skip the comparison rounds")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("manifest_get: wrk is not installed (apt-get install wrk)")
    console = Console()
    accept = (f"Accept: {ACCEPT}",)
    with tempfile.TemporaryDirectory(prefix="pyrsia-bench-") as tmp:
        root = Path(tmp)
        with contextlib.ExitStack() as stack:
            registry_url, registry_pid = stack.enter_context(registry(root / "registry"))
            flags = ("--docker-upstream", registry_url, "--log-level", "warning")
            node = stack.enter_context(NodeProcess(root / "node", *flags))
            before = None
            if args.before:
                tree = export_tree(args.before, root)
                before = stack.enter_context(
                    NodeProcess(
                        root / "before-node",
                        *flags,
                        command=[sys.executable, "-P", "-m", "pyrsia"],  # -P: the tree alone, not the cwd
                        env={"PYTHONPATH": str(tree)},
                    )
                )
            digest, size = push_image(registry_url, args.layers)
            urls = [f"{n.url}/v2/{REPO}/manifests/{TAG}" for n in (node, before) if n is not None]
            for url in [*urls, f"{registry_url}/v2/{REPO}/manifests/{TAG}"]:
                got = httpx.get(url, headers={"Accept": ACCEPT}, timeout=60)
                got.raise_for_status()
                if "sha256:" + hashlib.sha256(got.content).hexdigest() != digest:
                    raise SystemExit(f"{url} served other bytes than {digest}")
            console.print(f"manifest {digest}, {size} bytes, {args.layers} layers")
            pyrsia_manifests = f"{node.url}/v2/{REPO}/manifests"
            registry_manifests = f"{registry_url}/v2/{REPO}/manifests"
            targets = [
                Target(name="pyrsia tag", url=f"{pyrsia_manifests}/{TAG}", pid=node.pid, headers=accept),
                Target(
                    name="registry tag", url=f"{registry_manifests}/{TAG}", pid=registry_pid, headers=accept
                ),
                Target(
                    name="pyrsia digest", url=f"{pyrsia_manifests}/{digest}", pid=node.pid, headers=accept
                ),
                Target(
                    name="registry digest",
                    url=f"{registry_manifests}/{digest}",
                    pid=registry_pid,
                    headers=accept,
                ),
                Target(name="pyrsia /v2/", url=f"{node.url}/v2/", pid=node.pid),
            ]
            if before is not None:
                url = f"{before.url}/v2/{REPO}/manifests/{TAG}"
                targets.append(Target(name="before tag", url=url, pid=before.pid, headers=accept))
            for target in targets:  # warm-up, and every target answers 200
                wrk(target.url, target.headers, 1, args.connections, args.threads)
            if args.py_spy:
                with console.status("profiling the daemon under wrk"):
                    chosen = next(t for t in targets if t.name == args.profile_target)
                    raw = profile(args.py_spy, chosen, args, args.profile_out)
                summarize_profile(raw, console)
            if args.only_profile:
                return
            samples, loads = measure(targets, args, console)
    report(console, samples, loads, args)


def report(
    console: Console, samples: dict[str, Samples], loads: list[float], args: argparse.Namespace
) -> None:
    title = (
        f"manifest GET, {args.connections} keep-alive connections, {args.runs} interleaved rounds of "
        f"{args.duration_s} s; 1-min load before each round: {', '.join(f'{x:.1f}' for x in loads)}"
    )
    table = Table(title=title)
    for column in ("target", "median req/s", "best req/s", "runs req/s", "server CPU ms / 1k req"):
        table.add_column(column, justify="left" if column == "target" else "right")
    for name, s in samples.items():
        table.add_row(
            name,
            f"{statistics.median(s.rps):,.0f}",
            f"{max(s.rps):,.0f}",
            " ".join(f"{x:,.0f}" for x in s.rps),
            f"{statistics.median(s.cpu_ms_per_k):,.0f}",
        )
    console.print(table)
    for kind in ("tag", "digest"):
        mine, theirs = samples[f"pyrsia {kind}"].rps, samples[f"registry {kind}"].rps
        per_round = [p / r for p, r in zip(mine, theirs, strict=True)]
        print(
            f"pyrsia / docker-registry, manifest by {kind}: median {statistics.median(per_round):.2f}"
            f" (rounds: {', '.join(f'{x:.2f}' for x in per_round)})"
        )
    if "before tag" in samples:
        per_round = [a / b for a, b in zip(samples["pyrsia tag"].rps, samples["before tag"].rps, strict=True)]
        print(f"pyrsia / before, manifest by tag: median {statistics.median(per_round):.2f}")


if __name__ == "__main__":
    main()
