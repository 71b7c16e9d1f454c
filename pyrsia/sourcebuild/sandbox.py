"""The shell of a source build: clone, run the sandbox, watch its limits, collect outputs.

Everything decided is decided in `plan.py`; this module runs it. Rules:

- git and the build run as the unprivileged build uid (when the node runs as root;
  otherwise as the node's own uid, and bubblewrap's user namespace is the fence);
  git gets no config, no prompts and four protocols (`plan.git_environment`);
- a tag is resolved with `git ls-remote` before cloning, and the clone's `HEAD` must be
  that commit: a branch, a missing tag or a tag that moved is `SourceUnavailable`;
- as root, the build's home is its own filesystem (`plan.mkfs_argv`, `mount_argv`): a
  sparse ext4 image of `limits.output_bytes_max` bytes holding the clone, the local
  repository, `target/` and the sandbox's `/tmp`. A write past it fails with ENOSPC,
  so the cap is hard; the watch below then sees the filesystem full and ends the
  build with `BuildFailed(reason="output_size")`. git, which removes the pack it was
  writing when it fails, is judged by what it said too (`plan.said_out_of_space`).
  Without root, the bytes under WORK are counted each poll instead (a fast writer
  overshoots by one poll's writes);
- the wall clock (and the output bytes) are watched every `limits.poll_s`; past
  either, the whole process group is killed with SIGKILL (bwrap's `--die-with-parent`
  and the pid namespace take every process of the build with it) and the build's
  home is unmounted and removed (`release_work_dir`):
  `BuildFailed(reason="timeout" | "output_size")`;
- after the clone, the tree is checked before anything reads or builds it
  (`check_source_tree`, rules in `tree.py`): symlinks pointing out of it and
  `.mvn/` configuration that overrides the sandbox are refused (`reason="source"`);
- outputs are found from the poms (`modules.py`: every module's pom, and its jar and
  classifier jars such as `-sources.jar` unless it is `pom`-packaged), read from the
  tree the build controlled without following symlinks (`O_NOFOLLOW` on every path
  component, regular files only, at most `limits.file_bytes_max` bytes) and copied to
  WORK/out under Maven's names (`artifactId-version[-classifier].ext`); when the spec
  names a `buildinfo`, that file is parsed (`buildinfo.py`) and must agree with them;
- foreign errors (`OSError`, `subprocess` timeouts) become `SourceUnavailable` or
  `BuildFailed` here, never further up.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import signal
import stat
import subprocess
import tempfile
import time
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from pyrsia.errors import BuildFailed, SourceUnavailable
from pyrsia.sourcebuild import modules as pom_modules
from pyrsia.sourcebuild import tree
from pyrsia.sourcebuild.buildinfo import BUILDINFO_BYTES_MAX, FileFacts, check_buildinfo, parse_buildinfo
from pyrsia.sourcebuild.compare import OutputFile, describe_output
from pyrsia.sourcebuild.plan import (
    BUILD_UID_DEFAULT,
    LS_REMOTE_BYTES_MAX,
    BuilderFacts,
    ModuleOutputs,
    SandboxLayout,
    SandboxLimits,
    SourceBuildResult,
    SourceCheckout,
    clone_argv,
    etc_visible,
    git_environment,
    maven_argv,
    maven_settings,
    mirror_forwarder_argv,
    mkfs_argv,
    module_output_names,
    mount_argv,
    resolve_tag,
    said_out_of_space,
    sandbox_argv,
)
from pyrsia.sourcebuild.spec import BuildSpec, Jdk, Toolchain, require_supported, spec_digest

JVM_DIR = Path("/usr/lib/jvm")
MAVEN_HOME = Path("/usr/share/maven")
_STDERR_TAIL_CHARS = 400  # the part of git's stderr a failure quotes
_STDERR_SCAN_CHARS = 4096  # the part searched for why it failed (ENOSPC is not always last)
_FORWARDER_READY_S = 10.0
_MOUNT_TIME_S_MAX = 120.0
# The capped filesystem counts as full below this many free bytes, or 1/256 of its size
# if more: ext4 keeps some blocks back for its own metadata (a writer here got ENOSPC
# with 450 KiB still counted free), and a build this close to its cap is past it.
_FULL_SLACK_BYTES = 2 * 1024 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class MirrorAddress:
    """The node's Maven repository on the host (`http://HOST:PORT/maven2/`)."""

    host: str
    port: int


