"""Maven's `.buildinfo`: the list of outputs a build says it produced, checked against them.

A `.buildinfo` (Reproducible Builds' JVM format, written by maven-artifact-plugin) is
a Java properties file. The outputs are numbered keys, in the flat form

    outputs.0.filename=hello-1.0.jar
    outputs.0.length=1234
    outputs.0.checksums.sha512=<128 hex>

or, in an aggregated multi-module file, one level deeper (`outputs.M.N.filename`, with
`outputs.M.coordinates=G:A` naming the module). `parse_buildinfo` reads both into
`BuildinfoOutput`s; `check_buildinfo` compares them with the files the sandbox
collected: every listed output must be among them with that length and SHA-512, or the
build fails with one line naming the first file that disagrees (`BuildFailed(reason=
"buildinfo")`). Files pyrsia collected that the `.buildinfo` does not list are left to
the comparison between authorities (a `.buildinfo` may cover fewer files).

The file comes out of the build, so it is untrusted: at most `BUILDINFO_BYTES_MAX`
bytes and `BUILDINFO_OUTPUTS_MAX` outputs, numbers and hashes checked, a numbered
output missing a field is refused rather than skipped. Pure.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from pyrsia.errors import BuildFailed

BUILDINFO_BYTES_MAX = 1024 * 1024
BUILDINFO_OUTPUTS_MAX = 10_000
_OUTPUT_KEY = re.compile(r"outputs\.(\d{1,6})(?:\.(\d{1,6}))?\.(filename|length|checksums\.sha512)")
_SHA512 = re.compile(r"[0-9a-f]{128}")
_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "f": "\f"}


@dataclass(frozen=True, slots=True, kw_only=True)
class BuildinfoOutput:
    filename: str
    length: int
    sha512: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Buildinfo:
    outputs: tuple[BuildinfoOutput, ...]
    properties: Mapping[str, str]


def _refuse(why: str) -> BuildFailed:
    return BuildFailed(f"the build's .buildinfo {why}", reason="buildinfo")


def _unescape(text: str) -> str:
    out: list[str] = []
    index = 0
    while index < len(text):
        char = text[index]
        if char == "\\" and index + 1 < len(text):
            following = text[index + 1]
            if following == "u" and re.fullmatch(r"[0-9a-fA-F]{4}", text[index + 2 : index + 6]):
                out.append(chr(int(text[index + 2 : index + 6], 16)))
                index += 6
                continue
            out.append(_ESCAPES.get(following, following))
            index += 2
            continue
        out.append(char)
        index += 1
    return "".join(out)


def _logical_lines(text: str) -> list[str]:
    """Java properties lines: comments dropped, a line ending in an odd number of
    backslashes continues on the next (whose leading blanks are dropped)."""
    lines: list[str] = []
    pending = ""
    for raw in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        line = raw.lstrip(" \t\f") if pending or not raw.startswith(("#", "!")) else raw
        if not pending and (not line or line.startswith(("#", "!"))):
            continue
        trailing = len(line) - len(line.rstrip("\\"))
        if trailing % 2 == 1:
            pending += line[:-1]
            continue
        lines.append(pending + line)
        pending = ""
    if pending:
        lines.append(pending)
    return lines


def parse_properties(data: bytes) -> dict[str, str]:
    """A Java properties file (ISO-8859-1 or UTF-8) into a dict; `BuildFailed` when too big."""
    if len(data) > BUILDINFO_BYTES_MAX:
        raise _refuse(f"is larger than {BUILDINFO_BYTES_MAX} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    properties: dict[str, str] = {}
    for line in _logical_lines(text):
        match = re.match(r"((?:\\.|[^\\=: \t\f])*)[ \t\f]*[=: \t\f]?[ \t\f]*(.*)", line, re.DOTALL)
        if match is None:  # pragma: no cover - the pattern matches every string
            continue
        properties[_unescape(match.group(1))] = _unescape(match.group(2))
    return properties


def parse_buildinfo(data: bytes) -> Buildinfo:
    """The outputs a `.buildinfo` lists, in its numbering order; `BuildFailed` when malformed."""
    properties = parse_properties(data)
    fields: dict[tuple[int, int], dict[str, str]] = {}
    for key, value in properties.items():
        match = _OUTPUT_KEY.fullmatch(key)
        if match is None:
            continue
        outer, inner, field = match.groups()
        slot = (int(outer), int(inner) if inner is not None else -1)
        fields.setdefault(slot, {})[field] = value.strip()
        if len(fields) > BUILDINFO_OUTPUTS_MAX:
            raise _refuse(f"lists more than {BUILDINFO_OUTPUTS_MAX} outputs")
    outputs = []
    for slot in sorted(fields):
        entry = fields[slot]
        label = "outputs." + ".".join(str(n) for n in slot if n >= 0)
        missing = [name for name in ("filename", "length", "checksums.sha512") if name not in entry]
        if missing:
            raise _refuse(f"has {label} without {', '.join(missing)}")
        filename, length, sha512 = entry["filename"], entry["length"], entry["checksums.sha512"].lower()
        if (
            not filename
            or "/" in filename
            or "\\" in filename
            or filename in (".", "..")
            or len(filename) > 1024
        ):
            raise _refuse(f"{label}.filename {filename[:80]!r} is not a file name")
        if not re.fullmatch(r"[0-9]{1,15}", length):
            raise _refuse(f"{label}.length {length[:40]!r} is not a byte count")
        if not _SHA512.fullmatch(sha512):
            raise _refuse(f"{label}.checksums.sha512 is not 128 hex digits")
        outputs.append(BuildinfoOutput(filename=filename, length=int(length), sha512=sha512))
    if not outputs:
        raise _refuse("lists no outputs (outputs.N.filename, length, checksums.sha512)")
    return Buildinfo(outputs=tuple(outputs), properties=properties)


@dataclass(frozen=True, slots=True, kw_only=True)
class FileFacts:
    """What the sandbox measured of one collected file."""

    length: int
    sha512: str


def check_buildinfo(buildinfo: Buildinfo, files: Mapping[str, FileFacts]) -> tuple[str, ...]:
    """The names of the collected files the `.buildinfo` vouches for; `BuildFailed(reason=
    "buildinfo")` naming the first listed output that is missing or differs."""
    vouched = []
    for output in buildinfo.outputs:
        facts = files.get(output.filename)
        if facts is None:
            raise _refuse(f"lists {output.filename}, which the build did not produce")
        if facts.length != output.length:
            raise _refuse(f"says {output.filename} has {output.length} bytes; it has {facts.length}")
        if facts.sha512 != output.sha512:
            raise _refuse(f"gives {output.filename} another SHA-512 than the file has")
        vouched.append(output.filename)
    return tuple(dict.fromkeys(vouched))
