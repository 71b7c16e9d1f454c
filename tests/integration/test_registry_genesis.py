"""The registries a network vouches for come from its genesis; logins that cannot be used
are one line. Real daemons and the real CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from pyrsia.translog.block import Block
from tests.support import images
from tests.support.cli import ok, run
from tests.support.node import NodeProcess
from tests.support.registry import RegistryProcess

ACCEPT = {"Accept": ", ".join([images.DOCKER_MANIFEST, images.OCI_MANIFEST, images.OCI_INDEX])}


@pytest.fixture(autouse=True)
def isolated_client(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("xdg")))
    for name in ("PYRSIA_NODE", "PYRSIA_HOME", "PYRSIA_GENESIS", "PYRSIA_BOOTSTRAP", "DOCKER_CONFIG"):
        monkeypatch.delenv(name, raising=False)


def test_a_registry_outside_the_genesis_list_is_refused(tmp_path: Path) -> None:
    image = images.nested("team/tool", "2.0")
    me = ok(run("id", "--home", str(tmp_path / "a"))).strip()
    target = tmp_path / "genesis.blk"
    out = ok(
        run("genesis", "--authority", me, "--registry", "docker.io", "--registry", "GHCR.io",
            "-o", str(target), "--home", str(tmp_path / "creator"))
    )  # fmt: skip
    assert "registries   docker.io, ghcr.io" in out.splitlines()
    assert Block.decode(target.read_bytes()).header.registries == ("docker.io", "ghcr.io")
    with RegistryProcess(tmp_path / "upstream") as registry:
        images.push(registry.url, image)
        (tmp_path / "a" / "pyrsia.toml").write_text(
            f'[upstreams."quay.io"]\nurl = "{registry.url}"\n[upstreams."ghcr.io"]\nurl = "{registry.url}"\n'
        )
        with NodeProcess(tmp_path / "a", "--genesis", str(target)) as node:
            status = httpx.get(f"{node.url}/api/v1/status", timeout=10).json()
            assert status["upstreams"]["agreed_registries"] == ["docker.io", "ghcr.io"]
            refused = httpx.get(
                f"{node.url}/v2/quay.io/{image.name}/manifests/2.0", headers=ACCEPT, timeout=60
            )
            assert refused.status_code == 403
            error = refused.json()["errors"][0]
            assert (
                error["code"] == "DENIED" and "quay.io" in error["message"] and "\n" not in error["message"]
            )
            # The same upstream as ghcr.io, which the genesis lists, is served.
            served = httpx.get(
                f"{node.url}/v2/ghcr.io/{image.name}/manifests/2.0", headers=ACCEPT, timeout=60
            )
            assert served.status_code == 200 and served.headers["Docker-Content-Digest"] == image.top


@pytest.mark.parametrize(
    ("bad_registry", "says"),
    [("localhost:70000", "--registry"), ("myorg", "--registry"), ("ghcr.io/org", "--registry")],
)
def test_genesis_refuses_a_registry_that_is_no_host(tmp_path: Path, bad_registry: str, says: str) -> None:
    me = ok(run("id", "--home", str(tmp_path / "a"))).strip()
    result = run("genesis", "--authority", me, "--registry", bad_registry, "-o", str(tmp_path / "g.blk"),
                 "--home", str(tmp_path / "c"))  # fmt: skip
    assert result.returncode == 2 and says in result.stderr
    assert not (tmp_path / "g.blk").exists()


def daemon_fails(home: Path, *flags: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "pyrsia", "daemon", "--home", str(home), "--http-port", "0", "--p2p-port", "0",
         *flags],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode != 0
    return result.stderr


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ("{garbage", "is not a JSON document"),
        (json.dumps({"auths": {"quay.io": {"auth": "bm90LWJhc2U2NA"}}}), "auths.quay.io.auth is not base64"),
    ],
)
def test_a_garbage_config_json_stops_the_daemon_in_one_line(tmp_path: Path, content: str, says: str) -> None:
    config_json = tmp_path / "config.json"
    config_json.write_text(content)
    stderr = daemon_fails(tmp_path / "home", "--docker-config", str(config_json))
    errors = [line for line in stderr.splitlines() if "config.json" in line]
    assert len(errors) == 1 and says in errors[0], stderr
    assert "bm90LWJhc2U2NA" not in stderr


def test_a_login_kept_by_an_unknown_helper_is_one_line(tmp_path: Path) -> None:
    image = images.nested("team/tool", "2.0")
    login = ("bob", "helper-kept-pw")
    config_json = tmp_path / "config.json"
    config_json.write_text(
        json.dumps({"auths": {"quay.io": {}}, "credHelpers": {"quay.io": "secretservice"}})
    )
    with RegistryProcess(tmp_path / "upstream", login=login) as registry:
        images.push(registry.url, image, auth=login)
        home = tmp_path / "home"
        home.mkdir()
        (home / "pyrsia.toml").write_text(
            f'docker_config = "{config_json}"\n[upstreams."quay.io"]\nurl = "{registry.url}"\n'
        )
        with NodeProcess(home) as node:
            answer = httpx.get(
                f"{node.url}/v2/quay.io/{image.name}/manifests/2.0", headers=ACCEPT, timeout=60
            )
            assert answer.status_code == 502
            message = answer.json()["errors"][0]["message"]
            assert "docker-credential-secretservice" in message and "quay.io" in message
            assert "\n" not in message
