"""Comparing two builds' outputs, file by file and, for jars, entry by entry.

A build's outputs are described once (`describe_output`): name, size, SHA-256 and,
for a zip (jar, war), each entry's name, size and CRC-32 read from the central
directory. Two descriptions compare (`compare_outputs`) into a `BuildComparison`
shaped like Reproducible Central's `.buildcompare`: the files that match (`ok_files`)
and those that differ (`ko_files`), each difference naming the jar entries whose
size or CRC differ or that only one side has. Same entries but other bytes (order,
timestamps, modes) is reported as such, so a reason never claims more than it knows.

Descriptions cross the network between authorities, so `OutputFile.from_fields`
checks a peer's map like any untrusted input. Reading a zip is bounded by
`ZIP_ENTRIES_MAX`; entry names are kept to `ENTRY_NAME_CHARS_MAX`. Pure: the caller
opens the file and passes the binary stream.
"""

from __future__ import annotations

import hashlib
import re
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import IO, Any

from pyrsia.errors import BuildFailed

ZIP_ENTRIES_MAX = 100_000
ENTRY_NAME_CHARS_MAX = 1024
ENTRY_DIFFERENCES_SHOWN_MAX = 50
ZIP_SUFFIXES = (".jar", ".war", ".ear", ".zip")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_HASH_CHUNK_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class ZipEntry:
    name: str
    size: int
    crc: int


@dataclass(frozen=True, slots=True, kw_only=True)
class OutputFile:
    """One built file: name (`hello-1.0.jar`), size, sha256 hex; entries for a zip."""

    name: str
    size: int
    sha256: str
    entries: tuple[ZipEntry, ...] | None = None

    def to_fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = {"name": self.name, "size": self.size, "sha256": self.sha256}
        if self.entries is not None:
            fields["entries"] = [[e.name, e.size, e.crc] for e in self.entries]
        return fields

    @classmethod
    def from_fields(cls, fields: Mapping[str, Any]) -> OutputFile:
        """A peer's description, checked: `BuildFailed(reason="malformed")` when it is not one."""
        try:
            name, size, sha256 = fields["name"], fields["size"], fields["sha256"]
            raw_entries = fields.get("entries")
            if not (isinstance(name, str) and 0 < len(name) <= ENTRY_NAME_CHARS_MAX):
                raise ValueError("name")
            if isinstance(size, bool) or not isinstance(size, int) or size < 0:
                raise ValueError("size")
            if not (isinstance(sha256, str) and _SHA256.fullmatch(sha256)):
                raise ValueError("sha256")
            entries = None
            if raw_entries is not None:
                if not isinstance(raw_entries, list | tuple) or len(raw_entries) > ZIP_ENTRIES_MAX:
                    raise ValueError("entries")
                entries = tuple(_entry(item) for item in raw_entries)
        except (KeyError, TypeError, ValueError) as exc:
            raise BuildFailed(f"a build output description is malformed ({exc})", reason="malformed") from exc
        return cls(name=name, size=size, sha256=sha256, entries=entries)


def _entry(item: Any) -> ZipEntry:
    name, size, crc = item
    if not (isinstance(name, str) and len(name) <= ENTRY_NAME_CHARS_MAX):
        raise ValueError("entry name")
    for number in (size, crc):
        if isinstance(number, bool) or not isinstance(number, int) or number < 0:
            raise ValueError("entry size or crc")
    return ZipEntry(name=name, size=size, crc=crc)


def describe_output(name: str, stream: IO[bytes]) -> OutputFile:
    """Hash `stream` and, for a zip-suffixed name, list its central directory entries."""
    digest = hashlib.sha256()
    size = 0
    while chunk := stream.read(_HASH_CHUNK_BYTES):
        digest.update(chunk)
        size += len(chunk)
    entries = None
    if name.endswith(ZIP_SUFFIXES):
        stream.seek(0)
        entries = zip_entries(stream)
    return OutputFile(name=name, size=size, sha256=digest.hexdigest(), entries=entries)


