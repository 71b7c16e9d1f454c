"""Build specs: what to rebuild from which source, read as data and never run.

Two spellings of the same fields are read: Reproducible Central's `.buildspec` (a
bash file of variable assignments: `groupId`, `artifactId`, `version`, `gitRepo`,
`gitTag`, `tool`, `jdk`, `newline`, `command`, `buildinfo`, optional `umask`,
`timezone`, `MAVEN_OPTS`) and pyrsia's TOML form with the same keys. The `.buildspec`
reader understands the shell a spec uses — comments, `export`, single and double
quotes, backslash escapes, line continuations, `${name}` and `$name` references to
earlier assignments — and refuses everything else (command substitution, `;`, pipes,
redirections, `${x:-y}`, a statement that is not an assignment) with one line that
names the line. Nothing in a spec is ever executed by a shell.

Rules a spec must pass (each refusal is one `BuildSpecInvalid` line):

- the file is at most `SPEC_SIZE_BYTES_MAX` bytes, each value at most
  `VALUE_CHARS_MAX` characters after expansion;
- `gitRepo` is a `git://`, `https://`, `http://` or `file://` URL (no `ssh`, no
  `ext::` remote helpers, no scp-like `host:path`);
- `gitTag` is a tag name or a full 40-hex commit; `refs/heads/…` is a branch and is
  refused here, a plain name that the remote lists only as a branch is refused when
  cloning (`sandbox.py`);
- `command` is one plain `mvn` invocation: split into argv with `shlex`, no shell
  metacharacters (`; | & < > $ ( ) \\``), no settings or local-repository overrides
  (the sandbox supplies both);
- sources other than git (`sourceDistribution`) and hooks (`execBefore`,
  `execAfter`) are refused.

`require_supported(spec, toolchain)` then refuses a tool, JDK or newline this node
cannot provide (`ToolchainUnavailable`). `spec_digest(spec)` is what authorities
compare: SHA-256 over the canonical msgpack (`translog.codec`) of the map in
`canonical_fields(spec)` — keys `format` (`"pyrsia-buildspec/1"`), the ten fields,
`umask`, `timezone`, `mavenOpts`; `command` and `mavenOpts` as arrays of argv
strings, `buildinfo` `""` when absent — written `sha256:<hex>`. Both spellings of one
spec have one digest; cosmetic variables (`display`, `issue`, `diffoscope`) are not
part of it; `spec_from_canonical` reads that map back (an authority re-checks a
peer's spec field by field) and `spec_from_flags` builds a spec from the CLI's flags. Pure.
"""

from __future__ import annotations

import hashlib
import re
import shlex
import tomllib
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pyrsia.errors import BuildSpecInvalid, ToolchainUnavailable
from pyrsia.translog import codec

SPEC_SIZE_BYTES_MAX = 64 * 1024
VALUE_CHARS_MAX = 8 * 1024
COMMAND_ARGS_MAX = 128
SPEC_FORMAT = "pyrsia-buildspec/1"
REPO_SCHEMES = ("git", "https", "http", "file")
NEWLINES = ("lf", "crlf")

