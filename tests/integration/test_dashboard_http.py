"""The dashboard over a real daemon's HTTP port: pages, headers, traversal, the new endpoints.

One `pyrsia daemon` for the module, sampling its byte counters every 0.2 s into a
history of at most four samples; one more, behind a scripted upstream that drips a
layer, shows a pull from the upstream on `/api/v1/transfers` while it runs. Requests
that try to leave the static directory are sent on a raw socket, exactly as written
(no client normalises the path first).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import httpx
import pytest

from tests.support import images
from tests.support.node import NodeProcess
from tests.support.scripted_upstream import Reply, ScriptedUpstream
from tests.support.wait import eventually

SAMPLES_MAX = 4


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    home = tmp_path_factory.mktemp("dashboard-node")
    flags = ("--traffic-sample-interval", "0.2", "--traffic-samples-max", str(SAMPLES_MAX))
    with NodeProcess(home, *flags) as node:
        yield node


def raw_get(node: NodeProcess, target: str) -> tuple[int, bytes]:
    host, port = node.address.split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: {node.address}\r\nConnection: close\r\n\r\n".encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status = int(answer.split(b" ", 2)[1])
    return status, answer.partition(b"\r\n\r\n")[2]


def test_the_root_serves_the_dashboard_with_its_headers(node: NodeProcess) -> None:
    page = httpx.get(node.url + "/", timeout=30)
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["cache-control"] == "no-cache"
    assert '<script type="module" src="/static/app.js">' in page.text
    script = httpx.get(node.url + "/static/app.js", timeout=30)
    assert script.headers["content-type"] == "text/javascript; charset=utf-8"
    assert script.headers["x-content-type-options"] == "nosniff"


def test_a_browser_revalidates_with_the_etag(node: NodeProcess) -> None:
    first = httpx.get(node.url + "/static/merkle.js", timeout=30)
    again = httpx.get(
        node.url + "/static/merkle.js", headers={"If-None-Match": first.headers["etag"]}, timeout=30
    )
    assert again.status_code == 304 and again.content == b""
    changed = httpx.get(node.url + "/static/merkle.js", headers={"If-None-Match": '"other"'}, timeout=30)
    assert changed.status_code == 200 and changed.content == first.content


@pytest.mark.parametrize(
    "target",
    [
        "/static/../../pyproject.toml",
        "/static/..%2f..%2fpyproject.toml",
        "/static/%2e%2e/%2e%2e/pyproject.toml",
        "/static/..%2fsite.py",
        "/static/../web/site.py",
        "/static//etc/passwd",
        "/static/%2fetc%2fpasswd",
        "/static/..\\..\\config.py",
        "/../../../etc/passwd",
        "/static/admin.token",
        "/static/../../admin.token",
    ],
)
def test_no_request_leaves_the_static_files(node: NodeProcess, target: str) -> None:
    status, body = raw_get(node, target)
    assert status in (400, 404), (target, status)
    token = (node.home / "admin.token").read_bytes().strip()
    assert token not in body and b"[project]" not in body and b"root:" not in body


def test_transfers_is_empty_on_an_idle_node(node: NodeProcess) -> None:
    assert httpx.get(node.url + "/api/v1/transfers", timeout=30).json() == {"transfers": []}
    status = httpx.get(node.url + "/api/v1/status", timeout=30).json()
    assert status["exchange"]["transfers"] == []


def test_the_traffic_history_fills_up_to_its_bound_and_then_slides(node: NodeProcess) -> None:
    def traffic() -> dict[str, object]:
        doc: dict[str, object] = httpx.get(node.url + "/api/v1/traffic", timeout=30).json()
        return doc

    eventually(lambda: len(traffic()["samples"]) == SAMPLES_MAX, "the history filled")  # type: ignore[arg-type]
    first = traffic()
    samples = first["samples"]
    assert isinstance(samples, list)
    oldest = samples[0]["at"]
    eventually(lambda: traffic()["samples"][0]["at"] > oldest, "the oldest sample was dropped")  # type: ignore[index]
    later = traffic()
    assert len(later["samples"]) == SAMPLES_MAX  # type: ignore[arg-type]
    assert later["interval_s"] == 0.2 and later["samples_max"] == SAMPLES_MAX
    assert later["series"] == ["received.local", "received.peer", "received.upstream", "served.peers"]
    times = [s["at"] for s in later["samples"]]  # type: ignore[attr-defined]
    assert times == sorted(times) and len(set(times)) == len(times)
    # The values are the /metrics counters: an idle node has moved no bytes.
    metrics = httpx.get(node.url + "/metrics", timeout=30).text
    assert 'pyrsia_blob_bytes_total{source="upstream"} 0' in metrics
    assert all(v == 0 for s in later["samples"] for v in s["bytes"].values())  # type: ignore[attr-defined]


def test_writes_to_the_dashboard_endpoints_are_refused(node: NodeProcess) -> None:
    for path in ("/", "/static/app.js", "/api/v1/transfers", "/api/v1/traffic"):
        assert httpx.post(node.url + path, content=b"{}", timeout=30).status_code == 405, path


def test_the_data_directory_is_never_a_static_root(node: NodeProcess) -> None:
    (node.home / "probe.js").write_text("// in the home, not in the package")
    assert httpx.get(node.url + "/static/probe.js", timeout=30).status_code == 404


def upstream_pool(node: NodeProcess, url: str) -> dict[str, int]:
    """The node's `/metrics` of its connections to the upstream at `url`."""
    found: dict[str, int] = {}
    for line in httpx.get(node.url + "/metrics", timeout=30).text.splitlines():
        for state in ("busy", "idle"):
            if line.startswith(f'pyrsia_upstream_connections{{upstream="{url}",state="{state}"}} '):
                found[state] = int(line.rsplit(" ", 1)[1])
        if line.startswith(f'pyrsia_upstream_fetches_waiting{{upstream="{url}"}} '):
            found["waiting"] = int(line.rsplit(" ", 1)[1])
    assert sorted(found) == ["busy", "idle", "waiting"], found
    return found


