"""The sandbox plan: every path, argv, environment variable and limit of one build.

`sandbox.py` executes what this module decides; keeping the decisions here makes them
testable without running anything. A build's directory on the host:

    WORK/                 the caller's, 0755 root; removed by the caller
      home.img            the output cap: a sparse ext4 image of `output_bytes_max` bytes,
                          loop-mounted (nosuid, nodev) on home/ when the node runs as root
      build.log           mvn's stdout and stderr (opened by the node, capped by RLIMIT_FSIZE)
      run/mirror.sock     the node's Maven mirror, forwarded by socat (mode 0600, the build uid)
      home/               → /build in the sandbox, owned by the build uid
        src/              the clone (umask from the spec, 022 by default)
        m2/               the build's own writable local Maven repository
        settings.xml      one mirror for `*`: http://127.0.0.1:MIRROR_PORT_INSIDE/…
        .tmp/             → /tmp in the sandbox, when home is the capped filesystem
      out/                the collected outputs, copied out without following links

The sandbox (bubblewrap under `setpriv` and `prlimit`): every namespace unshared, so
the network holds only `lo`; `/usr` and the few `/etc` entries a JDK and Maven need
(`ETC_ALLOWED`) read-only, `/tmp` the build's own `home/.tmp` (or, without the
capped filesystem, a size-capped tmpfs),
`/` remounted read-only last; a cleared environment with `HOME`, `PATH`, `LANG`,
`TZ`, `SOURCE_DATE_EPOCH` (the commit's time: every authority derives the same one),
`JAVA_HOME` and `MAVEN_OPTS` (`-Duser.home=/build`: the uid has no passwd entry),
and for `newline=crlf` `JAVA_TOOL_OPTIONS` with `-Dline.separator` (as Reproducible
Central's Windows-built releases need);
an unprivileged uid (root inside a sandbox ignores RLIMIT_NPROC); `--die-with-parent`
so that killing bwrap kills the build (`--new-session` leaves the process group).
Inside, bash starts socat from `127.0.0.1:MIRROR_PORT_INSIDE` to the bound unix socket,
waits for it, sets the spec's umask and `exec`s the spec's mvn argv — passed as
arguments, never as shell text. Limits: RLIMIT_NPROC (counts every thread of the uid,
so concurrent builds need distinct uids), RLIMIT_AS, RLIMIT_CPU, RLIMIT_FSIZE (any one
file, the log included), RLIMIT_NOFILE, no core dumps; the shell adds the wall clock.

The total output cap is a filesystem, not a watch: the clone, the local repository,
`target/` and `/tmp` all live on home/, an ext4 image of `output_bytes_max` bytes
(sparse: the node's disk holds only what was written, never more than the cap), so a
write past the cap fails with ENOSPC in the build, however fast it writes. Measured
here before choosing: a 4 GiB image is made and mounted in about half a second; a
tmpfs would hold the bytes in memory (no swap on a typical node), and `prlimit
--fsize` caps one file, not their sum, so a watcher alone overshoots by what the build
writes between two polls. Without root (no mount) the shell falls back to that watch.

git runs with no system or user config and `GIT_CONFIG_COUNT` settings that switch
off hooks (`core.hooksPath=/dev/null`), `core.fsmonitor` and submodule recursion, for
the clone and every later git command in it; it may speak only the spec URL's own
protocol (`GIT_ALLOW_PROTOCOL`), and the clone copies no templates. Pure.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any
from xml.sax.saxutils import escape

from pyrsia.errors import SourceUnavailable
from pyrsia.sourcebuild.compare import ZIP_SUFFIXES, OutputFile
from pyrsia.sourcebuild.spec import BuildSpec, Jdk

SANDBOX_HOME = "/build"
SANDBOX_RUN = "/run/pyrsia"
MIRROR_PORT_INSIDE = 8081
BUILD_UID_DEFAULT = 4242
GIT_PROTOCOLS = "file:git:http:https"
LS_REMOTE_BYTES_MAX = 16 * 1024 * 1024
# What a JDK and Maven need from /etc; the rest of the host's configuration (a node's own
# config, daemons' settings, /etc/mavenrc that would make one authority's build differ)
# stays out. `java*` covers each JDK's conf links (/etc/java-17-openjdk).
ETC_ALLOWED = (
    "alternatives",
    "java*",
    "maven",
    "ssl",
    "ca-certificates",
    "localtime",
    "timezone",
    "hosts",
    "host.conf",
    "nsswitch.conf",
    "passwd",
    "group",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
)
ETC_ENTRIES = tuple(name for name in ETC_ALLOWED if "*" not in name)
_GIB = 1024 * 1024 * 1024
_MIB = 1024 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class SandboxLimits:
    """What one build may use; a normal release build stays far below each."""

    wall_time_s_max: float = 1800.0
    fetch_time_s_max: float = 600.0
    cpu_time_s_max: int = 3600
    memory_bytes_max: int = 8 * _GIB  # RLIMIT_AS: the JVM reserves far more than it touches
    heap_bytes_max: int = 2 * _GIB  # -Xmx, so the JVM fits under RLIMIT_AS
    processes_max: int = 512  # RLIMIT_NPROC of the build uid: processes and threads
    file_bytes_max: int = 1 * _GIB  # RLIMIT_FSIZE: any one file
    output_bytes_max: int = 4 * _GIB  # the capped filesystem of home/ (clone, m2, target, /tmp)
    tmp_bytes_max: int = 256 * _MIB  # the sandbox's /tmp tmpfs, without the capped filesystem
    open_files_max: int = 4096
    log_tail_bytes_max: int = 16 * 1024
    poll_s: float = 0.25


@dataclass(frozen=True, slots=True, kw_only=True)
class SandboxLayout:
    """The host paths of one build (see the module docstring)."""

    work: PurePosixPath

    @property
    def log(self) -> PurePosixPath:
        return self.work / "build.log"

    @property
    def image(self) -> PurePosixPath:
        return self.work / "home.img"

    @property
    def tmp(self) -> PurePosixPath:
        return self.home / ".tmp"

    @property
    def run(self) -> PurePosixPath:
        return self.work / "run"

    @property
    def mirror_socket(self) -> PurePosixPath:
        return self.run / "mirror.sock"

    @property
    def home(self) -> PurePosixPath:
        return self.work / "home"

    @property
    def source(self) -> PurePosixPath:
        return self.home / "src"

    @property
    def settings(self) -> PurePosixPath:
        return self.home / "settings.xml"

    @property
    def out(self) -> PurePosixPath:
        return self.work / "out"


@dataclass(frozen=True, slots=True, kw_only=True)
class SourceCheckout:
    """The source as cloned: `commit` is the full hash every authority must agree on."""

    git_repo: str
    ref: str
    commit: str
    commit_time: int  # seconds since the epoch; the build's SOURCE_DATE_EPOCH


@dataclass(frozen=True, slots=True, kw_only=True)
class BuilderFacts:
    jdk_major: int
    jdk_version: str
    maven_version: str

    def to_fields(self) -> dict[str, Any]:
        return {"jdk": self.jdk_version, "jdkMajor": self.jdk_major, "maven": self.maven_version}


@dataclass(frozen=True, slots=True, kw_only=True)
class ModuleOutputs:
    """One module of the build and the names of its files in `SourceBuildResult.outputs`."""

    group_id: str
    artifact_id: str
    version: str
    packaging: str
    path: str  # its directory in the source tree, "" for the root
    files: tuple[str, ...]

    @property
    def gav(self) -> str:
        return f"{self.group_id}:{self.artifact_id}:{self.version}"


@dataclass(frozen=True, slots=True, kw_only=True)
class SourceBuildResult:
    """A finished build: its outputs (in `output_dir`), the commit, the builder, the log tail."""

    spec_digest: str
    git_repo: str
    commit: str
    source_date_epoch: int
    outputs: tuple[OutputFile, ...]
    output_dir: str
    builder: BuilderFacts
    log_tail: str
    log_path: str  # the whole log, capped by RLIMIT_FSIZE; in WORK, removed with it
    wall_time_s: float
    modules: tuple[ModuleOutputs, ...] = ()  # every module's coordinates and files
    buildinfo_files: tuple[str, ...] = ()  # the outputs the spec's `.buildinfo` vouched for

    def coordinates_of(self, name: str) -> ModuleOutputs | None:
        """The module an output file belongs to."""
        return next((module for module in self.modules if name in module.files), None)


def resolve_tag(ls_remote: str, tag: str, *, git_repo: str) -> str:
    """The commit a tag names, from `git ls-remote --tags --heads` output.

    A name the remote lists only under refs/heads is a branch and is refused; an
    annotated tag resolves to its peeled commit (`refs/tags/T^{}`)."""
    refs: dict[str, str] = {}
    for line in ls_remote.splitlines():
        sha, _, ref = line.partition("\t")
        if ref:
            refs[ref.strip()] = sha.strip()
    peeled = refs.get(f"refs/tags/{tag}^{{}}") or refs.get(f"refs/tags/{tag}")
    if peeled is not None:
        return peeled
    if f"refs/heads/{tag}" in refs:
        raise SourceUnavailable(
            f"{git_repo}: {tag!r} is a branch, not a tag; a tag or a full commit is built"
        )
    raise SourceUnavailable(f"{git_repo} has no tag {tag!r}")


# Settings every git command of a build runs with (through GIT_CONFIG_COUNT, so they
# hold for commands inside the clone too, whatever its .git/config says): nothing the
# repository or a config file names is run on the node.
GIT_SAFE_CONFIG = (
    ("core.hooksPath", "/dev/null"),
    ("core.fsmonitor", "false"),
    ("submodule.recurse", "false"),
    ("fetch.recurseSubmodules", "false"),
    ("protocol.file.allow", "user"),
    ("core.symlinks", "true"),
    ("advice.detachedHead", "false"),
)


# strerror of ENOSPC and EDQUOT as git prints them (git runs with LANG=C).
_OUT_OF_SPACE = ("No space left on device", "Disk quota exceeded")


def said_out_of_space(stderr: str) -> bool:
    """True when git's stderr says a write failed for want of space.

    A clone that fills the capped filesystem fails with ENOSPC, and git then removes
    its partial pack: by the time anyone looks, the filesystem is no longer full, and
    only git's own words still say that the cap was reached."""
    return any(reason in stderr for reason in _OUT_OF_SPACE)


