"""Registries besides Docker Hub, one behind a login and one named by host:port, through
one node and then over p2p.

Three CNCF docker-registry upstreams are configured for node A: `ghcr.io` (anonymous,
behind a logging proxy that records every request's headers), `quay.io` (htpasswd
basic auth; the login is in a docker `config.json` under `quay.io`) and a registry
named by its host and port (`localhost:PORT`, `[upstreams."localhost:PORT"]`). podman
pulls each by its ordinary name after `pyrsia setup podman` made the node each
registry's mirror in its `registries.conf`, and containerd's `ctr` with the
`hosts.toml` files `pyrsia setup containerd` wrote (one directory per registry, named
`host:port` for the third), which sends `?ns=HOST`. Checked: every digest is the
upstream's; the login reached the second upstream and nothing carrying a credential
reached the first; the log records name their registry, and `pyrsia log search
--registry` filters by it; a wrong password is one line that names the registry and not
the password; a second node gets all three images over p2p once the upstreams are gone;
and the bad names (an unknown `?ns=`, an unknown host as first path component, a
namespace that only looks like one) get the answers they should.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest

from pyrsia.formats.registry_host import path_component
from tests.e2e.test_registry_clients import assert_upstream_down, podman_env, run
from tests.integration.test_p2p_network import eventually, height
from tests.support import images
from tests.support.cli import PYRSIA, ok
from tests.support.containerd import Containerd
from tests.support.logging_proxy import LoggingProxy
from tests.support.node import NodeProcess
from tests.support.registry import RegistryProcess

pytestmark = pytest.mark.e2e

GHCR_IMAGE = images.three_layer("org/app", "1.0")
QUAY_IMAGE = images.nested("team/tool", "2.0")
PORT_IMAGE = images.one_layer("local/thing", "3.0", {"port.txt": b"from a registry named by host:port\n"})
LOGIN = ("alice", "s3cret-pw-4711")
WRONG = ("alice", "not-the-pw-0815")
ACCEPT = {"Accept": ", ".join([images.DOCKER_MANIFEST, images.OCI_MANIFEST, images.OCI_INDEX])}


def docker_config(path: Path, user: str, password: str) -> Path:
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    path.write_text(json.dumps({"auths": {"quay.io": {"auth": auth}}}))
    return path


def write_toml(home: Path, ghcr_url: str, quay_url: str, config_json: Path, *more: tuple[str, str]) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "pyrsia.toml").write_text(
        f'docker_config = "{config_json}"\n'
        f'[upstreams."ghcr.io"]\nurl = "{ghcr_url}"\n'
        f'[upstreams."quay.io"]\nurl = "{quay_url}"\n'
        + "".join(f'[upstreams."{host}"]\nurl = "{url}"\n' for host, url in more)
    )


@dataclass
class Setup:
    ghcr: RegistryProcess
    quay: RegistryProcess
    port: RegistryProcess  # named by host:port
    proxy: LoggingProxy
    node: NodeProcess
    root: Path

    @property
    def port_host(self) -> str:
        return f"localhost:{self.port.port}"

    def images(self) -> tuple[tuple[str, images.Image], ...]:
        return (("ghcr.io", GHCR_IMAGE), ("quay.io", QUAY_IMAGE), (self.port_host, PORT_IMAGE))


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    root = tmp_path_factory.mktemp("registries")
    with ExitStack() as stack:
        ghcr = stack.enter_context(RegistryProcess(root / "ghcr"))
        quay = stack.enter_context(RegistryProcess(root / "quay", login=LOGIN))
        port = stack.enter_context(RegistryProcess(root / "port"))
        images.push(ghcr.url, GHCR_IMAGE)
        images.push(quay.url, QUAY_IMAGE, auth=LOGIN)
        images.push(port.url, PORT_IMAGE)
        proxy = stack.enter_context(LoggingProxy(ghcr.url))
        config_json = docker_config(root / "config.json", *LOGIN)
        write_toml(root / "a", proxy.url, quay.url, config_json, (f"localhost:{port.port}", port.url))
        node = stack.enter_context(NodeProcess(root / "a"))
        yield Setup(ghcr=ghcr, quay=quay, port=port, proxy=proxy, node=node, root=root)


def manifest_digest(node: NodeProcess, path: str) -> str:
    response = httpx.get(f"{node.url}{path}", headers=ACCEPT, timeout=120)
    assert response.status_code == 200, response.text
    return response.headers["Docker-Content-Digest"]


def pyrsia_setup(tool: str, backups: Path, *args: str, env: dict[str, str] | None = None) -> str:
    """`pyrsia setup TOOL ARGS…`; what it said on stderr."""
    result = subprocess.run(
        [*PYRSIA, "setup", tool, *args, "--backup-dir", str(backups)],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, **(env or {}), "XDG_CONFIG_HOME": str(backups / "xdg")},
    )  # fmt: skip
    ok(result)
    return result.stderr


def test_podman_pulls_every_registry_by_its_name_after_pyrsia_setup_podman(
    setup: Setup, tmp_path: Path
) -> None:
    env = podman_env(tmp_path / "podman", setup.node)
    conf = Path(env["CONTAINERS_REGISTRIES_CONF"])
    original = conf.read_bytes()
    registries = [arg for host, _ in setup.images() for arg in ("-r", host)]
    said = pyrsia_setup(
        "podman", tmp_path / "backups", *registries, "--config-path", str(conf), "--node", setup.node.url
    )
    assert f"wrote {conf}" in said
    for host, image in setup.images():
        reference = f"{host}/{image.reference}"
        run("podman", "pull", reference, env=env, timeout_s=300)
        digest = run("podman", "image", "inspect", "--format", "{{.Digest}}", reference, env=env).strip()
        assert digest == image.top
    # The mirror requests named the registry as a path component (a port after `--`).
    log = setup.node.output()
    for host, image in setup.images():
        assert f"/v2/{path_component(host)}/{image.name}/manifests/" in log
    pyrsia_setup("podman", tmp_path / "backups", "--undo")
    assert conf.read_bytes() == original


@pytest.mark.skipif(shutil.which("ctr") is None, reason="containerd is not installed")
def test_ctr_pulls_every_registry_with_hosts_toml_from_pyrsia_setup(setup: Setup, tmp_path: Path) -> None:
    with Containerd() as containerd:
        registries = [arg for host, _ in setup.images() for arg in ("-r", host)]
        pyrsia_setup(
            "containerd", tmp_path / "backups", *registries, "--node", setup.node.url,
            "--containerd-config", str(containerd.config_path), "--config-path", str(containerd.hosts_dir),
        )  # fmt: skip
        # containerd's directory for a registry with a port is named `host:port` (docs/hosts.md).
        written = sorted(p.parent.name for p in containerd.hosts_dir.glob("*/hosts.toml"))
        assert written == sorted(host for host, _ in setup.images())
        for host, image in setup.images():
            reference = f"{host}/{image.reference}"
            containerd.pull(reference)
            assert containerd.images()[reference].digest == image.top
            assert set(image.layers_of(image.top)) <= set(containerd.content())
    log = setup.node.output()
    for host, image in setup.images():
        # containerd escapes the query (`ns=localhost%3A5000`).
        assert f"/v2/{image.name}/manifests/{image.tag}?{urlencode({'ns': host})}" in log


def test_the_login_reaches_only_its_own_registry(setup: Setup) -> None:
    # Both names resolve, by path and by ?ns=, to the upstreams' digests.
    assert manifest_digest(setup.node, f"/v2/ghcr.io/{GHCR_IMAGE.name}/manifests/1.0") == GHCR_IMAGE.top
    assert manifest_digest(setup.node, f"/v2/{GHCR_IMAGE.name}/manifests/1.0?ns=ghcr.io") == GHCR_IMAGE.top
    assert manifest_digest(setup.node, f"/v2/quay.io/{QUAY_IMAGE.name}/manifests/2.0") == QUAY_IMAGE.top
    for digest, data in QUAY_IMAGE.blobs.items():
        served = httpx.get(f"{setup.node.url}/v2/quay.io/{QUAY_IMAGE.name}/blobs/{digest}", timeout=60)
        assert served.status_code == 200 and served.content == data
    seen = setup.proxy.requests
    assert seen, "nothing reached the ghcr.io upstream through its proxy"
    assert all("authorization" not in r.headers for r in seen), [r.headers for r in seen]
    secret = base64.b64encode(f"{LOGIN[0]}:{LOGIN[1]}".encode()).decode()
    assert secret not in setup.node.output() and LOGIN[1] not in setup.node.output()


def test_records_name_their_registry(setup: Setup) -> None:
    for host, image in setup.images():
        manifest_digest(setup.node, f"/v2/{host}/{image.name}/manifests/{image.tag}")
    for host, image in setup.images():
        found = httpx.get(f"{setup.node.url}/api/v1/log/search", params={"registry": host}, timeout=30).json()
        ids = {r["package_id"] for r in found["results"]}
        assert f"{host}/{image.name}:{image.tag}" in ids, found
        assert all(r["registry"] == host for r in found["results"])
        assert all(r["path"].startswith(f"/v2/{host}/") for r in found["results"])
        assert all(LOGIN[1] not in json.dumps(r) for r in found["results"])
    cli = subprocess.run(
        [sys.executable, "-m", "pyrsia", "log", "search", "--registry", "quay.io", "--json",
         "--node", setup.node.url],
        capture_output=True, text=True, timeout=60, env={**os.environ},
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    shown = json.loads(cli.stdout)
    assert shown and {r["registry"] for r in shown} == {"quay.io"}
    image = f"quay.io/{QUAY_IMAGE.reference}"
    inspected = subprocess.run(
        [sys.executable, "-m", "pyrsia", "inspect-log", "docker", "--image", image,
         "--fields", "registry,package_id", "--node", setup.node.url],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert inspected.returncode == 0, inspected.stderr
    assert {r["registry"] for r in json.loads(inspected.stdout)} == {"quay.io"}


def test_pyrsia_pull_image_takes_a_registry_host(setup: Setup, tmp_path: Path) -> None:
    for host, image in (("ghcr.io", GHCR_IMAGE), (setup.port_host, PORT_IMAGE)):
        result = subprocess.run(
            [sys.executable, "-m", "pyrsia", "pull", "image", f"{host}/{image.reference}",
             "-o", str(tmp_path / host), "--node", setup.node.url, "--json"],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["manifest_digest"] == image.top
        assert f"/v2/{host}/{image.name}/manifests/{image.tag}" in setup.node.output()


def test_bad_names_get_one_clear_answer(setup: Setup) -> None:
    url = setup.node.url
    unknown_ns = httpx.get(f"{url}/v2/org/app/manifests/1.0?ns=unknown.example", headers=ACCEPT, timeout=30)
    assert unknown_ns.status_code == 404
    error = unknown_ns.json()["errors"][0]
    assert error["code"] == "NAME_UNKNOWN" and "unknown.example" in error["message"]
    assert "\n" not in error["message"]
    unknown_host = httpx.get(f"{url}/v2/registry.corp.example/x/manifests/1", headers=ACCEPT, timeout=30)
    assert unknown_host.status_code == 404 and "registry.corp.example" in unknown_host.text
    # A namespace that is no host goes to Docker Hub (unreachable offline: an upstream
    # error naming Docker Hub's URL, not a registry refusal).
    for namespace in ("library/app", "myorg/app"):
        answer = httpx.get(f"{url}/v2/{namespace}/manifests/1.0", headers=ACCEPT, timeout=120)
        assert answer.status_code in (502, 503, 504), answer.text
        assert "registry-1.docker.io" in answer.text


def test_a_wrong_password_is_one_clear_line(setup: Setup, tmp_path: Path) -> None:
    home = tmp_path / "wrong"
    write_toml(home, setup.proxy.url, setup.quay.url, docker_config(tmp_path / "config.json", *WRONG))
    with NodeProcess(home) as node:
        answer = httpx.get(
            f"{node.url}/v2/quay.io/{QUAY_IMAGE.name}/manifests/2.0", headers=ACCEPT, timeout=60
        )
        assert answer.status_code == 502
        message = answer.json()["errors"][0]["message"]
        assert "quay.io" in message and "refused the credentials" in message and "\n" not in message
        assert WRONG[1] not in answer.text and WRONG[1] not in node.output()


def test_a_second_node_gets_all_over_p2p_with_the_upstreams_gone(setup: Setup, tmp_path: Path) -> None:
    a = setup.node
    for host, image in setup.images():
        assert manifest_digest(a, f"/v2/{host}/{image.name}/manifests/{image.tag}") == image.top
        for digest in image.blobs:
            assert httpx.get(f"{a.url}/v2/{host}/{image.name}/blobs/{digest}", timeout=60).status_code == 200
    with NodeProcess(tmp_path / "b", "--bootstrap", a.p2p_address) as b:
        eventually(lambda: height(b) == height(a), "b synced the log")
        setup.proxy.stop()
        setup.ghcr.stop()
        setup.quay.stop()
        setup.port.stop()
        for upstream in (setup.ghcr, setup.quay, setup.port):
            assert_upstream_down(upstream)
        for host, image in setup.images():
            assert manifest_digest(b, f"/v2/{host}/{image.name}/manifests/{image.tag}") == image.top
            for digest, data in image.blobs.items():
                served = httpx.get(f"{b.url}/v2/{host}/{image.name}/blobs/{digest}", timeout=120)
                assert served.status_code == 200 and served.content == data
        # The same name in Docker Hub's namespace is another repository: not served from these.
        other = httpx.get(f"{b.url}/v2/{GHCR_IMAGE.name}/manifests/1.0", headers=ACCEPT, timeout=120)
        assert other.status_code != 200
