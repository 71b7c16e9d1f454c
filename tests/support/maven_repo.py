"""A small static Maven repository, built offline and served on loopback.

    com.example:app:1.0 ──▶ com.example:lib-a:1.0 ──▶ com.example:lib-b (version from the BOM)
          │
          └──▶ com.example:lib-b:natives (classifier jar, version from the BOM)

app and lib-a inherit `com.example:parent:1.0` (packaging pom), whose
`dependencyManagement` imports `com.example:bom:1.0` (type pom, scope import); the BOM
pins lib-b, plain and `natives`, to 1.0. lib-b also has 1.1, and its artifact-level
`maven-metadata.xml` lists both (latest and release 1.1), so a version range or LATEST
resolves through metadata while the BOM keeps the graph on 1.0.

Jars are real: each holds one class compiled by `javac` and is packed by the JDK's `jar`
with a fixed entry date. Every file has `.sha1` and `.md5` sidecars; jars also `.sha256`
(a client or node that prefers SHA-256 finds it there, and falls back to SHA-1 for the
rest). `MavenServer` serves the tree with the standard library's threaded HTTP server,
remembers which paths were asked for, and stops on `stop()`.

Maven itself runs offline: its plugins come from Debian's `/usr/share/maven-repo`, used
through a writable symlink-farm copy as the local repository, so every `com.example`
file must come through the mirror under test.
"""

from __future__ import annotations

import base64
import hashlib
import shutil
import subprocess
import threading
from dataclasses import dataclass
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

GROUP = "com.example"
DEBIAN_MAVEN_REPO = Path("/usr/share/maven-repo")
DEPENDENCY_PLUGIN_DIR = DEBIAN_MAVEN_REPO / "org/apache/maven/plugins/maven-dependency-plugin"
JAR_DATE = "2026-01-01T00:00:00Z"
MVN_TIMEOUT_S = 120.0
MIRROR_ID = "pyrsia"

# The files `mvn dependency:get com.example:app:1.0` must fetch, by repository path.
APP_GRAPH = (
    "com/example/app/1.0/app-1.0.pom",
    "com/example/app/1.0/app-1.0.jar",
    "com/example/parent/1.0/parent-1.0.pom",
    "com/example/bom/1.0/bom-1.0.pom",
    "com/example/lib-a/1.0/lib-a-1.0.pom",
    "com/example/lib-a/1.0/lib-a-1.0.jar",
    "com/example/lib-b/1.0/lib-b-1.0.pom",
    "com/example/lib-b/1.0/lib-b-1.0.jar",
    "com/example/lib-b/1.0/lib-b-1.0-natives.jar",
)


def _coordinates(artifact: str, version: str | None = None, **extra: str) -> str:
    parts = f"<groupId>{GROUP}</groupId><artifactId>{artifact}</artifactId>"
    if version is not None:
        parts += f"<version>{version}</version>"
    return parts + "".join(f"<{key}>{value}</{key}>" for key, value in extra.items())


def _dependency(artifact: str, version: str | None = None, **extra: str) -> str:
    return f"<dependency>{_coordinates(artifact, version, **extra)}</dependency>"


def _pom(body: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<project xmlns="http://maven.apache.org/POM/4.0.0">\n'
        f"  <modelVersion>4.0.0</modelVersion>\n  {body}\n</project>\n"
    ).encode()


_PARENT = f"<parent>{_coordinates('parent', '1.0')}</parent>"
POMS: dict[tuple[str, str], bytes] = {
    ("bom", "1.0"): _pom(
        _coordinates("bom", "1.0", packaging="pom")
        + "<dependencyManagement><dependencies>"
        + _dependency("lib-b", "1.0")
        + _dependency("lib-b", "1.0", classifier="natives")
        + "</dependencies></dependencyManagement>"
    ),
    ("parent", "1.0"): _pom(
        _coordinates("parent", "1.0", packaging="pom")
        + "<organization><name>Example Org</name></organization>"
        + "<dependencyManagement><dependencies>"
        + _dependency("bom", "1.0", type="pom", scope="import")
        + "</dependencies></dependencyManagement>"
    ),
    ("lib-b", "1.0"): _pom(_coordinates("lib-b", "1.0")),
    ("lib-b", "1.1"): _pom(_coordinates("lib-b", "1.1")),
    ("lib-a", "1.0"): _pom(
        _PARENT
        + "<artifactId>lib-a</artifactId><version>1.0</version>"
        + "<developers><developer><name>Ada Lovelace</name><email>ada@example.com</email>"
        + "</developer></developers>"
        + f"<dependencies>{_dependency('lib-b')}</dependencies>"
    ),
    ("app", "1.0"): _pom(
        _PARENT
        + "<artifactId>app</artifactId><version>1.0</version>"
        + "<dependencies>"
        + _dependency("lib-a", "1.0")
        + _dependency("lib-b", classifier="natives")
        + "</dependencies>"
    ),
}
# (artifact, version, classifier) of every jar.
JARS = (
    ("app", "1.0", ""),
    ("lib-a", "1.0", ""),
    ("lib-b", "1.0", ""),
    ("lib-b", "1.0", "natives"),
    ("lib-b", "1.1", ""),
)
METADATA: dict[str, tuple[str, ...]] = {"app": ("1.0",), "lib-a": ("1.0",), "lib-b": ("1.0", "1.1")}