FIELDS = (
    "groupId",
    "artifactId",
    "version",
    "gitRepo",
    "gitTag",
    "tool",
    "jdk",
    "newline",
    "command",
    "buildinfo",
)
_OPTIONAL = ("newline", "buildinfo", "umask", "timezone", "MAVEN_OPTS")
_TOML_KEYS = frozenset(FIELDS) | {"umask", "timezone", "MAVEN_OPTS", "display", "issue", "diffoscope"}
_REFUSED = {
    "sourceDistribution": "only git sources are built (gitRepo and gitTag)",
    "sourcePath": "only git sources are built (gitRepo and gitTag)",
    "sourceRmFiles": "only git sources are built (gitRepo and gitTag)",
    "execBefore": "hooks run shell commands, and a spec is never run as shell",
    "execAfter": "hooks run shell commands, and a spec is never run as shell",
}
# Characters that mean something to a shell; the command never reaches one, so a
# command containing them was written for a shell and is refused rather than guessed at.
SHELL_METACHARACTERS = frozenset(";|&<>$()`\n\r")
# Options the sandbox owns: the mirror settings and the per-build local repository.
_OWNED_OPTIONS = ("-s", "--settings", "-gs", "--global-settings")
_OWNED_PROPERTIES = ("-Dmaven.repo.local",)

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_COORDINATE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,199}")
_VERSION = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+\-]{0,99}")
_TOOL = re.compile(r"mvn(?:-(\d+(?:\.\d+){0,3}))?")
_COMMIT = re.compile(r"[0-9a-f]{40}")
_TIMEZONE = re.compile(r"[A-Za-z0-9_+\-]+(?:/[A-Za-z0-9_+\-]+){0,3}")
_MAVEN_OPT = re.compile(r"-(?:D[A-Za-z0-9_.\-]+(?:=[^\s]*)?|X[A-Za-z0-9:+\-=.]+)")
_REF_FORBIDDEN = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]|\.\.|@\{|//")


@dataclass(frozen=True, slots=True, kw_only=True)
class BuildSpec:
    """One release to rebuild: its coordinates, its source, its toolchain and its command."""

    group_id: str
    artifact_id: str
    version: str
    git_repo: str
    git_tag: str  # a tag name (without refs/tags/) or a full 40-hex commit
    tool: str  # "mvn" or "mvn-3.8.7"
    jdk: int  # the JDK major version
    newline: str = "lf"
    command: tuple[str, ...]
    buildinfo: str | None = None
    umask: int = 0o022
    timezone: str = "UTC"
    maven_opts: tuple[str, ...] = ()

    @property
    def gav(self) -> str:
        return f"{self.group_id}:{self.artifact_id}:{self.version}"

    @property
    def pins_commit(self) -> bool:
        """True when `git_tag` is a commit hash rather than a tag name."""
        return _COMMIT.fullmatch(self.git_tag) is not None


@dataclass(frozen=True, slots=True, kw_only=True)
class Jdk:
    major: int
    version: str  # "17.0.15"
    home: str  # "/usr/lib/jvm/java-17-openjdk-amd64"


@dataclass(frozen=True, slots=True, kw_only=True)
class Toolchain:
    """What this node can build with; probed by `sandbox.probe_toolchain()`."""

    maven_version: str
    jdks: tuple[Jdk, ...]
    newlines: frozenset[str] = field(default_factory=lambda: frozenset(NEWLINES))


# -- the .buildspec reader ----------------------------------------------------------


class _Reader:
    """A cursor over a `.buildspec` that knows its line, for one-line refusals."""

    __slots__ = ("line", "pos", "text", "values")

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.line = 1
        self.values: dict[str, str] = {}

    def refuse(self, why: str) -> BuildSpecInvalid:
        return BuildSpecInvalid(f"buildspec line {self.line}: {why}")

    def peek(self, offset: int = 0) -> str:
        return self.text[self.pos + offset : self.pos + offset + 1]

    def skip_comment(self) -> None:
        end = self.text.find("\n", self.pos)
        self.pos = len(self.text) if end < 0 else end

    def statements(self) -> dict[str, str]:
        text = self.text
        while self.pos < len(text):
            char = text[self.pos]
            if char in " \t\r":
                self.pos += 1
            elif char == "\n":
                self.line += 1
                self.pos += 1
            elif char == "\\" and self.peek(1) == "\n":
                self.pos += 2
                self.line += 1
            elif char == "#":
                self.skip_comment()
            else:
                self.assignment()
        return self.values

    def assignment(self) -> None:
        match = _NAME.match(self.text, self.pos)
        if match and match.group() == "export" and self.peek(len("export")) in (" ", "\t"):
            self.pos = match.end()
            while self.peek() in (" ", "\t"):
                self.pos += 1
            match = _NAME.match(self.text, self.pos)
        if match is None or self.text[match.end() : match.end() + 1] != "=":
            end = self.text.find("\n", self.pos)
            snippet = self.text[self.pos : end if end >= 0 else None][:60]
            raise self.refuse(f"only NAME=value assignments are read, not {snippet!r}")
        name = match.group()
        self.pos = match.end() + 1
        self.values[name] = self.word(name)
        while self.peek() in (" ", "\t", "\r") and self.peek() != "":
            self.pos += 1
        if self.peek() == "#":
            self.skip_comment()
        elif self.peek() in tuple(";&|<>()`"):
            raise self.refuse(f"{self.peek()!r} is shell syntax; a buildspec is read as data, never run")
        elif self.peek() not in ("\n", ""):
            raise self.refuse(f"{name}= must be a single word (quote it), not followed by {self.peek()!r}")

    def word(self, name: str) -> str:
        text = self.text
        out: list[str] = []
        size = 0
        while self.pos < len(text):
            char = text[self.pos]
            piece = ""
            if char in " \t\n\r":
                break
            if char == "\\":
                following = self.peek(1)
                if following == "":
                    raise self.refuse("a backslash ends the file")
                self.pos += 2
                if following == "\n":
                    self.line += 1
                else:
                    piece = following
            elif char == "'":
                end = text.find("'", self.pos + 1)
                if end < 0:
                    raise self.refuse(f"{name}= has an unterminated single quote")
                piece = text[self.pos + 1 : end]
                self.line += piece.count("\n")
                self.pos = end + 1
            elif char == '"':
                self.pos += 1
                piece = self.double_quoted(name)
            elif char == "$":
                piece = self.reference(name, quoted=False)
            elif char in ";&|<>()`":
                raise self.refuse(f"{char!r} is shell syntax; a buildspec is read as data, never run")
            else:
                piece = char
                self.pos += 1
            out.append(piece)
            size += len(piece)
            if size > VALUE_CHARS_MAX:
                raise self.refuse(f"{name}= is longer than {VALUE_CHARS_MAX} characters")
        return "".join(out)

    def double_quoted(self, name: str) -> str:
        text = self.text
        out: list[str] = []
        size = 0
        opened_on = self.line
        while True:
            if self.pos >= len(text):
                self.line = opened_on
                raise self.refuse(f"{name}= has an unterminated double quote")
            char = text[self.pos]
            if char == '"':
                self.pos += 1
                return "".join(out)
            if char == "\\":
                following = self.peek(1)
                if following == "\n":
                    self.pos += 2
                    self.line += 1
                    continue
                if following in ('"', "\\", "$", "`"):
                    out.append(following)
                    self.pos += 2
                    continue
                out.append("\\")
                self.pos += 1
            elif char == "$":
                out.append(self.reference(name, quoted=True))
                size += len(out[-1]) - 1
            elif char == "`":
                raise self.refuse(f"{name}= uses command substitution; a buildspec is never run")
            else:
                if char == "\n":
                    self.line += 1
                out.append(char)
                self.pos += 1
            size += 1
            if size > VALUE_CHARS_MAX:
                raise self.refuse(f"{name}= is longer than {VALUE_CHARS_MAX} characters")

    def reference(self, name: str, *, quoted: bool) -> str:
        following = self.peek(1)
        if following in ("", " ", "\t", "\n", '"' if quoted else "\n"):
            self.pos += 1
            return "$"
        if following == "(":
            raise self.refuse(f"{name}= uses command substitution; a buildspec is never run")
        if following == "{":
            close = self.text.find("}", self.pos)
            inner = self.text[self.pos + 2 : close] if close >= 0 else ""
            if close < 0 or not _NAME.fullmatch(inner):
                raise self.refuse(f"{name}= may reference ${{NAME}} only, not {self.text[self.pos :][:30]!r}")
            self.pos = close + 1
            return self.lookup(inner)
        match = _NAME.match(self.text, self.pos + 1)
        if match is None:
            raise self.refuse(f"{name}= may reference ${{NAME}} only, not {self.text[self.pos :][:30]!r}")
        self.pos = match.end()
        return self.lookup(match.group())

    def lookup(self, name: str) -> str:
        if name not in self.values:
            raise self.refuse(f"${{{name}}} is not assigned above")
        return self.values[name]


def _decode(data: bytes, what: str) -> str:
    if len(data) > SPEC_SIZE_BYTES_MAX:
        raise BuildSpecInvalid(f"{what} is {len(data)} bytes; at most {SPEC_SIZE_BYTES_MAX} are read")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BuildSpecInvalid(f"{what} is not UTF-8 (byte {exc.start})") from exc


def read_buildspec(data: bytes) -> dict[str, str]:
    """The variables a `.buildspec` assigns, expanded, in order; nothing is executed."""
    return _Reader(_decode(data, "buildspec")).statements()


def parse_buildspec(data: bytes) -> BuildSpec:
    """A Reproducible Central `.buildspec` → `BuildSpec`, or one `BuildSpecInvalid` line."""
    values = read_buildspec(data)
    for name, why in _REFUSED.items():
        if values.get(name):
            raise BuildSpecInvalid(f"buildspec sets {name}: {why}")
    known = {name: values[name] for name in (*FIELDS, *_OPTIONAL) if name in values}
    return spec_from_fields(known)


def parse_toml_spec(data: bytes) -> BuildSpec:
    """pyrsia's TOML spec (the `.buildspec` keys; `command` a string or an argv array)."""
    try:
        doc = tomllib.loads(_decode(data, "TOML spec"))
    except tomllib.TOMLDecodeError as exc:
        raise BuildSpecInvalid(f"TOML spec: {exc}") from exc
    unknown = sorted(set(doc) - _TOML_KEYS)
    if unknown:
        refused = [key for key in unknown if key in _REFUSED]
        if refused:
            raise BuildSpecInvalid(f"TOML spec sets {refused[0]}: {_REFUSED[refused[0]]}")
        raise BuildSpecInvalid(f"TOML spec has unknown keys: {', '.join(unknown)[:200]}")
    return spec_from_fields({key: value for key, value in doc.items() if key in (*FIELDS, *_OPTIONAL)})


def load_spec(data: bytes, *, filename: str) -> BuildSpec:
    """Either spelling, by file name: `*.toml` is TOML, anything else a `.buildspec`."""
    if filename.endswith(".toml"):
        return parse_toml_spec(data)
    return parse_buildspec(data)


# -- fields ---------------------------------------------------------------------------


def _text(fields: Mapping[str, Any], name: str) -> str:
    value = fields.get(name)
    if value is None or value == "":
        raise BuildSpecInvalid(f"spec has no {name}")
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise BuildSpecInvalid(f"spec {name} must be a string")
    return str(value)


def spec_from_fields(fields: Mapping[str, Any]) -> BuildSpec:
    """Check each field and build the spec; also what the CLI's `--git/--tag/...` flags feed."""
    group_id = _text(fields, "groupId")
    artifact_id = _text(fields, "artifactId")
    version = _text(fields, "version")
    for name, value, pattern in (
        ("groupId", group_id, _COORDINATE),
        ("artifactId", artifact_id, _COORDINATE),
        ("version", version, _VERSION),
    ):
        if not pattern.fullmatch(value):
            raise BuildSpecInvalid(f"spec {name} {value[:80]!r} is not a Maven coordinate")
    tool = _text(fields, "tool")
    if not re.fullmatch(r"[a-z]+(?:-[0-9.]+)?", tool):
        raise BuildSpecInvalid(f"spec tool {tool[:40]!r} is not a tool name such as mvn or mvn-3.8.7")
    newline = str(fields.get("newline") or "lf")
    if newline not in NEWLINES:
        raise BuildSpecInvalid(f"spec newline must be lf or crlf, not {newline[:20]!r}")
    buildinfo = fields.get("buildinfo") or None
    if buildinfo is not None:
        buildinfo = check_relative_path(_text(fields, "buildinfo"), "buildinfo")
    raw_command = fields.get("command")
    if isinstance(raw_command, list):
        command = check_command_argv(raw_command)
    else:
        command = parse_command(_text(fields, "command"))
    return BuildSpec(
        group_id=group_id,
        artifact_id=artifact_id,
        version=version,
        git_repo=check_repo_url(_text(fields, "gitRepo")),
        git_tag=check_git_ref(_text(fields, "gitTag")),
        tool=tool,
        jdk=_jdk(fields.get("jdk")),
        newline=newline,
        command=command,
        buildinfo=buildinfo,
        umask=_umask(fields.get("umask")),
        timezone=_timezone(fields.get("timezone")),
        maven_opts=_maven_opts(fields.get("MAVEN_OPTS")),
    )


def spec_from_flags(
    *, git: str, tag: str, gav: str, jdk: str | int, command: str, tool: str = "mvn", newline: str = "lf"
) -> BuildSpec:
    """`pyrsia build source --git URL --tag TAG --gav G:A:V --jdk N --command "…"` as a spec."""
    parts = gav.split(":")
    if len(parts) != 3:
        raise BuildSpecInvalid(f"{gav[:200]!r} is not GROUP:ARTIFACT:VERSION")
    group_id, artifact_id, version = parts
    return spec_from_fields(
        {
            "groupId": group_id,
            "artifactId": artifact_id,
            "version": version,
            "gitRepo": git,
            "gitTag": tag,
            "tool": tool,
            "jdk": jdk,
            "newline": newline,
            "command": command,
        }
    )


def _jdk(value: Any) -> int:
    if value is None or value == "":
        raise BuildSpecInvalid("spec has no jdk")
    text = str(value)
    if text.startswith("1."):  # `1.8` is JDK 8
        text = text[2:]
    if isinstance(value, bool) or not re.fullmatch(r"[0-9]{1,2}", text) or int(text) == 0:
        raise BuildSpecInvalid(f"spec jdk must be a JDK major version such as 17, not {str(value)[:20]!r}")
    return int(text)


def _umask(value: Any) -> int:
    if value is None or value == "":
        return 0o022
    text = str(value)
    if not re.fullmatch(r"0?[0-7]{3}", text):
        raise BuildSpecInvalid(f"spec umask must be octal such as 022, not {text[:20]!r}")
    return int(text, 8)


def _timezone(value: Any) -> str:
    if value is None or value == "":
        return "UTC"
    text = str(value)
    if len(text) > 64 or not _TIMEZONE.fullmatch(text) or ".." in text:
        raise BuildSpecInvalid(f"spec timezone {text[:64]!r} is not a zone name such as Etc/GMT")
    return text


def _maven_opts(value: Any) -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    text = str(value)
    _refuse_metacharacters(text, "MAVEN_OPTS")
    try:
        options = tuple(shlex.split(text))
    except ValueError as exc:
        raise BuildSpecInvalid(f"spec MAVEN_OPTS does not split into words: {exc}") from exc
    for option in options:
        if not _MAVEN_OPT.fullmatch(option):
            raise BuildSpecInvalid(
                f"spec MAVEN_OPTS may hold -Dname=value and -X options only, not {option!r}"
            )
    return options


def check_relative_path(path: str, what: str) -> str:
    parts = path.split("/")
    if path.startswith("/") or ".." in parts or "\x00" in path or len(path) > 1024:
        raise BuildSpecInvalid(f"spec {what} must be a path inside the source tree, not {path[:80]!r}")
    return path


def check_repo_url(url: str) -> str:
    """A `git://`, `https://`, `http://` or `file://` URL; anything git would hand to a helper is refused."""
    if len(url) > 2048 or any(ord(char) < 0x21 or ord(char) == 0x7F for char in url):
        raise BuildSpecInvalid(f"spec gitRepo {url[:80]!r} has spaces or control characters")
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in REPO_SCHEMES or "::" in url.split("/", 1)[0]:
        raise BuildSpecInvalid(
            f"spec gitRepo {url[:80]!r} is not a git, https, http or file URL (no ssh, no remote helpers)"
        )
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost") or not parsed.path.startswith("/"):
            raise BuildSpecInvalid(f"spec gitRepo {url[:80]!r}: a file URL needs an absolute path")
    elif not parsed.hostname or parsed.hostname.startswith("-"):
        raise BuildSpecInvalid(f"spec gitRepo {url[:80]!r} names no host")
    if parsed.path in ("", "/"):
        raise BuildSpecInvalid(f"spec gitRepo {url[:80]!r} names no repository")
    return url


def check_git_ref(ref: str) -> str:
    """A tag name (a leading `refs/tags/` is dropped) or a full commit; branches are refused."""
    if ref.startswith("refs/heads/") or ref.startswith("refs/remotes/"):
        raise BuildSpecInvalid(
            f"spec gitTag {ref[:80]!r} names a branch; a tag or a full commit hash is built"
        )
    name = ref.removeprefix("refs/tags/")
    if name.startswith("refs/"):
        raise BuildSpecInvalid(f"spec gitTag {ref[:80]!r} is not a tag; a tag or a full commit hash is built")
    if (
        not name
        or len(name) > 255
        or name.startswith(("-", "/", "."))
        or name.endswith(("/", ".", ".lock"))
        or "/." in name
        or name == "@"
        or _REF_FORBIDDEN.search(name)
    ):
        raise BuildSpecInvalid(f"spec gitTag {ref[:80]!r} is not a valid git tag name")
    if name == "HEAD" or name.endswith("/HEAD"):
        raise BuildSpecInvalid(f"spec gitTag {ref[:80]!r} moves; a tag or a full commit hash is built")
    return name


def _refuse_metacharacters(text: str, what: str) -> None:
    found = sorted({char for char in text if char in SHELL_METACHARACTERS})
    if found:
        shown = " ".join(repr(char) for char in found)
        raise BuildSpecInvalid(
            f"spec {what} holds shell syntax ({shown}); it must be one plain mvn invocation "
            "and never runs through a shell"
        )


def parse_command(command: str) -> tuple[str, ...]:
    """`"mvn clean package -DskipTests"` → argv, or `BuildSpecInvalid` (shell syntax, not mvn, …)."""
    _refuse_metacharacters(command, "command")
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise BuildSpecInvalid(f"spec command does not split into words: {exc}") from exc
    return check_command_argv(argv)


def check_command_argv(argv: list[Any] | tuple[Any, ...]) -> tuple[str, ...]:
    if not argv or not all(isinstance(arg, str) for arg in argv):
        raise BuildSpecInvalid("spec command must be a non-empty list of strings")
    if len(argv) > COMMAND_ARGS_MAX:
        raise BuildSpecInvalid(f"spec command has {len(argv)} words; at most {COMMAND_ARGS_MAX}")
    for arg in argv:
        _refuse_metacharacters(arg, "command")
        if any(ord(char) < 0x20 for char in arg):
            raise BuildSpecInvalid("spec command holds control characters")
    if argv[0] != "mvn":
        raise BuildSpecInvalid(f"spec command must start with mvn, not {str(argv[0])[:40]!r}")
    check_owned_options(argv[1:])
    return tuple(argv)


def check_owned_options(args: list[str] | tuple[str, ...], *, what: str = "spec command") -> None:
    """Refuse Maven arguments that set what the sandbox owns: settings files (`-s`, `-gs`,
    also glued as `-sFILE`) and the local repository (`-Dmaven.repo.local`)."""
    for arg in args:
        glued = arg.startswith(("-s", "-gs")) and not arg.startswith("--")
        if arg in _OWNED_OPTIONS or glued or arg.startswith(("--settings=", "--global-settings=")):
            raise BuildSpecInvalid(f"{what} may not set {arg[:80]}: the sandbox supplies Maven's settings")
        if arg.split("=", 1)[0] in _OWNED_PROPERTIES:
            raise BuildSpecInvalid(f"{what} may not set {arg.split('=', 1)[0]}: each build has its own")


# -- support and digest ----------------------------------------------------------------


def require_supported(spec: BuildSpec, toolchain: Toolchain) -> Jdk:
    """The JDK this node builds `spec` with, or `ToolchainUnavailable` naming what is missing."""
    match = _TOOL.fullmatch(spec.tool)
    if match is None:
        raise ToolchainUnavailable(f"spec tool {spec.tool!r}: this node builds with mvn only")
    wanted = match.group(1)
    if wanted is not None and wanted != toolchain.maven_version:
        raise ToolchainUnavailable(
            f"spec tool {spec.tool!r}: this node has Maven {toolchain.maven_version} only"
        )
    jdks = {jdk.major: jdk for jdk in toolchain.jdks}
    if spec.jdk not in jdks:
        have = ", ".join(str(major) for major in sorted(jdks)) or "none"
        raise ToolchainUnavailable(f"spec jdk {spec.jdk}: this node has JDK {have}")
    if spec.newline not in toolchain.newlines:
        raise ToolchainUnavailable(
            f"spec newline {spec.newline}: this node builds with {', '.join(sorted(toolchain.newlines))}"
        )
    return jdks[spec.jdk]


def canonical_fields(spec: BuildSpec) -> dict[str, Any]:
    """The map `spec_digest` hashes; see the module docstring for its encoding."""
    return {
        "format": SPEC_FORMAT,
        "groupId": spec.group_id,
        "artifactId": spec.artifact_id,
        "version": spec.version,
        "gitRepo": spec.git_repo,
        "gitTag": spec.git_tag,
        "tool": spec.tool,
        "jdk": spec.jdk,
        "newline": spec.newline,
        "command": list(spec.command),
        "buildinfo": spec.buildinfo or "",
        "umask": spec.umask,
        "timezone": spec.timezone,
        "mavenOpts": list(spec.maven_opts),
    }


def spec_from_canonical(fields: Mapping[str, Any]) -> BuildSpec:
    """`canonical_fields` back into a spec, every field checked again: what an authority
    does with a spec that arrived from a peer."""
    if fields.get("format") != SPEC_FORMAT:
        raise BuildSpecInvalid(f"spec format must be {SPEC_FORMAT}, not {str(fields.get('format'))[:40]!r}")
    unknown = sorted(set(fields) - set(canonical_fields_keys()))
    if unknown:
        raise BuildSpecInvalid(f"spec has unknown keys: {', '.join(unknown)[:200]}")
    options = fields.get("mavenOpts", [])
    if not isinstance(options, list | tuple) or not all(isinstance(o, str) for o in options):
        raise BuildSpecInvalid("spec mavenOpts must be a list of strings")
    umask = fields.get("umask", 0o022)
    if isinstance(umask, bool) or not isinstance(umask, int) or not 0 <= umask <= 0o777:
        raise BuildSpecInvalid("spec umask must be an integer mode")
    spec = spec_from_fields(
        {
            **{name: fields.get(name) for name in FIELDS},
            "umask": f"{umask:03o}",
            "timezone": fields.get("timezone"),
            "MAVEN_OPTS": " ".join(shlex.quote(option) for option in options),
        }
    )
    if list(spec.maven_opts) != list(options):
        raise BuildSpecInvalid("spec mavenOpts must be -Dname=value and -X options without spaces")
    return spec


def canonical_fields_keys() -> tuple[str, ...]:
    return ("format", *FIELDS, "umask", "timezone", "mavenOpts")


def spec_digest(spec: BuildSpec) -> str:
    """`sha256:<hex>` of the canonical msgpack of `canonical_fields(spec)`."""
    return "sha256:" + hashlib.sha256(codec.encode(canonical_fields(spec))).hexdigest()
