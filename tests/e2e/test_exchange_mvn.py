"""The same for a Maven tree: the last of four nodes resolves it with mvn from its peers.

Authority A pulls through from a static Maven upstream; regular nodes B and C resolve
`com.example:app:1.0` with real `mvn -C` (each file asked of the authority, committed,
synced, fetched and verified). The upstream is stopped; D resolves the same graph with
mvn: every file arrives from peers, checked against the log's digest, size and chunk
root, with checksums mvn accepts, and D's `/metrics` counts no upstream bytes.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_exchange_podman import BY_SOURCE, RECEIVED
from tests.e2e.test_maven_mvn import get
from tests.integration.test_p2p_network import eventually, height
from tests.support.maven_repo import APP_GRAPH, MavenServer, build
from tests.support.node import NodeProcess

pytestmark = pytest.mark.e2e


def test_the_last_node_resolves_a_maven_graph_from_its_peers(tmp_path: Path) -> None:
    for work in ("mb", "mc", "md"):
        (tmp_path / work).mkdir()
    repo = build(tmp_path / "repo", tmp_path / "build")
    with ExitStack() as stack:
        upstream = stack.enter_context(MavenServer(repo.root))
        up = ("--maven-upstream", upstream.url)
        a = stack.enter_context(NodeProcess(tmp_path / "a", *up))
        joined = (*up, "--bootstrap", a.p2p_address)
        b = stack.enter_context(NodeProcess(tmp_path / "b", *joined))
        c = stack.enter_context(NodeProcess(tmp_path / "c", *joined))
        d = stack.enter_context(NodeProcess(tmp_path / "d", *joined))
        get(b, tmp_path / "mb", "com.example:app:1.0", "m2")
        get(c, tmp_path / "mc", "com.example:app:1.0", "m2")
        eventually(lambda: height(d) == height(a), "d synced the log")

        upstream.stop()
        _, local = get(d, tmp_path / "md", "com.example:app:1.0", "m2")
        for path in APP_GRAPH:
            assert (local / path).read_bytes() == repo.read(path), path
        assert "from upstream" not in d.output()

        metrics = httpx.get(f"{d.url}/metrics", timeout=10).text
        assert any(int(n) > 0 for _, n in RECEIVED.findall(metrics)), metrics
        sources = {source: int(n) for source, n in BY_SOURCE.findall(metrics)}
        assert sources.get("upstream", 0) == 0 and sources["peer"] >= sum(
            len(repo.read(p)) for p in APP_GRAPH
        )