@dataclass(frozen=True, slots=True)
class MavenRepo:
    root: Path

    def file(self, path: str) -> Path:
        return self.root / path

    def read(self, path: str) -> bytes:
        return self.file(path).read_bytes()

    def put(self, path: str, data: bytes, *, sidecars_of: bytes | None = None, sha256: bool = True) -> None:
        """Adds a file; its sidecars hash `sidecars_of` (default: `data`), so a test can make them lie."""
        target = self.file(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        write_sidecars(target, data if sidecars_of is None else sidecars_of, sha256=sha256)

    def remove(self, path: str) -> None:
        """Takes a directory, or a file with its sidecars, out of the repository: e.g. an
        artifact's `maven-metadata.xml`, so clients must list its directory instead."""
        target = self.file(path)
        if target.is_dir():
            shutil.rmtree(target)
            return
        for suffix in ("", ".sha1", ".md5", ".sha256"):
            Path(f"{target}{suffix}").unlink(missing_ok=True)


def write_sidecars(path: Path, data: bytes, *, sha256: bool) -> None:
    for algorithm in ("sha1", "md5", "sha256") if sha256 else ("sha1", "md5"):
        Path(f"{path}.{algorithm}").write_text(hashlib.new(algorithm, data).hexdigest())


def _class_name(artifact: str, version: str, classifier: str) -> str:
    words = [artifact, version, classifier] if classifier else [artifact, version]
    return "C_" + "_".join(w.replace("-", "_").replace(".", "_") for w in words)


def build(root: Path, work: Path) -> MavenRepo:
    """Writes the repository under `root`, compiling in `work`; needs `javac` and `jar`."""
    sources = work / "src" / "com" / "example"
    classes = work / "classes"
    sources.mkdir(parents=True, exist_ok=True)
    for artifact, version, classifier in JARS:
        name = _class_name(artifact, version, classifier)
        (sources / f"{name}.java").write_text(
            f"package com.example;\n\npublic final class {name} {{\n"
            "    public static String coordinates() "
            f'{{ return "{GROUP}:{artifact}:{version}:{classifier}"; }}\n'
            "}\n"
        )
    _tool("javac", "--release", "17", "-d", str(classes), *sorted(map(str, sources.glob("*.java"))))
    repo = MavenRepo(root)
    for (artifact, version), pom in POMS.items():
        repo.put(f"com/example/{artifact}/{version}/{artifact}-{version}.pom", pom, sha256=False)
    for artifact, version, classifier in JARS:
        suffix = f"-{classifier}" if classifier else ""
        jar = repo.file(f"com/example/{artifact}/{version}/{artifact}-{version}{suffix}.jar")
        jar.parent.mkdir(parents=True, exist_ok=True)
        name = _class_name(artifact, version, classifier)
        _tool(
            "jar", "--create", f"--date={JAR_DATE}", "--file", str(jar),
            "-C", str(classes), f"com/example/{name}.class",
        )  # fmt: skip
        write_sidecars(jar, jar.read_bytes(), sha256=True)
    for artifact, versions in METADATA.items():
        listed = "".join(f"<version>{v}</version>" for v in versions)
        metadata = (
            '<?xml version="1.0" encoding="UTF-8"?>\n<metadata>'
            f"<groupId>{GROUP}</groupId><artifactId>{artifact}</artifactId><versioning>"
            f"<latest>{versions[-1]}</latest><release>{versions[-1]}</release>"
            f"<versions>{listed}</versions><lastUpdated>20260101000000</lastUpdated>"
            "</versioning></metadata>\n"
        )
        repo.put(f"com/example/{artifact}/maven-metadata.xml", metadata.encode(), sha256=False)
    return repo


def _tool(*argv: str) -> None:
    """Runs a JDK tool; a missing or failing tool is an error, never a reason to skip."""
    if shutil.which(argv[0]) is None:
        raise RuntimeError(f"{argv[0]} is not installed: the Maven tests need a JDK (javac, jar)")
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({result.returncode}): {result.stderr.strip()}")


class _Handler(SimpleHTTPRequestHandler):
    """Static files; records each request's path and status on the server."""

    server: _RecordingServer

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        with self.server.lock:
            self.server.requests.append((self.path, int(code) if str(code).isdigit() else 0))

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _admitted(self) -> bool:
        """Records a request that carried credentials; answers 401 unless they are the login."""
        given = self.headers.get("Authorization")
        if given is not None:
            with self.server.lock:
                self.server.authorized.append(self.path)
        if self.server.login is None or given == self.server.login:
            return True
        self.send_response(401)
        self.send_header("WWW-Authenticate", 'Basic realm="maven"')
        self.send_header("Content-Length", "0")
        self.end_headers()
        return False

    def do_GET(self) -> None:
        if self._admitted():
            super().do_GET()

    def do_HEAD(self) -> None:
        if self._admitted():
            super().do_HEAD()


class _RecordingServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path, login: str | None) -> None:
        super().__init__(("127.0.0.1", 0), partial(_Handler, directory=str(root)))
        self.lock = threading.Lock()
        self.requests: list[tuple[str, int]] = []
        self.authorized: list[str] = []  # paths of requests that carried an Authorization header
        self.login = login


