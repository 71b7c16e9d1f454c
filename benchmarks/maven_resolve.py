"""The same `mvn` resolution straight from a Maven upstream and through a pyrsia node.

    python benchmarks/maven_resolve.py [--runs 3]

`mvn -B -C dependency:get com.example:app:1.0` resolves a small graph (parent, BOM
import, classifier, transitive dependencies) from a static repository on loopback.
Each run uses a fresh local repository (a symlink farm of Debian's plugins), so every
artifact is downloaded: (a) straight from the upstream, (b) through a node that has
never seen it (cold: fetch, verify, commit to the log, serve), (c) through the same
node again (warm). Medians, and the ratio to the upstream.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.support.maven_repo import MavenServer, build, local_repository, settings_xml
from tests.support.node import NodeProcess

GOAL = ["org.apache.maven.plugins:maven-dependency-plugin:3.5.0:get", "-Dartifact=com.example:app:1.0"]


def resolve(root: Path, mirror: str) -> float:
    settings = settings_xml(root / "settings.xml", mirror)
    local = local_repository(root / "m2")
    started = time.perf_counter()
    result = subprocess.run(
        ["mvn", "-B", "-C", "-s", str(settings), f"-Dmaven.repo.local={local}", *GOAL],
        capture_output=True, text=True, cwd=root,
    )  # fmt: skip
    elapsed = time.perf_counter() - started
    if "BUILD SUCCESS" not in result.stdout:
        raise SystemExit(result.stdout[-3000:])
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    times: dict[str, list[float]] = {"upstream": [], "node, cold": [], "node, warm": []}
    with tempfile.TemporaryDirectory(prefix="pyrsia-mvn-bench-") as tmp:
        root = Path(tmp)
        repo = build(root / "repo", root / "build")
        with MavenServer(repo.root) as upstream:
            for run in range(args.runs):
                work = root / f"run{run}"
                work.mkdir()
                times["upstream"].append(resolve(work, upstream.url + "/"))
                with NodeProcess(
                    work / "node", "--maven-upstream", upstream.url, "--log-level", "warning"
                ) as node:
                    times["node, cold"].append(resolve(work, f"{node.url}/maven2/"))
                    times["node, warm"].append(resolve(work, f"{node.url}/maven2/"))
    base = statistics.median(times["upstream"])
    table = Table(title=f"mvn dependency:get com.example:app:1.0, fresh local repository, {args.runs} runs")
    for column in ("source", "median s", "best s", "÷ upstream"):
        table.add_column(column, justify="left" if column == "source" else "right")
    for name, values in times.items():
        median = statistics.median(values)
        table.add_row(name, f"{median:.2f}", f"{min(values):.2f}", f"{median / base:.2f}")
    Console().print(table)


if __name__ == "__main__":
    main()
