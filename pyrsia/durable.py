"""Durable file writes: a file is either its old version or its whole new one.

Write to a temp file in the same directory, fsync it, rename it over the target,
fsync the directory. Used for records, config files and (via `fsync_dir`) blobs.

`write_new_files` does the same for many new files of one directory with one
directory fsync: every temp file written, then fsynced (several at once, so the
filesystem can commit them in one journal transaction), then renamed in order, then
the directory fsynced once. A crash leaves each file absent or whole; the renames of
one directory reach the journal in the order they were made (ext4, xfs), so what
survives is a prefix of the list.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pyrsia.errors import StorageError

FSYNC_THREADS_MAX = 8  # fsyncs issued at once by `write_new_files`


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".part")
    except OSError as exc:
        raise StorageError(f"cannot write {path}: {exc.strerror}") from exc
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fchmod(file.fileno(), mode)
            os.fsync(file.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise StorageError(f"cannot write {path}: {exc.strerror}") from exc


def write_new_files(directory: Path, items: Sequence[tuple[str, bytes]], mode: int = 0o644) -> None:
    """Create the files `(name, data)` in `directory`, durable on return, with one
    directory fsync for them all. On failure none of them is left behind (a name that
    already existed is replaced all the same: callers pass new names)."""
    temps: list[str] = []
    renamed: list[str] = []
    try:
        fds: list[int] = []
        try:
            for _name, data in items:
                fd, tmp = tempfile.mkstemp(dir=directory, prefix=".", suffix=".part")
                fds.append(fd)
                temps.append(tmp)
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fchmod(fd, mode)
            if len(fds) == 1:
                os.fsync(fds[0])
            elif fds:
                with ThreadPoolExecutor(min(FSYNC_THREADS_MAX, len(fds))) as pool:
                    list(pool.map(os.fsync, fds))
        finally:
            for fd in fds:
                os.close(fd)
        for tmp, (name, _data) in zip(temps, items, strict=True):
            target = directory / name
            os.replace(tmp, target)
            renamed.append(str(target))
        temps.clear()
        fsync_dir(directory)
    except OSError as exc:
        for leftover in [*temps, *renamed]:
            with contextlib.suppress(OSError):
                os.unlink(leftover)
        raise StorageError(f"cannot write {len(items)} file(s) in {directory}: {exc.strerror}") from exc