@dataclass(frozen=True, slots=True, kw_only=True)
class SandboxOutcome:
    exit_code: int
    wall_time_s: float
    log_tail: str


# -- toolchain --------------------------------------------------------------------------


def probe_toolchain(jvm_dir: Path = JVM_DIR, maven_home: Path = MAVEN_HOME) -> Toolchain:
    """The JDKs under `jvm_dir` (by their `release` file) and the Maven under `maven_home`."""
    jdks: dict[int, Jdk] = {}
    for home in sorted(jvm_dir.glob("*")):
        if home.is_symlink() or not (home / "bin/java").exists():
            continue
        try:
            release = (home / "release").read_text(errors="replace")
        except OSError:
            continue
        match = re.search(r'^JAVA_VERSION="([0-9][0-9._+a-z-]*)"', release, re.MULTILINE)
        if match is None:
            continue
        version = match.group(1)
        parts = re.split(r"[._+-]", version)
        major = int(parts[1]) if parts[0] == "1" and len(parts) > 1 and parts[1].isdigit() else int(parts[0])
        jdks.setdefault(major, Jdk(major=major, version=version, home=str(home)))
    return Toolchain(maven_version=_maven_version(maven_home), jdks=tuple(jdks[m] for m in sorted(jdks)))


def _maven_version(maven_home: Path) -> str:
    for jar in sorted((maven_home / "lib").glob("maven-core*.jar")):
        try:
            with zipfile.ZipFile(jar) as archive:
                props = archive.read("META-INF/maven/org.apache.maven/maven-core/pom.properties").decode()
        except (OSError, KeyError, zipfile.BadZipFile):
            continue
        match = re.search(r"^version=(\S+)", props, re.MULTILINE)
        if match:
            return match.group(1)
    return "unknown"


# -- the work directory -----------------------------------------------------------------


def _run_tool(argv: Sequence[str], what: str) -> None:
    try:
        done = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
            timeout=_MOUNT_TIME_S_MAX,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BuildFailed(f"cannot {what}: {exc}", reason="sandbox") from exc
    if done.returncode != 0:
        why = done.stderr.decode(errors="replace").strip().splitlines()
        raise BuildFailed(f"cannot {what}: {why[-1] if why else f'exit {done.returncode}'}", reason="sandbox")


def _mount_capped_home(layout: SandboxLayout, limits: SandboxLimits) -> None:
    """home/ becomes a sparse ext4 image of `limits.output_bytes_max` bytes (see `plan.py`)."""
    try:
        with open(layout.image, "xb") as image:
            os.chmod(layout.image, 0o600)
            image.truncate(limits.output_bytes_max)
    except OSError as exc:
        raise BuildFailed(
            f"cannot create the build's {limits.output_bytes_max}-byte filesystem: {exc}", reason="sandbox"
        ) from exc
    _run_tool(mkfs_argv(layout), f"make the build's {limits.output_bytes_max}-byte filesystem")
    _run_tool(mount_argv(layout), "mount the build's size-limited filesystem")
    with contextlib.suppress(OSError):
        os.rmdir(Path(layout.home) / "lost+found")


def is_capped(layout: SandboxLayout) -> bool:
    """True when home/ is the build's own size-limited filesystem."""
    return os.path.ismount(layout.home)


def release_work_dir(layout: SandboxLayout) -> None:
    """Unmount and remove the build's home, its image and its run directory (WORK/out and
    the log stay for the caller). Safe to call twice and after a failed `prepare_work_dir`."""
    if is_capped(layout):
        try:
            _run_tool(("umount", str(layout.home)), "unmount the build's filesystem")
        except BuildFailed:
            # A process that still holds it open cannot stop the detach; the loop device
            # is freed when the last reference goes (mount -o loop sets autoclear).
            subprocess.run(("umount", "-l", str(layout.home)), check=False, capture_output=True)
    _remove(layout.home)
    _remove(layout.run)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(layout.image)