def test_a_pull_from_the_upstream_shows_its_bytes_while_it_runs(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    image = images.large("library/slow", "1.0", 6000)
    layer = image.layers_of(image.top)[0]
    with ScriptedUpstream() as upstream:
        upstream.serve_image(image)
        upstream.route(f"/v2/{image.name}/blobs/{layer}", Reply(body=image.blobs[layer], drip_s=0.002))
        home = tmp_path_factory.mktemp("upstream-node")
        flags = ("--docker-upstream", upstream.url, "--upstream-rate-min", "0")
        with NodeProcess(home, *flags) as node:
            manifest = httpx.get(
                f"{node.url}/v2/{image.name}/manifests/{image.tag}",
                headers={"Accept": images.DOCKER_MANIFEST},
                timeout=60,
            )
            assert manifest.status_code == 200
            pulled: list[httpx.Response] = []
            puller = threading.Thread(
                target=lambda: pulled.append(
                    httpx.get(f"{node.url}/v2/{image.name}/blobs/{layer}", timeout=120)
                )
            )
            puller.start()
            seen: list[int] = []

            def advancing() -> bool:
                for t in httpx.get(node.url + "/api/v1/transfers", timeout=30).json()["transfers"]:
                    if t["digest"] == layer and t["source"] == "upstream":
                        assert t["size"] == len(image.blobs[layer])
                        assert t["upstream"] == upstream.url.removeprefix("http://")
                        if not seen or t["written_bytes"] > seen[-1]:
                            seen.append(t["written_bytes"])
                return len(seen) >= 2

            eventually(advancing, "the upstream download's bytes grew on /api/v1/transfers", within_s=60)
            # The dripping blob holds a connection of the node's pool for its upstream.
            assert upstream_pool(node, upstream.url)["busy"] >= 1
            puller.join(120)
            assert pulled and pulled[0].status_code == 200 and pulled[0].content == image.blobs[layer]
            assert 0 < seen[0] < seen[-1] <= len(image.blobs[layer])
            eventually(
                lambda: httpx.get(node.url + "/api/v1/transfers", timeout=30).json() == {"transfers": []},
                "the finished download left the list",
            )
            after = upstream_pool(node, upstream.url)  # the connection went back (or was closed)
            assert after["busy"] == 0 and after["waiting"] == 0, after
