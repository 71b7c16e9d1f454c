"""Block files: one per block, `<root>/blocks/<height:012d>.blk`, durable once written.

Frame: magic, payload length (8 bytes, big-endian, with its own CRC), SHA-256 of the
payload, payload (the canonical block).

Two ways in. The next block of the chain (`append`: this node's own blocks and single
blocks from consensus) is written in place under its final name, with `O_DSYNC`: open,
write, close, and the write returns once the data and the file size are on the disk.
A batch (`write_many`, sync) is staged under temp names, every file fsynced, renamed
in height order and the directory fsynced once: a crash leaves a prefix of the batch,
each block whole.

Why `append` needs no rename and no directory fsync. kill -9: the kernel keeps every
completed write, so the chain is the old chain plus, at most, one last file that is
shorter than its frame says (killed mid-write, or between open and write: empty). Its
callers were never told, and open drops it (`Torn`); nothing after it exists, since
the writer writes height n+1 only after n is durable. Power loss: `O_DSYNC` makes the
write durable together with the metadata needed to read it back (the size); the
file's directory entry was created in the same or an earlier journal transaction than
that size change, and journaling filesystems (ext4, xfs, btrfs's log tree for a new
inode) commit transactions in order, so the entry is durable with it. On a filesystem
without a journal that order does not hold; such a disk could lose the newest block
files on power loss (open then reports the gap, or drops a torn tail). The order the
log relies on is unchanged: a block file is durable before its index row is written,
and SQLite's own checkpoint comes after that.

A *torn* last file — shorter than its frame says — never committed and is removed on
open (and `verify` stops before it); any other damage (a checksum mismatch, a gap) is
reported by height and never repaired silently.

`<root>/FORMAT` names the on-disk format version, written atomically before the
genesis block. A log without it (format 1, before this file existed) or with another
version is refused with one line saying what to do: its transactions mean something
else (format 2 made `chunk_size`/`chunk_root` of AddArtifact required, format 3 a quorum
of endorsements on every transaction after genesis), and a node
must never mix formats in one chain.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
import zlib
from collections.abc import Sequence
from pathlib import Path

from pyrsia.durable import (
    Watch,
    commit_staged,
    discard_staged,
    stage_file,
    write_all,
    write_atomic,
    write_new_files,
)
from pyrsia.errors import ChainBroken, FormatUnsupported, StorageError

log = logging.getLogger("pyrsia.translog")
MAGIC = b"PYRSIA-BLOCK-1\n"
_LENGTH = slice(len(MAGIC), len(MAGIC) + 8)
_LENGTH_CRC = slice(len(MAGIC) + 8, len(MAGIC) + 12)
_DIGEST = slice(len(MAGIC) + 12, len(MAGIC) + 44)
_HEADER = len(MAGIC) + 44
SUFFIX = ".blk"
FORMAT_FILE = "FORMAT"
FORMAT_VERSION = 3


def frame(payload: bytes) -> bytes:
    length = len(payload).to_bytes(8, "big")
    return MAGIC + length + zlib.crc32(length).to_bytes(4, "big") + hashlib.sha256(payload).digest() + payload


def name_of(height: int) -> str:
    """A block's file name (a string: sync names thousands a batch, pathlib costs)."""
    return f"{height:012d}{SUFFIX}"


class Torn(Exception):
    """The file ends before its (intact) frame says it does."""


def unframe(data: bytes, height: int) -> bytes:
    """The payload of a whole, intact frame. The length carries its own CRC, so a
    damaged length is reported as damage, not mistaken for a torn write."""
    if len(data) < _HEADER:
        if MAGIC.startswith(data[: len(MAGIC)]):
            raise Torn()
        raise ChainBroken(height, "block file has no block header")
    if not data.startswith(MAGIC) or zlib.crc32(data[_LENGTH]).to_bytes(4, "big") != data[_LENGTH_CRC]:
        raise ChainBroken(height, "block file header is damaged")
    length = int.from_bytes(data[_LENGTH], "big")
    payload = data[_HEADER:]
    if len(payload) < length:
        raise Torn()
    if len(payload) != length or hashlib.sha256(payload).digest() != data[_DIGEST]:
        raise ChainBroken(height, "block file checksum does not match its contents")
    return payload


