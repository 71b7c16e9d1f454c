"""Source repositories for build-from-source tests: a small Maven project in a bare git
repository, served by `git daemon` on loopback, and a Maven mirror over Debian's repo.

`hello_project()` is reproducible: plugin versions pinned to the ones Debian ships,
`project.build.outputTimestamp` fixed, one dependency (commons-lang3 3.12.0) that
resolves through the mirror. `with_build_time=True` adds a filtered resource holding
`${maven.build.timestamp}`, which is the wall clock to the second whatever
SOURCE_DATE_EPOCH says: two builds in different seconds differ in exactly that entry.
`extra_files` add sources (e.g. a unit test that tries to escape the sandbox).

Every project runs Maven's JVM with `-XX:TieredStopAtLevel=1` (`.mvn/jvm.config`, which
the sandbox lets a project set) and its unit tests' forked JVM too (surefire's
`argLine`): a build this small is over before the optimising compiler pays for itself,
and several builds share two cores. The built bytes do not depend on it.

`spec_fields` are the build spec's fields for one of these projects, as the tests
that build them directly and through the network both write them.

`MavenMirror` serves `/usr/share/maven-repo` under `/maven2/` with the standard
library's threaded HTTP server (following Debian's symlinks), and counts requests. It
speaks HTTP/1.1 with keep-alive, as a real repository does: Maven then fetches a
build's few hundred files over a few connections, not one connection (and, from the
sandbox, one forwarder process) per file.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

from tests.support.ports import free_port
from tests.support.wait import eventually

DEBIAN_MAVEN_REPO = Path("/usr/share/maven-repo")
GIT_ENV = {
    "PATH": "/usr/bin:/bin",
    "HOME": "/nonexistent",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_AUTHOR_NAME": "pyrsia test",
    "GIT_AUTHOR_EMAIL": "test@pyrsia.invalid",
    "GIT_COMMITTER_NAME": "pyrsia test",
    "GIT_COMMITTER_EMAIL": "test@pyrsia.invalid",
    "GIT_AUTHOR_DATE": "2024-01-01T00:00:00Z",
    "GIT_COMMITTER_DATE": "2024-01-01T00:00:00Z",
}

# Options for the JVMs of a test build: C1 only (see the module's docstring).
JVM_CONFIG = "-XX:TieredStopAtLevel=1\n"
FAST_JVM = "-XX:TieredStopAtLevel=1"

_PLUGINS = {
    "maven-resources-plugin": "3.3.0",
    "maven-compiler-plugin": "3.10.1",
    "maven-surefire-plugin": "2.22.3",
    "maven-jar-plugin": "3.3.0",
    "maven-install-plugin": "3.1.0",
    "maven-clean-plugin": "3.2.0",
}


def pom(artifact: str, *, version: str = "1.0", with_tests: bool = False, filtered: bool = False) -> str:
    plugins = "".join(
        f"<plugin><groupId>org.apache.maven.plugins</groupId><artifactId>{a}</artifactId>"
        f"<version>{v}</version></plugin>"
        for a, v in _PLUGINS.items()
    )
    junit = (
        "<dependency><groupId>junit</groupId><artifactId>junit</artifactId>"
        "<version>4.13.2</version><scope>test</scope></dependency>"
        if with_tests
        else ""
    )
    resources = (
        "<resources><resource><directory>src/main/resources</directory><filtering>true</filtering>"
        "</resource></resources>"
        if filtered
        else ""
    )
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>com.example</groupId>
  <artifactId>{artifact}</artifactId>
  <version>{version}</version>
  <packaging>jar</packaging>
  <properties>
    <project.build.outputTimestamp>2024-01-01T00:00:00Z</project.build.outputTimestamp>
    <project.build.sourceEncoding>UTF-8</project.build.sourceEncoding>
    <maven.compiler.release>17</maven.compiler.release>
    <argLine>{FAST_JVM}</argLine>
  </properties>
  <dependencies>
    <dependency><groupId>org.apache.commons</groupId><artifactId>commons-lang3</artifactId>
      <version>3.12.0</version></dependency>
    {junit}
  </dependencies>
  <build>{resources}<pluginManagement><plugins>{plugins}</plugins></pluginManagement></build>
</project>
"""


