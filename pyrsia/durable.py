"""Durable file writes: a file is either its old version or its whole new one.

Write to a temp file in the same directory, fsync it, rename it over the target,
fsync the directory. Used for records, config files and (via `fsync_dir`) blobs.

`write_new_files` does the same for many new files of one directory with one
directory fsync: every temp file written (`stage_file`, which a caller may do ahead,
on another thread), then fsynced (several at once, so the filesystem can commit them
in one journal transaction), then renamed in order, then the directory fsynced once
(`commit_staged`). A crash leaves each file absent or whole; the renames of
one directory reach the journal in the order they were made (ext4, xfs), so what
survives is a prefix of the list.

Given a `Watch` opened before the files were written, `commit_staged` makes them all
durable with one `syncfs(2)` of their filesystem instead of one fsync per file: one
journal commit and one device flush for the batch, where thousands of fsyncs cost
thousands of forced writes (measured on ext4: 2-4x the files per second, half the
system CPU). Since Linux 5.8 `syncfs` reports any write-back error of the filesystem
since the watch was opened (the superblock's error sequence, sampled per open file), so
an error in writing one of the files fails the batch as its fsync would; an error in
another file of that filesystem fails it too, which only costs a retry. Where `syncfs`
is missing (not Linux, or no C library to call) it falls back to the fsyncs.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import os
import secrets
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import cast

from pyrsia.errors import StorageError

FSYNC_THREADS_MAX = 8  # fsyncs issued at once by `write_new_files`
SYNCFS_KERNEL_MIN = (5, 8)  # the first Linux whose syncfs reports write-back errors


def _syncfs_call() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        release = tuple(int(part) for part in os.uname().release.split(".")[:2])
        call = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError, ValueError):
        return None
    if release < SYNCFS_KERNEL_MIN:
        return None
    call.argtypes = [ctypes.c_int]
    call.restype = ctypes.c_int
    return cast(Callable[[int], int], call)


_syncfs = _syncfs_call()


class Watch:
    """An open directory whose filesystem `commit_staged` syncs whole; open it before
    the files it commits are written, so that their write-back errors are its own."""

    def __init__(self, directory: Path) -> None:
        self.fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY) if _syncfs is not None else -1

    def sync(self) -> bool:
        """Everything written on the filesystem durable; False where `syncfs` is missing
        (the caller fsyncs each file instead)."""
        if _syncfs is None or self.fd < 0:
            return False
        if _syncfs(self.fd) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, os.strerror(errno))
        return True

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """`data` under `path`, whole or not at all, durable on return, with exactly `mode`:
    a temp file (`new_temp`) written, fsynced, renamed over `path`, the directory
    fsynced. The directory is made first if it is missing."""
    directory = path.parent
    try:
        if not os.path.isdir(directory):
            directory.mkdir(parents=True, exist_ok=True)
        tmp, fd = new_temp(directory, 0o600)
    except OSError as exc:
        raise StorageError(f"cannot write {path}: {exc.strerror}") from exc
    try:
        try:
            write_all(fd, data)
            os.fchmod(fd, mode)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        fsync_dir(directory)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise StorageError(f"cannot write {path}: {exc.strerror}") from exc


def write_all(fd: int, data: bytes) -> None:
    """All of `data` to `fd`: `os.write` may write less than it was given."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


_TEMP_PREFIX = f".{secrets.token_hex(6)}-"
_temps = itertools.count()  # next() is atomic: stage_file runs on several threads at once


def new_temp(directory: Path, mode: int = 0o644) -> tuple[str, int]:
    """A new `.*.part` file in `directory`, open for writing: (its path, its descriptor).
    Created with `mode` less the process umask, under a name of this process's own (a
    random prefix drawn once, then a counter, O_EXCL): tempfile.mkstemp draws a random
    name per file, which sync (thousands of blocks a batch) and every blob and record
    write paid for. `OSError` if it cannot be made: each caller names what it was writing."""
    base = os.fspath(directory)
    while True:
        tmp = os.path.join(base, f"{_TEMP_PREFIX}{next(_temps)}.part")
        try:
            return tmp, os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        except FileExistsError:  # left by a crashed process that drew the same prefix
            continue


def stage_file(directory: Path, data: bytes, mode: int = 0o644) -> str:
    """A temp file in `directory` holding `data`, not durable yet: `commit_staged` makes
    it so under its name, `discard_staged` removes it (so does a restart's cleanup of
    leftover `.*.part` files). Its mode is `mode` less the umask, as block files written
    in place have (no fchmod: sync stages thousands a batch)."""
    try:
        tmp, fd = new_temp(directory, mode)
    except OSError as exc:
        raise StorageError(f"cannot write in {directory}: {exc.strerror}") from exc
    try:
        write_all(fd, data)
    except OSError as exc:
        os.close(fd)
        discard_staged([tmp])
        raise StorageError(f"cannot write in {directory}: {exc.strerror}") from exc
    os.close(fd)
    return tmp


def discard_staged(temps: Sequence[str]) -> None:
    for tmp in temps:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def _fsync_path(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def commit_staged(directory: Path, staged: Sequence[tuple[str, str]], watch: Watch | None = None) -> None:
    """Staged files `(temp path, name)` made durable under their names in `directory`:
    each fsynced (several at once; or all with one `watch.sync()`), renamed in order,
    then the directory fsynced once. On failure none of them is left, under its name or
    as a temp file."""
    renamed: list[str] = []
    try:
        if len(staged) > 1 and watch is not None and watch.sync():
            pass
        elif len(staged) == 1:
            _fsync_path(staged[0][0])
        elif staged:
            with ThreadPoolExecutor(min(FSYNC_THREADS_MAX, len(staged))) as pool:
                list(pool.map(_fsync_path, [tmp for tmp, _name in staged]))
        base = os.fspath(directory)
        for tmp, name in staged:
            target = os.path.join(base, name)
            os.replace(tmp, target)
            renamed.append(target)
        fsync_dir(directory)
    except OSError as exc:
        discard_staged([tmp for tmp, _name in staged[len(renamed) :]] + renamed)
        raise StorageError(f"cannot write {len(staged)} file(s) in {directory}: {exc.strerror}") from exc


def write_new_files(directory: Path, items: Sequence[tuple[str, bytes]], mode: int = 0o644) -> None:
    """Create the files `(name, data)` in `directory`, durable on return, with one
    directory fsync for them all (`stage_file` each, then `commit_staged`). On failure
    none of them is left behind (a name that already existed is replaced all the same:
    callers pass new names)."""
    staged: list[tuple[str, str]] = []
    try:
        for name, data in items:
            staged.append((stage_file(directory, data, mode), name))
    except StorageError:
        discard_staged([tmp for tmp, _name in staged])
        raise
    commit_staged(directory, staged)