def zip_entries(stream: IO[bytes]) -> tuple[ZipEntry, ...] | None:
    """The entries of a zip in archive order, or None when it is not a readable zip."""
    try:
        with zipfile.ZipFile(stream) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return None
    if len(infos) > ZIP_ENTRIES_MAX:
        return None
    return tuple(
        ZipEntry(name=info.filename[:ENTRY_NAME_CHARS_MAX], size=info.file_size, crc=info.CRC)
        for info in infos
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class EntryDifference:
    """One jar entry that differs; `ours`/`theirs` is None where that side lacks it."""

    name: str
    ours: ZipEntry | None
    theirs: ZipEntry | None


@dataclass(frozen=True, slots=True, kw_only=True)
class FileDifference:
    """`kind`: `differs`, `only_ours` or `only_theirs`. For two zips with equal entries
    but other bytes, `entries` is empty and `same_entries` is True."""

    name: str
    kind: str
    ours: OutputFile | None
    theirs: OutputFile | None
    entries: tuple[EntryDifference, ...] = ()
    same_entries: bool = False

    def describe(self) -> str:
        if self.kind == "only_ours":
            return f"{self.name}: only in our build"
        if self.kind == "only_theirs":
            return f"{self.name}: missing from our build"
        if self.same_entries:
            return f"{self.name}: same entries, other bytes (order, timestamps or modes)"
        if not self.entries:
            return f"{self.name}: other bytes"
        shown = [_entry_line(e) for e in self.entries[:ENTRY_DIFFERENCES_SHOWN_MAX]]
        more = len(self.entries) - len(shown)
        return f"{self.name}: " + "; ".join(shown) + (f"; and {more} more entries" if more > 0 else "")


def _entry_line(diff: EntryDifference) -> str:
    if diff.ours is None:
        return f"{diff.name} only in theirs"
    if diff.theirs is None:
        return f"{diff.name} only in ours"
    return (
        f"{diff.name} (size {diff.ours.size} vs {diff.theirs.size}, "
        f"crc {diff.ours.crc:08x} vs {diff.theirs.crc:08x})"
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class BuildComparison:
    ok_files: tuple[str, ...]
    ko_files: tuple[FileDifference, ...]

    @property
    def identical(self) -> bool:
        return not self.ko_files

    def reason(self) -> str:
        """One line for a refusal: every differing file and its differing entries."""
        if self.identical:
            return "identical"
        return "differs: " + " | ".join(diff.describe() for diff in self.ko_files)

    def buildcompare(self) -> str:
        """Reproducible Central's `.buildcompare` keys (`ok`, `ko`, `okFiles`, `koFiles`)."""
        return (
            f"ok={len(self.ok_files)}\nko={len(self.ko_files)}\n"
            f'okFiles="{" ".join(self.ok_files)}"\n'
            f'koFiles="{" ".join(d.name for d in self.ko_files)}"\n'
        )


def compare_outputs(ours: Iterable[OutputFile], theirs: Iterable[OutputFile]) -> BuildComparison:
    """Which files match byte for byte, and how the others differ."""
    mine = {f.name: f for f in ours}
    other = {f.name: f for f in theirs}
    ok: list[str] = []
    ko: list[FileDifference] = []
    for name in sorted(mine.keys() | other.keys()):
        a, b = mine.get(name), other.get(name)
        if a is None:
            ko.append(FileDifference(name=name, kind="only_theirs", ours=None, theirs=b))
        elif b is None:
            ko.append(FileDifference(name=name, kind="only_ours", ours=a, theirs=None))
        elif a.sha256 == b.sha256 and a.size == b.size:
            ok.append(name)
        else:
            entries: tuple[EntryDifference, ...] = ()
            same = False
            if a.entries is not None and b.entries is not None:
                entries = compare_entries(a.entries, b.entries)
                same = not entries
            ko.append(
                FileDifference(
                    name=name, kind="differs", ours=a, theirs=b, entries=entries, same_entries=same
                )
            )
    return BuildComparison(ok_files=tuple(ok), ko_files=tuple(ko))


def compare_entries(ours: Iterable[ZipEntry], theirs: Iterable[ZipEntry]) -> tuple[EntryDifference, ...]:
    mine = {e.name: e for e in ours}
    other = {e.name: e for e in theirs}
    found = []
    for name in sorted(mine.keys() | other.keys()):
        a, b = mine.get(name), other.get(name)
        if a is None or b is None or (a.size, a.crc) != (b.size, b.crc):
            found.append(EntryDifference(name=name, ours=a, theirs=b))
    return tuple(found)
