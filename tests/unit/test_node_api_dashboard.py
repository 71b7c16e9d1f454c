"""The node API's dashboard routes and the app's routing to the static site, with no socket:
`/api/v1/transfers` and `/api/v1/traffic` are open reads of the node's own documents,
refuse writes, and `/` reaches the static site while the registry prefixes keep theirs."""

from __future__ import annotations

import json
from collections.abc import Mapping

import pytest

from pyrsia.errors import PathUnknown, Unsupported
from pyrsia.registry.api import NodeApi
from pyrsia.registry.app import NodeApp
from pyrsia.translog.ledger import Ledger
from pyrsia.web.site import StaticSite
from tests.unit.test_node_api_consensus import TOKEN, FakeNode, doc, ledger, request

__all__ = ["ledger"]  # the fixture, shared

TRANSFER = {
    "digest": "sha256:" + "ab" * 32, "size": 5_000_000, "chunks": 5, "verified_chunks": 2,
    "verified_bytes": 2_097_152, "providers": ["12D3KooWGB8xhz81oyJXnCSH8JmLr7DJMjAcJycAmCqoMnizCpsQ"],
    "source": "peers",
}  # fmt: skip
TRAFFIC = {"interval_s": 2.0, "samples_max": 3, "series": ["served.peers"],
           "samples": [{"at": 1.0, "bytes": {"served.peers": 0}}]}  # fmt: skip


class DashboardNode(FakeNode):
    def transfers(self) -> list[dict[str, object]]:
        self._called("transfers")
        return [dict(TRANSFER)]

    def traffic(self) -> Mapping[str, object]:
        self._called("traffic")
        return TRAFFIC


@pytest.fixture
def node() -> DashboardNode:
    return DashboardNode()


@pytest.fixture
def api(node: DashboardNode, ledger: Ledger) -> NodeApi:
    return NodeApi(node, TOKEN, ledger)


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_transfers_and_traffic_need_no_token(api: NodeApi, node: DashboardNode, method: str) -> None:
    assert doc(api.handle(request(method, "/api/v1/transfers", token=None))) == {"transfers": [TRANSFER]}
    assert doc(api.handle(request(method, "/api/v1/traffic/", token=None))) == TRAFFIC
    assert node.calls == [("transfers", ()), ("traffic", ())]


@pytest.mark.parametrize("path", ["/api/v1/transfers", "/api/v1/traffic"])
@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
def test_they_refuse_writes_even_with_the_token(
    api: NodeApi, node: DashboardNode, path: str, method: str
) -> None:
    with pytest.raises(Unsupported):
        api.handle(request(method, path, {}))
    assert node.calls == []


def test_the_app_serves_the_site_at_the_root_and_keeps_the_api(
    api: NodeApi, node: DashboardNode, ledger: Ledger
) -> None:
    app = NodeApp(None, None, api, StaticSite())  # type: ignore[arg-type]
    page = app.handle(request("GET", "/", token=None))
    assert page.status == 200 and b"<!doctype html>" in bytes(page.body)  # type: ignore[arg-type]
    assert json.loads(bytes(app.handle(request("GET", "/api/v1/transfers")).body))  # type: ignore[arg-type]
    with pytest.raises(PathUnknown):
        app.handle(request("GET", "/static/../pyproject.toml"))
    with pytest.raises(PathUnknown):
        app.handle(request("GET", "/elsewhere"))
    without_site = NodeApp(None, None, api)  # type: ignore[arg-type]
    with pytest.raises(PathUnknown):
        without_site.handle(request("GET", "/"))
