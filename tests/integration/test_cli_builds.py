"""`pyrsia build` through a regular node shows what the authorities decided.

A real authority pulls through from a scripted upstream and takes build requests from
a real regular node joined to it. A build asked of the regular node must show the
authority's verdict and answer, the transactions its own log now holds, and the
height of the block that logged them: not the authority's height when it answered,
which a later block moves on (checked by building again after another commit).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass

import httpx
import pytest

from tests.integration.test_p2p_network import eventually, pull_manifest
from tests.support import images
from tests.support.bft import prepare
from tests.support.node import PYRSIA, NodeProcess
from tests.support.scripted_upstream import ScriptedUpstream

BUILT = images.nested()
OTHER = images.three_layer()


@dataclass
class Pair:
    authority: NodeProcess
    regular: NodeProcess
    authority_id: str


def height(node: NodeProcess) -> int:
    return int(httpx.get(f"{node.url}/api/v1/status", timeout=30).json()["translog"]["height"])


def records(node: NodeProcess, package: str) -> list[dict[str, object]]:
    found = httpx.get(f"{node.url}/api/v1/log/search", params={"package": package}, timeout=30).json()
    return [r for r in found["results"] if r["package_id"] == package]


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    root = tmp_path_factory.mktemp("pair")
    with ExitStack() as stack:
        upstream = stack.enter_context(ScriptedUpstream())
        upstream.serve_image(BUILT)
        upstream.serve_image(OTHER)
        requester = prepare(root / "regular")
        authority = stack.enter_context(
            NodeProcess(
                root / "authority", "--docker-upstream", upstream.url, "--build-requesters", requester
            )
        )
        regular = stack.enter_context(
            NodeProcess(
                root / "regular", "--docker-upstream", upstream.url, "--bootstrap", authority.p2p_address
            )
        )
        authority_id = str(httpx.get(f"{authority.url}/api/v1/status", timeout=30).json()["peer_id"])
        eventually(
            lambda: (
                authority_id
                in {p["peer_id"] for p in httpx.get(f"{regular.url}/api/v1/peers").json()["peers"]}
            ),
            "the regular node connected to the authority",
        )
        yield Pair(authority=authority, regular=regular, authority_id=authority_id)


def build(pair: Pair, *flags: str, columns: int = 250) -> subprocess.CompletedProcess[str]:
    node = pair.regular
    return subprocess.run(
        [*PYRSIA, "build", "docker", BUILT.reference, "--wait", "--timeout", "120",
         "--node", node.url, "--home", str(node.home), *flags],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": str(columns), "XDG_CONFIG_HOME": str(node.home / "xdg")},
    )  # fmt: skip


def test_a_build_through_a_regular_node_shows_verdicts_transactions_and_the_logged_height(pair: Pair) -> None:
    result = build(pair, "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["via"] == "authorities" and doc["state"] == "committed"
    logged = records(pair.regular, BUILT.reference)
    assert logged, "the regular node's log has the image"
    assert doc["height"] == max(int(str(r["height"])) for r in logged)
    assert {t["digest"] for t in doc["transactions"]} == {r["digest"] for r in logged}
    assert BUILT.top in {t["digest"] for t in doc["transactions"]}
    assert [(v["authority"], v["verdict"]) for v in doc["verdicts"]] == [(pair.authority_id, "endorsed")]
    assert [a["answer"] for a in doc["answers"]] == ["committed"]

    # Another block commits; a new build of the same image still names the block that logged it.
    first_height = doc["height"]
    pull_manifest(pair.authority, OTHER)
    eventually(lambda: height(pair.regular) == height(pair.authority) > first_height, "the next block synced")
    again = json.loads(build(pair, "--json").stdout)
    assert again["state"] == "committed" and again["height"] == first_height
    assert again["verdicts"] and again["transactions"]


def test_the_build_table_at_80_columns_names_the_authority_and_its_answer(pair: Pair) -> None:
    result = build(pair, columns=80)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines), result.stdout
    assert "verdicts of 1 authorities" in lines and "answers of 1 authorities asked" in lines
    assert sum(line.startswith(pair.authority_id[:18]) for line in lines) == 2  # verdict and answer
    assert "no verdicts yet" not in result.stdout
