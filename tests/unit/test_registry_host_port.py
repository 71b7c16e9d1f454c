"""Registry hosts with a port (`localhost:5000`, `registry.example.com:5443`): names,
`?ns=`, `[upstreams."host:port"]`, setup files and records."""

from __future__ import annotations

import tomllib
from pathlib import Path

import httpx
import pytest

from pyrsia import config
from pyrsia.artifacts.blobstore import BlobStore
from pyrsia.artifacts.docker import DockerArtifacts
from pyrsia.artifacts.records import RecordStore
from pyrsia.artifacts.vouch import MemoryArtifactLog
from pyrsia.errors import ConfigError, NameInvalid, RegistryUnknown, TxInvalid
from pyrsia.formats.manifest import ALL_TYPES
from pyrsia.formats.reference import parse_image_reference
from pyrsia.formats.registry_host import Qualified, check_host, path_component, qualify, split_key
from pyrsia.setup import containerd, podman
from pyrsia.setup.plan import node_of, registry_of
from pyrsia.translog.block import check_registries
from pyrsia.translog.chunks import CHUNK_BYTES
from pyrsia.translog.tx import AddArtifact
from pyrsia.upstream.registry import RegistryClient, RegistryClients
from tests.support import images
from tests.unit.test_docker_artifacts import Upstream

LOCAL = "localhost:5000"
CORP = "registry.example.com:5443"


@pytest.mark.parametrize(
    ("path", "ns", "expected"),
    [
        (f"{LOCAL}/app", None, Qualified(registry=LOCAL, name="app")),
        (f"{CORP}/org/app", None, Qualified(registry=CORP, name="org/app")),
        ("org/app", CORP, Qualified(registry=CORP, name="org/app")),
        ("app", LOCAL, Qualified(registry=LOCAL, name="app")),  # no library/ outside Docker Hub
        ("127.0.0.1:5000/team/tool", None, Qualified(registry="127.0.0.1:5000", name="team/tool")),
        (f"{CORP.upper()}/org/app", None, Qualified(registry=CORP, name="org/app")),
        # Where `:` cannot be written (podman's mirror location): the port after `--`.
        ("localhost--5000/app", None, Qualified(registry=LOCAL, name="app")),
        ("registry.example.com--5443/org/app", None, Qualified(registry=CORP, name="org/app")),
    ],
)
def test_a_host_with_a_port_names_its_registry(path: str, ns: str | None, expected: Qualified) -> None:
    found = qualify(path, ns)
    assert found == expected
    assert found.key == f"{expected.registry}/{expected.name}"
    assert split_key(found.key) == expected


@pytest.mark.parametrize("path", ["myorg--5000/app", "a--b/app", "team--1/x/y"])
def test_a_port_after_a_namespace_that_is_no_host_stays_docker_hub(path: str) -> None:
    assert qualify(path, None) == Qualified(registry="docker.io", name=path)


def test_path_components_round_trip() -> None:
    for registry in (LOCAL, CORP, "ghcr.io"):
        assert qualify(f"{path_component(registry)}/org/app", None).registry == registry


def test_the_same_host_on_another_port_is_another_registry() -> None:
    assert qualify("org/app", "registry.example.com").key != qualify("org/app", CORP).key
    assert qualify("org/app", "localhost:5000").key != qualify("org/app", "localhost:5001").key


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"{CORP}/org/app:1.0", (f"{CORP}/org/app", "1.0")),
        (f"{LOCAL}/app", (f"{LOCAL}/app", "latest")),
        (f"{LOCAL}/app:5000", (f"{LOCAL}/app", "5000")),  # the tag follows the last `/`
        (f"{LOCAL}/app@sha256:{'a' * 64}", (f"{LOCAL}/app", f"sha256:{'a' * 64}")),
        ("ghcr.io/org/app:1.0", ("ghcr.io/org/app", "1.0")),
        ("alpine", ("library/alpine", "latest")),
    ],
)
def test_image_references_with_a_port(text: str, expected: tuple[str, str]) -> None:
    assert parse_image_reference(text) == expected


@pytest.mark.parametrize(
    "text", [f"{LOCAL}/App:1", "localhost:/app", "localhost:123456/app", f"{LOCAL}/", f"{LOCAL}/../x"]
)
def test_bad_references_with_a_port_are_refused(text: str) -> None:
    with pytest.raises(NameInvalid):
        parse_image_reference(text)


@pytest.mark.parametrize(
    "host", ["localhost:0", "localhost:65536", "localhost:", "a:b", "reg.example:5x", "x:1:2"]
)
def test_bad_ports_are_refused(host: str) -> None:
    with pytest.raises(NameInvalid):
        check_host(host)


