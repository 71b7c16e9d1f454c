"""`pyrsia build …`, `authorize-node`, `authorize --peer`, `deauthorize-node` and
`authorities` as a user runs them: the real CLI (a subprocess), the real HTTP server and
node API, and behind `NodeControl` a scripted node whose builds end as each test needs
(committed after a few polls, refused by one authority, or running forever). What must
hold: exit codes and one-line errors, what the node was asked, that `--wait` follows a
build to its end, and that nothing without the admin token reaches the node.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from nacl.signing import SigningKey

from pyrsia.errors import BuildUnknown, NotAnAuthority, PyrsiaError
from pyrsia.http.server import HttpServer, Limits
from pyrsia.registry.api import NodeApi
from pyrsia.registry.app import NodeApp
from pyrsia.translog.ledger import Ledger
from tests.support.cli import ok, one_line_error, run

TOKEN = "test-admin-token"
ME = "12D3KooWGB8xhz81oyJXnCSH8JmLr7DJMjAcJycAmCqoMnizCpsQ"
OTHER = "12D3KooWDcCpT68LkwzbPHjGgFY857qe9p3RyCHudPw5BXFGU2yj"
THIRD = "12D3KooWAtc3o5tie78Ly3GoZFidCTJBpKPKY93ytPo6isg4JtqW"
CANDIDATE = "12D3KooWPR5a27uw5gWSi2G2SD6LzLksuSABgWSPJpBmgYodNcTr"
COMMITS, REFUSES, RUNS = "c0000000000000c1", "f0000000000000f1", "a0000000000000a1"
POLLS_WHILE_RUNNING = 3
DIGEST_1, DIGEST_2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64


class ScriptedNode:
    """The consensus side of a node, as the API sees it: a build of a target tagged
    `refused` is refused by one authority, `slow` never ends, anything else commits;
    each ends only after `POLLS_WHILE_RUNNING` reads, so `--wait` has to poll."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: list[tuple[object, ...]] = []
        self.reads: dict[str, int] = {}
        self.started: dict[str, tuple[str, str]] = {}
        self.refuse_authorize = False

    def status(self) -> Mapping[str, object]:
        return {"peer_id": ME}

    def settings(self) -> Mapping[str, object]:
        return {}

    def set_setting(self, key: str, value: object) -> Mapping[str, object]:
        return {}

    def peers(self) -> list[dict[str, object]]:
        return []

    def ping(self, target: str) -> Mapping[str, object]:
        return {}

    def metrics(self) -> str:
        return ""

    def transfers(self) -> list[dict[str, object]]:
        return []

    def traffic(self) -> Mapping[str, object]:
        return {}

    def start_build(self, kind: str, target: str) -> Mapping[str, object]:
        build_id = REFUSES if target.endswith(":refused") else RUNS if target.endswith(":slow") else COMMITS
        with self.lock:
            self.calls.append(("start_build", kind, target))
            self.started[build_id] = (kind, target)
            self.reads[build_id] = 0
        return self._doc(build_id, "running")

    def build(self, build_id: str) -> Mapping[str, object]:
        with self.lock:
            if build_id not in self.started:
                raise BuildUnknown(f"no build {build_id} on this node")
            self.reads[build_id] += 1
            done = self.reads[build_id] > POLLS_WHILE_RUNNING and build_id != RUNS
        if not done:
            return self._doc(build_id, "running")
        return self._doc(build_id, "refused" if build_id == REFUSES else "committed")

    def builds(self) -> list[Mapping[str, object]]:
        return [self._doc(build_id, "running") for build_id in sorted(self.started)]

    def _doc(self, build_id: str, state: str) -> dict[str, object]:
        kind, target = self.started[build_id]
        final = state != "running"
        refused = state == "refused"
        tx_state = {"running": "pending", "committed": "committed", "refused": "refused"}[state]
        return {
            "id": build_id, "kind": kind, "target": target, "state": state,
            "error": None, "height": 7 if state == "committed" else None,
            "started_at": 1700000000.0, "finished_at": 1700000002.5 if final else None,
            "via": "this node",
            "transactions": [
                {"tx_id": "ab" * 32, "path": "manifests/3.18", "digest": DIGEST_1, "state": tx_state},
                {"tx_id": "cd" * 32, "path": "blobs/config", "digest": DIGEST_2, "state": tx_state},
            ],
            "verdicts": [
                {"authority": ME, "verdict": "endorsed" if final else "pending", "reason": ""},
                {"authority": OTHER, "verdict": "refused" if refused else "endorsed" if final else "pending",
                 "reason": "upstream sent sha256:9999 for manifests/3.18" if refused else ""},
                {"authority": THIRD, "verdict": "endorsed" if final else "pending", "reason": ""},
            ],
        }  # fmt: skip

    def authorize(self, peer_id: str, remove: bool) -> Mapping[str, object]:
        with self.lock:
            self.calls.append(("authorize", peer_id, remove))
        if self.refuse_authorize:
            raise NotAnAuthority("this node is not an authority: only an authority approves authorities")
        if remove:
            return {"peer_id": peer_id, "action": "remove", "approved": True, "tx_id": "ef" * 32,
                    "state": "pending", "height": None}  # fmt: skip
        return {"peer_id": peer_id, "action": "add", "approved": True, "tx_id": "12" * 32,
                "state": "committed", "height": 3}  # fmt: skip

    def authorities(self) -> Mapping[str, object]:
        return {
            "height": 3, "quorum": 3, "authorities": [ME, OTHER, THIRD], "me": ME, "is_authority": True,
            "approvals": [{"peer_id": CANDIDATE, "action": "add"}],
            "pending": [{"tx_id": "34" * 32, "action": "add", "peer_id": CANDIDATE, "submitter": OTHER,
                         "endorsed_by": [OTHER, ME]}],
        }  # fmt: skip

    def source_spec(self, text: str) -> object:
        from pyrsia.node.source_builds import spec_of_json

        return spec_of_json(text)

    def start_source_build(self, spec: Any) -> Mapping[str, object]:
        return self.start_build("source", spec.gav)

    def change_registry(self, host: str, remove: bool) -> Mapping[str, object]:
        with self.lock:
            self.calls.append(("registry", host, remove))
        return {"host": host, "action": "remove" if remove else "add", "approved": True, "tx_id": "56" * 32,
                "state": "pending", "height": None}  # fmt: skip

    def registries(self) -> Mapping[str, object]:
        return {"height": 3, "quorum": 3, "registries": [{"host": "docker.io", "since": 0}],
                "upstreams": {}, "approvals": [], "pending": []}  # fmt: skip