def git_environment(layout: SandboxLayout, *, git_repo: str | None = None) -> dict[str, str]:
    """git's whole environment: no system or user config, no prompts, no hooks; only the
    protocol of `git_repo` (all four of `GIT_PROTOCOLS` when not given)."""
    protocols = GIT_PROTOCOLS
    if git_repo is not None:
        scheme = git_repo.split("://", 1)[0]
        protocols = scheme if scheme in GIT_PROTOCOLS.split(":") else ""
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(layout.home),
        "LANG": "C",
        "TZ": "UTC",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_ALLOW_PROTOCOL": protocols,
        "GIT_ASKPASS": "/bin/false",
        "SSH_ASKPASS": "/bin/false",
        "GIT_CONFIG_COUNT": str(len(GIT_SAFE_CONFIG)),
    }
    for index, (key, value) in enumerate(GIT_SAFE_CONFIG):
        env[f"GIT_CONFIG_KEY_{index}"] = key
        env[f"GIT_CONFIG_VALUE_{index}"] = value
    return env


def clone_argv(spec: BuildSpec, layout: SandboxLayout) -> tuple[str, ...]:
    common = (
        "git",
        "-c",
        "advice.detachedHead=false",
        "-c",
        "core.symlinks=true",
        "clone",
        "-q",
        "--template=",  # no hook samples, no info/ files from the host's templates
        "--no-recurse-submodules",
        "--no-local",
    )
    if spec.pins_commit:
        return (*common, "--no-checkout", "--", spec.git_repo, str(layout.source))
    return (*common, "--depth", "1", "--branch", spec.git_tag, "--", spec.git_repo, str(layout.source))