def prepare_work_dir(
    work_dir: Path, *, uid: int, drop_privileges: bool, mirror: bool, limits: SandboxLimits | None = None
) -> SandboxLayout:
    """Create WORK's tree (see `plan.py`): home owned by `uid`, settings.xml written.

    With `limits` and root, home/ is a filesystem of `limits.output_bytes_max` bytes
    (release it with `release_work_dir`)."""
    layout = SandboxLayout(work=PurePosixPath(work_dir))
    try:
        work_dir.mkdir(mode=0o755, parents=False, exist_ok=True)
        if any(work_dir.iterdir()):
            raise BuildFailed(
                f"{work_dir} is not empty; each build needs a fresh directory", reason="sandbox"
            )
        os.chmod(work_dir, 0o755)
        if drop_privileges:
            for parent in work_dir.resolve().parents:
                if not parent.stat().st_mode & stat.S_IXOTH:
                    raise BuildFailed(
                        f"{parent} is not searchable by others (o+x), so uid {uid} cannot reach {work_dir}",
                        reason="sandbox",
                    )
        for directory in (layout.home, layout.run, layout.out):
            os.mkdir(directory, 0o755)
        if drop_privileges and limits is not None:
            try:
                _mount_capped_home(layout, limits)
            except BuildFailed:
                release_work_dir(layout)
                raise
            os.mkdir(layout.tmp, 0o700)
            os.chmod(layout.home, 0o755)
        Path(layout.settings).write_text(maven_settings(mirror=mirror))
        os.chmod(layout.settings, 0o644)
        if drop_privileges:
            os.chown(layout.home, uid, uid)
            if is_capped(layout):
                os.chown(layout.tmp, uid, uid)
    except OSError as exc:
        release_work_dir(layout)
        raise BuildFailed(f"cannot prepare {work_dir}: {exc}", reason="sandbox") from exc
    return layout


@dataclass(frozen=True, slots=True, kw_only=True)
class _Git:
    """Runs git for one build: as the build uid, with the spec's umask, under the same
    watch as the build (time, bytes under WORK); its output goes to files capped by
    RLIMIT_FSIZE, so a hostile server cannot make the node buffer without bound."""

    spec: BuildSpec
    layout: SandboxLayout
    limits: SandboxLimits
    uid: int
    drop_privileges: bool

    def __call__(self, *args: str, cwd: PurePosixPath, output_bytes_max: int = LS_REMOTE_BYTES_MAX) -> str:
        limits, repo = self.limits, self.spec.git_repo
        verb = _git_verb(args)
        rlimits = ("prlimit", f"--fsize={limits.file_bytes_max}", f"--nproc={limits.processes_max}", "--")
        user = self.uid if self.drop_privileges else None
        try:
            with (
                tempfile.TemporaryFile(dir=self.layout.work) as out,
                tempfile.TemporaryFile(dir=self.layout.work) as err,
            ):
                process = subprocess.Popen(
                    (*rlimits, "git", *args),
                    env=git_environment(self.layout, git_repo=repo),
                    cwd=str(cwd),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    start_new_session=True,
                    umask=self.spec.umask,
                    user=user,
                    group=user,
                    extra_groups=[] if user is not None else None,
                )
                killed_for = _supervise(
                    process, layout=self.layout, limits=limits, time_s_max=limits.fetch_time_s_max
                )
                out.seek(0)
                answer = out.read(output_bytes_max + 1)
                err.seek(0, os.SEEK_END)
                err.seek(max(0, err.tell() - _STDERR_SCAN_CHARS))
                said = err.read().decode(errors="replace")
                stderr = said[-_STDERR_TAIL_CHARS:].strip().splitlines()
        except OSError as exc:
            raise SourceUnavailable(f"{repo}: cannot run git: {exc}") from exc
        if killed_for == "timeout":
            raise SourceUnavailable(f"{repo}: git {verb} took longer than {limits.fetch_time_s_max:g} s")
        out_of_space = process.returncode != 0 and (_filesystem_full(self.layout) or said_out_of_space(said))
        if killed_for == "output_size" or out_of_space:
            raise SourceUnavailable(f"{repo}: git {verb} wrote more than {limits.output_bytes_max} bytes")
        if len(answer) > output_bytes_max:
            raise SourceUnavailable(f"{repo}: git {verb} answered more than {output_bytes_max} bytes")
        if process.returncode != 0:
            why = stderr[-1] if stderr else f"exit {process.returncode}"
            raise SourceUnavailable(f"{repo}: git {verb} failed: {why}")
        return answer.decode(errors="replace")


