"""Registries by host: names, docker config.json logins, where a login may go, the
`upstreams` tables, records naming their registry, and the genesis list."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import httpx
import pytest
from nacl.signing import SigningKey

from pyrsia import config
from pyrsia.artifacts.blobstore import BlobStore
from pyrsia.artifacts.docker import DockerArtifacts
from pyrsia.artifacts.records import RecordStore
from pyrsia.artifacts.vouch import MemoryArtifactLog
from pyrsia.errors import (
    ChainBroken,
    ConfigError,
    CredentialsInvalid,
    NameInvalid,
    RegistryRefused,
    RegistryUnknown,
    TxInvalid,
    UpstreamAuthFailed,
)
from pyrsia.formats import docker_config
from pyrsia.formats.manifest import ALL_TYPES
from pyrsia.formats.registry_host import DOCKER_IO, Qualified, qualify, split_key
from pyrsia.translog import codec
from pyrsia.translog.block import DEFAULT_REGISTRIES, BlockHeader
from pyrsia.translog.chain import Chain, genesis_block
from pyrsia.translog.chunks import CHUNK_BYTES
from pyrsia.translog.tx import ADD_ARTIFACT, AddArtifact, Transaction, sign
from pyrsia.upstream.credentials import load_docker_config
from pyrsia.upstream.registry import RegistryClient, RegistryClients
from tests.support import images
from tests.unit.test_docker_artifacts import Upstream

USER, PASSWORD = "alice", "pa55-w0rd-secret"
AUTH = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
MANIFEST = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": images.OCI_MANIFEST,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": f"sha256:{0:064x}",
            "size": 2,
        },
        "layers": [],
    }
).encode()


# --- names ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "ns", "expected"),
    [
        ("org/app", "ghcr.io", Qualified(registry="ghcr.io", name="org/app")),
        ("app", "ghcr.io", Qualified(registry="ghcr.io", name="app")),  # no library/ outside Docker Hub
        ("alpine", "docker.io", Qualified(registry=DOCKER_IO, name="library/alpine")),
        ("ghcr.io/org/app", None, Qualified(registry="ghcr.io", name="org/app")),
        ("docker.io/library/alpine", None, Qualified(registry=DOCKER_IO, name="library/alpine")),
        ("index.docker.io/alpine", None, Qualified(registry=DOCKER_IO, name="library/alpine")),
        ("localhost/app", None, Qualified(registry="localhost", name="app")),
        # Namespaces that are no host: Docker Hub.
        ("library/alpine", None, Qualified(registry=DOCKER_IO, name="library/alpine")),
        ("myorg/app", None, Qualified(registry=DOCKER_IO, name="myorg/app")),
        ("alpine", None, Qualified(registry=DOCKER_IO, name="library/alpine")),
    ],
)
def test_a_request_names_its_registry(path: str, ns: str | None, expected: Qualified) -> None:
    found = qualify(path, ns)
    assert found == expected
    assert split_key(found.key) == expected


def test_keys_keep_docker_hub_names_and_prefix_the_others() -> None:
    assert qualify("library/alpine", None).key == "library/alpine"
    assert qualify("org/app", "ghcr.io").key == "ghcr.io/org/app"
    assert qualify("org/app", "ghcr.io").key != qualify("org/app", "docker.io").key


@pytest.mark.parametrize("path", ["ghcr.io/Org/app", "ghcr.io/../x", "ghcr.io/", "org//app"])
def test_bad_names_are_refused(path: str) -> None:
    with pytest.raises(NameInvalid):
        qualify(path, None)


def test_a_docker_hub_name_cannot_pass_for_another_registry_s_key() -> None:
    with pytest.raises(NameInvalid, match="Docker Hub"):
        qualify("ghcr.io/org/app", "docker.io")
    with pytest.raises(NameInvalid):
        qualify("docker.io/ghcr.io/org/app", None)
    # Under another registry the host-like component is just part of the name.
    assert split_key(qualify("quay.io/x", "ghcr.io").key) == Qualified(registry="ghcr.io", name="quay.io/x")


# --- config.json ---------------------------------------------------------------------


def test_config_json_logins_by_host() -> None:
    doc = {
        "auths": {
            "quay.io": {"auth": AUTH},
            "https://index.docker.io/v1/": {"auth": AUTH},
            "http://127.0.0.1:5000": {"identitytoken": "refresh-me"},
            "ghcr.io": {},  # left by a helper login: no inline credential
        },
        "credHelpers": {"gcr.io": "gcloud"},
        "credsStore": "desktop",
    }
    found = docker_config.parse(json.dumps(doc).encode(), "/c/config.json")
    quay = found.for_host("quay.io")
    assert quay is not None and (quay.kind, quay.username, quay.secret) == ("basic", USER, PASSWORD)
    assert found.for_host("docker.io") == quay
    local = found.for_host("127.0.0.1:5000")
    assert local is not None and local.kind == "identity"
    assert found.for_host("ghcr.io") is None and found.helper_for("ghcr.io") == "desktop"
    assert found.helper_for("gcr.io") == "gcloud" and found.helper_for("quay.io") == ""
    assert PASSWORD not in repr(quay) and PASSWORD not in repr(found)


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b"{not json", "not a JSON document"),
        (b"[]", "not a JSON object"),
        (json.dumps({"auths": []}).encode(), "auths is not an object"),
        (json.dumps({"auths": {"quay.io": {"auth": "%%%"}}}).encode(), "auths.quay.io.auth is not base64"),
        (
            json.dumps({"auths": {"quay.io": {"auth": base64.b64encode(b"nocolon").decode()}}}).encode(),
            "user:password",
        ),
        (json.dumps({"credHelpers": {"quay.io": 5}}).encode(), "credHelpers.quay.io"),
    ],
)
def test_garbage_config_json_is_one_line_without_secrets(data: bytes, says: str) -> None:
    with pytest.raises(CredentialsInvalid) as caught:
        docker_config.parse(data, "/c/config.json")
    assert says in caught.value.message and "\n" not in caught.value.message
    assert "/c/config.json" in caught.value.message


def test_a_missing_config_json_means_no_logins(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    named = load_docker_config(str(tmp_path / "missing.json"))
    assert named.auths == {} and "missing.json does not exist" in caplog.text
    caplog.clear()
    default = load_docker_config("", environ={"DOCKER_CONFIG": str(tmp_path)})
    assert default.auths == {} and default.origin == str(tmp_path / "config.json") and caplog.text == ""
    unreadable = tmp_path / "dir.json"
    unreadable.mkdir()
    with pytest.raises(CredentialsInvalid, match="cannot read"):
        load_docker_config(str(unreadable))


# --- where a login goes ----------------------------------------------------------------


def _client(
    route: object, credential: docker_config.Credential | None, **kwargs: object
) -> tuple[RegistryClient, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return route(request)  # type: ignore[operator]

    client = RegistryClient(
        "https://reg.test",
        transport=httpx.MockTransport(handler),
        retries_max=0,
        registry="reg.test",
        credential=credential,
        **kwargs,  # type: ignore[arg-type]
    )
    return client, seen


BASIC = docker_config.Credential(kind="basic", username=USER, secret=PASSWORD, origin="/c/config.json")
BASIC_HEADER = "Basic " + AUTH


def _manifest() -> httpx.Response:
    return httpx.Response(200, content=MANIFEST, headers={"Content-Type": images.OCI_MANIFEST})


def test_basic_auth_is_answered_and_then_sent_up_front() -> None:
    def route(request: httpx.Request) -> httpx.Response:
        if request.headers.get("Authorization") != BASIC_HEADER:
            return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="r"'})
        return _manifest()

    client, seen = _client(route, BASIC)
    client.get_manifest("org/app", "1")
    client.get_manifest("org/app", "2")
    assert [r.headers.get("Authorization") for r in seen] == [None, BASIC_HEADER, BASIC_HEADER]


def test_a_wrong_password_is_one_line_naming_the_registry_not_the_password() -> None:
    client, seen = _client(
        lambda r: httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="r"'}), BASIC
    )
    with pytest.raises(UpstreamAuthFailed) as caught:
        client.get_manifest("org/app", "1")
    message = caught.value.message
    assert "reg.test" in message and "refused the credentials" in message and "/c/config.json" in message
    assert PASSWORD not in message and AUTH not in message and "\n" not in message
    assert len(seen) == 2  # asked once more with the login, not in a loop


def _token_route(realm: str, expect_auth: str | None) -> object:
    def route(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/token":
            assert request.headers.get("Authorization") == expect_auth
            return httpx.Response(200, json={"token": "tok-123", "expires_in": 300})
        if request.headers.get("Authorization") != "Bearer tok-123":
            challenge = f'Bearer realm="{realm}",service="reg.test",scope="repository:org/app:pull"'
            return httpx.Response(401, headers={"WWW-Authenticate": challenge})
        return _manifest()

    return route


def test_the_registry_s_own_realm_gets_its_login() -> None:
    client, seen = _client(_token_route("https://reg.test/token", BASIC_HEADER), BASIC)
    client.get_manifest("org/app", "1")
    assert [r.url.host for r in seen] == ["reg.test", "reg.test", "reg.test"]


def test_a_realm_on_another_host_is_asked_anonymously() -> None:
    client, seen = _client(_token_route("https://auth.elsewhere.test/token", None), BASIC)
    client.get_manifest("org/app", "1")
    token_request = next(r for r in seen if r.url.path == "/token")
    assert "authorization" not in token_request.headers and token_request.url.host == "auth.elsewhere.test"


def test_a_login_withheld_from_a_foreign_realm_says_how_to_allow_it() -> None:
    def route(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/token":
            return httpx.Response(401)
        challenge = 'Bearer realm="https://auth.elsewhere.test/token",service="reg.test"'
        return httpx.Response(401, headers={"WWW-Authenticate": challenge})

    client, seen = _client(route, BASIC)
    with pytest.raises(UpstreamAuthFailed, match=r"upstreams\.reg\.test\.realm_hosts") as caught:
        client.get_manifest("org/app", "1")
    assert "auth.elsewhere.test" in caught.value.message and PASSWORD not in caught.value.message
    assert all("authorization" not in r.headers for r in seen)


def test_a_realm_host_listed_for_the_registry_gets_its_login() -> None:
    route = _token_route("https://auth.elsewhere.test/token", BASIC_HEADER)
    client, _ = _client(route, BASIC, realm_hosts=("auth.elsewhere.test",))
    client.get_manifest("org/app", "1")


def test_a_plain_http_realm_never_gets_the_login_of_an_https_registry() -> None:
    client, _ = _client(_token_route("http://reg.test/token", None), BASIC)
    client.get_manifest("org/app", "1")


def test_an_identity_token_is_exchanged_at_the_realm() -> None:
    identity = docker_config.Credential(kind="identity", secret="refresh-xyz", origin="/c/config.json")
    posted: list[bytes] = []

    def route(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/token":
            assert request.method == "POST" and "authorization" not in request.headers
            posted.append(request.content)
            return httpx.Response(200, json={"access_token": "tok-123"})
        if request.headers.get("Authorization") != "Bearer tok-123":
            return httpx.Response(401, headers={"WWW-Authenticate": 'Bearer realm="https://reg.test/token"'})
        return _manifest()

    client, _ = _client(route, identity)
    client.get_manifest("org/app", "1")
    form = dict(httpx.QueryParams(posted[0].decode()))
    assert form["grant_type"] == "refresh_token" and form["refresh_token"] == "refresh-xyz"
    assert form["scope"] == "repository:org/app:pull"


def test_a_token_file_goes_to_the_registry_and_not_across_a_redirect() -> None:
    bearer = docker_config.Credential(kind="bearer", secret="file-token", origin="/t")

    def route(request: httpx.Request) -> httpx.Response:
        if request.url.host == "cdn.test":
            return httpx.Response(200, content=b"x")
        assert request.headers.get("Authorization") == "Bearer file-token"
        if "/blobs/" in request.url.path:
            return httpx.Response(307, headers={"Location": "https://cdn.test/blob"})
        return _manifest()

    client, seen = _client(route, bearer)
    client.get_manifest("org/app", "1")
    assert seen[0].headers["Authorization"] == "Bearer file-token"


def test_a_login_kept_by_a_helper_is_one_line_naming_it() -> None:
    client, _ = _client(lambda r: httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="r"'}), None,
                        helper="osxkeychain")  # fmt: skip
    with pytest.raises(UpstreamAuthFailed, match="docker-credential-osxkeychain"):
        client.get_manifest("org/app", "1")


# --- the upstreams tables ----------------------------------------------------------------


def test_upstreams_tables_add_and_adjust_registries(tmp_path: Path) -> None:
    (tmp_path / "pyrsia.toml").write_text(
        'http_port = 7999\n[upstreams."registry.corp.example"]\nurl = "https://reg.corp.example:5443/"\n'
        '[upstreams."quay.io"]\ntoken_file = "/etc/pyrsia/quay.token"\n'
    )
    cfg = config.load(tmp_path, environ={})
    registries = cfg.docker_registries
    assert registries["registry.corp.example"].url == "https://reg.corp.example:5443"
    assert registries["quay.io"].url == "https://quay.io" and registries["quay.io"].token_file
    assert registries[DOCKER_IO].url == cfg.docker_upstream
    assert registries[DOCKER_IO].realm_hosts == ("auth.docker.io",)
    assert {"ghcr.io", "gcr.io", "registry.k8s.io"} <= set(registries)
    # Setting a key rewrites the file and keeps the tables.
    config.set_in_file(tmp_path, "http_port", "7998")
    again = config.load(tmp_path, environ={})
    assert again.http_port == 7998 and again.upstreams == cfg.upstreams


@pytest.mark.parametrize(
    ("table", "says"),
    [
        ('[upstreams."myorg"]\nurl = "https://x.test"\n', "not a registry host"),
        ('[upstreams."localhost:99999"]\nurl = "https://x.test"\n', "a port if any"),
        ('[upstreams."reg.example"]\n', "needs url"),
        ('[upstreams."reg.example"]\nurl = "ftp://x"\n', "http"),
        ('[upstreams."reg.example"]\nurl = "https://x.test"\npassword = "x"\n', "unknown key"),
        ('[upstreams."docker.io"]\nurl = "https://x.test"\n', "docker_upstream"),
        ("upstreams = 3\n", "tables"),
    ],
)
def test_bad_upstreams_tables_are_one_line(tmp_path: Path, table: str, says: str) -> None:
    (tmp_path / "pyrsia.toml").write_text(table)
    with pytest.raises(ConfigError, match=says):
        config.load(tmp_path, environ={})


# --- records name the registry ----------------------------------------------------------


def _artifact(**extra: str) -> AddArtifact:
    return AddArtifact(
        package_type="docker", package_id="org/app:1", path="/v2/org/app/manifests/1",
        digest=f"sha256:{1:064x}", size=1, chunk_size=CHUNK_BYTES, chunk_root=bytes(32),
        media_type="x", source="https://reg.test", author="", **extra,
    )  # fmt: skip


def test_a_record_without_a_registry_keeps_its_encoding_and_means_docker_io() -> None:
    old = _artifact()
    assert "registry" not in codec.decode(old.encoded())
    assert AddArtifact.from_map(codec.decode(old.encoded())) == old
    assert old.registry_or_default == DOCKER_IO
    named = _artifact(registry="ghcr.io")
    assert codec.decode(named.encoded())["registry"] == "ghcr.io"
    assert AddArtifact.from_map(codec.decode(named.encoded())).registry == "ghcr.io"
    with pytest.raises(TxInvalid):
        _artifact(registry="x" * 300)


def _two_registries(
    tmp_path: Path, agreed: tuple[str, ...] = ("docker.io", "ghcr.io")
) -> tuple[DockerArtifacts, MemoryArtifactLog, images.Image]:
    image = images.three_layer("org/app", "1.0")
    clients = {
        host: RegistryClient(f"https://{host}", transport=httpx.MockTransport(Upstream(image)), retries_max=0)
        for host in ("docker.io", "ghcr.io", "quay.io")
    }
    translog = MemoryArtifactLog()
    artifacts = DockerArtifacts(
        BlobStore(tmp_path / "blobs"), translog, RegistryClients(clients), RecordStore(tmp_path / "refs"),
        agreed=lambda: agreed,
    )  # fmt: skip
    return artifacts, translog, image


def test_the_same_name_in_two_registries_is_two_packages(tmp_path: Path) -> None:
    artifacts, translog, _ = _two_registries(tmp_path)
    ghcr = artifacts.resolve("org/app", "ghcr.io")
    artifacts.manifest(ghcr, "1.0", ALL_TYPES)
    artifacts.manifest(artifacts.resolve("org/app", None), "1.0", ALL_TYPES)
    by_registry = {(v.registry, v.package_id, v.path.split("/manifests/")[0]) for _, v in translog.records
                   if "/manifests/" in v.path}  # fmt: skip
    assert by_registry == {
        ("ghcr.io", "ghcr.io/org/app:1.0", "/v2/ghcr.io/org/app"),
        ("docker.io", "org/app:1.0", "/v2/org/app"),
    }
    assert translog.blocks == 2  # the docker.io copy was not taken for the ghcr.io one


def test_a_registry_outside_the_genesis_list_is_refused_in_one_line(tmp_path: Path) -> None:
    artifacts, translog, _ = _two_registries(tmp_path)
    quay = artifacts.resolve("org/app", "quay.io")  # it has an upstream here, so it resolves
    with pytest.raises(RegistryRefused) as caught:
        artifacts.manifest(quay, "1.0", ALL_TYPES)
    assert "quay.io" in caught.value.message and "\n" not in caught.value.message
    assert translog.records == []
    with pytest.raises(RegistryUnknown, match=r"nowhere\.example"):
        artifacts.resolve("org/app", "nowhere.example")


def test_authorities_verify_against_the_registry_the_record_names(tmp_path: Path) -> None:
    source, translog, _ = _two_registries(tmp_path / "a")
    source.manifest(source.resolve("org/app", "ghcr.io"), "1.0", ALL_TYPES)
    vouched = translog.committed("docker", "/v2/ghcr.io/org/app/manifests/1.0")
    assert vouched is not None
    record = AddArtifact(
        package_type="docker", package_id=vouched.package_id, path=vouched.path, digest=vouched.digest,
        size=vouched.size, chunk_size=CHUNK_BYTES, chunk_root=vouched.chunk_root,
        media_type=vouched.media_type, source="https://ghcr.io", author="", registry="ghcr.io",
    )  # fmt: skip
    verifier, _, _ = _two_registries(tmp_path / "b")
    assert verifier.verify_record(record) is None
    mismatched = AddArtifact.from_map({**record.to_map(), "registry": "quay.io"})
    assert "not in registry quay.io" in (verifier.verify_record(mismatched) or "")
    strict, _, _ = _two_registries(tmp_path / "c", agreed=("docker.io",))
    assert "not one this network vouches for" in (strict.verify_record(record) or "")


# --- the genesis list ----------------------------------------------------------------------


def test_a_genesis_names_its_registries_and_no_later_block_may() -> None:
    key = SigningKey.generate()
    plain = genesis_block(key, 1000)
    assert "registries" not in plain.header.to_map()
    chain = Chain()
    chain.apply(plain)
    assert chain.registries == DEFAULT_REGISTRIES
    listed = genesis_block(key, 1000, registries=["quay.io", "docker.io", "registry.corp.example"])
    assert listed.header.registries == ("docker.io", "quay.io", "registry.corp.example")
    decoded = BlockHeader.from_map(codec.decode(codec.encode(listed.header.to_map())))
    assert decoded == listed.header and decoded.hash == listed.header.hash
    chain = Chain()
    chain.apply(listed)
    assert chain.registries == ("docker.io", "quay.io", "registry.corp.example")
    with pytest.raises(TxInvalid):
        BlockHeader.from_map({**listed.header.to_map(), "registries": ["b.io", "a.io"]})
    with pytest.raises(TxInvalid):
        BlockHeader.from_map({**listed.header.to_map(), "registries": ["Not A Host"]})
    later = chain.propose_certified(_later_txs(key), 1001, key)
    tampered = type(later)(
        header=_with(later.header, registries=("evil.example",)),
        transactions=later.transactions,
        certificate=later.certificate,
    )
    with pytest.raises(ChainBroken, match="only a genesis"):
        chain.apply(tampered, verify_signatures=False, certified=False)


def _later_txs(key: SigningKey) -> list[Transaction]:
    return [sign(key, type=ADD_ARTIFACT, payload=_artifact(registry="quay.io"), time=1001, nonce=1)]


def _with(header: BlockHeader, **changes: object) -> BlockHeader:
    doc = {**header.to_map(), **changes}
    return BlockHeader.from_map({k: list(v) if isinstance(v, tuple) else v for k, v in doc.items()})