HELLO_JAVA = """package com.example.hello;

import org.apache.commons.lang3.StringUtils;

public final class Hello {
    public static String greet(String name) {
        return "Hello, " + StringUtils.capitalize(name);
    }
}
"""


def hello_project(
    artifact: str = "hello", *, with_build_time: bool = False, extra_files: dict[str, str] | None = None
) -> dict[str, str]:
    files = {
        ".mvn/jvm.config": JVM_CONFIG,
        "src/main/java/com/example/hello/Hello.java": HELLO_JAVA,
        "src/main/resources/hello.properties": "greeting=hello\n",
    }
    if with_build_time:
        files["src/main/resources/build-time.properties"] = "built=${maven.build.timestamp}\n"
    files.update(extra_files or {})
    has_tests = any(name.startswith("src/test/") for name in files)
    files["pom.xml"] = pom(artifact, with_tests=has_tests, filtered=with_build_time)
    return files


def _module_pom(
    artifact: str,
    *,
    parent: bool,
    modules: tuple[str, ...] = (),
    packaging: str = "jar",
    dependencies: str = "",
    sources: bool = False,
) -> str:
    plugins = "".join(
        f"<plugin><groupId>org.apache.maven.plugins</groupId><artifactId>{a}</artifactId>"
        f"<version>{v}</version></plugin>"
        for a, v in _PLUGINS.items()
    )
    head = (
        "<parent><groupId>com.example</groupId><artifactId>multi-parent</artifactId>"
        "<version>${revision}</version></parent>"
        if parent
        else "<groupId>com.example</groupId><version>${revision}</version>"
    )
    listed = "".join(f"<module>{m}</module>" for m in modules)
    # A second jar-plugin execution packs the Java sources as `-sources.jar`: Debian
    # ships no maven-source-plugin, and the output is the same kind of classifier jar.
    source_jar = (
        "<build><plugins><plugin><groupId>org.apache.maven.plugins</groupId>"
        "<artifactId>maven-jar-plugin</artifactId><executions><execution><id>sources</id>"
        "<phase>package</phase><goals><goal>jar</goal></goals><configuration>"
        "<classifier>sources</classifier><classesDirectory>${project.basedir}/src/main/java"
        "</classesDirectory></configuration></execution></executions></plugin></plugins></build>"
        if sources
        else ""
    )
    management = (
        f"<build><pluginManagement><plugins>{plugins}</plugins></pluginManagement></build>"
        if not parent
        else ""
    )
    properties = (
        "<properties><revision>2.1</revision>"
        "<project.build.outputTimestamp>2024-01-01T00:00:00Z</project.build.outputTimestamp>"
        "<project.build.sourceEncoding>UTF-8</project.build.sourceEncoding>"
        f"<maven.compiler.release>17</maven.compiler.release><argLine>{FAST_JVM}</argLine></properties>"
        if not parent
        else ""
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<project xmlns="http://maven.apache.org/POM/4.0.0">'
        f"<modelVersion>4.0.0</modelVersion>{head}<artifactId>{artifact}</artifactId>"
        f"<packaging>{packaging}</packaging>{properties}"
        f"<modules>{listed}</modules><dependencies>{dependencies}</dependencies>{management}{source_jar}"
        "</project>\n"
    )


def multi_module_project() -> dict[str, str]:
    """A parent (`pom`, version `${revision}` = 2.1) with two jar modules: `multi-core`
    (commons-lang3, and a `-sources.jar`) and `multi-app` depending on it."""
    lang3 = (
        "<dependency><groupId>org.apache.commons</groupId><artifactId>commons-lang3</artifactId>"
        "<version>3.12.0</version></dependency>"
    )
    core = (
        "<dependency><groupId>com.example</groupId><artifactId>multi-core</artifactId>"
        "<version>${project.version}</version></dependency>"
    )
    return {
        ".mvn/jvm.config": JVM_CONFIG,
        "pom.xml": _module_pom("multi-parent", parent=False, modules=("core", "app"), packaging="pom"),
        "core/pom.xml": _module_pom("multi-core", parent=True, dependencies=lang3, sources=True),
        "core/src/main/java/com/example/hello/Hello.java": HELLO_JAVA,
        "app/pom.xml": _module_pom("multi-app", parent=True, dependencies=core),
        "app/src/main/java/com/example/app/App.java": (
            "package com.example.app;\n\npublic final class App {\n"
            '    public static String run() { return com.example.hello.Hello.greet("app"); }\n}\n'
        ),
    }