class BlockFiles:
    def __init__(self, root: Path, *, create: bool = True) -> None:
        self.root = root
        self.dir = root / "blocks"
        self._watch: Watch | None = None  # opened by the first `stage`: before any staged write
        self._watch_lock = threading.Lock()
        if create:
            try:
                self.dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StorageError(f"cannot create {self.dir}: {exc.strerror}") from exc

    def path(self, height: int) -> Path:
        return self.dir / name_of(height)

    def check_format(self, *, create: bool) -> None:
        """The directory holds a log in FORMAT_VERSION, or none yet (then, with `create`,
        FORMAT is written now); anything else is `FormatUnsupported`."""
        path = self.root / FORMAT_FILE
        try:
            text = path.read_text(encoding="ascii", errors="replace").strip()
        except FileNotFoundError:
            text = None
        except OSError as exc:
            raise StorageError(f"cannot read {path}: {exc.strerror}") from exc
        if text is None:
            if self.dir.is_dir() and any(self.dir.glob(f"*{SUFFIX}")):
                raise self._unsupported(1)
            if create:
                write_atomic(path, f"{FORMAT_VERSION}\n".encode())
            return
        if not text.isdigit() or len(text) > 9:
            raise FormatUnsupported(
                f"{path} does not name a transparency log format ({text[:40]!r}); "
                f"move {self.root} aside and restart to start a new log"
            )
        if int(text) != FORMAT_VERSION:
            raise self._unsupported(int(text))

    def _unsupported(self, version: int) -> FormatUnsupported:
        if version < FORMAT_VERSION:
            return FormatUnsupported(
                f"this transparency log was written in format {version} by an older pyrsia; "
                f"move {self.root} aside and restart to start a new log"
            )
        return FormatUnsupported(
            f"this transparency log was written in format {version} by a newer pyrsia "
            f"(this one reads format {FORMAT_VERSION}); upgrade pyrsia"
        )

    def remove_leftovers(self) -> int:
        """Remove temp files of writes a crash interrupted; only while nothing writes."""
        removed = 0
        for leftover in self.dir.glob(".*.part"):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()
                removed += 1
        return removed

    def heights(self) -> list[int]:
        """Heights on disk, checked to be 0..n-1 with no gap."""
        if not self.dir.is_dir():
            return []
        names = sorted(p.name for p in self.dir.glob(f"*{SUFFIX}"))
        heights = []
        for expected, name in enumerate(names):
            stem = name.removesuffix(SUFFIX)
            if not stem.isdigit() or int(stem) != expected:
                raise ChainBroken(expected, f"block file {name} where height {expected} should be")
            heights.append(expected)
        return heights

    def read(self, height: int) -> bytes:
        """The block's payload; `Torn` or `ChainBroken` when the file is damaged."""
        try:
            data = self.path(height).read_bytes()
        except FileNotFoundError as exc:
            raise ChainBroken(height, "block file is missing") from exc
        except OSError as exc:
            raise StorageError(f"cannot read block {height}: {exc.strerror}") from exc
        return unframe(data, height)

    def write(self, height: int, payload: bytes) -> None:
        write_atomic(self.path(height), frame(payload))

    def append(self, height: int, payload: bytes) -> None:
        """The next block, durable on return, written in place (see the module docstring:
        `O_DSYNC`, no rename, no directory fsync). A file left at `height` is a torn
        leftover of a failed write (the chain is below it) and is replaced. On failure
        the file is removed, best effort; open drops it as torn otherwise."""
        path = self.path(height)
        data = frame(payload)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_DSYNC | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise StorageError(f"cannot write block {height}: {exc.strerror}") from exc
        try:
            write_all(fd, data)
        except OSError as exc:
            os.close(fd)
            with contextlib.suppress(OSError):
                path.unlink()
            raise StorageError(f"cannot write block {height}: {exc.strerror}") from exc
        try:
            os.close(fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                path.unlink()
            raise StorageError(f"cannot write block {height}: {exc.strerror}") from exc

    def write_many(self, blocks: Sequence[tuple[int, bytes]]) -> None:
        """New blocks `(height, payload)` in height order, durable on return: each file
        fsynced, then renamed into place in order, then the directory fsynced once (a crash
        leaves a prefix of them, each whole). On failure none is left."""
        write_new_files(self.dir, [(self.path(height).name, frame(payload)) for height, payload in blocks])

    def stage(self, payload: bytes) -> str:
        """A block's file written under a temp name, not durable yet (see `commit`)."""
        if self._watch is None:
            with self._watch_lock:
                if self._watch is None:
                    try:
                        self._watch = Watch(self.dir)
                    except OSError as exc:
                        raise StorageError(f"cannot open {self.dir}: {exc.strerror}") from exc
        return stage_file(self.dir, frame(payload))

    def commit(self, staged: Sequence[tuple[int, str]]) -> None:
        """Staged blocks `(height, temp path)` in height order made durable as `write_many`
        does, with one sync of the filesystem for them all (`durable.Watch`); on failure
        none is left."""
        commit_staged(self.dir, [(tmp, name_of(height)) for height, tmp in staged], self._watch)

    def close(self) -> None:
        with self._watch_lock:
            if self._watch is not None:
                self._watch.close()
                self._watch = None

    def discard(self, temps: Sequence[str]) -> None:
        discard_staged(temps)

    def drop_torn(self, height: int) -> None:
        log.warning("removing torn block file %s: it never committed", self.path(height).name)
        self.path(height).unlink()