def test_upstreams_tables_for_hosts_with_a_port(tmp_path: Path) -> None:
    (tmp_path / "pyrsia.toml").write_text(
        f'[upstreams."{LOCAL}"]\nurl = "http://127.0.0.1:5000"\n'
        f'[upstreams."{CORP}"]\nurl = "https://{CORP}"\n'
    )
    registries = config.load(tmp_path, environ={}).docker_registries
    assert registries[LOCAL].url == "http://127.0.0.1:5000"
    assert registries[CORP].url == f"https://{CORP}"
    (tmp_path / "pyrsia.toml").write_text('[upstreams."localhost:99999"]\nurl = "http://x.test"\n')
    with pytest.raises(ConfigError, match="a port if any"):
        config.load(tmp_path, environ={})


def _artifacts(tmp_path: Path) -> tuple[DockerArtifacts, MemoryArtifactLog, images.Image]:
    image = images.three_layer("org/app", "1.0")
    clients = {
        CORP: RegistryClient(
            f"https://{CORP}", transport=httpx.MockTransport(Upstream(image)), retries_max=0
        ),
        "docker.io": RegistryClient(
            "https://docker.test", transport=httpx.MockTransport(Upstream(image)), retries_max=0
        ),
    }
    translog = MemoryArtifactLog()
    artifacts = DockerArtifacts(
        BlobStore(tmp_path / "blobs"), translog, RegistryClients(clients), RecordStore(tmp_path / "refs")
    )
    return artifacts, translog, image


def test_records_of_a_registry_with_a_port_name_it(tmp_path: Path) -> None:
    artifacts, translog, image = _artifacts(tmp_path)
    for key in (artifacts.resolve(f"{CORP}/org/app", None), artifacts.resolve("org/app", CORP)):
        assert key == f"{CORP}/org/app"
        assert str(artifacts.manifest(key, "1.0", ALL_TYPES).digest) == image.top
    tops = [v for _, v in translog.records if v.path.endswith("/manifests/1.0")]
    assert [(v.registry, v.package_id, v.path) for v in tops] == [
        (CORP, f"{CORP}/org/app:1.0", f"/v2/{CORP}/org/app/manifests/1.0")
    ]
    # A record with a port survives its encoding and is verified against that registry.
    vouched = tops[0]
    record = AddArtifact(
        package_type="docker", package_id=vouched.package_id, path=vouched.path, digest=vouched.digest,
        size=vouched.size, chunk_size=CHUNK_BYTES, chunk_root=vouched.chunk_root,
        media_type=vouched.media_type, source=f"https://{CORP}", author="", registry=CORP,
    )  # fmt: skip
    assert AddArtifact.from_map(record.to_map()) == record
    verifier, _, _ = _artifacts(tmp_path / "b")
    assert verifier.verify_record(record) is None
    assert artifacts.repositories() == [f"{CORP}/org/app"]
    with pytest.raises(RegistryUnknown, match="localhost:5001"):
        artifacts.resolve("org/app", "localhost:5001")


def test_setup_files_for_a_registry_with_a_port() -> None:
    node = node_of("http://127.0.0.1:7888")
    assert registry_of(LOCAL) == LOCAL and registry_of(CORP.upper()) == CORP
    # containerd (docs/hosts.md): certs.d/<host:port>/hosts.toml, server https://<host:port>
    hosts = tomllib.loads(containerd.hosts_toml(LOCAL, node))
    assert hosts["server"] == f"https://{LOCAL}"
    assert hosts["host"]["http://127.0.0.1:7888"]["capabilities"] == ["pull", "resolve"]
    # podman: prefix and location are the registry as clients write it; the mirror names it.
    conf = tomllib.loads(podman.with_mirrors(None, [CORP], node, "registries.conf"))
    (entry,) = conf["registry"]
    assert entry["prefix"] == CORP and entry["location"] == CORP
    # A mirror location must stay a valid reference, whose path has no `:`.
    assert entry["mirror"] == [{"location": "127.0.0.1:7888/registry.example.com--5443", "insecure": True}]


def test_a_genesis_may_list_a_registry_with_a_port() -> None:
    listed = tuple(sorted((CORP, LOCAL, "docker.io")))
    assert check_registries(listed) == listed
    for bad in ("localhost:0", "localhost:65536", "Localhost:5000", "localhost:", "x:1:2"):
        with pytest.raises(TxInvalid):
            check_registries((bad,))