class MavenServer:
    """Serves a directory over HTTP on a free loopback port, from `start()` until `stop()`."""

    def __init__(self, root: Path, *, login: tuple[str, str] | None = None) -> None:
        """`login`: a user and password every request must carry (HTTP Basic), else 401."""
        header = None if login is None else "Basic " + base64.b64encode(":".join(login).encode()).decode()
        self._server = _RecordingServer(root, header)
        self._thread = threading.Thread(target=self._server.serve_forever, name="maven-upstream", daemon=True)
        self._stopped = False
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> MavenServer:
        self._thread.start()
        return self

    def requests(self) -> list[tuple[str, int]]:
        """`(path, status)` of every request answered so far, in order."""
        with self._server.lock:
            return list(self._server.requests)

    def authorized(self) -> list[str]:
        """Paths of the requests that carried credentials, in order."""
        with self._server.lock:
            return list(self._server.authorized)

    def stop(self) -> None:
        """Stops serving and closes the listening socket: later connections are refused."""
        if self._stopped:
            return
        self._stopped = True
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout=10)
        self._server.server_close()

    def __enter__(self) -> MavenServer:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def dependency_plugin() -> str:
    """`groupId:artifactId:version` of the newest maven-dependency-plugin Debian installed with its jar."""
    versions = (
        [d.name for d in DEPENDENCY_PLUGIN_DIR.iterdir() if any(d.glob("*.jar"))]
        if DEPENDENCY_PLUGIN_DIR.is_dir()
        else []
    )
    if not versions:
        raise RuntimeError(
            f"no maven-dependency-plugin jar under {DEPENDENCY_PLUGIN_DIR}: "
            "apt-get install maven libmaven-dependency-plugin-java junit4"
        )
    newest = max(versions, key=lambda v: [int(p) if p.isdigit() else -1 for p in v.split(".")])
    return f"org.apache.maven.plugins:maven-dependency-plugin:{newest}"


def local_repository(target: Path) -> Path:
    """A fresh writable symlink farm of Debian's Maven repository: plugins resolve offline."""
    if not DEBIAN_MAVEN_REPO.is_dir():
        raise RuntimeError(f"{DEBIAN_MAVEN_REPO} is missing: apt-get install maven")
    if target.exists():
        shutil.rmtree(target)
    subprocess.run(["cp", "-rs", str(DEBIAN_MAVEN_REPO), str(target)], check=True, timeout=120)
    return target


def settings_xml(path: Path, mirror_url: str) -> Path:
    """A settings file whose one mirror takes every repository's requests (`mirrorOf *`)."""
    path.write_text(
        '<settings xmlns="http://maven.apache.org/SETTINGS/1.0.0"><mirrors><mirror>'
        f"<id>{MIRROR_ID}</id><mirrorOf>*</mirrorOf><url>{mirror_url}</url>"
        "</mirror></mirrors></settings>\n"
    )
    return path


def mvn(settings: Path, local: Path, *goal: str) -> subprocess.CompletedProcess[str]:
    """`mvn -B -C` (batch, strict checksums) with `settings` and `local` as the local repository."""
    if shutil.which("mvn") is None:
        raise RuntimeError("mvn is not installed: apt-get install maven")
    return subprocess.run(
        ["mvn", "-B", "-C", "-s", str(settings), f"-Dmaven.repo.local={local}", *goal],
        capture_output=True,
        text=True,
        timeout=MVN_TIMEOUT_S,
        cwd=settings.parent,
    )