def mkfs_argv(layout: SandboxLayout) -> tuple[str, ...]:
    """ext4 on the (already truncated) image: no journal (nothing survives a crash anyway),
    no reserved blocks, lazy inode tables, root of the filesystem owned later by the shell."""
    return (
        "mkfs.ext4",
        "-q",
        "-F",
        "-m",
        "0",
        "-O",
        "^has_journal",
        "-E",
        "lazy_itable_init=1,lazy_journal_init=1",
        str(layout.image),
    )


def mount_argv(layout: SandboxLayout) -> tuple[str, ...]:
    return ("mount", "-o", "loop,nosuid,nodev,noatime", str(layout.image), str(layout.home))


def maven_settings(*, mirror: bool) -> str:
    """settings.xml: every repository through the node's mirror, or none at all (offline)."""
    mirrors = ""
    if mirror:
        url = escape(f"http://127.0.0.1:{MIRROR_PORT_INSIDE}/maven2/")
        mirrors = f"<mirrors><mirror><id>pyrsia</id><mirrorOf>*</mirrorOf><url>{url}</url></mirror></mirrors>"
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<settings xmlns="http://maven.apache.org/SETTINGS/1.0.0">'
        f"<localRepository>{SANDBOX_HOME}/m2</localRepository><interactiveMode>false</interactiveMode>"
        f"{mirrors}</settings>\n"
    )