def _git_verb(args: Sequence[str]) -> str:
    """The git command in an argv (`clone` in `-c k=v clone …`), for messages."""
    rest = iter(args)
    for arg in rest:
        if arg == "-c":
            next(rest, None)
        elif not arg.startswith("-"):
            return arg
    return "git"


def fetch_source(
    spec: BuildSpec,
    layout: SandboxLayout,
    *,
    limits: SandboxLimits,
    uid: int,
    drop_privileges: bool,
) -> SourceCheckout:
    """Clone `spec`'s tag or commit into `layout.source` and say which commit it is."""
    git = _Git(spec=spec, layout=layout, limits=limits, uid=uid, drop_privileges=drop_privileges)
    if spec.pins_commit:
        expected = spec.git_tag
    else:
        listing = git("ls-remote", "--tags", "--heads", "--", spec.git_repo, cwd=layout.home)
        expected = resolve_tag(listing, spec.git_tag, git_repo=spec.git_repo)
    git(*clone_argv(spec, layout)[1:], cwd=layout.home)
    if spec.pins_commit:
        try:
            git("checkout", "-q", "--detach", expected, cwd=layout.source)
        except SourceUnavailable as exc:
            raise SourceUnavailable(f"{spec.git_repo} has no commit {expected}") from exc
    head = git("rev-parse", "HEAD", cwd=layout.source).strip()
    if head != expected:
        raise SourceUnavailable(
            f"{spec.git_repo}: {spec.git_tag!r} checked out {head[:12]}, but the remote lists {expected[:12]}"
        )
    when = git("log", "-1", "--format=%ct", "HEAD", cwd=layout.source).strip()
    check_source_tree(layout)
    return SourceCheckout(git_repo=spec.git_repo, ref=spec.git_tag, commit=head, commit_time=int(when))


def check_source_tree(layout: SandboxLayout) -> None:
    """Refuse a clone with symlinks out of the tree or `.mvn/` files that override the
    sandbox (rules in `tree.py`); `BuildFailed(reason="source")`."""
    root = str(layout.source)
    real_root = os.path.realpath(root)
    seen = 0
    stack = [""]
    while stack:
        relative = stack.pop()
        try:
            entries = list(os.scandir(os.path.join(root, relative) if relative else root))
        except OSError as exc:
            raise BuildFailed(f"cannot read the source tree: {exc}", reason="source") from exc
        for entry in entries:
            seen += 1
            if seen > tree.TREE_ENTRIES_MAX:
                raise BuildFailed(
                    f"the source has more than {tree.TREE_ENTRIES_MAX} files and directories", reason="source"
                )
            path = f"{relative}/{entry.name}" if relative else entry.name
            if entry.is_symlink():
                try:
                    target = os.readlink(entry.path)
                except OSError as exc:
                    raise BuildFailed(f"cannot read the symlink {path}: {exc}", reason="source") from exc
                tree.check_link(path, target)
                resolved = os.path.realpath(entry.path)
                if resolved != real_root and not resolved.startswith(real_root + "/"):
                    raise BuildFailed(  # inside by its text, outside through other links
                        f"the source has a symlink {path[:200]} -> {target[:200]} that resolves outside it",
                        reason="source",
                    )
            elif entry.is_dir(follow_symlinks=False):
                stack.append(path)
    for name, check in (
        (tree.MAVEN_CONFIG, tree.check_maven_config),
        (tree.JVM_CONFIG, tree.check_jvm_config),
    ):
        data = _read_beneath(layout.source, name, tree.MVN_CONFIG_BYTES_MAX, missing_ok=True)
        if data is not None:
            check(data)


