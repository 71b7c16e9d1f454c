"""The distribution token flow against a real `docker-registry` with `auth: token`.

A token server of the tests' own (`tests.support.token_server`, htpasswd-style logins,
RS256 tokens the registry trusts through its `rootcertbundle`) is the realm, on
127.0.0.1 at a port of its own. Two registries name it in their challenges: `quay.io`
on 127.0.0.1 behind a logging proxy (its realm is on its own host: the node may send it
the password), and `registry.corp.example` on 127.0.0.2 (its realm is on another host:
the node must not). Both logins are in the node's docker `config.json`. Checked: the
password reaches the realm only for the registry whose own host it is, with one scope
per repository; the registry sees bearer tokens and never the password; for the other
registry the realm sees no login at all and the node says in one line why and how to
allow it; a wrong password is one line naming the registry and not the password.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support import images
from tests.support.logging_proxy import LoggingProxy
from tests.support.node import NodeProcess
from tests.support.registry import RegistryProcess
from tests.support.token_server import TokenServer

pytestmark = pytest.mark.e2e

LOGIN = ("alice", "t0ken-flow-pw-4711")
WRONG = ("alice", "not-the-pw-0815")
CORP = "registry.corp.example"
TOOL = images.nested("team/tool", "2.0")
OTHER = images.one_layer("team/other", "1.1", {"other.txt": b"a second repository, a second scope\n"})
CORP_APP = images.one_layer("corp/app", "4.0", {"corp.txt": b"behind a realm on another host\n"})
ACCEPT = {"Accept": ", ".join([images.DOCKER_MANIFEST, images.OCI_MANIFEST, images.OCI_INDEX])}


def basic(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


def write_home(home: Path, quay_url: str, corp_url: str, login: tuple[str, str]) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    config_json = home / "docker-config.json"
    auth = basic(*login)
    config_json.write_text(json.dumps({"auths": {"quay.io": {"auth": auth}, CORP: {"auth": auth}}}))
    (home / "pyrsia.toml").write_text(
        f'docker_config = "{config_json}"\n'
        f'[upstreams."quay.io"]\nurl = "{quay_url}"\n'
        f'[upstreams."{CORP}"]\nurl = "{corp_url}"\n'
    )
    return home


@dataclass
class Setup:
    realm: TokenServer
    quay: RegistryProcess
    corp: RegistryProcess
    proxy: LoggingProxy
    node: NodeProcess


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    root = tmp_path_factory.mktemp("token")
    with ExitStack() as stack:
        realm = stack.enter_context(TokenServer(root / "realm", {LOGIN[0]: LOGIN[1]}, host="127.0.0.1"))
        quay = stack.enter_context(RegistryProcess(root / "quay", auth=realm.registry_auth()))
        corp = stack.enter_context(
            RegistryProcess(root / "corp", auth=realm.registry_auth(), host="127.0.0.2")
        )
        for registry, image in ((quay, TOOL), (quay, OTHER), (corp, CORP_APP)):
            images.push(registry.url, image, auth=realm.bearer("pusher", image.name))
        proxy = stack.enter_context(LoggingProxy(quay.url))
        node = stack.enter_context(NodeProcess(write_home(root / "node", proxy.url, corp.url, LOGIN)))
        yield Setup(realm=realm, quay=quay, corp=corp, proxy=proxy, node=node)


def pull(node: NodeProcess, host: str, image: images.Image) -> None:
    manifest = httpx.get(
        f"{node.url}/v2/{host}/{image.name}/manifests/{image.tag}", headers=ACCEPT, timeout=120
    )
    assert manifest.status_code == 200, manifest.text
    assert manifest.headers["Docker-Content-Digest"] == image.top
    for digest, data in image.blobs.items():
        blob = httpx.get(f"{node.url}/v2/{host}/{image.name}/blobs/{digest}", timeout=120)
        assert blob.status_code == 200 and blob.content == data


def test_the_password_goes_to_the_registry_s_own_realm_and_the_token_to_the_registry(setup: Setup) -> None:
    asked_before = len(setup.realm.requests)
    pull(setup.node, "quay.io", TOOL)
    pull(setup.node, "quay.io", OTHER)
    asked = setup.realm.requests[asked_before:]
    assert asked, "the node never asked the realm for a token"
    # The realm is on the registry's own host: the login went there, and it was right.
    assert all(a.user == LOGIN[0] and a.password_ok for a in asked), asked
    # One scope per request, one per repository.
    assert all(len(a.scopes) == 1 for a in asked), asked
    assert {a.scopes[0] for a in asked} == {f"repository:{TOOL.name}:pull", f"repository:{OTHER.name}:pull"}
    # The registry saw bearer tokens only: never the password, never Basic.
    seen = setup.proxy.requests
    sent = [r.headers["authorization"] for r in seen if "authorization" in r.headers]
    assert sent, "no token reached the registry"
    assert all(value.startswith("Bearer ") for value in sent), sent
    assert all(
        LOGIN[1] not in json.dumps(r.headers) and basic(*LOGIN) not in json.dumps(r.headers) for r in seen
    )
    output = setup.node.output()
    assert LOGIN[1] not in output and basic(*LOGIN) not in output


def test_a_realm_on_another_host_never_gets_the_password(setup: Setup) -> None:
    asked_before = len(setup.realm.requests)
    answer = httpx.get(
        f"{setup.node.url}/v2/{CORP}/{CORP_APP.name}/manifests/{CORP_APP.tag}", headers=ACCEPT, timeout=120
    )
    assert answer.status_code == 502, answer.text
    message = answer.json()["errors"][0]["message"]
    assert "\n" not in message
    assert CORP in message and "127.0.0.1" in message and "realm_hosts" in message
    asked = setup.realm.requests[asked_before:]
    assert asked and all(a.raw_authorization == "" and a.user is None for a in asked), asked
    assert {a.scopes for a in asked} == {(f"repository:{CORP_APP.name}:pull",)}
    assert LOGIN[1] not in answer.text and LOGIN[1] not in setup.node.output()


def test_a_wrong_password_at_the_realm_is_one_clear_line(setup: Setup, tmp_path: Path) -> None:
    with NodeProcess(write_home(tmp_path / "wrong", setup.proxy.url, setup.corp.url, WRONG)) as node:
        asked_before = len(setup.realm.requests)
        answer = httpx.get(
            f"{node.url}/v2/quay.io/{TOOL.name}/manifests/{TOOL.tag}", headers=ACCEPT, timeout=120
        )
        assert answer.status_code == 502, answer.text
        message = answer.json()["errors"][0]["message"]
        assert "quay.io" in message and "refused the credentials" in message and "\n" not in message
        assert WRONG[1] not in answer.text and WRONG[1] not in node.output()
        assert basic(*WRONG) not in node.output()
        refused = setup.realm.requests[asked_before:]
        assert refused and all(a.user == WRONG[0] and not a.password_ok for a in refused)
