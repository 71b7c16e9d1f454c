"""Real `pyrsia daemon` processes form a network on loopback.

An authority pulls through from a real docker-registry; four regular nodes join in a
chain of bootstraps (each knows only the previous one), adopt the authority's genesis
and sync every block it commits. A pull through the last regular node, which never met
the authority, asks it (found through the DHT) to publish, then serves what sync
brought. A restarted node keeps its peer id and catches up. A node started later
against an authority with 1,000 blocks catches up and its log verifies offline.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from tests.support import images
from tests.support.node import NodeProcess
from tests.support.registry import RegistryProcess
from tests.support.translog import fill, genesis_bytes

ACCEPT = {"Accept": ", ".join([images.OCI_MANIFEST, images.DOCKER_MANIFEST, images.OCI_INDEX])}
DEADLINE_S = 60.0


def status(node: NodeProcess) -> dict[str, object]:
    response = httpx.get(f"{node.url}/api/v1/status", timeout=10)
    response.raise_for_status()
    doc: dict[str, object] = response.json()
    return doc


def height(node: NodeProcess) -> int:
    translog = status(node)["translog"]
    assert isinstance(translog, dict)
    return int(translog["height"])


def eventually(condition: Callable[[], bool], what: str, within_s: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + within_s
    while not condition():
        assert time.monotonic() < deadline, f"not within {within_s:g} s: {what}"
        time.sleep(0.1)


def pull_manifest(node: NodeProcess, image: images.Image, tag: str | None = None) -> str:
    response = httpx.get(
        f"{node.url}/v2/{image.name}/manifests/{tag or image.tag}", headers=ACCEPT, timeout=60
    )
    assert response.status_code == 200, response.text
    return response.headers["Docker-Content-Digest"]


def pull_blobs(node: NodeProcess, image: images.Image) -> None:
    for digest, data in image.blobs.items():
        response = httpx.get(f"{node.url}/v2/{image.name}/blobs/{digest}", timeout=60)
        assert response.status_code == 200 and response.content == data, digest


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    with RegistryProcess(tmp_path_factory.mktemp("upstream")) as registry:
        for image in (images.three_layer(), images.nested(), images.three_layer(tag="2.0")):
            images.push(registry.url, image)
        yield registry


def test_a_chain_of_regular_nodes_syncs_and_requests_through_the_dht(
    upstream: RegistryProcess, tmp_path: Path
) -> None:
    three, nested = images.three_layer(), images.nested()
    with ExitStack() as stack:
        authority = stack.enter_context(NodeProcess(tmp_path / "a", "--docker-upstream", upstream.url))
        chain = [authority]
        for name in "bcde":
            previous = chain[-1]
            chain.append(
                stack.enter_context(
                    NodeProcess(
                        tmp_path / name,
                        "--docker-upstream",
                        upstream.url,
                        "--bootstrap",
                        previous.p2p_address,
                        "--request-timeout",
                        "60",
                    )
                )
            )
        genesis = status(authority)["p2p"]
        assert isinstance(genesis, dict) and genesis["authority"] is True
        for node in chain[1:]:
            p2p = status(node)["p2p"]
            assert isinstance(p2p, dict)
            assert p2p["genesis"] == genesis["genesis"] and p2p["authority"] is False

        # Commits on the authority reach every node.
        assert pull_manifest(authority, three) == three.top
        pull_blobs(authority, three)
        target = height(authority)
        assert target >= 4  # the manifest tree, then one block per layer
        eventually(lambda: all(height(n) == target for n in chain), f"all five at height {target}")

        # The last node never met the authority: it finds it in the DHT and asks it.
        last = chain[-1]
        assert pull_manifest(last, nested) == nested.top
        pull_blobs(last, nested)
        assert height(authority) > target
        search = httpx.get(f"{last.url}/api/v1/log/search", params={"package": nested.name}, timeout=10)
        assert {r["digest"] for r in search.json()["results"]} >= {nested.top, *nested.blobs}
        eventually(lambda: all(height(n) == height(authority) for n in chain), "all five caught up again")

        # A restarted node keeps its peer id, reconnects and catches up with what it missed.
        middle = chain[2]
        peer_id = status(middle)["peer_id"]
        middle.stop()
        assert pull_manifest(authority, three, "2.0") == images.three_layer(tag="2.0").top
        middle.start()
        assert status(middle)["peer_id"] == peer_id
        eventually(lambda: height(middle) == height(authority), "the restarted node caught up")
        peers = httpx.get(f"{middle.url}/api/v1/peers", timeout=10).json()["peers"]
        assert peers and all(p["peer_id"].startswith("12D3KooW") for p in peers)


def test_a_late_node_catches_up_a_thousand_blocks_and_its_log_verifies(tmp_path: Path) -> None:
    fill(tmp_path / "a", 1000)
    with NodeProcess(tmp_path / "a") as authority:
        assert height(authority) == 1000
        started = time.monotonic()
        with NodeProcess(tmp_path / "late", "--bootstrap", authority.p2p_address) as late:
            eventually(lambda: height(late) == 1000, "the late node at height 1000")
            print(f"synced 1000 blocks in {time.monotonic() - started:.1f} s (start-up included)")
    verified = subprocess.run(
        [sys.executable, "-m", "pyrsia", "log", "verify", "--home", str(tmp_path / "late"), "--json"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert verified.returncode == 0, verified.stdout + verified.stderr
    report = json.loads(verified.stdout)
    assert report["ok"] is True and report["blocks"] == 1001


def test_a_node_of_another_network_is_refused_with_one_line(tmp_path: Path) -> None:
    with NodeProcess(tmp_path / "a") as first, NodeProcess(tmp_path / "b") as second:
        # Both run their own one-authority networks; b is told to bootstrap from a.
        address = first.p2p_address
        second.stop()
        second.flags += ["--bootstrap", address]
        second.start()
        eventually(lambda: "another network" in second.output(), "b refuses a's network")
        theirs, ours = status(first)["p2p"], status(second)["p2p"]
        assert isinstance(theirs, dict) and isinstance(ours, dict)
        assert height(second) == 0 and ours["genesis"] != theirs["genesis"]


def pyrsia(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pyrsia", *args], capture_output=True, text=True, timeout=60,
        env={**os.environ, "COLUMNS": "250"},
    )  # fmt: skip


def test_peers_ping_and_status_show_the_network(tmp_path: Path) -> None:
    with NodeProcess(tmp_path / "a") as first:
        a_id = str(status(first)["peer_id"])
        with NodeProcess(tmp_path / "b", "--bootstrap", first.p2p_address) as second:
            eventually(lambda: height(second) == 0 and bool(status(second)["p2p"]["peers"]), "b joined a")  # type: ignore[index]
            listed = pyrsia("peers", "--node", second.url, "--json")
            assert listed.returncode == 0, listed.stderr
            [peer] = json.loads(listed.stdout)
            assert peer["peer_id"] == a_id and peer["direction"] == "outbound"
            assert "/ipfs/id/1.0.0" in peer["protocols"] and peer["agent"].startswith("pyrsia/")
            table = pyrsia("list", "--node", second.url)
            assert table.returncode == 0 and a_id in table.stdout
            by_id = pyrsia("ping", a_id, "--node", second.url, "--json")
            assert by_id.returncode == 0 and json.loads(by_id.stdout)["peer_id"] == a_id
            by_address = pyrsia("ping", first.p2p_address, "--node", second.url)
            assert by_address.returncode == 0 and by_address.stdout.startswith(a_id)
            shown = pyrsia("status", "--node", second.url)
            assert "regular node" in shown.stdout and second.p2p_address in shown.stdout
            unknown = pyrsia("ping", "12D3KooWNotAPeerWeKnow", "--node", second.url)
            assert unknown.returncode != 0 and "Traceback" not in unknown.stderr
            assert len(unknown.stderr.strip().splitlines()) == 1


def test_a_genesis_file_pins_the_network_and_on_missing_fail_answers_404(
    upstream: RegistryProcess, tmp_path: Path
) -> None:
    fill(tmp_path / "a", 1)
    (tmp_path / "genesis.blk").write_bytes(genesis_bytes(tmp_path / "a"))
    fill(tmp_path / "other", 1)  # another network: its own genesis
    (tmp_path / "other.blk").write_bytes(genesis_bytes(tmp_path / "other"))
    three = images.three_layer()
    with NodeProcess(tmp_path / "a", "--docker-upstream", upstream.url) as authority:
        flags = ("--docker-upstream", upstream.url, "--bootstrap", authority.p2p_address)
        with NodeProcess(
            tmp_path / "b", *flags, "--genesis", str(tmp_path / "genesis.blk"), "--on-missing", "fail"
        ) as pinned:
            eventually(lambda: height(pinned) == 1, "b synced a's network")
            refused = httpx.get(f"{pinned.url}/v2/{three.name}/manifests/{three.tag}", headers=ACCEPT)
            assert refused.status_code == 404
            assert 'on_missing = "fail"' in refused.json()["errors"][0]["message"]
            assert height(authority) == 1  # nothing was requested
        # A node pinned to another network and a refuse each other, naming why: whichever
        # reads the other's status first disconnects (the other sees the connection end).
        with NodeProcess(tmp_path / "c", *flags, "--genesis", str(tmp_path / "other.blk")) as stranger:
            logs = lambda: stranger.output() + authority.output()  # noqa: E731
            eventually(lambda: "another network" in logs(), "c and a refuse each other")
            assert height(stranger) == 0 and height(authority) == 1
    # Stopped, a's log given another network's genesis file: the node refuses with one line.
    wrong = subprocess.run(
        [sys.executable, "-m", "pyrsia", "daemon", "--home", str(tmp_path / "a"), "--http-port", "0",
         "--genesis", str(tmp_path / "other.blk")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert wrong.returncode != 0 and "another network" in wrong.stderr and "Traceback" not in wrong.stderr
