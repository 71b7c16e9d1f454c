"""The pure rewrites behind `pyrsia setup`: real default files in, the files each tool reads out.

Fixtures are the defaults of this machine's packages (containers-common's
registries.conf, Debian's and `containerd config default`'s config.toml, Maven's
settings.xml). Each rewrite is parsed back as its tool would read it, and a second
application must change nothing.
"""

from __future__ import annotations

import json
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from pyrsia.errors import ConfigError
from pyrsia.setup import containerd, docker, maven, podman
from pyrsia.setup.plan import FileChange, diff, node_of, registry_of

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "setup"
NODE = node_of("http://127.0.0.1:7888")
OTHER = node_of("https://pyrsia.example.com:8443/")
NS = "{http://maven.apache.org/SETTINGS/1.0.0}"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


# ---- node URL and registry names ---------------------------------------------------------------


def test_node_urls_are_normalised_and_bad_ones_refused() -> None:
    assert OTHER.url == "https://pyrsia.example.com:8443" and OTHER.hostport == "pyrsia.example.com:8443"
    assert NODE.insecure and not OTHER.insecure
    for bad in (
        "127.0.0.1:7888",
        "ftp://a",
        "http://a/maven2",
        "http://a:99999",
        "http://u:p@a",
        "http://a?x",
    ):
        with pytest.raises(ConfigError, match="--node"):
            node_of(bad)


def test_registry_names() -> None:
    assert registry_of("Docker.IO") == "docker.io" and registry_of("index.docker.io") == "docker.io"
    assert registry_of("registry.example.com:5000") == "registry.example.com:5000"
    for bad in ("library", "ghcr.io/org", "-x.io", "a b.io", "x" * 300 + ".io"):
        with pytest.raises(ConfigError):
            registry_of(bad)


# ---- containerd -------------------------------------------------------------------------------------


def test_hosts_toml_names_the_server_and_the_node_as_a_pull_mirror() -> None:
    for registry, server in (("docker.io", "https://registry-1.docker.io"), ("ghcr.io", "https://ghcr.io")):
        doc = tomllib.loads(containerd.hosts_toml(registry, NODE))
        assert doc["server"] == server
        assert doc["host"] == {"http://127.0.0.1:7888": {"capabilities": ["pull", "resolve"]}}


def test_debian_config_without_a_registry_table_gets_one_appended() -> None:
    before = fixture("containerd-debian.toml")
    assert containerd.config_path_of(before, "c") is None
    after = containerd.with_config_path(before, "/etc/containerd/certs.d", "c")
    assert after.startswith(before)  # every byte of the original stays
    doc = tomllib.loads(after)
    assert doc["plugins"]["io.containerd.grpc.v1.cri"]["registry"]["config_path"] == "/etc/containerd/certs.d"
    assert doc["plugins"]["io.containerd.grpc.v1.cri"]["cni"]["bin_dir"] == "/usr/lib/cni"
    assert containerd.with_config_path(after, "/etc/containerd/certs.d", "c") == after


def test_default_config_with_an_empty_config_path_gets_that_one_line_changed() -> None:
    before = fixture("containerd-default.toml")
    after = containerd.with_config_path(before, "/srv/certs.d", "c")
    changed = [(a, b) for a, b in zip(before.splitlines(), after.splitlines(), strict=True) if a != b]
    assert changed == [('      config_path = ""', '      config_path = "/srv/certs.d"')]
    assert containerd.config_path_of(after, "c") == "/srv/certs.d"


def test_a_config_path_already_set_is_kept() -> None:
    before = fixture("containerd-default.toml").replace('config_path = ""', 'config_path = "/opt/hosts"')
    assert containerd.config_path_of(before, "c") == "/opt/hosts"
    assert containerd.with_config_path(before, "/elsewhere", "c") == before


