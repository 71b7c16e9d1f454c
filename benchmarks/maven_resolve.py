"""The same `mvn` resolution straight from a Maven upstream and through a pyrsia node.

    python benchmarks/maven_resolve.py [--runs 5]

`mvn -B -C <maven-dependency-plugin>:get -Dartifact=com.example:app:1.0` resolves the
graph of `tests/support/maven_repo.py` (parent, BOM import, classifier, transitive
dependencies: 9 files and their .sha1) from a static repository on loopback. Each
timed run uses a fresh local repository (a symlink farm of Debian's plugins), so every
artifact is downloaded again:

    upstream     mvn's mirror is the static server itself
    node, cold   through a node that has never seen the files: fetch, verify, commit
                 to the transparency log, store, serve (a new node every run)
    node, warm   through that same node again: served from its store
    no download  mvn again on the local repository it just filled: Maven's own fixed
                 cost (JVM start, plugin loading), the floor under every other row

Runs interleave the sources so drift hits them alike; the table shows medians, the
ratio to the upstream, and the same ratio with mvn's fixed cost taken off.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.support.maven_repo import (
    APP_GRAPH,
    MIRROR_ID,
    MavenServer,
    build,
    dependency_plugin,
    local_repository,
    mvn,
    settings_xml,
)
from tests.support.node import NodeProcess

ARTIFACT = "com.example:app:1.0"


def resolve(work: Path, mirror: str, *, fresh: bool = True) -> float:
    """Seconds for one `mvn dependency:get` through `mirror`; fails unless every file came through it."""
    settings = settings_xml(work / "settings.xml", mirror)
    local = local_repository(work / "m2") if fresh else work / "m2"
    goal = (f"{dependency_plugin()}:get", f"-Dartifact={ARTIFACT}")
    started = time.perf_counter()
    result = mvn(settings, local, *goal)
    elapsed = time.perf_counter() - started
    if result.returncode != 0 or "BUILD SUCCESS" not in result.stdout:
        raise SystemExit(f"mvn failed through {mirror}:\n{result.stdout[-3000:]}")
    expected = len(APP_GRAPH) if fresh else 0
    if result.stdout.count(f"Downloaded from {MIRROR_ID}: {mirror}com/example/") != expected:
        raise SystemExit(f"expected {expected} downloads through {mirror}:\n{result.stdout[-3000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5, help="timed runs per source (default 5)")
    args = parser.parse_args()
    times: dict[str, list[float]] = {"upstream": [], "node, cold": [], "node, warm": [], "no download": []}
    console = Console()
    with tempfile.TemporaryDirectory(prefix="pyrsia-mvn-bench-") as tmp:
        root = Path(tmp)
        repo = build(root / "repo", root / "build")
        with MavenServer(repo.root) as upstream:
            resolve(root, f"{upstream.url}/")  # untimed: warms the page cache for Maven and the JDK
            for run in range(args.runs):
                work = root / f"run{run}"
                work.mkdir()
                times["upstream"].append(resolve(work, f"{upstream.url}/"))
                times["no download"].append(resolve(work, f"{upstream.url}/", fresh=False))
                with NodeProcess(
                    work / "node", "--maven-upstream", upstream.url, "--log-level", "warning"
                ) as node:
                    times["node, cold"].append(resolve(work, f"{node.url}/maven2/"))
                    times["node, warm"].append(resolve(work, f"{node.url}/maven2/"))
                console.print(
                    f"run {run + 1}/{args.runs}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items())
                )
    base = statistics.median(times["upstream"])
    floor = statistics.median(times["no download"])
    table = Table(
        title=f"mvn -B -C dependency:get {ARTIFACT}: {len(APP_GRAPH)} files, fresh local repository, "
        f"median of {args.runs} runs"
    )
    for column in ("source", "median s", "min s", "max s", "÷ upstream", "÷ upstream, net of mvn"):
        table.add_column(column, justify="left" if column == "source" else "right")
    for name, values in times.items():
        median = statistics.median(values)
        net = (median - floor) / (base - floor) if name != "no download" and base > floor else None
        table.add_row(
            name,
            f"{median:.2f}",
            f"{min(values):.2f}",
            f"{max(values):.2f}",
            f"{median / base:.2f}",
            f"{net:.2f}" if net is not None else "-",
        )
    console.print(table)


if __name__ == "__main__":
    main()
