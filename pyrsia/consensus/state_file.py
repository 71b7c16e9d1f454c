"""The consensus core's hard state on disk: appended records, one fdatasync per write.

The core's contract is "persist, then send": every step that signs something (and
every commit) writes the hard state before a message leaves. Writing a new file and
renaming it costs two fsyncs (the file, then its directory); appending a record to a
file that already exists costs one (`fdatasync`), so that is what a step does. Each
record is

    b"PHS1" | length (u32, big-endian) | SHA-256 of the payload, first 16 bytes | payload

and the last whole record is the state. A crash mid-append leaves a torn tail: its
checksum fails, the record before it is the state (nothing was sent after the torn
write began, since sending waits for the write), and loading cuts the tail off before
anything is appended again. Once the file passes `COMPACT_BYTES`, the next write
replaces it atomically by a file of that one record (the rare two-fsync write).

A file written by an earlier release (one bare msgpack map, no record header) loads as
that one state; the next write replaces it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path

from pyrsia.durable import write_atomic
from pyrsia.errors import StorageError

MAGIC = b"PHS1"
HEADER_BYTES = len(MAGIC) + 4 + 16
COMPACT_BYTES = 1 << 20


def record(payload: bytes) -> bytes:
    return MAGIC + len(payload).to_bytes(4, "big") + hashlib.sha256(payload).digest()[:16] + payload


def last_record(data: bytes) -> tuple[bytes | None, int]:
    """The last whole record's payload in `data` and where the whole records end."""
    payload: bytes | None = None
    pos = 0
    while pos + HEADER_BYTES <= len(data) and data[pos : pos + len(MAGIC)] == MAGIC:
        length = int.from_bytes(data[pos + 4 : pos + 8], "big")
        end = pos + HEADER_BYTES + length
        body = data[pos + HEADER_BYTES : end]
        if end > len(data) or hashlib.sha256(body).digest()[:16] != data[pos + 8 : pos + HEADER_BYTES]:
            break
        payload, pos = body, end
    return payload, pos


class StateFile:
    def __init__(self, path: Path, *, compact_bytes: int = COMPACT_BYTES) -> None:
        self.path = path
        self.compact_bytes = compact_bytes
        self._fd: int | None = None
        self._size = 0
        self.writes = 0

    def load(self) -> bytes | None:
        """The last state written, or None; a torn tail is cut off first."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageError(f"cannot read {self.path}: {exc.strerror}") from exc
        if not data.startswith(MAGIC):
            return data or None  # an earlier release's whole-file state
        payload, end = last_record(data)
        if end < len(data):
            try:
                with open(self.path, "r+b") as file:
                    file.truncate(end)
                    os.fsync(file.fileno())
            except OSError as exc:
                raise StorageError(f"cannot repair {self.path}: {exc.strerror}") from exc
        return payload

    def write(self, payload: bytes) -> None:
        """`payload` is the state once this returns (durable)."""
        data = record(payload)
        try:
            if self._fd is None or self._size + len(data) > self.compact_bytes:
                self._replace(data)
                return
            os.write(self._fd, data)
            os.fdatasync(self._fd)
            self._size += len(data)
            self.writes += 1
        except OSError as exc:
            self.close()  # the next write starts from a whole file again
            raise StorageError(f"cannot write {self.path}: {exc.strerror}") from exc

    def _replace(self, data: bytes) -> None:
        self.close()
        write_atomic(self.path, data)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        self._size = len(data)
        self.writes += 1

    def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
