"""Node API routes for builds and authorities, driven through `NodeApi.handle` with a
small `NodeControl` twin: what reaches the node is exactly the checked request, admin
calls need the token, and malformed bodies are typed 400s that never reach the node."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from nacl.signing import SigningKey

from pyrsia.errors import (
    BuildUnknown,
    NotAnAuthority,
    PathUnknown,
    PyrsiaError,
    Unauthorized,
    Unsupported,
    UsageError,
)
from pyrsia.http.message import Request, Response
from pyrsia.registry.api import NodeApi
from pyrsia.translog.ledger import Ledger

TOKEN = "s3cret-token"
PEER = "12D3KooWGB8xhz81oyJXnCSH8JmLr7DJMjAcJycAmCqoMnizCpsQ"
BUILD_ID = "0123456789abcdef"


def build_doc(kind: str = "docker", target: str = "alpine:3.18", state: str = "running") -> dict[str, object]:
    return {
        "id": BUILD_ID, "kind": kind, "target": target, "state": state, "error": None, "height": None,
        "started_at": 1700000000.5, "finished_at": None, "via": "this node", "transactions": [],
        "verdicts": [],
    }  # fmt: skip


class FakeNode:
    """Records every consensus call; `refuse` makes the next one raise."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[object, ...]]] = []
        self.refuse: PyrsiaError | None = None

    def _called(self, name: str, *args: object) -> None:
        self.calls.append((name, args))
        if self.refuse is not None:
            raise self.refuse

    def status(self) -> Mapping[str, object]:
        return {}

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

    def start_build(self, kind: str, target: str) -> Mapping[str, object]:
        self._called("start_build", kind, target)
        return build_doc(kind, target)

    def build(self, build_id: str) -> Mapping[str, object]:
        self._called("build", build_id)
        if build_id != BUILD_ID:
            raise BuildUnknown(f"no build {build_id}")
        return build_doc()

    def builds(self) -> list[Mapping[str, object]]:
        self._called("builds")
        return [build_doc()]

    def authorize(self, peer_id: str, remove: bool) -> Mapping[str, object]:
        self._called("authorize", peer_id, remove)
        action = "remove" if remove else "add"
        return {"peer_id": peer_id, "action": action, "approved": True, "tx_id": "ab" * 32,
                "state": "committed", "height": 1}  # fmt: skip

    def authorities(self) -> Mapping[str, object]:
        self._called("authorities")
        return {"height": 0, "quorum": 1, "authorities": [PEER], "me": PEER, "is_authority": True,
                "approvals": [], "pending": []}  # fmt: skip


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    ledger = Ledger.open(tmp_path / "log", SigningKey(b"\x01" * 32))
    yield ledger
    ledger.close()


@pytest.fixture
def node() -> FakeNode:
    return FakeNode()


@pytest.fixture
def api(node: FakeNode, ledger: Ledger) -> NodeApi:
    return NodeApi(node, TOKEN, ledger)


def request(method: str, path: str, body: object = b"", *, token: str | None = TOKEN) -> Request:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = (("authorization", f"Bearer {token}"),) if token is not None else ()
    return Request(method=method, target=path, path=path, headers=headers, body=data)


def doc(response: Response) -> object:
    assert response.status in (200, 202)
    return json.loads(bytes(response.body))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kind", "target"),
    [
        ("docker", "alpine:3.18"),
        ("docker", "library/alpine@sha256:" + "a" * 64),
        ("docker", "docker.io/team/tool"),
        ("maven", "com.example:hello:1.0"),
    ],
)
def test_a_build_is_started_with_202_and_its_document(
    api: NodeApi, node: FakeNode, kind: str, target: str
) -> None:
    response = api.handle(request("POST", "/api/v1/builds", {"kind": kind, "target": target}))
    assert response.status == 202
    assert doc(response) == build_doc(kind, target)
    assert node.calls == [("start_build", (kind, target))]


def test_builds_are_listed_and_read_without_the_token(api: NodeApi, node: FakeNode) -> None:
    assert doc(api.handle(request("GET", "/api/v1/builds", token=None))) == {"builds": [build_doc()]}
    assert doc(api.handle(request("GET", f"/api/v1/builds/{BUILD_ID}", token=None))) == build_doc()
    assert node.calls == [("builds", ()), ("build", (BUILD_ID,))]


def test_an_unknown_build_is_404(api: NodeApi) -> None:
    with pytest.raises(BuildUnknown) as caught:
        api.handle(request("GET", "/api/v1/builds/fedcba9876543210"))
    assert caught.value.http_status == 404


@pytest.mark.parametrize("build_id", ["xyz", "0123456789ABCDEF", "0123456789abcdef0", "../../etc", "%00"])
def test_a_malformed_build_id_names_no_build_and_never_reaches_the_node(
    api: NodeApi, node: FakeNode, build_id: str
) -> None:
    with pytest.raises(BuildUnknown, match="16 hex characters"):
        api.handle(request("GET", f"/api/v1/builds/{build_id}"))
    assert node.calls == []


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/api/v1/builds", {"kind": "docker", "target": "alpine"}),
        ("POST", "/api/v1/authorities", {"peer_id": PEER, "action": "add"}),
    ],
)
@pytest.mark.parametrize("token", [None, "", "wrong", TOKEN + "x"])
def test_every_post_needs_the_admin_token(
    api: NodeApi, node: FakeNode, method: str, path: str, body: object, token: str | None
) -> None:
    with pytest.raises(Unauthorized) as caught:
        api.handle(request(method, path, body, token=token))
    assert caught.value.http_status == 401
    assert node.calls == []