@pytest.fixture(autouse=True)
def isolated_client(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """No developer settings, no node home and no token from the environment."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("xdg")))
    monkeypatch.setenv("PYRSIA_HOME", str(tmp_path_factory.mktemp("empty-home")))
    for name in ("PYRSIA_NODE", "PYRSIA_ADMIN_TOKEN"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, ScriptedNode]]:
    node = ScriptedNode()
    ledger = Ledger.open(tmp_path / "log", SigningKey(b"\x02" * 32))
    # Only /api/v1/ is asked here: the Docker and Maven handlers are never reached.
    app = NodeApp(None, None, NodeApi(node, TOKEN, ledger))  # type: ignore[arg-type]
    server = HttpServer(app, "127.0.0.1", 0, Limits(workers_max=4))
    server.start()
    host, port = server.address
    yield f"http://{host}:{port}", node
    server.shutdown(5)
    ledger.close()


def test_build_docker_prints_the_build_id(served: tuple[str, ScriptedNode]) -> None:
    url, node = served
    out = ok(run("build", "docker", "alpine:3.18", "--node", url, "--admin-token", TOKEN))
    assert out.strip() == COMMITS
    assert node.calls == [("start_build", "docker", "alpine:3.18")]


def test_build_maven_reads_the_token_from_home(served: tuple[str, ScriptedNode], tmp_path: Path) -> None:
    url, node = served
    home = tmp_path / "home"
    home.mkdir()
    (home / "admin.token").write_text(TOKEN + "\n")
    out = ok(run("build", "maven", "com.example:hello:1.0", "--node", url, "--home", str(home), "--json"))
    assert json.loads(out)["kind"] == "maven" and json.loads(out)["target"] == "com.example:hello:1.0"
    assert node.calls == [("start_build", "maven", "com.example:hello:1.0")]


def test_build_wait_follows_the_build_to_its_commit(served: tuple[str, ScriptedNode]) -> None:
    url, node = served
    out = ok(run("build", "docker", "alpine:3.18", "--wait", "--node", url, "--admin-token", TOKEN))
    assert node.reads[COMMITS] > POLLS_WHILE_RUNNING  # it polled until the state changed
    assert "manifests/3.18" in out and "blobs/config" in out
    assert out.count("endorsed") == 3 and ME in out and OTHER in out and THIRD in out
    assert out.splitlines()[-1] == "state committed"


def test_a_refused_build_names_the_refusal_and_exits_1(served: tuple[str, ScriptedNode]) -> None:
    url, _node = served
    result = run(
        "build", "docker", "alpine:refused", "--wait", "--json", "--node", url, "--admin-token", TOKEN
    )
    line = one_line_error(result, 1, f"build {REFUSES} refused", "upstream sent sha256:9999")
    assert OTHER[:16] in line
    doc = json.loads(result.stdout)
    assert doc["state"] == "refused"
    assert [v["verdict"] for v in doc["verdicts"]] == ["endorsed", "refused", "endorsed"]
    # Reading it again later gives the same verdict and the same exit code.
    again = run("build", "status", REFUSES, "--node", url)
    one_line_error(again, 1, "refused")
    assert "upstream sent sha256:9999 for manifests/3.18" in again.stdout
    assert again.stdout.splitlines()[-1] == "state refused"


def test_status_wait_gives_up_at_its_deadline(served: tuple[str, ScriptedNode]) -> None:
    url, node = served
    ok(run("build", "docker", "alpine:slow", "--node", url, "--admin-token", TOKEN))
    result = run("build", "status", RUNS, "--wait", "--timeout", "0.6", "--node", url)
    one_line_error(result, 1, f"build {RUNS} is still running after 0.6 s")
    assert node.reads[RUNS] >= 2
    assert result.stdout.splitlines()[-1] == "state running"


def test_status_without_wait_shows_a_running_build_and_exits_0(served: tuple[str, ScriptedNode]) -> None:
    url, _node = served
    ok(run("build", "docker", "alpine:3.18", "--node", url, "--admin-token", TOKEN))
    doc = json.loads(ok(run("build", "status", COMMITS, "--json", "--node", url)))
    assert doc["state"] == "running" and doc["id"] == COMMITS
    assert {"transactions", "verdicts", "via", "started_at", "finished_at", "height", "error"} <= set(doc)


def test_status_of_an_unknown_build_is_one_line(served: tuple[str, ScriptedNode]) -> None:
    url, _node = served
    one_line_error(run("build", "status", "0000000000000000", "--node", url), 1, "404", "no build")
    one_line_error(run("build", "status", "not-an-id", "--node", url), 1, "16 hex characters")


def test_build_list_shows_every_build(served: tuple[str, ScriptedNode]) -> None:
    url, _node = served
    for target in ("alpine:3.18", "alpine:slow"):
        ok(run("build", "docker", target, "--node", url, "--admin-token", TOKEN))
    out = ok(run("build", "list", "--node", url))
    assert COMMITS in out and RUNS in out and "alpine:slow" in out
    assert sorted(b["id"] for b in json.loads(ok(run("build", "list", "--json", "--node", url)))) == [
        RUNS,
        COMMITS,
    ]


@pytest.mark.parametrize(
    "args",
    [
        ("build", "docker", "alpine:3.18"),
        ("build", "maven", "com.example:hello:1.0"),
        ("authorize-node", CANDIDATE),
        ("authorize", "--peer", CANDIDATE),
        ("deauthorize-node", OTHER),
    ],
)
def test_without_the_admin_token_nothing_reaches_the_node(
    served: tuple[str, ScriptedNode], args: tuple[str, ...]
) -> None:
    url, node = served
    one_line_error(run(*args, "--node", url), 1, "no admin token")
    one_line_error(run(*args, "--node", url, "--admin-token", "wrong"), 1, "401", "admin token")
    assert node.calls == []


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("build", "docker", "Bad/NAME:1"), "is not an image reference"),
        (("build", "docker", "alpine@sha256:abc"), "is not an image reference"),
        (("build", "maven", "com.example:hello"), "is not GROUP:ARTIFACT:VERSION"),
        (("build", "maven", "com.example:../x:1.0"), "is not Maven coordinates"),
        (("authorize-node", "not-a-peer"), "is not a peer id"),
        (("authorize", "--peer", "12D3KooWshort"), "is not a peer id"),
        (("deauthorize-node", "0000"), "is not a peer id"),
    ],
)
def test_bad_arguments_are_usage_errors_before_any_call(
    served: tuple[str, ScriptedNode], args: tuple[str, ...], needle: str
) -> None:
    url, node = served
    one_line_error(run(*args, "--node", url, "--admin-token", TOKEN), 2, needle)
    assert node.calls == []


@pytest.mark.parametrize("args", [("authorize-node", CANDIDATE), ("authorize", "--peer", CANDIDATE)])
def test_authorize_node_and_its_alias_submit_an_addition(
    served: tuple[str, ScriptedNode], args: tuple[str, ...]
) -> None:
    url, node = served
    result = run(*args, "--node", url, "--admin-token", TOKEN)
    out = ok(result)
    assert f"approves adding {CANDIDATE}" in result.stderr
    assert "committed at height 3" in out
    assert node.calls == [("authorize", CANDIDATE, False)]


def test_deauthorize_node_submits_a_removal_that_is_pending(served: tuple[str, ScriptedNode]) -> None:
    url, node = served
    result = run("deauthorize-node", OTHER, "--node", url, "--admin-token", TOKEN, "--json")
    answer = json.loads(ok(result))
    assert answer["action"] == "remove" and answer["state"] == "pending" and answer["height"] is None
    assert node.calls == [("authorize", OTHER, True)]
    text = ok(run("deauthorize-node", OTHER, "--node", url, "--admin-token", TOKEN))
    assert "ef" * 32 in text and "pending" in text


def test_a_regular_node_refuses_authorize_node_in_one_line(served: tuple[str, ScriptedNode]) -> None:
    url, node = served
    node.refuse_authorize = True
    one_line_error(
        run("authorize-node", CANDIDATE, "--node", url, "--admin-token", TOKEN), 1, "403", "not an authority"
    )


def test_authorities_shows_the_set_approvals_and_pending_changes(served: tuple[str, ScriptedNode]) -> None:
    url, _node = served
    out = ok(run("authorities", "--node", url))
    assert "3 authorities at height 3, quorum 3" in out
    for peer in (ME, OTHER, THIRD, CANDIDATE):
        assert peer in out
    assert "2 of 3 needed" in out and ("34" * 32)[:20] + "…" in out
    assert out.splitlines()[-1] == f"this node {ME} is an authority"
    doc = json.loads(ok(run("authorities", "--json", "--node", url)))
    assert doc["quorum"] == 3 and doc["pending"][0]["endorsed_by"] == [OTHER, ME]


def test_the_scripted_node_is_what_the_api_sees() -> None:
    """The twin satisfies the protocol the API is typed against, so these tests cannot
    drift from what the real node must provide."""
    import inspect

    from pyrsia.registry.api import NodeControl

    wanted = {n for n, _ in inspect.getmembers(NodeControl, inspect.isfunction) if not n.startswith("_")}
    assert wanted <= set(dir(ScriptedNode))
    assert {"start_build", "build", "builds", "authorize", "authorities"} <= wanted
    with pytest.raises(PyrsiaError):
        ScriptedNode().build(COMMITS)


@pytest.mark.parametrize(
    "args",
    [
        ("genesis", "--help"),
        ("build", "docker", "--help"),
        ("build", "status", "--help"),
        ("authorize-node", "--help"),
        ("authorities", "--help"),
    ],
)
def test_help_of_the_new_commands_imports_nothing_heavy(args: tuple[str, ...]) -> None:
    from tests.integration.test_help_imports import heavy, imported

    modules = imported("-m", "pyrsia", *args)
    assert "pyrsia.cli.build" in modules and "pyrsia.cli.genesis" in modules
    assert not heavy(modules)
