"""`pyrsia devnet`: a real network of `pyrsia daemon` processes on loopback, as a user starts it.

Every command runs as `python -m pyrsia devnet …`. The nodes pull through a real CNCF
docker-registry holding a test image. What must hold: `up` starts an authority and
regular nodes that join through it and records them; `status` sees them; `down` leaves
no process behind (checked by pid and by scanning every process for a daemon with a
devnet home); and a failing or interrupted `up` stops what it had started.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import images
from tests.support.registry import RegistryProcess

PYRSIA = [sys.executable, "-m", "pyrsia"]
IMAGE = images.three_layer()
MANIFEST_ACCEPT = ", ".join(
    [
        images.DOCKER_MANIFEST,
        images.OCI_MANIFEST,
        images.OCI_INDEX,
        "application/vnd.docker.distribution.manifest.list.v2+json",
    ]
)
COMMAND_TIMEOUT_S = 120.0
EXIT_TIMEOUT_S = 60.0


@pytest.fixture(autouse=True)
def isolated_client_settings(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Commands must not read the developer's own client settings or data home."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("xdg")))
    monkeypatch.delenv("PYRSIA_NODE", raising=False)
    monkeypatch.delenv("PYRSIA_HOME", raising=False)


def devnet(*args: str, timeout_s: float = COMMAND_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PYRSIA, "devnet", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env={**os.environ, "COLUMNS": "250"},
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"{result.args}\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr
    return result.stdout


def one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert result.returncode != 0, result
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def record(directory: Path) -> dict[str, Any]:
    return dict(json.loads((directory / "devnet.json").read_text()))


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [os.fsdecode(part) for part in raw.split(b"\0") if part]


def running(pid: int) -> bool:
    """Alive and not a zombie waiting for its parent."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def daemons_under(directory: Path) -> dict[int, list[str]]:
    """Every live `pyrsia daemon` process whose --home lies in `directory`."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        argv = cmdline(int(entry.name))
        if "daemon" not in argv or "--home" not in argv or not running(int(entry.name)):
            continue
        home = argv[argv.index("--home") + 1] if argv.index("--home") + 1 < len(argv) else ""
        if Path(home).is_relative_to(directory):
            found[int(entry.name)] = argv
    return found


def kill_leftovers(directory: Path) -> None:
    """Last resort after a failed test: no daemon of ours may outlive it."""
    for pid in daemons_under(directory):
        os.kill(pid, signal.SIGKILL)


def wait_for(condition: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def assert_nothing_left(directory: Path, pids: list[int], *, recorded: bool = False) -> None:
    """No process left; the record gone, or (after `down`) kept as a stopped network."""
    assert [pid for pid in pids if running(pid)] == []
    assert daemons_under(directory) == {}
    if recorded:
        assert record(directory)["state"] == "stopped"
    else:
        assert not (directory / "devnet.json").exists()


def fetch_manifest(url: str) -> httpx.Response:
    return httpx.get(
        f"{url}/v2/{IMAGE.name}/manifests/{IMAGE.tag}", headers={"Accept": MANIFEST_ACCEPT}, timeout=60
    )


def assert_upstream_manifest(response: httpx.Response) -> None:
    assert response.status_code == 200, response.text
    assert images.sha256(response.content) == IMAGE.top
    assert response.headers["Docker-Content-Digest"] == IMAGE.top


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    with RegistryProcess(tmp_path_factory.mktemp("upstream")) as registry:
        images.push(registry.url, IMAGE)
        yield registry


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory, upstream: RegistryProcess) -> Iterator[Path]:
    """A three-node devnet pulling through `upstream`, shared by the read-only tests."""
    directory = tmp_path_factory.mktemp("devnet") / "net"
    try:
        ok(devnet("up", "--nodes", "3", "--dir", str(directory), "--docker-upstream", upstream.url))
        yield directory
    finally:
        devnet("down", "--dir", str(directory))
        kill_leftovers(directory)


def test_up_starts_an_authority_and_regular_nodes_joining_it(network: Path) -> None:
    nodes = record(network)["nodes"]
    assert [(n["name"], n["role"]) for n in nodes] == [
        ("node0", "authority"),
        ("node1", "regular"),
        ("node2", "regular"),
    ]
    authority = nodes[0]
    for node in nodes:
        assert node["home"] == str(network / node["name"])
        assert node["p2p"].startswith("/ip4/127.0.0.1/tcp/") and node["p2p"].endswith(
            f"/p2p/{node['peer_id']}"
        )
        assert node["http_url"].startswith("http://127.0.0.1:")
        # The peer id is the one `pyrsia id` reads from the node's key.
        shown = subprocess.run(
            [*PYRSIA, "id", "--home", node["home"]], capture_output=True, text=True, timeout=60
        )
        assert shown.stdout.strip() == node["peer_id"]
        argv = cmdline(node["pid"])
        assert argv[argv.index("--home") + 1] == node["home"]
        assert (
            argv[argv.index("--docker-upstream") + 1]
            == httpx.get(f"{node['http_url']}/api/v1/status", timeout=10).json()["upstreams"]["docker"]
        )
        if node["role"] == "authority":
            assert "--bootstrap" not in argv
        else:
            assert argv[argv.index("--bootstrap") + 1] == authority["p2p"]
    assert len({n["http_port"] for n in nodes} | {n["p2p_port"] for n in nodes}) == 6


def test_status_json_shows_three_live_nodes(network: Path) -> None:
    shown = json.loads(ok(devnet("status", "--dir", str(network), "--json")))
    recorded = record(network)["nodes"]
    assert shown["state"] == "running"
    assert [n["peer_id"] for n in shown["nodes"]] == [n["peer_id"] for n in recorded]
    for node in shown["nodes"]:
        assert node["alive"] and node["answers"] and node["error"] is None, node
        assert isinstance(node["height"], int) and node["height"] >= 0
    table = ok(devnet("status", "--dir", str(network)))
    assert table.count("alive") == 3 and "authority" in table


def test_authority_serves_the_upstream_manifest(network: Path) -> None:
    authority = record(network)["nodes"][0]
    assert_upstream_manifest(fetch_manifest(authority["http_url"]))


def test_regular_node_serves_what_the_authority_committed(network: Path) -> None:
    authority, regular = record(network)["nodes"][:2]
    assert_upstream_manifest(fetch_manifest(regular["http_url"]))
    # The regular node committed nothing itself: the authority did, and sync brought it.
    found = httpx.get(f"{regular['http_url']}/api/v1/log/search", params={"package": IMAGE.name}, timeout=30)
    submitters = {r["submitter"] for r in found.json()["results"]}
    assert submitters == {authority["peer_id"]}


def test_up_refuses_while_a_devnet_runs(network: Path) -> None:
    before = record(network)
    one_line_error(devnet("up", "--dir", str(network)), "a devnet is already running in", "devnet down")
    assert record(network) == before
    assert all(running(n["pid"]) for n in before["nodes"])


def test_down_stops_every_node_and_is_idempotent(tmp_path: Path) -> None:
    directory = tmp_path / "net"
    try:
        shown = ok(devnet("up", "--nodes", "3", "--dir", str(directory)))
        nodes = record(directory)["nodes"]
        pids = [n["pid"] for n in nodes]
        assert set(daemons_under(directory)) == set(pids)
        assert all(n["http_url"] in shown and n["peer_id"] in shown for n in nodes)
        assert f"podman pull --tls-verify=false {nodes[1]['http_url'].removeprefix('http://')}/" in shown
        # A node that died on its own is reported, and does not stop `down` from succeeding.
        os.kill(pids[2], signal.SIGKILL)
        wait_for(lambda: not running(pids[2]), EXIT_TIMEOUT_S, "node2 to die")
        status = json.loads(ok(devnet("status", "--dir", str(directory), "--json")))
        assert [n["alive"] for n in status["nodes"]] == [True, True, False]

        stopped = ok(devnet("down", "--dir", str(directory)))
        assert "node0 (authority, pid" in stopped and "node2 (regular" in stopped
        assert "was not running" in stopped.splitlines()[2]
        assert_nothing_left(directory, pids, recorded=True)
        assert (directory / "node0" / "identity.key").exists()  # data stays without --purge

        again = devnet("down", "--dir", str(directory))
        assert ok(again) == "" and "no devnet running" in again.stderr
        status = json.loads(ok(devnet("status", "--dir", str(directory), "--json")))
        assert status["state"] == "stopped" and not any(n["alive"] for n in status["nodes"])

        ok(devnet("down", "--dir", str(directory), "--purge"))
        assert not directory.exists()
    finally:
        kill_leftovers(directory)


def peers_of(url: str) -> set[str]:
    return {p["peer_id"] for p in httpx.get(f"{url}/api/v1/peers", timeout=10).json()["peers"]}


def test_up_with_four_authorities_starts_one_connected_network(tmp_path: Path) -> None:
    from pyrsia.translog.block import Block
    from pyrsia.translog.tx import AuthorizedNode

    directory = tmp_path / "bft"
    pids: list[int] = []
    try:
        shown = ok(devnet("up", "--authorities", "4", "--nodes", "5", "--dir", str(directory)))
        doc = record(directory)
        nodes = doc["nodes"]
        pids = [n["pid"] for n in nodes]
        assert [(n["name"], n["role"]) for n in nodes] == [
            *((f"node{i}", "authority") for i in range(4)),
            ("node4", "regular"),
        ]
        assert f"{nodes[4]['http_url'].removeprefix('http://')}/" in shown  # pull through the regular node
        genesis = Block.decode(Path(doc["genesis"]).read_bytes())
        named = [tx.payload.peer_id for tx in genesis.transactions if isinstance(tx.payload, AuthorizedNode)]
        assert named == [n["peer_id"] for n in nodes[:4]]
        for index, node in enumerate(nodes):
            argv = cmdline(node["pid"])
            assert argv[argv.index("--genesis") + 1] == doc["genesis"]
            dialled = [argv[i + 1] for i, arg in enumerate(argv) if arg == "--bootstrap"]
            expected = [n["p2p"] for n in nodes[:index]] if index < 4 else [nodes[0]["p2p"]]
            assert dialled == expected

        status = json.loads(ok(devnet("status", "--dir", str(directory), "--json")))
        assert [(n["role"], n["is_authority"]) for n in status["nodes"]] == [("authority", True)] * 4 + [
            ("regular", False)
        ]
        assert all(n["alive"] and n["answers"] for n in status["nodes"])
        for node in nodes:
            p2p = httpx.get(f"{node['http_url']}/api/v1/status", timeout=10).json()["p2p"]
            assert p2p["genesis"] == genesis.header.hash.hex()
        authorities = [n["peer_id"] for n in nodes[:4]]
        for node in nodes[:4]:
            others = set(authorities) - {node["peer_id"]}
            wait_for(
                lambda n=node, o=others: o <= peers_of(n["http_url"]),
                30,
                f"{node['name']} to meet the others",
            )
        table = ok(devnet("status", "--dir", str(directory)))
        assert table.count("authority") == 4 and "node says" not in table

        # Stopped and started again, the devnet keeps its network: same genesis, logs still valid.
        ok(devnet("down", "--dir", str(directory)))
        assert_nothing_left(directory, pids, recorded=True)
        ok(devnet("up", "--authorities", "4", "--nodes", "5", "--dir", str(directory)))
        pids = [n["pid"] for n in record(directory)["nodes"]]
        assert Block.decode(Path(doc["genesis"]).read_bytes()) == genesis
    finally:
        devnet("down", "--dir", str(directory))
        kill_leftovers(directory)
    assert_nothing_left(directory, pids, recorded=True)


def test_fewer_nodes_than_authorities_is_refused_before_anything_starts(tmp_path: Path) -> None:
    directory = tmp_path / "net"
    one_line_error(
        devnet("up", "--authorities", "4", "--nodes", "3", "--dir", str(directory)),
        "--nodes 3 counts every node",
        "--authorities 4",
    )
    assert not (directory / "devnet.json").exists() and daemons_under(tmp_path) == {}


def test_up_whose_node_fails_stops_the_others_and_names_it(tmp_path: Path) -> None:
    directory = tmp_path / "net"
    (directory / "node1").mkdir(parents=True)
    (directory / "node1" / "pyrsia.toml").write_text('log_level = "loud"\n')
    try:
        line = one_line_error(devnet("up", "--nodes", "3", "--dir", str(directory)), "node1", "log_level")
        assert "exited with code" in line
        assert daemons_under(directory) == {}
        assert not (directory / "devnet.json").exists()
    finally:
        kill_leftovers(directory)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_up_stops_what_it_started(tmp_path: Path, signum: int) -> None:
    directory = tmp_path / "net"
    # node1 blocks for good opening its config (a FIFO nobody writes), so `up` is caught
    # half way: node0 ready, node1 and node2 started, `up` waiting for node1.
    (directory / "node1").mkdir(parents=True)
    os.mkfifo(directory / "node1" / "pyrsia.toml")
    assert stat.S_ISFIFO((directory / "node1" / "pyrsia.toml").stat().st_mode)
    up = subprocess.Popen(
        [*PYRSIA, "devnet", "up", "--nodes", "3", "--dir", str(directory), "--timeout", "600"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:

        def all_started() -> bool:
            assert up.poll() is None, up.communicate()
            try:
                nodes = record(directory)["nodes"]
            except (OSError, ValueError):
                return False
            return len(nodes) == 3

        wait_for(all_started, COMMAND_TIMEOUT_S, "up to start three daemons")
        pids = [n["pid"] for n in record(directory)["nodes"]]
        assert record(directory)["state"] == "starting"
        assert set(daemons_under(directory)) == set(pids)
        up.send_signal(signum)
        _out, err = up.communicate(timeout=EXIT_TIMEOUT_S)
        assert up.returncode == 130, err
        assert "interrupted" in err and "Traceback" not in err
        assert_nothing_left(directory, pids)
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
        kill_leftovers(directory)


def test_base_port_that_is_taken_is_refused_before_anything_starts(tmp_path: Path) -> None:
    directory = tmp_path / "net"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = devnet("up", "--nodes", "2", "--dir", str(directory), "--base-port", str(port))
    one_line_error(result, f"port {port}", "--base-port")
    assert daemons_under(directory) == {}
    assert not (directory / "devnet.json").exists()


@pytest.mark.parametrize(
    "content",
    [b"{not json", b'{"format": 1, "state": "running", "nodes": [{"name": "node0", "pid": 1}]}', b"[]"],
)
def test_a_damaged_record_is_one_line_and_signals_nothing(tmp_path: Path, content: bytes) -> None:
    directory = tmp_path / "net"
    directory.mkdir()
    (directory / "devnet.json").write_bytes(content)
    for command in ("up", "status", "down"):
        one_line_error(devnet(command, "--dir", str(directory)), f"{directory / 'devnet.json'} is damaged")
    assert daemons_under(directory) == {}
    assert (directory / "devnet.json").read_bytes() == content


def test_signals_wait_while_held_and_only_the_first_interrupts() -> None:
    """The rule `up` relies on: no KeyboardInterrupt between starting a daemon and
    recording it, and none once the cleanup after the first one has begun."""
    from pyrsia.cli.devnet import _Interrupts

    interrupts = _Interrupts()
    before, before_term = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with interrupts.installed():
        with pytest.raises(KeyboardInterrupt), interrupts.held():
            signal.raise_signal(signal.SIGINT)
            reached = True  # the block runs to its end first
        assert reached
        with interrupts.held(deliver=False):
            signal.raise_signal(signal.SIGTERM)
        signal.raise_signal(signal.SIGINT)  # already interrupted once: recorded, not raised
    assert signal.getsignal(signal.SIGINT) == before

    fresh = _Interrupts()
    with pytest.raises(KeyboardInterrupt), fresh.installed():
        signal.raise_signal(signal.SIGTERM)
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN  # on its way out: ignored
    signal.signal(signal.SIGTERM, before_term)
    signal.signal(signal.SIGINT, before)


def test_devnet_help_imports_nothing_heavy() -> None:
    from tests.integration.test_help_imports import heavy, imported

    modules = imported("-m", "pyrsia", "devnet", "up", "--help")
    assert "pyrsia.cli.devnet" in modules
    assert not heavy(modules)


def test_up_after_down_starts_the_same_network_and_says_who_is_an_authority(
    tmp_path: Path, upstream: RegistryProcess
) -> None:
    """`up` twice (with a `down` between) reuses devnet.json: the same nodes, roles, ports,
    keys and upstream, although the second `up` names none of them; `--fresh` rebuilds."""
    directory = tmp_path / "net"
    try:
        first = ok(devnet("up", "--authorities", "2", "--nodes", "3", "--dir", str(directory),
                          "--docker-upstream", upstream.url))  # fmt: skip
        before = record(directory)
        assert "3 nodes: 2 authorities (node0, node1), 1 regular node (node2)" in first
        client = before["nodes"][2]["http_url"]
        for command in ("status", "peers", "log search"):
            assert f"pyrsia {command} --node {client}" in first
        ok(devnet("down", "--dir", str(directory)))

        second = devnet("up", "--dir", str(directory))
        ok(second)
        after = record(directory)
        assert "started the devnet recorded in" in second.stderr
        same = ("name", "role", "peer_id", "http_port", "p2p_port", "home")
        assert [{k: n[k] for k in same} for n in after["nodes"]] == [
            {k: n[k] for k in same} for n in before["nodes"]
        ]
        assert after["plan"] == before["plan"] == {
            "authorities": 2, "docker_upstream": upstream.url, "maven_upstream": None,
        }  # fmt: skip
        # The regular node still pulls through the recorded upstream, from the same authorities.
        assert_upstream_manifest(fetch_manifest(after["nodes"][2]["http_url"]))
        assert "--docker-upstream" in cmdline(after["nodes"][2]["pid"])
        ok(devnet("down", "--dir", str(directory)))

        # Asking for another network is refused, naming --fresh; --fresh builds one.
        refused = devnet("up", "--nodes", "2", "--dir", str(directory))
        one_line_error(refused, "--nodes 2 (it has 3)", "--fresh")
        assert record(directory)["state"] == "stopped"
        ok(devnet("up", "--nodes", "2", "--fresh", "--dir", str(directory)))
        rebuilt = record(directory)
        assert [n["role"] for n in rebuilt["nodes"]] == ["authority", "regular"]
        assert {n["peer_id"] for n in rebuilt["nodes"]}.isdisjoint({n["peer_id"] for n in before["nodes"]})
        assert not (directory / "genesis.blk").exists() and not (directory / "node2").exists()
    finally:
        devnet("down", "--dir", str(directory))
        kill_leftovers(directory)
