"""Content-addressed blob store on the local disk.

Layout (DESIGN §3): `<home>/blobs/<algorithm>/<first two hex>/<hex>`; writes go to
`<home>/blobs/tmp/` first. A blob becomes visible only when its bytes hashed to the
digest it was written under: stream to a temp file while hashing, fsync, compare,
rename into place, fsync the directory. A crash at any point leaves either no blob or
a whole verified one, plus a temp file that the next start removes.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from pyrsia.artifacts.digest import Digest
from pyrsia.errors import DigestMismatch, StorageError


class BlobWriter:
    """Streams one blob to a temp file; `commit()` verifies and publishes it."""

    def __init__(self, store: BlobStore, digest: Digest, source: str) -> None:
        self._store = store
        self._digest = digest
        self._source = source
        self._hasher = digest.hasher()
        self.size = 0
        fd, name = tempfile.mkstemp(dir=store.tmp_dir, suffix=".part")
        self._tmp = Path(name)
        self._file: BinaryIO = os.fdopen(fd, "wb")

    def write(self, data: bytes) -> None:
        self._hasher.update(data)
        self.size += len(data)
        try:
            self._file.write(data)
        except OSError as exc:
            raise StorageError(f"cannot write blob {self._digest}: {exc.strerror}") from exc

    def commit(self) -> Path:
        calculated = f"{self._digest.algorithm}:{self._hasher.hexdigest()}"
        if calculated != str(self._digest):
            self.abort()
            raise DigestMismatch(expected=str(self._digest), calculated=calculated, source=self._source)
        final = self._store.path(self._digest)
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self._tmp, final)
            _fsync_dir(final.parent)
        except OSError as exc:
            self.abort()
            raise StorageError(f"cannot store blob {self._digest}: {exc.strerror}") from exc
        return final

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            self._file.close()
        with contextlib.suppress(FileNotFoundError):
            self._tmp.unlink()

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if kind is not None:
            self.abort()


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.tmp_dir = root / "tmp"
        try:
            self.tmp_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create blob store at {root}: {exc.strerror}") from exc

    def path(self, digest: Digest) -> Path:
        return self.root / digest.algorithm / digest.hex[:2] / digest.hex

    def size(self, digest: Digest) -> int | None:
        """The stored blob's size, or None when it is not stored."""
        try:
            return self.path(digest).stat().st_size
        except FileNotFoundError:
            return None

    def read(self, digest: Digest) -> bytes | None:
        try:
            return self.path(digest).read_bytes()
        except FileNotFoundError:
            return None

    def writer(self, digest: Digest, source: str) -> BlobWriter:
        return BlobWriter(self, digest, source)

    def put(self, digest: Digest, data: bytes, source: str) -> Path:
        with self.writer(digest, source) as writer:
            writer.write(data)
            return writer.commit()

    def stats(self) -> tuple[int, int]:
        """(number of blobs, total bytes) — walks the tree, for status pages only."""
        count = total = 0
        for algorithm in ("sha256", "sha512"):
            for path in (self.root / algorithm).glob("*/*"):
                count += 1
                total += path.stat().st_size
        return count, total

    def remove_temp_files(self) -> int:
        """Delete leftovers of writes that never committed (crash, kill, shutdown)."""
        removed = 0
        for leftover in self.tmp_dir.glob("*.part"):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()
                removed += 1
        return removed


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
