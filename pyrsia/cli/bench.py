"""`pyrsia bench`: is pulling through pyrsia faster than from the central repository?

Fetches the same image (or Maven artifact) straight from the node's upstream and
through the node, each into a fresh temporary directory, and prints the times side by
side. The node's first pull is cold when the node had never seen the artifact (it
then fetches from the upstream itself); repeats are warm, served from its store.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from pyrsia.cli import console, options, settings

if TYPE_CHECKING:
    from pyrsia.cli.client import NodeClient

bench_app = typer.Typer(
    help="Measure pulling through the node against pulling from the upstream.", no_args_is_help=True
)
RUNS = typer.Option(3, "--runs", min=1, max=50, help="Warm pulls through the node, and pulls from upstream.")


def _timed(fetch: Callable[[Path], int]) -> tuple[float, int]:
    with tempfile.TemporaryDirectory(prefix="pyrsia-bench-") as tmp:
        started = time.perf_counter()
        size = fetch(Path(tmp))
        return time.perf_counter() - started, size


def _report(label: str, node: str, rows: dict[str, list[tuple[float, int]]], json_output: bool) -> None:
    upstream_s = statistics.median(t for t, _ in rows["upstream"])
    table: list[dict[str, object]] = []
    for source, samples in rows.items():
        seconds = statistics.median(t for t, _ in samples)
        size = samples[0][1]
        table.append(
            {
                "source": source,
                "runs": len(samples),
                "seconds": round(seconds, 4),
                "mib_per_s": round(size / seconds / 2**20, 2) if seconds else None,
                "speedup_vs_upstream": round(upstream_s / seconds, 2) if seconds else None,
                "bytes": size,
            }
        )
    if json_output:
        console.as_json({"artifact": label, "node": node, "results": table})
        return
    console.table(
        f"{label}: median of each row",
        ["source", "runs", "seconds", "MiB/s", "speed-up"],
        [[r["source"], r["runs"], r["seconds"], r["mib_per_s"], r["speedup_vs_upstream"]] for r in table],
    )


@bench_app.command("image", epilog="Example: pyrsia bench image alpine:3.18 --runs 5")
def bench_image(
    reference: str = typer.Argument(..., metavar="NAME[:TAG|@DIGEST]"),
    runs: int = RUNS,
    node: str | None = options.NODE,
    json_output: bool | None = options.JSON,
) -> None:
    """Pull an image from its upstream and through the node (cold, then warm) and compare."""
    node, json_output = settings.node_url(node), settings.wants_json(json_output)
    from pyrsia.artifacts.image_export import Platform, pull_to_layout
    from pyrsia.cli.client import NodeClient
    from pyrsia.formats.reference import parse_image_reference
    from pyrsia.upstream.registry import RegistryClient

    name, ref = parse_image_reference(reference)
    node_client = NodeClient(node)
    upstream_url = str(node_client.get_json("/api/v1/status")["upstreams"]["docker"])
    platform = Platform.host()

    def pull_from(base: str) -> Callable[[Path], int]:
        def fetch(out: Path) -> int:
            client = RegistryClient(base, retries_max=1)
            try:
                return pull_to_layout(
                    client, name, ref, out, platform, lambda _l, _t: lambda _n: None
                ).total_bytes
            finally:
                client.close()

        return fetch

    rows = _run(pull_from(upstream_url), pull_from(node), node_client, runs)
    _report(reference, node, rows, json_output)


@bench_app.command("artifact", epilog="Example: pyrsia bench artifact com.google.guava:guava:33.0.0-jre")
def bench_artifact(
    coordinates: str = typer.Argument(..., metavar="GROUP:ARTIFACT[:EXTENSION[:CLASSIFIER]]:VERSION"),
    runs: int = RUNS,
    node: str | None = options.NODE,
    json_output: bool | None = options.JSON,
) -> None:
    """Download a Maven artifact from its upstream and through the node (cold, then warm) and compare."""
    node, json_output = settings.node_url(node), settings.wants_json(json_output)
    from pyrsia.artifacts.blobstore import BlobStore
    from pyrsia.cli.client import NodeClient
    from pyrsia.formats.maven_layout import CHECKSUMS, Coordinates
    from pyrsia.upstream.maven import MavenClient

    coords = Coordinates.parse(coordinates)
    node_client = NodeClient(node)
    upstream_url = str(node_client.get_json("/api/v1/status")["upstreams"]["maven"])

    def pull_from(base: str) -> Callable[[Path], int]:
        def fetch(out: Path) -> int:
            client = MavenClient(base, retries_max=1)
            try:
                return client.fetch(coords.path, BlobStore(out).opener(None, base, CHECKSUMS)).size
            finally:
                client.close()

        return fetch

    rows = _run(pull_from(upstream_url), pull_from(node.rstrip("/") + "/maven2"), node_client, runs)
    _report(coordinates, node, rows, json_output)


def _run(
    upstream: Callable[[Path], int], via_node: Callable[[Path], int], node_client: NodeClient, runs: int
) -> dict[str, list[tuple[float, int]]]:
    before = int(node_client.get_json("/api/v1/status")["blobs_stored"])
    first = _timed(via_node)
    cold = int(node_client.get_json("/api/v1/status")["blobs_stored"]) > before
    with console.status_spinner(f"{runs} pulls from upstream, {runs} through the node"):
        rows = {
            "upstream": [_timed(upstream) for _ in range(runs)],
            "node, first pull (cold)" if cold else "node, first pull (already held)": [first],
            "node, warm": [_timed(via_node) for _ in range(runs)],
        }
    return rows
