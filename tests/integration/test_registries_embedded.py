"""`pyrsia registries` on the embedded one-authority network: a change its admin
approves commits at once, the status document and the table show the list in force,
a registry removed is refused in one line, and a restart keeps the list. One real
daemon; every command runs as `python -m pyrsia …`."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.support import images
from tests.support.cli import ok, one_line_error, run
from tests.support.node import NodeProcess

ACCEPT = {"Accept": ", ".join([images.DOCKER_MANIFEST, images.OCI_MANIFEST])}


@pytest.fixture(autouse=True)
def isolated_client(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("xdg")))
    for name in ("PYRSIA_NODE", "PYRSIA_HOME", "PYRSIA_ADMIN_TOKEN", "PYRSIA_GENESIS", "PYRSIA_BOOTSTRAP"):
        monkeypatch.delenv(name, raising=False)


def agreed(url: str) -> dict[str, int]:
    doc = httpx.get(f"{url}/api/v1/registries", timeout=30).json()
    return {r["host"]: r["since"] for r in doc["registries"]}


def test_the_one_authority_changes_the_list_at_once(tmp_path: Path) -> None:
    home = tmp_path / "node"
    with NodeProcess(home) as node:
        admin = ("--node", node.url, "--home", str(home))
        before = agreed(node.url)
        assert before == {h: 0 for h in ("docker.io", "gcr.io", "ghcr.io", "quay.io", "registry.k8s.io")}
        added = json.loads(ok(run("registries", "add", "Registry.Corp.Example", *admin, "--json")))
        assert added["state"] == "committed" and added["host"] == "registry.corp.example"
        removal = run("registries", "remove", "quay.io", *admin)
        ok(removal)
        said = removal.stdout + removal.stderr
        assert "approves removing registry quay.io" in said and "committed at height" in said
        after = agreed(node.url)
        assert after["registry.corp.example"] == added["height"] and "quay.io" not in after
        status = httpx.get(f"{node.url}/api/v1/status", timeout=30).json()
        assert status["upstreams"]["agreed_registries"] == sorted(after)
        table = ok(run("registries", "--node", node.url))
        assert f"{len(after)} registries agreed" in table
        refused = httpx.get(f"{node.url}/v2/quay.io/org/app/manifests/1.0", headers=ACCEPT, timeout=60)
        assert refused.status_code == 403 and "quay.io" in refused.json()["errors"][0]["message"]
        pulled = run("pull", "image", "quay.io/org/app:1.0", "-o", str(tmp_path / "out"), "--node", node.url)
        one_line_error(pulled, 1, "quay.io", "not one this network vouches for")
        one_line_error(run("registries", "remove", "quay.io", *admin), 2, "quay.io is not agreed")
        shown = ok(run("log", "show", str(added["height"]), "--node", node.url))
        assert ["AddRegistry", "registry.corp.example"] in [line.split()[1:3] for line in shown.splitlines()]
        node.stop()
        verified = run("log", "verify", "--home", str(home))
        ok(verified)
        node.start()
        assert agreed(node.url) == after