BAD_BUILD_BODIES: list[tuple[bytes | object, str]] = [
    (b"", "must be JSON"),
    (b"{", "must be JSON"),
    (b"\xff\xfe", "must be JSON"),
    (b"[" * 100_000, "nested too deeply"),
    (b'{"kind": NaN, "target": "x"}', "must be JSON"),
    ([], "must be JSON"),
    ("docker alpine", "must be JSON"),
    ({"kind": "docker"}, "must be JSON"),
    ({"target": "alpine"}, "must be JSON"),
    ({"kind": "docker", "target": 5}, "must be JSON"),
    ({"kind": ["docker"], "target": "alpine"}, "must be JSON"),
    ({"kind": "npm", "target": "left-pad"}, "kind must be one of docker, maven"),
    ({"kind": "docker", "target": ""}, "target must be 1 to"),
    ({"kind": "docker", "target": "a" * 600}, "target must be 1 to"),
    ({"kind": "docker", "target": "Bad/NAME:1"}, "is not an image reference"),
    ({"kind": "docker", "target": "alpine@sha256:short"}, "is not an image reference"),
    ({"kind": "docker", "target": "alpine:bad tag"}, "is not an image reference"),
    ({"kind": "maven", "target": "com.example:hello"}, "is not GROUP:ARTIFACT:VERSION"),
    ({"kind": "maven", "target": "com.example:hello:jar:1.0"}, "is not GROUP:ARTIFACT:VERSION"),
    ({"kind": "maven", "target": "com.example:../x:1.0"}, "is not Maven coordinates"),
]


@pytest.mark.parametrize(("body", "message"), BAD_BUILD_BODIES, ids=lambda v: repr(v)[:30])
def test_malformed_build_requests_are_400_and_never_reach_the_node(
    api: NodeApi, node: FakeNode, body: object, message: str
) -> None:
    with pytest.raises(UsageError, match=message) as caught:
        api.handle(request("POST", "/api/v1/builds", body))
    assert caught.value.http_status == 400
    assert node.calls == []


@pytest.mark.parametrize(("action", "remove"), [("add", False), ("remove", True)])
def test_an_authority_change_reaches_the_node(
    api: NodeApi, node: FakeNode, action: str, remove: bool
) -> None:
    answer = doc(api.handle(request("POST", "/api/v1/authorities", {"peer_id": PEER, "action": action})))
    assert isinstance(answer, dict) and answer["action"] == action and answer["peer_id"] == PEER
    assert node.calls == [("authorize", (PEER, remove))]


BAD_AUTHORITY_BODIES: list[tuple[bytes | object, str]] = [
    (b"", "must be JSON"),
    (b"null", "must be JSON"),
    ({"peer_id": PEER}, "must be JSON"),
    ({"action": "add"}, "must be JSON"),
    ({"peer_id": PEER, "action": "promote"}, "action must be add or remove"),
    ({"peer_id": PEER, "action": None}, "must be JSON"),
    ({"peer_id": "bogus", "action": "add"}, "is not a peer id"),
    ({"peer_id": PEER[:-1], "action": "add"}, "is not a peer id"),
    ({"peer_id": PEER[:-1] + "0", "action": "add"}, "is not a peer id"),
    ({"peer_id": "12D3KooW" + "z" * 5000, "action": "add"}, "is not a peer id"),
    ({"peer_id": "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N", "action": "add"}, "is not a peer id"),
]


@pytest.mark.parametrize(("body", "message"), BAD_AUTHORITY_BODIES, ids=lambda v: repr(v)[:30])
def test_malformed_authority_changes_are_400_and_never_reach_the_node(
    api: NodeApi, node: FakeNode, body: object, message: str
) -> None:
    with pytest.raises(UsageError, match=message):
        api.handle(request("POST", "/api/v1/authorities", body))
    assert node.calls == []


def test_the_nodes_own_refusal_passes_through_with_its_status(api: NodeApi, node: FakeNode) -> None:
    node.refuse = NotAnAuthority("only an authority can approve authorities")
    with pytest.raises(NotAnAuthority) as caught:
        api.handle(request("POST", "/api/v1/authorities", {"peer_id": PEER, "action": "add"}))
    assert caught.value.http_status == 403


def test_the_authority_set_is_open_to_read(api: NodeApi, node: FakeNode) -> None:
    answer = doc(api.handle(request("GET", "/api/v1/authorities", token=None)))
    assert isinstance(answer, dict) and answer["authorities"] == [PEER] and answer["quorum"] == 1


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PUT", "/api/v1/builds"),
        ("DELETE", "/api/v1/authorities"),
        ("POST", f"/api/v1/builds/{BUILD_ID}"),
        ("DELETE", f"/api/v1/builds/{BUILD_ID}"),
    ],
)
def test_other_methods_are_405(api: NodeApi, node: FakeNode, method: str, path: str) -> None:
    with pytest.raises(Unsupported):
        api.handle(request(method, path, {}))
    assert node.calls == []


def test_neighbouring_paths_are_404(api: NodeApi) -> None:
    with pytest.raises(PathUnknown):
        api.handle(request("GET", "/api/v1/buildsx"))