def _read_beneath(
    root: PurePosixPath, relative: str, bytes_max: int, *, missing_ok: bool = False
) -> bytes | None:
    """A small regular file under `root`, following no symlink; `BuildFailed(reason="source")`
    when it is not one or is larger than `bytes_max`; None when absent and `missing_ok`."""
    try:
        fd = _open_beneath(root, relative)
    except FileNotFoundError:
        if missing_ok:
            return None
        raise
    except OSError as exc:
        raise BuildFailed(f"{relative} is not a regular file in the source: {exc}", reason="source") from exc
    with os.fdopen(fd, "rb") as stream:
        data = stream.read(bytes_max + 1)
    if len(data) > bytes_max:
        raise BuildFailed(f"{relative} is larger than {bytes_max} bytes", reason="source")
    return data


# -- the sandbox ------------------------------------------------------------------------


def disk_usage_bytes(root: Path) -> int:
    """Bytes allocated under `root`, without following links; entries that vanish are skipped."""
    total = 0
    stack = [str(root)]
    while stack:
        try:
            with os.scandir(stack.pop()) as entries:
                for entry in entries:
                    try:
                        info = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    total += info.st_blocks * 512
                    if stat.S_ISDIR(info.st_mode):
                        stack.append(entry.path)
        except OSError:
            continue
    return total


def _filesystem_full(layout: SandboxLayout) -> bool:
    """True when home/ is the capped filesystem and (almost) no byte of it is left."""
    if not is_capped(layout):
        return False
    try:
        info = os.statvfs(layout.home)
    except OSError:
        return False
    slack = max(_FULL_SLACK_BYTES, info.f_blocks * info.f_frsize // 256)
    return info.f_bavail * info.f_frsize < slack or info.f_favail == 0


def _log_tail(path: PurePosixPath, limit: int) -> str:
    try:
        with open(path, "rb") as log:
            log.seek(0, os.SEEK_END)
            log.seek(max(0, log.tell() - limit))
            return log.read().decode(errors="replace")
    except OSError:
        return ""


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _start_forwarder(layout: SandboxLayout, mirror: MirrorAddress, uid: int) -> subprocess.Popen[bytes]:
    try:
        forwarder = subprocess.Popen(
            mirror_forwarder_argv(layout, uid=uid, host=mirror.host, port=mirror.port),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            env={"PATH": "/usr/bin:/bin"},
        )
    except OSError as exc:
        raise BuildFailed(f"cannot start the mirror bridge (socat): {exc}", reason="sandbox") from exc
    deadline = time.monotonic() + _FORWARDER_READY_S
    while not os.path.exists(layout.mirror_socket):
        if forwarder.poll() is not None or time.monotonic() > deadline:
            _kill_group(forwarder)
            raise BuildFailed("the mirror bridge (socat) did not start", reason="sandbox")
        time.sleep(0.01)
    return forwarder


def _supervise(
    process: subprocess.Popen[bytes], *, layout: SandboxLayout, limits: SandboxLimits, time_s_max: float
) -> str:
    """Wait for `process`; kill its whole group past `time_s_max` or `limits.output_bytes_max`
    bytes under WORK. Returns what it was killed for: `""`, `timeout` or `output_size`."""
    started = time.monotonic()
    killed_for = ""
    capped = is_capped(layout)
    try:
        while True:
            try:
                process.wait(timeout=limits.poll_s)
                break
            except subprocess.TimeoutExpired:
                pass
            if time.monotonic() - started > time_s_max:
                killed_for = "timeout"
            elif (
                _filesystem_full(layout)
                if capped
                else disk_usage_bytes(Path(layout.work)) > limits.output_bytes_max
            ):
                killed_for = "output_size"
            if killed_for:
                _kill_group(process)
                break
    finally:
        if process.returncode is None:
            _kill_group(process)
    return killed_for


def _execute(argv: Sequence[str], *, layout: SandboxLayout, limits: SandboxLimits) -> SandboxOutcome:
    started = time.monotonic()
    try:
        with open(layout.log, "ab") as log:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={"PATH": "/usr/bin:/bin"},
            )
    except OSError as exc:
        raise BuildFailed(f"cannot start the sandbox: {exc}", reason="sandbox") from exc
    killed_for = _supervise(process, layout=layout, limits=limits, time_s_max=limits.wall_time_s_max)
    if not killed_for and process.returncode != 0 and _filesystem_full(layout):
        killed_for = "output_size"
    elapsed = time.monotonic() - started
    tail = _log_tail(layout.log, limits.log_tail_bytes_max)
    if killed_for == "timeout":
        raise BuildFailed(
            f"the build ran past its {limits.wall_time_s_max:g} s limit and was killed",
            reason="timeout",
            log_tail=tail,
        )
    if killed_for == "output_size":
        raise BuildFailed(
            f"the build filled its {limits.output_bytes_max}-byte output limit "
            "(its directory, local Maven repository and /tmp) and was stopped",
            reason="output_size",
            log_tail=tail,
        )
    return SandboxOutcome(exit_code=process.returncode, wall_time_s=elapsed, log_tail=tail)


