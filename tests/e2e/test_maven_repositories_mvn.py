"""A real `mvn` through a node with two upstream repositories, set up by `pyrsia setup maven`.

The graph of `tests/support/maven_repo.py` is split: `central` (the node's
maven_upstream, anonymous) has everything but `com.example:app`, which only `company`
has, behind HTTP Basic auth. The node reads company's login from the `<servers>` of
a settings.xml in a temporary home; `pyrsia setup maven` (HOME pointed there) adds the
node as that file's mirror, and `mvn` resolves app and its graph through the node.
The login reaches only company; the log records which repository served each file.
A wrong password is one line that does not hold the password, at the client and in
the node's log. A missing `mvn` or JDK fails these tests; it never skips them.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.cli import PYRSIA, ok
from tests.support.maven_repo import (
    APP_GRAPH,
    MavenRepo,
    MavenServer,
    build,
    dependency_plugin,
    local_repository,
    mvn,
)
from tests.support.node import NodeProcess

pytestmark = pytest.mark.e2e

USER = "builder"
PASSWORD = "pa55-w0rd-company"
APP_DIR = "com/example/app"
LIB_B_METADATA = "com/example/lib-b/maven-metadata.xml"


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> MavenRepo:
    work = tmp_path_factory.mktemp("maven")
    return build(work / "repo", work / "build")


@pytest.fixture(scope="module")
def roots(repo: MavenRepo, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """central: the graph without app; company: app alone."""
    central = tmp_path_factory.mktemp("central")
    company = tmp_path_factory.mktemp("company")
    shutil.copytree(repo.root, central, dirs_exist_ok=True)
    shutil.rmtree(central / APP_DIR)
    shutil.copytree(repo.root / APP_DIR, company / APP_DIR)
    # company also publishes lib-b versions of its own: the node's metadata merges both.
    (company / LIB_B_METADATA).parent.mkdir(parents=True)
    (company / LIB_B_METADATA).write_text(
        '<?xml version="1.0" encoding="UTF-8"?>\n<metadata><groupId>com.example</groupId>'
        "<artifactId>lib-b</artifactId><versioning><latest>2.0-company</latest><release>2.0-company</release>"
        "<versions><version>1.1</version><version>2.0-company</version></versions>"
        "<lastUpdated>20260301000000</lastUpdated></versioning></metadata>\n"
    )
    return central, company


@pytest.fixture
def central(roots: tuple[Path, Path]) -> Iterator[MavenServer]:
    with MavenServer(roots[0]) as server:
        yield server


@pytest.fixture
def company(roots: tuple[Path, Path]) -> Iterator[MavenServer]:
    with MavenServer(roots[1], login=(USER, PASSWORD)) as server:
        yield server


def servers_xml(home: Path, password: str) -> Path:
    """A user's settings.xml holding only company's login, as a build machine has it."""
    settings = home / ".m2" / "settings.xml"
    settings.parent.mkdir(parents=True)
    settings.write_text(
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<settings xmlns="http://maven.apache.org/SETTINGS/1.0.0">\n'
        "  <servers>\n"
        f"    <server><id>company</id><username>{USER}</username><password>{password}</password></server>\n"
        "  </servers>\n"
        "</settings>\n"
    )
    return settings


def node_for(home: Path, central: MavenServer, company: MavenServer, settings: Path) -> NodeProcess:
    return NodeProcess(
        home,
        "--maven-upstream",
        central.url,
        "--maven-repositories",
        f"company={company.url}",
        "--maven-settings",
        str(settings),
    )


def setup_maven(home: Path, node: NodeProcess) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"), "COLUMNS": "250"}
    return subprocess.run(
        [*PYRSIA, "setup", "maven", "--node", node.url], capture_output=True, text=True, timeout=60, env=env
    )


def test_an_artifact_only_in_the_second_repository_resolves_through_the_node(
    repo: MavenRepo, central: MavenServer, company: MavenServer, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    settings = servers_xml(home, PASSWORD)
    with node_for(tmp_path / "node", central, company, settings) as node:
        result = setup_maven(home, node)
        ok(result)
        assert f"wrote {settings}" in result.stderr and "no restart needed" in result.stderr
        assert f"<url>{node.url}/maven2/</url>" in settings.read_text()

        local = local_repository(tmp_path / "m2")
        built = mvn(settings, local, f"{dependency_plugin()}:get", "-Dartifact=com.example:app:1.0")
        output = built.stdout + built.stderr
        assert built.returncode == 0 and "BUILD SUCCESS" in built.stdout, output[-4000:]
        for path in APP_GRAPH:
            assert (local / path).read_bytes() == repo.read(path), path

        # Which repository served each file, from the node's own log and from the transparency log.
        served = dict(re.findall(r"pulled (\S+) from upstream (\S+)", node.output()))
        for path in APP_GRAPH:
            assert served.get(path) == ("company" if path.startswith(APP_DIR) else "central"), (path, served)
        found = httpx.get(f"{node.url}/api/v1/log/search", params={"type": "maven", "limit": "1000"}).json()
        sources = {r["path"]: r["source"] for r in found["results"]}
        app_jar = "com/example/app/1.0/app-1.0.jar"
        assert sources[f"/maven2/{app_jar}"] == f"{company.url}/{app_jar}"
        lib_a = "com/example/lib-a/1.0/lib-a-1.0.jar"
        assert sources[f"/maven2/{lib_a}"] == f"{central.url}/{lib_a}"

        # The login went to company alone, with every request made there; central never saw it.
        assert central.authorized() == []
        assert company.requests() and len(company.authorized()) == len(company.requests())
        assert {p for p, status in company.requests() if status == 200} >= {
            f"/{p}" for p in APP_GRAPH if p.startswith(APP_DIR)
        }
        # Central was asked for app first, and said 404: the order held.
        assert (f"/{app_jar}", 404) in central.requests()
        assert PASSWORD not in node.output()

        # maven-metadata.xml is the merge of both repositories', as Maven's resolver makes it.
        merged = httpx.get(f"{node.url}/maven2/{LIB_B_METADATA}", timeout=60)
        assert merged.status_code == 200, merged.text
        versioning = ET.fromstring(merged.content).find("versioning")
        assert versioning is not None
        assert [v.text for v in versioning.findall("versions/version")] == ["1.0", "1.1", "2.0-company"]
        assert versioning.findtext("latest") == versioning.findtext("release") == "2.0-company"
        assert versioning.findtext("lastUpdated") == "20260301000000"
        sha1 = httpx.get(f"{node.url}/maven2/{LIB_B_METADATA}.sha1", timeout=60).text.strip()
        assert sha1 == hashlib.sha1(merged.content).hexdigest()
        assert (f"/{LIB_B_METADATA}", 200) in central.requests()
        assert (f"/{LIB_B_METADATA}", 200) in company.requests()


def test_a_wrong_password_is_one_line_without_the_password(
    central: MavenServer, company: MavenServer, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    wrong = "not-" + PASSWORD
    settings = servers_xml(home, wrong)
    with node_for(tmp_path / "node", central, company, settings) as node:
        answer = httpx.get(f"{node.url}/maven2/com/example/app/1.0/app-1.0.pom", timeout=60)
        assert answer.status_code == 502, answer.text
        message = answer.json()["errors"][0]["message"]
        assert "maven repository 'company'" in message and f"user '{USER}'" in message
        assert "HTTP 401" in message and "\n" not in message
        assert wrong not in answer.text and wrong not in node.output()
        # A file central has is served as before.
        assert (
            httpx.get(f"{node.url}/maven2/com/example/lib-a/1.0/lib-a-1.0.pom", timeout=60).status_code == 200
        )
