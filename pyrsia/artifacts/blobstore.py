"""Content-addressed blob store on the local disk.

Layout (DESIGN §3): `<home>/blobs/<algorithm>/<first two hex>/<hex>`; writes go to
`<home>/blobs/tmp/` first. A blob becomes visible only when its bytes hashed to the
digest it was written under: stream to a temp file while hashing, fsync, compare,
rename into place, fsync the directory. A crash at any point leaves either no blob or
a whole verified one, plus a temp file that the next start removes.

Bytes can still change after that (a failing disk, a hand edit). Before a blob is
served, `checked()` compares the file's inode, size and ctime with the stamp taken
when it was last verified; ctime moves on every write and cannot be set back from
user space, so a changed file is hashed again and, if it no longer matches its
digest, removed so the caller fetches it anew. The first serve after a start hashes
each blob once.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from pyrsia.durable import fsync_dir
from pyrsia.errors import DigestMismatch, StorageError
from pyrsia.formats.digest import Digest
from pyrsia.upstream.sink import OpenSink

log = logging.getLogger("pyrsia.artifacts")


def _stamp(path: Path) -> tuple[int, int, int] | None:
    """(inode, size, ctime) — changes whenever the file's bytes may have changed."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_size, st.st_ctime_ns


class BlobWriter:
    """Streams one blob to a temp file; `commit()` verifies and publishes it.

    With an expected digest, bytes that hash otherwise are refused. Without one (a
    Maven file is asked for by path), the blob is stored under the sha256 it has, and
    the caller verifies it by other means (`hexdigests`) before committing.
    """

    def __init__(
        self, store: BlobStore, expected: Digest | None, source: str, also: Sequence[str] = ()
    ) -> None:
        self._store = store
        self._expected = expected
        self._source = source
        self._algorithm = expected.algorithm if expected else "sha256"
        self._hashers = {alg: hashlib.new(alg) for alg in (self._algorithm, *also)}
        self.size = 0
        self.digest: Digest | None = None
        fd, name = tempfile.mkstemp(dir=store.tmp_dir, suffix=".part")
        self._tmp = Path(name)
        self._file: BinaryIO = os.fdopen(fd, "wb")

    def write(self, data: bytes) -> None:
        for hasher in self._hashers.values():
            hasher.update(data)
        self.size += len(data)
        try:
            self._file.write(data)
        except OSError as exc:
            raise StorageError(f"cannot write blob from {self._source}: {exc.strerror}") from exc

    def hexdigests(self) -> dict[str, str]:
        """Every digest computed so far, by algorithm name."""
        return {alg: hasher.hexdigest() for alg, hasher in self._hashers.items()}

    def commit(self) -> Path:
        calculated = Digest(self._algorithm, self._hashers[self._algorithm].hexdigest())
        if self._expected is not None and calculated != self._expected:
            self.abort()
            raise DigestMismatch(
                expected=str(self._expected), calculated=str(calculated), source=self._source
            )
        self.digest = calculated
        final = self._store.path(calculated)
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self._tmp, final)
            fsync_dir(final.parent)
        except OSError as exc:
            self.abort()
            raise StorageError(f"cannot store blob {calculated}: {exc.strerror}") from exc
        self._store.mark_verified(calculated)
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
    """`fanout=False` gives the OCI image-layout shape, `blobs/<alg>/<hex>`."""

    def __init__(self, root: Path, *, fanout: bool = True, tmp_dir: Path | None = None) -> None:
        self.root = root
        self._fanout = fanout
        self.tmp_dir = tmp_dir or root / "tmp"
        self._stamps: dict[Digest, tuple[int, int, int]] = {}
        self._stamps_lock = threading.Lock()
        try:
            self.tmp_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create blob store at {root}: {exc.strerror}") from exc

    def path(self, digest: Digest) -> Path:
        if self._fanout:
            return self.root / digest.algorithm / digest.hex[:2] / digest.hex
        return self.root / digest.algorithm / digest.hex

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

    def checked(self, digest: Digest) -> int | None:
        """The blob's size if its bytes still hash to `digest`, else None (and it is gone)."""
        path = self.path(digest)
        stamp = _stamp(path)
        if stamp is None:
            return None
        with self._stamps_lock:
            if self._stamps.get(digest) == stamp:
                return stamp[1]
        hasher = hashlib.new(digest.algorithm)
        try:
            with path.open("rb") as file:
                while chunk := file.read(1 << 20):
                    hasher.update(chunk)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageError(f"cannot read blob {digest}: {exc.strerror}") from exc
        if hasher.hexdigest() != digest.hex:
            log.warning("blob %s changed on disk since it was verified; removing it", digest)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            return None
        with self._stamps_lock:
            self._stamps[digest] = stamp
        return stamp[1]

    def read_checked(self, digest: Digest) -> bytes | None:
        """Small blobs (manifests): the bytes, hashed on every read."""
        data = self.read(digest)
        if data is None or hashlib.new(digest.algorithm, data).hexdigest() == digest.hex:
            return data
        log.warning("blob %s changed on disk since it was verified; removing it", digest)
        with contextlib.suppress(FileNotFoundError):
            self.path(digest).unlink()
        return None

    def mark_verified(self, digest: Digest) -> None:
        stamp = _stamp(self.path(digest))
        if stamp is not None:
            with self._stamps_lock:
                self._stamps[digest] = stamp

    def writer(self, expected: Digest | None, source: str, also: Sequence[str] = ()) -> BlobWriter:
        return BlobWriter(self, expected, source, also)

    def opener(self, expected: Digest | None, source: str, also: Sequence[str] = ()) -> OpenSink:
        """A fresh writer per download attempt, for the upstream clients."""
        return functools.partial(BlobWriter, self, expected, source, also)

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