def _remove(path: PurePosixPath) -> None:
    shutil.rmtree(path, ignore_errors=True)


def _open_beneath(root: PurePosixPath, relative: str) -> int:
    """An fd for a regular file under `root`, following no symlink on the way."""
    parts = [part for part in relative.split("/") if part]
    if not parts or any(part in (".", "..") for part in parts):
        raise OSError(f"bad output path {relative!r}")
    directory = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        for part in parts[:-1]:
            inner = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=directory)
            os.close(directory)
            directory = inner
        fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=directory)
    finally:
        os.close(directory)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(f"{relative} is not a regular file")
    return fd


def _copy_out(layout: SandboxLayout, relative: str, name: str, limits: SandboxLimits) -> OutputFile:
    fd = _open_beneath(layout.home, relative)
    target = Path(layout.out) / name
    with os.fdopen(fd, "rb") as source, open(target, "xb") as sink:
        copied = 0
        while chunk := source.read(1024 * 1024):
            copied += len(chunk)
            if copied > limits.file_bytes_max:
                raise BuildFailed(
                    f"{relative} is larger than {limits.file_bytes_max} bytes", reason="output_size"
                )
            sink.write(chunk)
    os.chmod(target, 0o644)
    with open(target, "rb") as stream:
        return describe_output(name, stream)


def _list_directory(layout: SandboxLayout, relative: str) -> list[str]:
    try:
        fd = _open_directory_beneath(layout.home, relative)
    except OSError:
        return []
    try:
        return sorted(os.listdir(fd))
    finally:
        os.close(fd)


def _open_directory_beneath(root: PurePosixPath, relative: str) -> int:
    directory = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    for part in relative.split("/"):
        try:
            inner = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=directory)
        finally:
            os.close(directory)
        directory = inner
    return directory


def read_modules(
    layout: SandboxLayout, *, user_properties: Mapping[str, str] | None = None
) -> tuple[pom_modules.Module, ...]:
    """The project's modules, root first, from the poms in the built tree (no links followed);
    `user_properties`: the command's `-D` values, which win over the poms' (as in Maven)."""
    found: list[pom_modules.Module] = []
    queue: list[tuple[str, str, pom_modules.Module | None, int]] = [("", "pom.xml", None, 0)]
    while queue:
        directory, pom_path, parent, depth = queue.pop(0)
        try:
            data = _read_beneath(layout.source, pom_path, pom_modules.POM_BYTES_MAX)
        except BuildFailed as exc:
            raise BuildFailed(f"cannot read {pom_path}: {exc.message}", reason="no_output") from exc
        assert data is not None
        if depth > pom_modules.MODULE_DEPTH_MAX:
            raise BuildFailed(
                f"{pom_path} nests modules more than {pom_modules.MODULE_DEPTH_MAX} levels deep",
                reason="modules",
            )
        pom = pom_modules.parse_pom(data, where=pom_path)
        module = pom_modules.resolve_module(
            pom, path=directory, pom_path=pom_path, parent=parent, user_properties=user_properties
        )
        found.append(module)
        for child in pom.modules:
            child_dir, child_pom = pom_modules.child_location(directory, child)
            queue.append((child_dir, child_pom, module, depth + 1))
        if len(found) + len(queue) > pom_modules.MODULES_MAX:
            raise BuildFailed(
                f"the project has more than {pom_modules.MODULES_MAX} modules", reason="modules"
            )
    pom_modules.check_unique(found)
    return tuple(found)