def spec_fields(url: str, artifact: str = "hello", **extra: str) -> dict[str, str]:
    """A `.buildspec`'s fields for `artifact` 1.0 at tag v1.0 of `url`; `extra` overrides."""
    fields = {
        "groupId": "com.example",
        "artifactId": artifact,
        "version": "1.0",
        "gitRepo": url,
        "gitTag": "v1.0",
        "tool": "mvn",
        "jdk": "17",
        "newline": "lf",
        "command": "mvn package -DskipTests",
    }
    fields.update(extra)
    return fields


def git(*args: str, cwd: Path) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, env=GIT_ENV, capture_output=True, check=True, text=True)
    return done.stdout


def make_repository(
    root: Path,
    name: str,
    files: dict[str, str],
    *,
    tag: str = "v1.0",
    branch: str | None = None,
    symlinks: dict[str, str] | None = None,
    gitlinks: dict[str, str] | None = None,
) -> Path:
    """A bare repository `root/name.git` holding one commit of `files`, tagged `tag`
    (annotated); `branch`, when given, is an extra branch name at the same commit.
    `symlinks` maps paths to link targets; `gitlinks` maps paths to submodule commits
    (with no `.gitmodules` written: add one to `files`)."""
    work = root / f"{name}-work"
    work.mkdir(parents=True)
    for relative, text in files.items():
        path = work / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for relative, target in (symlinks or {}).items():
        path = work / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.symlink_to(target)
    git("init", "-q", "-b", "main", cwd=work)
    git("add", "-A", cwd=work)
    for relative, commit in (gitlinks or {}).items():
        git("update-index", "--add", "--cacheinfo", f"160000,{commit},{relative}", cwd=work)
    git("commit", "-q", "-m", "release", cwd=work)
    git("tag", "-a", tag, "-m", tag, cwd=work)
    if branch:
        git("branch", branch, cwd=work)
    bare = root / f"{name}.git"
    git("clone", "-q", "--bare", str(work), str(bare), cwd=root)
    shutil.rmtree(work)
    return bare


class GitDaemon:
    """`git daemon` exporting every repository under `base` on a loopback port."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.port = free_port()
        self.process = subprocess.Popen(
            [
                "git", "daemon", "--export-all", f"--base-path={base}", "--listen=127.0.0.1",
                f"--port={self.port}", "--reuseaddr", str(base),
            ],
            env=GIT_ENV,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        eventually(self._listening, f"git daemon listening on {self.port}", within_s=30)

    def _listening(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
        except OSError:
            return False
        return True

    def url(self, name: str) -> str:
        return f"git://127.0.0.1:{self.port}/{name}.git"

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, 9)
        self.process.wait()

    def __enter__(self) -> GitDaemon:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Handler(SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: every answer carries its Content-Length

    def log_message(self, format: str, *args: Any) -> None:
        self.server.requests += 1  # type: ignore[attr-defined]

    def translate_path(self, path: str) -> str:
        if not path.startswith("/maven2/"):
            return "/nonexistent"
        return super().translate_path(path.removeprefix("/maven2"))


class MavenMirror:
    """Debian's Maven repository over HTTP on loopback, as a node's mirror would serve it."""

    def __init__(self, root: Path = DEBIAN_MAVEN_REPO) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Handler, directory=str(root)))
        self.server.requests = 0  # type: ignore[attr-defined]
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def requests(self) -> int:
        return int(self.server.requests)  # type: ignore[attr-defined]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> MavenMirror:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()