def maven_argv(spec: BuildSpec) -> tuple[str, ...]:
    """The spec's argv with the sandbox's settings and local repository put first."""
    return (
        spec.command[0],
        "-B",
        "-s",
        f"{SANDBOX_HOME}/settings.xml",
        f"-Dmaven.repo.local={SANDBOX_HOME}/m2",
        *spec.command[1:],
    )


# Runs inside the sandbox as bash's -c text; the build's argv arrives as "$@".
_INNER = (
    "set -u\n"
    'if [ "$PYRSIA_MIRROR" = 1 ]; then\n'
    "  socat TCP-LISTEN:{port},bind=127.0.0.1,fork,reuseaddr UNIX-CONNECT:{socket} 2>/dev/null &\n"
    "  for _ in $(seq 200); do (: >/dev/tcp/127.0.0.1/{port}) 2>/dev/null && break; sleep 0.05; done\n"
    "fi\n"
    "unset PYRSIA_MIRROR\n"
    "umask {umask:03o}\n"
    'exec "$@"\n'
)


def sandbox_argv(
    *,
    spec: BuildSpec,
    jdk: Jdk,
    layout: SandboxLayout,
    limits: SandboxLimits,
    uid: int,
    source_date_epoch: int,
    mirror: bool,
    drop_privileges: bool,
    etc_entries: tuple[str, ...] = ETC_ENTRIES,
    argv: tuple[str, ...] | None = None,
    tmp_in_home: bool = False,
) -> tuple[str, ...]:
    """setpriv + prlimit + bwrap + the inner script + the build's argv (`maven_argv` unless given).

    `etc_entries` are the names under /etc the sandbox sees (`etc_visible` picks them
    from a listing of the host's /etc). `tmp_in_home`: `/tmp` is `layout.tmp` (on the
    capped filesystem) instead of a tmpfs of `limits.tmp_bytes_max`."""
    maven_opts = " ".join(
        (f"-Duser.home={SANDBOX_HOME}", f"-Xmx{limits.heap_bytes_max // _MIB}m", *spec.maven_opts)
    )
    env = {
        "HOME": SANDBOX_HOME,
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "TZ": spec.timezone,
        "SOURCE_DATE_EPOCH": str(source_date_epoch),
        "JAVA_HOME": jdk.home,
        "MAVEN_OPTS": maven_opts,
        "MALLOC_ARENA_MAX": "2",
        "PYRSIA_MIRROR": "1" if mirror else "0",
    }
    if spec.newline == "crlf":
        # Every JVM of the build reads it (Maven's, surefire's forks), and the JVM's own
        # parser keeps the quoted CR LF: the mvn script's word splitting never sees it.
        env["JAVA_TOOL_OPTIONS"] = '-Dline.separator="\r\n"'
    privileges: tuple[str, ...] = ()
    if drop_privileges:
        privileges = ("setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--")
    rlimits = (
        "prlimit",
        f"--nproc={limits.processes_max}",
        f"--as={limits.memory_bytes_max}",
        f"--cpu={limits.cpu_time_s_max}",
        f"--fsize={limits.file_bytes_max}",
        f"--nofile={limits.open_files_max}",
        "--core=0",
        "--",
    )
    bwrap = [
        "bwrap",
        "--unshare-all",
        "--die-with-parent",
        "--new-session",
        "--cap-drop",
        "ALL",
        "--ro-bind",
        "/usr",
        "/usr",
        *(arg for name in etc_entries for arg in ("--ro-bind-try", f"/etc/{name}", f"/etc/{name}")),
        "--symlink",
        "usr/lib",
        "/lib",
        "--symlink",
        "usr/lib64",
        "/lib64",
        "--symlink",
        "usr/bin",
        "/bin",
        "--symlink",
        "usr/sbin",
        "/sbin",
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        *(
            ("--bind", str(layout.tmp), "/tmp")
            if tmp_in_home
            else ("--size", str(limits.tmp_bytes_max), "--tmpfs", "/tmp")
        ),
        "--bind",
        str(layout.home),
        SANDBOX_HOME,
        "--ro-bind",
        str(layout.run),
        SANDBOX_RUN,
        "--chdir",
        f"{SANDBOX_HOME}/src",
        "--remount-ro",
        "/",  # last: a later mount point could not be created on a read-only root
        "--clearenv",
    ]
    for name, value in env.items():
        bwrap += ["--setenv", name, value]
    inner = _INNER.format(port=MIRROR_PORT_INSIDE, socket=f"{SANDBOX_RUN}/mirror.sock", umask=spec.umask)
    command = argv if argv is not None else maven_argv(spec)
    return (*privileges, *rlimits, *bwrap, "/usr/bin/bash", "-c", inner, "bash", *command)