@dataclass(frozen=True, slots=True, kw_only=True)
class CollectedOutputs:
    files: tuple[OutputFile, ...]
    modules: tuple[ModuleOutputs, ...]
    buildinfo_files: tuple[str, ...] = ()


def _module_files(layout: SandboxLayout, module: pom_modules.Module) -> list[tuple[str, str]]:
    """(path under home, output name) of one module's files; its pom last."""
    prefix = f"src/{module.path}" if module.path else "src"
    files = []
    if module.publishes_jar:
        listing = _list_directory(layout, f"{prefix}/target")
        names = module_output_names(
            artifact_id=module.artifact_id,
            version=module.version,
            packaging=module.packaging,
            target_listing=listing,
        )
        if names[0] not in listing:
            where = f"{module.path}/target" if module.path else "target"
            raise BuildFailed(f"the build produced no {where}/{names[0]}", reason="no_output")
        files = [(f"{prefix}/target/{name}", name) for name in names]
    pom_name = f"{module.file_base()}.pom"
    files.append((f"src/{module.pom_path}", pom_name))
    return files


def collect_build_outputs(spec: BuildSpec, layout: SandboxLayout, limits: SandboxLimits) -> CollectedOutputs:
    """Every module's pom and artifacts (see the module docstring), copied to WORK/out,
    checked against the spec's `.buildinfo` when it names one. All outputs or none."""
    try:
        modules = read_modules(layout, user_properties=pom_modules.command_properties(spec.command))
        if not any(
            (m.group_id, m.artifact_id, m.version) == (spec.group_id, spec.artifact_id, spec.version)
            for m in modules
        ):
            raise BuildFailed(f"the project has no module {spec.gav}", reason="no_output")
        outputs: list[OutputFile] = []
        described: list[ModuleOutputs] = []
        for module in modules:
            files = _module_files(layout, module)
            for relative, name in files:
                outputs.append(_copy_out(layout, relative, name, limits))
            described.append(
                ModuleOutputs(
                    group_id=module.group_id,
                    artifact_id=module.artifact_id,
                    version=module.version,
                    packaging=module.packaging,
                    path=module.path,
                    files=tuple(name for _, name in files),
                )
            )
        vouched: tuple[str, ...] = ()
        if spec.buildinfo:
            vouched = _check_buildinfo(spec.buildinfo, layout, outputs)
    except (OSError, BuildFailed) as exc:
        for copied in Path(layout.out).iterdir():  # all outputs or none
            copied.unlink()
        if isinstance(exc, BuildFailed):
            raise
        raise BuildFailed(f"cannot collect the build's outputs: {exc}", reason="no_output") from exc
    return CollectedOutputs(
        files=tuple(sorted(outputs, key=lambda f: f.name)), modules=tuple(described), buildinfo_files=vouched
    )


def _check_buildinfo(path: str, layout: SandboxLayout, outputs: list[OutputFile]) -> tuple[str, ...]:
    try:
        data = _read_beneath(layout.source, path, BUILDINFO_BYTES_MAX, missing_ok=True)
    except BuildFailed as exc:
        raise BuildFailed(exc.message, reason="buildinfo") from exc
    if data is None:
        raise BuildFailed(
            f"the spec names buildinfo {path}, but the build did not write it", reason="buildinfo"
        )
    facts = {}
    for output in outputs:
        digest = hashlib.sha512()
        with open(Path(layout.out) / output.name, "rb") as stream:
            while chunk := stream.read(1024 * 1024):
                digest.update(chunk)
        facts[output.name] = FileFacts(length=output.size, sha512=digest.hexdigest())
    return check_buildinfo(parse_buildinfo(data), facts)


