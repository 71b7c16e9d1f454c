"""First pull of a three-layer image through a fresh node vs straight from the upstream.

    python benchmarks/first_pull.py [--layer-mb 20] [--runs 7]

A local CNCF docker-registry holds one Docker schema2 image of three incompressible
layers (3 x 20 MB by default). The client is `skopeo copy docker://… dir:…` into an
empty directory each time (skopeo checks every digest):

    upstream     skopeo straight from the registry
    node, first  through a node started just before with an empty home, so every
                 manifest and blob is fetched from the registry, verified, committed
                 to the transparency log and stored while it is served
    node, warm   the same node again: everything is served from its store

The node is started (and ready) before the clock starts; only the pull is timed.
Runs interleave the three and rotate their order, so drift (other work on the machine)
hits them alike; the table shows medians, bests and the ratio of each median to the
upstream's. The first-pull ratio is the cost of pulling through a node the first time.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.support import images
from tests.support.node import NodeProcess
from tests.support.registry import RegistryProcess

NAME, TAG = "bench/firstpull", "1.0"
LAYERS = 3  # images.large


def skopeo_pull(address: str, into: Path, image: images.Image) -> float:
    """Seconds for `skopeo copy` into the empty directory `into`; checks what arrived."""
    shutil.rmtree(into, ignore_errors=True)
    into.parent.mkdir(parents=True, exist_ok=True)
    argv = ["skopeo", "copy", "--src-tls-verify=false", f"docker://{address}/{NAME}:{TAG}", f"dir:{into}"]
    started = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"skopeo failed from {address}:\n{result.stderr}")
    arrived = {f"sha256:{p.name}" for p in into.iterdir() if len(p.name) == 64}
    if arrived != set(image.blobs):
        raise SystemExit(f"from {address}: got {sorted(arrived)}, expected {sorted(image.blobs)}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--layer-mb", type=int, default=20, help="size of each layer, 10^6 bytes")
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    console = Console()
    with console.status("building the image"):
        image = images.large(NAME, TAG, args.layer_mb * 1_000_000)
    total_mb = sum(len(blob) for blob in image.blobs.values()) / 1e6
    samples: dict[str, list[float]] = {"upstream": [], "node, first": [], "node, warm": []}
    with tempfile.TemporaryDirectory(prefix="pyrsia-bench-") as tmp:
        root = Path(tmp)
        with RegistryProcess(root / "registry") as registry:
            images.push(registry.url, image)
            skopeo_pull(registry.address, root / "warm-up", image)  # page cache, registry caches

            def upstream(run: int) -> None:
                samples["upstream"].append(skopeo_pull(registry.address, root / "pulled", image))

            def through_node(run: int) -> None:
                home = root / f"node-{run}"
                with NodeProcess(home, "--docker-upstream", registry.url) as node:
                    samples["node, first"].append(skopeo_pull(node.address, root / "pulled", image))
                    samples["node, warm"].append(skopeo_pull(node.address, root / "pulled", image))
                shutil.rmtree(home, ignore_errors=True)

            steps: list[Callable[[int], None]] = [upstream, through_node]
            with console.status(f"{args.runs} interleaved runs"):
                for run in range(args.runs):
                    for step in steps[run % 2 :] + steps[: run % 2]:
                        step(run)

    medians = {name: statistics.median(values) for name, values in samples.items()}
    table = Table(
        title=f"skopeo copy of a {LAYERS}-layer image ({total_mb:.0f} MB) to dir:, {args.runs} runs"
    )
    for column in ("source", "median s", "best s", "MB/s (median)", "÷ upstream"):
        table.add_column(column, justify="left" if column == "source" else "right")
    for name, values in samples.items():
        table.add_row(
            name,
            f"{medians[name]:.3f}",
            f"{min(values):.3f}",
            f"{total_mb / medians[name]:.0f}",
            f"{medians[name] / medians['upstream']:.2f}",
        )
    console.print(table)
    for name in samples:
        ratio = medians[name] / medians["upstream"]
        print(f"{name}: median {medians[name]:.3f} s, {ratio:.2f}x upstream")


if __name__ == "__main__":
    main()