def test_absent_config_and_version_3() -> None:
    created = containerd.with_config_path(None, "/etc/containerd/certs.d", "c")
    assert containerd.config_path_of(created, "c") == "/etc/containerd/certs.d"
    v3 = 'version = 3\n[plugins."io.containerd.cri.v1.images".registry]\n  config_path = "/v3/certs.d"\n'
    assert containerd.config_path_of(v3, "c") == "/v3/certs.d"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("version = 2\n[plugins\n", "not valid TOML"),
        ("version = 7\n", "version 7"),
        ("version = 2\nx = [", "TOML"),
    ],
)
def test_bad_containerd_configs_are_refused(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        containerd.with_config_path(text, "/etc/containerd/certs.d", "config.toml")


# ---- Docker ---------------------------------------------------------------------------------------


def test_docker_mirror_in_an_absent_or_empty_file() -> None:
    for before in (None, "", "\n"):
        after = docker.with_mirror(before, NODE, "daemon.json")
        assert json.loads(after) == {"registry-mirrors": ["http://127.0.0.1:7888"]}
        assert docker.with_mirror(after, NODE, "daemon.json") == after


def test_docker_keeps_other_keys_and_mirrors_and_puts_the_node_first() -> None:
    before = '{"debug": true, "registry-mirrors": ["https://mirror.gcr.io"], "log-driver": "json-file"}'
    after = docker.with_mirror(before, NODE, "daemon.json")
    doc = json.loads(after)
    assert list(doc) == ["debug", "registry-mirrors", "log-driver"]
    assert doc["registry-mirrors"] == ["http://127.0.0.1:7888", "https://mirror.gcr.io"]
    assert docker.with_mirror(after, NODE, "daemon.json") == after
    # Already there (with a trailing slash, in any position): the file keeps its bytes.
    present = '{"registry-mirrors": ["https://m", "http://127.0.0.1:7888/"]}'
    assert docker.with_mirror(present, NODE, "daemon.json") == present


@pytest.mark.parametrize(
    ("text", "message"),
    [('{"a": ', "not valid JSON"), ("[1]", "JSON object"), ('{"registry-mirrors": "x"}', "list of URLs")],
)
def test_bad_daemon_json_is_refused(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        docker.with_mirror(text, NODE, "daemon.json")


# ---- podman ---------------------------------------------------------------------------------------


def _registries(text: str) -> dict[str, dict[str, object]]:
    return {entry["prefix"]: entry for entry in tomllib.loads(text).get("registry", [])}


def test_podman_default_file_gets_one_block_with_a_mirror_per_registry() -> None:
    before = fixture("registries.conf")
    after = podman.with_mirrors(before, ["docker.io", "quay.io"], NODE, "registries.conf")
    assert after.startswith(before)
    found = _registries(after)
    assert found["docker.io"]["mirror"] == [{"location": "127.0.0.1:7888", "insecure": True}]
    assert found["quay.io"]["mirror"] == [{"location": "127.0.0.1:7888/quay.io", "insecure": True}]
    assert found["quay.io"]["location"] == "quay.io"
    assert podman.with_mirrors(after, ["docker.io", "quay.io"], NODE, "registries.conf") == after


def test_podman_block_is_replaced_where_it_stands() -> None:
    first = podman.with_mirrors("a = 1\n", ["docker.io"], NODE, "r")
    edited = first + '\n[aliases]\n"x" = "docker.io/library/x"\n'
    again = podman.with_mirrors(edited, ["ghcr.io"], OTHER, "r")
    assert again.endswith('[aliases]\n"x" = "docker.io/library/x"\n')
    found = _registries(again)
    assert list(found) == ["ghcr.io"]
    assert found["ghcr.io"]["mirror"] == [{"location": "pyrsia.example.com:8443/ghcr.io"}]


def test_podman_absent_file() -> None:
    after = podman.with_mirrors(None, ["docker.io"], NODE, "r")
    assert after.startswith(podman.BEGIN) and list(_registries(after)) == ["docker.io"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[registries.search]\nregistries = ['docker.io']\n", "version 1 format"),
        ('[[registry]]\nprefix = "docker.io"\nlocation = "docker.io"\n', "already configures docker.io"),
        ('[[registry]]\nlocation = "docker.io"\n', "already configures docker.io"),
        ("unqualified-search-registries = [\n", "not valid TOML"),
        (f"{podman.BEGIN}\n[[registry]]\n", "damaged"),
        (f"x = 1\n{podman.END}\n", "end of a pyrsia block"),
    ],
)
def test_bad_registries_conf_is_refused(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        podman.with_mirrors(text, ["docker.io"], NODE, "registries.conf")


# ---- Maven ------------------------------------------------------------------------------------------


def _mirrors(text: str) -> list[dict[str, str]]:
    root = ET.fromstring(text)
    ns = root.tag[: root.tag.index("}") + 1] if root.tag.startswith("{") else ""
    return [
        {child.tag.removeprefix(ns): (child.text or "") for child in mirror}
        for mirror in root.iter(f"{ns}mirror")
    ]


def test_maven_default_settings_get_the_node_as_first_mirror_outside_comments() -> None:
    before = fixture("settings.xml")
    after = maven.with_mirror(before, NODE, "*", "settings.xml")
    mirrors = _mirrors(after)
    assert mirrors[0] == {
        "id": "pyrsia",
        "name": "pyrsia node",
        "mirrorOf": "*",
        "url": "http://127.0.0.1:7888/maven2/",
    }
    assert mirrors[1]["id"] == "maven-default-http-blocker"
    # The mirror is all that was added: every other byte is the original's.
    assert after.replace(maven.mirror_xml(NODE, "*", "    "), "", 1) == before
    assert maven.with_mirror(after, NODE, "*", "settings.xml") == after


def test_maven_mirror_is_replaced_in_place_on_a_new_node() -> None:
    first = maven.with_mirror(fixture("settings.xml"), NODE, "*", "s")
    second = maven.with_mirror(first, OTHER, "external:*", "s")
    mirrors = _mirrors(second)
    assert [m["id"] for m in mirrors] == ["pyrsia", "maven-default-http-blocker"]
    assert (
        mirrors[0]["url"] == "https://pyrsia.example.com:8443/maven2/"
        and mirrors[0]["mirrorOf"] == "external:*"
    )


@pytest.mark.parametrize(
    "before",
    [
        None,
        "",
        '<settings xmlns="http://maven.apache.org/SETTINGS/1.0.0">\n</settings>\n',
        '<settings xmlns="http://maven.apache.org/SETTINGS/1.0.0"><localRepository>/r</localRepository></settings>',
        "<settings>\n  <mirrors/>\n</settings>\n",
        "<settings><mirrors><mirror><id>a</id><mirrorOf>*</mirrorOf><url>http://a/</url></mirror></mirrors></settings>",
    ],
)
def test_maven_settings_of_every_shape(before: str | None) -> None:
    after = maven.with_mirror(before, NODE, "*", "s")
    mirrors = _mirrors(after)
    assert mirrors[0]["id"] == "pyrsia" and mirrors[0]["url"] == "http://127.0.0.1:7888/maven2/"
    assert len([m for m in mirrors if m["id"] == "pyrsia"]) == 1
    assert maven.with_mirror(after, NODE, "*", "s") == after
    if before and "<mirror>" in before:
        assert mirrors[1]["id"] == "a"
    if before and "localRepository" in before:
        assert "<localRepository>/r</localRepository>" in after


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("<settings><mirrors></settings>", "not well-formed XML"),
        ("<project/>", "not <settings>"),
        ("not xml at all", "not well-formed XML"),
        ("<settings/>", "cannot find where"),
    ],
)
def test_bad_settings_xml_is_refused(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        maven.with_mirror(text, NODE, "*", "settings.xml")


def test_diff_shows_additions_and_nothing_for_no_change() -> None:
    text = diff(FileChange(path="/etc/x", before="a\n", after="a\nb\n"))
    assert text.startswith("--- a/etc/x\n+++ b/etc/x\n") and "+b\n" in text
    assert diff(FileChange(path="/etc/x", before="a\n", after="a\n")) == ""
    assert diff(FileChange(path="/etc/y", before=None, after="new\n")).startswith("--- /dev/null\n")