def collect_outputs(spec: BuildSpec, layout: SandboxLayout, limits: SandboxLimits) -> tuple[OutputFile, ...]:
    """The outputs of `collect_build_outputs`, sorted by name."""
    return collect_build_outputs(spec, layout, limits).files


def _etc_listing() -> list[str]:
    try:
        return os.listdir("/etc")
    except OSError:
        return []


def run_in_sandbox(
    argv: Sequence[str],
    *,
    spec: BuildSpec,
    jdk: Jdk,
    layout: SandboxLayout,
    limits: SandboxLimits,
    uid: int,
    source_date_epoch: int,
    mirror: MirrorAddress | None,
    drop_privileges: bool,
) -> SandboxOutcome:
    """Run `argv` in the sandbox of `layout` (the clone must already be in `layout.source`)."""
    forwarder = _start_forwarder(layout, mirror, uid) if mirror is not None else None
    try:
        full = sandbox_argv(
            spec=spec,
            jdk=jdk,
            layout=layout,
            limits=limits,
            uid=uid,
            source_date_epoch=source_date_epoch,
            mirror=mirror is not None,
            drop_privileges=drop_privileges,
            etc_entries=etc_visible(_etc_listing()),
            argv=tuple(argv),
            tmp_in_home=is_capped(layout),
        )
        return _execute(full, layout=layout, limits=limits)
    finally:
        if forwarder is not None:
            _kill_group(forwarder)


def run_source_build(
    spec: BuildSpec,
    *,
    work_dir: Path,
    mirror: MirrorAddress | None,
    toolchain: Toolchain | None = None,
    limits: SandboxLimits | None = None,
    uid: int = BUILD_UID_DEFAULT,
) -> SourceBuildResult:
    """Clone, build in the sandbox and collect: the outputs end in `work_dir/out`.

    `work_dir` must be new or empty and reachable (o+x) by `uid`; the caller removes
    it. Raises `ToolchainUnavailable`, `SourceUnavailable` or `BuildFailed`; on every
    failure the build's home (clone, local repository, target) is removed."""
    limits = limits or SandboxLimits()
    toolchain = toolchain or probe_toolchain()
    jdk = require_supported(spec, toolchain)
    drop_privileges = os.geteuid() == 0
    if not drop_privileges:
        uid = os.geteuid()
    layout = prepare_work_dir(
        work_dir, uid=uid, drop_privileges=drop_privileges, mirror=mirror is not None, limits=limits
    )
    started = time.monotonic()
    try:
        checkout = fetch_source(spec, layout, limits=limits, uid=uid, drop_privileges=drop_privileges)
        outcome = run_in_sandbox(
            maven_argv(spec),
            spec=spec,
            jdk=jdk,
            layout=layout,
            limits=limits,
            uid=uid,
            source_date_epoch=checkout.commit_time,
            mirror=mirror,
            drop_privileges=drop_privileges,
        )
        if outcome.exit_code != 0:
            raise BuildFailed(
                f"{spec.command[0]} exited with {outcome.exit_code}", reason="exit", log_tail=outcome.log_tail
            )
        collected = collect_build_outputs(spec, layout, limits)
    finally:
        release_work_dir(layout)
    return SourceBuildResult(
        spec_digest=spec_digest(spec),
        git_repo=spec.git_repo,
        commit=checkout.commit,
        source_date_epoch=checkout.commit_time,
        outputs=collected.files,
        output_dir=str(layout.out),
        builder=BuilderFacts(
            jdk_major=jdk.major, jdk_version=jdk.version, maven_version=toolchain.maven_version
        ),
        log_tail=outcome.log_tail,
        log_path=str(layout.log),
        wall_time_s=time.monotonic() - started,
        modules=collected.modules,
        buildinfo_files=collected.buildinfo_files,
    )
