"""A small static Maven repository, built offline and served on loopback.

    com.example:app:1.0 ──▶ com.example:lib-a:1.0 ──▶ com.example:lib-b (version from the BOM)
          │                      (app and lib-a inherit com.example:parent:1.0, which
          └──▶ lib-b:natives     imports com.example:bom:1.0 in dependencyManagement)

lib-b has versions 1.0 and 1.1 (its `maven-metadata.xml` lists both), so version ranges
and LATEST resolve through metadata. Jars hold classes compiled by one `javac` call.
Every file has `.sha1` and `.md5`; jars also `.sha256`. `MavenServer` serves the tree
with the standard library's threaded HTTP server.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import threading
import zipfile
from dataclasses import dataclass
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

GROUP = "com.example"
POM_HEAD = '<?xml version="1.0" encoding="UTF-8"?>\n<project xmlns="http://maven.apache.org/POM/4.0.0">\n'
PARENT_REF = (
    "<parent><groupId>com.example</groupId><artifactId>parent</artifactId><version>1.0</version></parent>"
)


def _pom(body: str) -> bytes:
    return (POM_HEAD + "  <modelVersion>4.0.0</modelVersion>\n" + body + "\n</project>\n").encode()


def _dependency(artifact: str, version: str | None = None, **extra: str) -> str:
    parts = f"<groupId>{GROUP}</groupId><artifactId>{artifact}</artifactId>"
    parts += f"<version>{version}</version>" if version else ""
    parts += "".join(f"<{k}>{v}</{k}>" for k, v in extra.items())
    return f"<dependency>{parts}</dependency>"


POMS: dict[tuple[str, str], bytes] = {
    ("bom", "1.0"): _pom(
        "<groupId>com.example</groupId><artifactId>bom</artifactId><version>1.0</version><packaging>pom</packaging>"
        f"<dependencyManagement><dependencies>{_dependency('lib-b', '1.0')}"
        f"{_dependency('lib-b', '1.0', classifier='natives')}</dependencies></dependencyManagement>"
    ),
    ("parent", "1.0"): _pom(
        "<groupId>com.example</groupId><artifactId>parent</artifactId><version>1.0</version>"
        "<packaging>pom</packaging><organization><name>Example Org</name></organization>"
        f"<dependencyManagement><dependencies>{_dependency('bom', '1.0', type='pom', scope='import')}"
        "</dependencies></dependencyManagement>"
    ),
    ("lib-b", "1.0"): _pom(
        "<groupId>com.example</groupId><artifactId>lib-b</artifactId><version>1.0</version>"
    ),
    ("lib-b", "1.1"): _pom(
        "<groupId>com.example</groupId><artifactId>lib-b</artifactId><version>1.1</version>"
    ),
    ("lib-a", "1.0"): _pom(
        f"{PARENT_REF}<artifactId>lib-a</artifactId><version>1.0</version>"
        "<developers><developer><name>Ada Lovelace</name><email>ada@example.com</email></developer>"
        "</developers>"
        f"<dependencies>{_dependency('lib-b')}</dependencies>"
    ),
    ("app", "1.0"): _pom(
        f"{PARENT_REF}<artifactId>app</artifactId><version>1.0</version>"
        f"<dependencies>{_dependency('lib-a', '1.0')}{_dependency('lib-b', classifier='natives')}"
        "</dependencies>"
    ),
}
JARS = {
    ("lib-b", "1.0", ""),
    ("lib-b", "1.0", "natives"),
    ("lib-b", "1.1", ""),
    ("lib-a", "1.0", ""),
    ("app", "1.0", ""),
}
METADATA = {"lib-b": ["1.0", "1.1"], "lib-a": ["1.0"], "app": ["1.0"]}


@dataclass(frozen=True)
class MavenRepo:
    root: Path

    def path(self, artifact: str, version: str, filename: str) -> Path:
        return self.root / "com" / "example" / artifact / version / filename

    def files(self) -> dict[str, bytes]:
        """Every file (not sidecars), by repository path."""
        return {
            str(p.relative_to(self.root)): p.read_bytes()
            for p in sorted(self.root.rglob("*"))
            if p.is_file() and p.suffix not in (".sha1", ".md5", ".sha256")
        }


def _sidecars(path: Path, sha256: bool) -> None:
    data = path.read_bytes()
    algorithms = ("sha1", "md5", "sha256") if sha256 else ("sha1", "md5")
    for algorithm in algorithms:
        Path(f"{path}.{algorithm}").write_text(hashlib.new(algorithm, data).hexdigest())


def build(root: Path, work: Path) -> MavenRepo:
    """Writes the repository under `root`; `work` holds sources and classes."""
    sources = work / "src"
    classes = work / "classes"
    names = {f"{a}{'_' + c if c else ''}_{v.replace('.', '_')}" for a, v, c in JARS}
    java_names = {n: "C_" + n.replace("-", "_") for n in names}
    for name, cls in java_names.items():
        (sources / "com" / "example").mkdir(parents=True, exist_ok=True)
        (sources / "com" / "example" / f"{cls}.java").write_text(
            f"package com.example; public class {cls} "
            f'{{ public static String id() {{ return "{name}"; }} }}\n'
        )
    subprocess.run(
        ["javac", "-d", str(classes), *map(str, sorted((sources / "com" / "example").glob("*.java")))],
        check=True,
        capture_output=True,
    )
    repo = MavenRepo(root)
    for (artifact, version), pom in POMS.items():
        path = repo.path(artifact, version, f"{artifact}-{version}.pom")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(pom)
        _sidecars(path, sha256=False)
    for artifact, version, classifier in sorted(JARS):
        name = f"{artifact}{'_' + classifier if classifier else ''}_{version.replace('.', '_')}"
        suffix = f"-{classifier}" if classifier else ""
        path = repo.path(artifact, version, f"{artifact}-{version}{suffix}.jar")
        with zipfile.ZipFile(path, "w") as jar:
            info = zipfile.ZipInfo("META-INF/MANIFEST.MF", date_time=(2026, 1, 1, 0, 0, 0))
            jar.writestr(info, "Manifest-Version: 1.0\r\nCreated-By: pyrsia tests\r\n\r\n")
            cls = java_names[name]
            info = zipfile.ZipInfo(f"com/example/{cls}.class", date_time=(2026, 1, 1, 0, 0, 0))
            jar.writestr(info, (classes / "com" / "example" / f"{cls}.class").read_bytes())
        _sidecars(path, sha256=True)
    for artifact, versions in METADATA.items():
        listed = "".join(f"<version>{v}</version>" for v in versions)
        metadata = root / "com" / "example" / artifact / "maven-metadata.xml"
        metadata.write_text(
            '<?xml version="1.0" encoding="UTF-8"?>\n<metadata><groupId>com.example</groupId>'
            f"<artifactId>{artifact}</artifactId><versioning><latest>{versions[-1]}</latest>"
            f"<release>{versions[-1]}</release><versions>{listed}</versions>"
            "<lastUpdated>20260101000000</lastUpdated></versioning></metadata>\n"
        )
        _sidecars(metadata, sha256=False)
    return repo


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class MavenServer:
    """Serves a directory over HTTP on a free loopback port until stopped."""

    def __init__(self, root: Path) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(root)))
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> MavenServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def local_repository(target: Path) -> Path:
    """A writable symlink farm of Debian's Maven repository: plugins resolve offline."""
    if target.exists():
        shutil.rmtree(target)
    subprocess.run(["cp", "-rs", "/usr/share/maven-repo", str(target)], check=True)
    return target


def settings_xml(path: Path, mirror_url: str) -> Path:
    path.write_text(
        '<settings xmlns="http://maven.apache.org/SETTINGS/1.0.0"><mirrors><mirror><id>pyrsia</id>'
        f"<mirrorOf>*</mirrorOf><url>{mirror_url}</url></mirror></mirrors></settings>\n"
    )
    return path