def etc_visible(listing: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """The names of a host /etc listing that `ETC_ALLOWED` lets into the sandbox, sorted."""
    return tuple(sorted(name for name in listing if any(fnmatch.fnmatchcase(name, p) for p in ETC_ALLOWED)))


def mirror_forwarder_argv(layout: SandboxLayout, *, uid: int, host: str, port: int) -> tuple[str, ...]:
    """The host side of the mirror bridge: the unix socket the sandbox sees, to the node's port."""
    return (
        "socat",
        f"UNIX-LISTEN:{layout.mirror_socket},fork,max-children=32,user={uid},group={uid},mode=600",
        f"TCP:{host}:{port}",
    )


PACKAGING_EXTENSIONS = {"jar": "jar", "bundle": "jar", "maven-plugin": "jar", "war": "war", "ear": "ear"}


def module_output_names(
    *, artifact_id: str, version: str, packaging: str, target_listing: list[str]
) -> tuple[str, ...]:
    """A module's files in its target/ listing, by Maven's names: `A-V.ext` for the main
    artifact (the extension from the packaging) and `A-V-classifier.jar` (`-sources`,
    `-tests`, `-javadoc`); its pom is added by the caller. The main artifact first."""
    base = f"{artifact_id}-{version}"
    extension = PACKAGING_EXTENSIONS.get(packaging, "jar")
    main = f"{base}.{extension}"
    others = sorted(
        name
        for name in target_listing
        if name != main and name.startswith(base + "-") and name.endswith(ZIP_SUFFIXES) and "/" not in name
    )
    return (main, *others)


def output_names(spec: BuildSpec) -> tuple[str, str]:
    """The file names a single-module build publishes: the jar and the pom."""
    base = f"{spec.artifact_id}-{spec.version}"
    return f"{base}.jar", f"{base}.pom"
