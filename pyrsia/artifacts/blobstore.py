"""Content-addressed blob store on the local disk.

Layout (DESIGN §3): `<home>/blobs/<algorithm>/<first two hex>/<hex>`; writes go to
`<home>/blobs/tmp/` first. A blob becomes visible only when its bytes hashed to the
digest it was written under: stream to a temp file while hashing, fsync, compare,
rename into place, fsync the directory. A crash at any point leaves either no blob or
a whole verified one, plus a temp file that the next start removes. Peer downloads
use a `ResumableBlobWriter` instead, whose verified chunks survive for the next try.

Bytes can still change after that (a failing disk, a hand edit). Before a blob is
served, `checked()` compares the file's inode, size and ctime with the stamp taken
when it was last verified; ctime moves on every write and cannot be set back from
user space, so a changed file is hashed again and, if it no longer matches its
digest, removed so the caller fetches it anew. The first serve after a start hashes
each blob once.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import functools
import hashlib
import io
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from pyrsia.durable import fsync_dir, new_temp
from pyrsia.errors import DigestMismatch, ExchangeFailed, StorageError
from pyrsia.formats.digest import Digest
from pyrsia.translog.chunks import CHUNK_BYTES, ChunkHasher, chunk_count, chunk_root
from pyrsia.upstream.sink import OpenSink

log = logging.getLogger("pyrsia.artifacts")

# Chunk mode: chunks verified ahead of the whole-blob hash's prefix are kept in memory
# (this many at most, the nearest to the prefix) so the prefix hashes them from there,
# not read back from the file.
AHEAD_CHUNKS_MAX = 32
# Chunk mode: after this many chunks written, ask the kernel to start writing the file
# back, so the commit's fsync finds little left to write and dirty pages do not pile up.
WRITEBACK_EVERY_CHUNKS = 16
_SYNC_FILE_RANGE_WRITE = 2

Buffer = bytes | bytearray | memoryview


def _writeback_starter() -> Callable[[int], None]:
    """`sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE)` where the C library has it, else nothing.

    Only a hint: it starts writeback without waiting for it, and its errors are ignored
    (the commit's fsync is what makes the file durable, and reports them).
    """
    try:
        call = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        return lambda fd: None
    call.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    call.restype = ctypes.c_int

    def start(fd: int) -> None:
        call(fd, 0, 0, _SYNC_FILE_RANGE_WRITE)

    return start


_start_writeback = _writeback_starter()


def _stamp(path: Path) -> tuple[int, int, int] | None:
    """(inode, size, ctime) — changes whenever the file's bytes may have changed."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_size, st.st_ctime_ns


@dataclass(frozen=True, slots=True, kw_only=True)
class BlobWrite:
    """A blob being written now: from which source, bytes so far, the size it should have."""

    digest: str | None  # None for a Maven file asked for by path
    source: str
    written: int
    size: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredBlob:
    """A blob as committed: where it is and what its bytes are."""

    digest: Digest
    path: Path
    size: int
    chunk_root: bytes
    hexdigests: dict[str, str]


class BlobProgress:
    """What a peer download has verified so far, for readers that stream the blob meanwhile.

    The writer reports each chunk once it hashed to its entry in the root-checked chunk
    list; readers see only the contiguous verified prefix (`readable_bytes`), so chunks
    that arrive out of order are released once the gap before them is filled. The last
    chunk is held back until the whole blob verified and was committed, so a reader never
    gets a complete body the digest check refused. Changes are announced on the store's
    condition (`BlobStore.downloads_changed`), which every download shares.
    """

    def __init__(self, changed: threading.Condition, *, path: Path, size: int) -> None:
        self.path = path  # the file the chunks are written to (renamed into place on commit)
        self.size = size
        self._changed = changed
        self._chunks: set[int] = set()
        self._contiguous_chunks = 0
        self.committed: Path | None = None
        self.failure: str | None = None

    def chunk_verified(self, index: int) -> None:
        with self._changed:
            self._chunks.add(index)
            before = self._contiguous_chunks
            while self._contiguous_chunks in self._chunks:
                self._contiguous_chunks += 1
            if self._contiguous_chunks != before:
                self._changed.notify_all()

    def commit(self, path: Path) -> None:
        with self._changed:
            self.committed = path
            self._changed.notify_all()

    def fail(self, reason: str) -> None:
        with self._changed:
            if self.committed is None and self.failure is None:
                self.failure = reason
                self._changed.notify_all()

    @property
    def ended(self) -> bool:
        return self.committed is not None or self.failure is not None

    def readable_bytes(self) -> int:
        """The verified, contiguous prefix that may be served now."""
        with self._changed:
            if self.committed is not None:
                return self.size
            last = max(0, chunk_count(self.size) - 1)
            return min(self._contiguous_chunks, last) * CHUNK_BYTES

    def wait_readable(self, offset: int, timeout_s: float) -> int:
        """Block until more than `offset` bytes are readable; the readable count.

        Raises `ExchangeFailed` when the download failed or made no progress for `timeout_s`.
        """
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while (readable := self.readable_bytes()) <= offset:
                if self.failure is not None:
                    raise ExchangeFailed(f"the download this blob streamed from failed: {self.failure}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ExchangeFailed(f"the download this blob streamed from stalled for {timeout_s:g} s")
                self._changed.wait(left)
            return readable

    def pieces(self, piece_bytes_max: int = CHUNK_BYTES, stall_timeout_s: float = 60.0) -> Iterator[bytes]:
        """The blob's bytes in order, each piece verified, as the download makes them readable.

        Ends with `ExchangeFailed` (after the verified prefix) when the download fails.
        """
        fd = self._open()
        try:
            offset = 0
            while offset < self.size:
                readable = self.wait_readable(offset, stall_timeout_s)
                while offset < readable:
                    try:
                        piece = os.pread(fd, min(piece_bytes_max, readable - offset), offset)
                    except OSError as exc:
                        raise StorageError(f"cannot read {self.path}: {exc.strerror}") from exc
                    if not piece:
                        raise StorageError(f"{self.path} is shorter than its verified chunks")
                    offset += len(piece)
                    yield piece
        finally:
            os.close(fd)

    def _open(self) -> int:
        """The file being written, or the committed blob once it was renamed into place."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            fd = None
        with self._changed:
            # Opened before the download ended: it is the file this download writes (the
            # rename on commit keeps the inode). Otherwise the outcome decides.
            if fd is not None and not self.ended:
                return fd
            committed, failure = self.committed, self.failure
        if fd is not None:
            os.close(fd)
        if committed is None:
            raise ExchangeFailed(f"the download this blob streamed from failed: {failure or 'it ended'}")
        try:
            return os.open(committed, os.O_RDONLY)
        except OSError as exc:
            raise StorageError(f"cannot read {committed}: {exc.strerror}") from exc


class BlobWriter:
    """Writes one blob to a temp file; `commit()` verifies and publishes it.

    Bytes arrive either in order (`write`, from an upstream) or as whole chunks at
    any offset (`write_chunk`, from peers), each checked against a chunk list that was
    itself checked against the chunk root the log recorded. Either way `commit()`
    checks the whole digest (and the declared size and chunk root, when known) before
    the blob becomes visible, and computes the chunk root from the bytes themselves.

    With an expected digest, bytes that hash otherwise are refused. Without one (a
    Maven file is asked for by path), the blob is stored under the sha256 it has, and
    the caller verifies it by other means (`hexdigests`) before committing.
    """

    def __init__(
        self,
        store: BlobStore,
        expected: Digest | None,
        source: str,
        also: Sequence[str] = (),
        *,
        size: int | None = None,
        chunk_root: bytes | None = None,
    ) -> None:
        self._store = store
        self._expected = expected
        self._source = source
        self._size_expected = size
        self._chunk_root_expected = chunk_root
        self._algorithm = expected.algorithm if expected else "sha256"
        self._hashers = {alg: hashlib.new(alg) for alg in (self._algorithm, *also)}
        self._chunks = ChunkHasher()
        self._chunk_list: list[bytes] | None = None
        self._chunks_written: set[int] = set()
        # Chunk mode: the whole-blob digests are taken over the contiguous prefix of
        # verified chunks as it grows, so commit need not read the file again.
        self._prefix_chunks = 0
        self._prefix_lock = threading.Lock()
        # Verified chunks ahead of the prefix, held for it: index -> (bytes, release).
        self._ahead: dict[int, tuple[Buffer, Callable[[], None] | None]] = {}
        self._ahead_lock = threading.Lock()
        self._since_writeback = 0
        self.size = 0
        self.digest: Digest | None = None
        self._tmp, self._file = self._open_temp()
        store._writer_opened(self)

    def progress_now(self) -> BlobWrite:
        return BlobWrite(
            digest=None if self._expected is None else str(self._expected),
            source=self._source,
            written=self.size,
            size=self._size_expected,
        )

    def _open_temp(self) -> tuple[Path, BinaryIO]:
        name, fd = new_temp(self._store.tmp_dir, 0o600)
        # A buffer size given saves the kernel call asking whether the file is a terminal.
        return Path(name), os.fdopen(fd, "wb", buffering=io.DEFAULT_BUFFER_SIZE)

    def write(self, data: bytes) -> None:
        """The next bytes in order."""
        if self._chunk_list is not None:
            raise RuntimeError("this writer takes chunks, not a stream")
        if self._size_expected is not None and self.size + len(data) > self._size_expected:
            # An upstream that sends more than the declared size is cut off here, not at the end.
            raise DigestMismatch(
                expected=f"{self._size_expected} bytes",
                calculated=f"more than {self._size_expected} bytes",
                source=self._source,
            )
        for hasher in self._hashers.values():
            hasher.update(data)
        self._chunks.update(data)
        self.size += len(data)
        try:
            self._file.write(data)
        except OSError as exc:
            raise StorageError(f"cannot write blob from {self._source}: {exc.strerror}") from exc

    def expect_chunks(self, hashes: Sequence[bytes]) -> None:
        """Switch to chunk mode with a chunk list; it must match the expected size and root."""
        if self._size_expected is None or self._chunk_root_expected is None or self.size:
            raise RuntimeError("chunk mode needs the logged size and chunk root, before any write")
        if chunk_count(self._size_expected) != len(hashes) or chunk_root(hashes) != self._chunk_root_expected:
            raise DigestMismatch(
                expected=f"chunk root {self._chunk_root_expected.hex()}",
                calculated=f"a list of {len(hashes)} chunks with another root",
                source=self._source,
            )
        self._chunk_list = list(hashes)

    def write_chunk(self, index: int, data: Buffer, release: Callable[[], None] | None = None) -> None:
        """One whole chunk at its place; refused unless it hashes to its entry in the list.

        `data` must not change until `release` is called, which happens exactly once,
        when the writer no longer needs it (at once, or once the whole-blob hash took a
        chunk held ahead of its prefix); without `release` the writer may keep `data`.
        """
        held = False
        try:
            held = self._write_chunk(index, data, release)
        finally:
            if not held and release is not None:
                release()

    def _write_chunk(self, index: int, data: Buffer, release: Callable[[], None] | None) -> bool:
        hashes, size = self._chunk_list, self._size_expected
        if hashes is None or size is None:
            raise RuntimeError("call expect_chunks first")
        if not 0 <= index < len(hashes):
            raise DigestMismatch(
                expected=f"a chunk below {len(hashes)}", calculated=str(index), source=self._source
            )
        offset = index * CHUNK_BYTES
        length = len(memoryview(data))
        if length != min(CHUNK_BYTES, size - offset) or hashlib.sha256(data).digest() != hashes[index]:
            raise DigestMismatch(
                expected=f"chunk {index} hashing to {hashes[index].hex()}",
                calculated=f"{length} bytes hashing to {hashlib.sha256(data).hexdigest()}",
                source=self._source,
            )
        fd = self._file.fileno()
        try:
            os.pwrite(fd, data, offset)
        except OSError as exc:
            raise StorageError(f"cannot write blob from {self._source}: {exc.strerror}") from exc
        with self._ahead_lock:
            self._since_writeback += 1
            writeback = self._since_writeback >= WRITEBACK_EVERY_CHUNKS
            if writeback:
                self._since_writeback = 0
            prefix = self._prefix_chunks
            held = index not in self._chunks_written and prefix < index < prefix + AHEAD_CHUNKS_MAX
            if held:
                self._ahead[index] = (data, release)
            self._chunks_written.add(index)
        if writeback:
            _start_writeback(fd)
        self._extend_prefix(index, data)
        return held

    def _extend_prefix(self, index: int, data: Buffer | None = None) -> None:
        """Feed the whole-blob hashers every verified chunk now contiguous from the start.

        `data` is chunk `index`'s bytes when the caller holds them; chunks that came
        ahead of the prefix were held in memory (the nearest `AHEAD_CHUNKS_MAX`), or
        are read back from the file (the page cache, usually). One thread hashes at a
        time; another finding it busy leaves its chunk to it, and the outer loop looks
        again after each release so no chunk is left behind.
        """
        size = self._size_expected
        if self._chunk_list is None or size is None:
            return
        while self._prefix_chunks in self._chunks_written and self._prefix_lock.acquire(blocking=False):
            try:
                while (at := self._prefix_chunks) in self._chunks_written:
                    with self._ahead_lock:
                        chunk, release = self._ahead.pop(at, (None, None))
                    if chunk is None:
                        chunk = data if at == index and data is not None else self._read_chunk(at, size)
                    try:
                        for hasher in self._hashers.values():
                            hasher.update(chunk)
                    finally:
                        if release is not None:
                            release()
                    with self._ahead_lock:
                        self._prefix_chunks = at + 1
            finally:
                self._prefix_lock.release()

    def _read_chunk(self, index: int, size: int) -> bytes:
        length = min(CHUNK_BYTES, size - index * CHUNK_BYTES)
        try:
            return os.pread(self._file.fileno(), length, index * CHUNK_BYTES)
        except OSError as exc:
            raise StorageError(f"cannot read blob from {self._source}: {exc.strerror}") from exc

    def verified_chunks(self) -> frozenset[int]:
        """Chunks written and verified so far (chunk mode)."""
        return frozenset(self._chunks_written)

    def missing_chunks(self) -> list[int]:
        if self._chunk_list is None:
            return []
        return [i for i in range(len(self._chunk_list)) if i not in self._chunks_written]

    def hexdigests(self) -> dict[str, str]:
        """Every digest computed so far, by algorithm name."""
        return {alg: hasher.hexdigest() for alg, hasher in self._hashers.items()}

    def _finish_chunks(self) -> None:
        """Chunks came at any offset; every one verified against the root-checked list.

        The whole-blob digests were taken over the prefix as it grew; the chunk root is
        the list's, which `expect_chunks` checked against the logged one.
        """
        if self.missing_chunks():
            raise DigestMismatch(
                expected="every chunk",
                calculated=f"{len(self.missing_chunks())} missing",
                source=self._source,
            )
        with self._prefix_lock:
            pass  # a writer still hashing the prefix finishes first
        self._extend_prefix(-1)
        if self._chunk_list is None or self._prefix_chunks != len(self._chunk_list):
            raise RuntimeError("the whole-blob hash fell behind the verified chunks")
        self.size = self._size_expected or 0

    def commit(self) -> StoredBlob:
        try:
            if self._chunk_list is not None:
                self._finish_chunks()
            calculated = Digest(self._algorithm, self._hashers[self._algorithm].hexdigest())
            if self._expected is not None and calculated != self._expected:
                raise DigestMismatch(
                    expected=str(self._expected), calculated=str(calculated), source=self._source
                )
            if self._size_expected is not None and self.size != self._size_expected:
                raise DigestMismatch(
                    expected=f"{self._size_expected} bytes",
                    calculated=f"{self.size} bytes",
                    source=self._source,
                )
            root = self._chunks.root() if self._chunk_list is None else chunk_root(self._chunk_list)
            if self._chunk_root_expected is not None and root != self._chunk_root_expected:
                raise DigestMismatch(
                    expected=f"chunk root {self._chunk_root_expected.hex()}",
                    calculated=f"chunk root {root.hex()}",
                    source=self._source,
                )
        except BaseException:
            self.abort()
            raise
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
        self._store.mark_verified(calculated, root)
        self._store._writer_closed(self)
        for listener in self._store._listeners:
            listener(calculated)
        return StoredBlob(
            digest=calculated, path=final, size=self.size, chunk_root=root, hexdigests=self.hexdigests()
        )

    def _release_ahead(self) -> None:
        """Give back every chunk still held for the prefix (the writer is done with them)."""
        with self._ahead_lock:
            held, self._ahead = list(self._ahead.values()), {}
        for _, release in held:
            if release is not None:
                release()

    def abort(self) -> None:
        self._release_ahead()
        self._store._writer_closed(self)
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


class ResumableBlobWriter(BlobWriter):
    """A chunk-mode writer whose verified chunks survive a stop or a kill (peer downloads).

    Chunks go to `<tmp>/<alg>-<hex>.partial` at their offsets; `<tmp>/<alg>-<hex>.chunks`
    lists the chunks verified so far (a bitmap behind the chunk root, replaced
    atomically every `PROGRESS_EVERY_CHUNKS` chunks or `PROGRESS_EVERY_S` seconds, and
    on `suspend`). The next writer for the blob re-hashes every chunk that list names
    against its own root-checked chunk list in `expect_chunks` and keeps only those
    that match: the list saves work, it is never trusted. A write cut short by a kill is caught the same way.
    While one writer holds the partial file (flock), another for the same blob writes
    an ordinary temp file instead (`resumable` is False).

    `suspend()` keeps the partial file for later; `abort()` and a failed `commit()`
    delete it (bytes that verified chunk by chunk but not as a whole are not kept).
    """

    # The list is a few bytes per MiB downloaded (a 10 GB blob's is 1.3 kB), but each
    # save is a file written and renamed: it is saved after this many chunks, or this
    # long after the last save, whichever comes first. A kill loses at most that much work.
    PROGRESS_EVERY_CHUNKS = 64
    PROGRESS_EVERY_S = 1.0
    MAGIC = b"pyrsia-chunks\x01"

    def __init__(
        self, store: BlobStore, expected: Digest, source: str, *, size: int, chunk_root: bytes
    ) -> None:
        stem = f"{expected.algorithm}-{expected.hex}"
        self.partial_path = store.tmp_dir / f"{stem}.partial"
        self.progress_path = store.tmp_dir / f"{stem}.chunks"
        self.resumable = True
        self.resumed_chunks = 0
        self._unsaved = 0
        self._progress_lock = threading.Lock()
        self._clock: Callable[[], float] = time.monotonic
        self._saved_at = self._clock()
        self.progress: BlobProgress | None = None
        super().__init__(store, expected, source, size=size, chunk_root=chunk_root)

    def _open_temp(self) -> tuple[Path, BinaryIO]:
        try:
            fd = os.open(self.partial_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StorageError(f"cannot open {self.partial_path}: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            self.resumable = False
            return super()._open_temp()
        return self.partial_path, os.fdopen(fd, "r+b", buffering=io.DEFAULT_BUFFER_SIZE)

    def expect_chunks(self, hashes: Sequence[bytes]) -> None:
        super().expect_chunks(hashes)
        if not self.resumable:
            self._announce()
            return
        size = self._size_expected or 0
        fd = self._file.fileno()
        try:
            if os.fstat(fd).st_size > size:
                os.ftruncate(fd, size)
        except OSError as exc:
            raise StorageError(f"cannot size {self.partial_path}: {exc.strerror}") from exc
        for index in self._saved_progress(len(hashes)):
            length = min(CHUNK_BYTES, size - index * CHUNK_BYTES)
            try:
                data = os.pread(fd, length, index * CHUNK_BYTES)
            except OSError as exc:
                raise StorageError(f"cannot read {self.partial_path}: {exc.strerror}") from exc
            if len(data) == length and hashlib.sha256(data).digest() == hashes[index]:
                self._chunks_written.add(index)
        self.resumed_chunks = len(self._chunks_written)
        if self.resumed_chunks:
            log.info("blob %s: resuming with %d verified chunks", self._expected, self.resumed_chunks)
        self._announce()

    def _announce(self) -> None:
        """Let readers stream what this writer verifies (once its chunk list is accepted)."""
        if self._expected is None or self.progress is not None:
            return
        self.progress = BlobProgress(
            self._store.downloads_changed, path=self._tmp, size=self._size_expected or 0
        )
        for index in list(self._chunks_written):
            self.progress.chunk_verified(index)
        self._store._download_started(self._expected, self.progress)

    def _unannounce(self, reason: str) -> None:
        if self.progress is not None and self._expected is not None:
            self.progress.fail(reason)
            self._store._download_ended(self._expected, self.progress)

    def _saved_progress(self, count: int) -> list[int]:
        try:
            raw = self.progress_path.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise StorageError(f"cannot read {self.progress_path}: {exc.strerror}") from exc
        head = self.MAGIC + (self._chunk_root_expected or b"")
        bitmap = raw[len(head) :]
        if not raw.startswith(head) or len(bitmap) != -(-count // 8):
            return []
        return [i for i in range(count) if bitmap[i // 8] >> (i % 8) & 1]

    def write_chunk(self, index: int, data: Buffer, release: Callable[[], None] | None = None) -> None:
        super().write_chunk(index, data, release)
        if self.progress is not None:
            self.progress.chunk_verified(index)
        if not self.resumable:
            return
        now = self._clock()
        with self._progress_lock:
            self._unsaved += 1
            due = self._unsaved >= self.PROGRESS_EVERY_CHUNKS or now - self._saved_at >= self.PROGRESS_EVERY_S
            if due:
                self._saved_at = now
        if due:
            self.save_progress()

    def save_progress(self) -> None:
        """Write the list of verified chunks (a hint for the next attempt; not fsynced)."""
        if not self.resumable or self._chunk_list is None:
            return
        with self._progress_lock:
            self._unsaved = 0
            bitmap = bytearray(-(-len(self._chunk_list) // 8))
            for index in list(self._chunks_written):
                bitmap[index // 8] |= 1 << (index % 8)
            staging = self.progress_path.with_suffix(".chunks-new")
            try:
                staging.write_bytes(self.MAGIC + (self._chunk_root_expected or b"") + bytes(bitmap))
                os.replace(staging, self.progress_path)
            except OSError as exc:
                raise StorageError(f"cannot write {self.progress_path}: {exc.strerror}") from exc

    def suspend(self) -> None:
        """Stop for now: keep the verified chunks for the next attempt (if there are any)."""
        self._release_ahead()
        self._unannounce("stopped before every chunk arrived")
        self._store._writer_closed(self)
        if not self._chunks_written:
            self.abort()
            return
        try:
            self.save_progress()
            self._file.flush()
        finally:
            with contextlib.suppress(OSError):
                self._file.close()
        if not self.resumable:
            with contextlib.suppress(FileNotFoundError):
                self._tmp.unlink()

    def commit(self) -> StoredBlob:
        stored = super().commit()
        if self.progress is not None:
            self.progress.commit(stored.path)
            self._store._download_ended(stored.digest, self.progress)
        if self.resumable:
            with contextlib.suppress(FileNotFoundError):
                self.progress_path.unlink()
        return stored

    def abort(self) -> None:
        self._unannounce("abandoned")
        super().abort()
        if self.resumable:
            with contextlib.suppress(FileNotFoundError):
                self.progress_path.unlink()


class BlobStore:
    """`fanout=False` gives the OCI image-layout shape, `blobs/<alg>/<hex>`."""

    def __init__(self, root: Path, *, fanout: bool = True, tmp_dir: Path | None = None) -> None:
        self.root = root
        self._fanout = fanout
        self.tmp_dir = tmp_dir or root / "tmp"
        self._stamps: dict[Digest, tuple[int, int, int]] = {}
        self._roots: dict[Digest, bytes] = {}
        self._listeners: list[
            Callable[[Digest], None]
        ] = []  # chunk roots of verified blobs; dropped with their stamp
        self._stamps_lock = threading.Lock()
        # Peer downloads in progress, for readers that stream them (`BlobProgress`).
        self.downloads_changed = threading.Condition()
        self._downloads: dict[Digest, BlobProgress] = {}
        # Every writer open now, for status pages; weak, so a writer dropped without
        # commit or abort is forgotten with it.
        self._writers: weakref.WeakSet[BlobWriter] = weakref.WeakSet()
        self._writers_lock = threading.Lock()
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
        verified = self._verified(digest)
        return None if verified is None else verified[0]

    def stored(self, digest: Digest) -> StoredBlob | None:
        """The blob as held, if its bytes still hash to `digest`, with its chunk root."""
        verified = self._verified(digest)
        if verified is None:
            return None
        size, root = verified
        return StoredBlob(
            digest=digest,
            path=self.path(digest),
            size=size,
            chunk_root=root,
            hexdigests={digest.algorithm: digest.hex},
        )

    def _verified(self, digest: Digest) -> tuple[int, bytes] | None:
        """(size, chunk root) of an intact blob: from the stamp when the file is unchanged
        since it was verified, else from one pass that hashes it whole and by chunk."""
        path = self.path(digest)
        stamp = _stamp(path)
        if stamp is None:
            return None
        with self._stamps_lock:
            root = self._roots.get(digest)
            if self._stamps.get(digest) == stamp and root is not None:
                return stamp[1], root
        hasher, chunks = hashlib.new(digest.algorithm), ChunkHasher()
        try:
            with path.open("rb") as file:
                while block := file.read(CHUNK_BYTES):
                    hasher.update(block)
                    chunks.update(block)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageError(f"cannot read blob {digest}: {exc.strerror}") from exc
        if hasher.hexdigest() != digest.hex:
            log.warning("blob %s changed on disk since it was verified; removing it", digest)
            self.remove(digest)
            return None
        root = chunks.root()
        with self._stamps_lock:
            self._stamps[digest] = stamp
            self._roots[digest] = root
        return stamp[1], root

    def read_checked(self, digest: Digest) -> bytes | None:
        """Small blobs (manifests): the bytes, hashed on every read."""
        data = self.read(digest)
        if data is None or hashlib.new(digest.algorithm, data).hexdigest() == digest.hex:
            return data
        log.warning("blob %s changed on disk since it was verified; removing it", digest)
        self.remove(digest)
        return None

    def remove(self, digest: Digest) -> None:
        """Forget a blob (it changed on disk, or what vouched for it never committed)."""
        with self._stamps_lock:
            self._stamps.pop(digest, None)
            self._roots.pop(digest, None)
        with contextlib.suppress(FileNotFoundError):
            self.path(digest).unlink()

    def mark_verified(self, digest: Digest, chunk_root: bytes) -> None:
        stamp = _stamp(self.path(digest))
        if stamp is not None:
            with self._stamps_lock:
                self._stamps[digest] = stamp
                self._roots[digest] = chunk_root

    def writer(
        self,
        expected: Digest | None,
        source: str,
        also: Sequence[str] = (),
        *,
        size: int | None = None,
        chunk_root: bytes | None = None,
    ) -> BlobWriter:
        return BlobWriter(self, expected, source, also, size=size, chunk_root=chunk_root)

    def writes_in_progress(self) -> list[BlobWrite]:
        """Blobs being written now, from any source, oldest first is not promised."""
        with self._writers_lock:
            writers = list(self._writers)
        return [w.progress_now() for w in writers]

    def _writer_opened(self, writer: BlobWriter) -> None:
        with self._writers_lock:
            self._writers.add(writer)

    def _writer_closed(self, writer: BlobWriter) -> None:
        with self._writers_lock:
            self._writers.discard(writer)

    def download_progress(self, digest: Digest) -> BlobProgress | None:
        """The peer download of `digest` in progress, if one is."""
        with self.downloads_changed:
            return self._downloads.get(digest)

    def notify_downloads(self) -> None:
        """Wake whoever waits on `downloads_changed` (a fetch ended some other way)."""
        with self.downloads_changed:
            self.downloads_changed.notify_all()

    def _download_started(self, digest: Digest, progress: BlobProgress) -> None:
        with self.downloads_changed:
            self._downloads[digest] = progress
            self.downloads_changed.notify_all()

    def _download_ended(self, digest: Digest, progress: BlobProgress) -> None:
        with self.downloads_changed:
            if self._downloads.get(digest) is progress:
                del self._downloads[digest]
            self.downloads_changed.notify_all()

    def resumable_writer(
        self, expected: Digest, source: str, *, size: int, chunk_root: bytes
    ) -> ResumableBlobWriter:
        return ResumableBlobWriter(self, expected, source, size=size, chunk_root=chunk_root)

    def remove_stale_partials(self, age_s_max: float, now_s: float) -> int:
        """Delete resumable downloads untouched for `age_s_max` (wall-clock `now_s`)."""
        removed = 0
        for pattern in ("*.partial", "*.chunks"):
            for leftover in self.tmp_dir.glob(pattern):
                with contextlib.suppress(FileNotFoundError):
                    if now_s - leftover.stat().st_mtime > age_s_max:
                        leftover.unlink()
                        removed += 1
        return removed

    def opener(
        self,
        expected: Digest | None,
        source: str,
        also: Sequence[str] = (),
        *,
        size: int | None = None,
        chunk_root: bytes | None = None,
    ) -> OpenSink:
        """A fresh writer per download attempt, for the upstream clients."""
        return functools.partial(BlobWriter, self, expected, source, also, size=size, chunk_root=chunk_root)

    def put(self, digest: Digest, data: bytes, source: str) -> StoredBlob:
        with self.writer(digest, source) as writer:
            writer.write(data)
            return writer.commit()

    def digests(self) -> Iterator[Digest]:
        """Every stored blob's digest (not re-verified), for announcing what is held."""
        for algorithm in ("sha256", "sha512"):
            for path in (self.root / algorithm).glob("*/*"):
                yield Digest(algorithm, path.name)

    def on_stored(self, listener: Callable[[Digest], None]) -> None:
        """`listener(digest)` after each new blob is committed (on the writer's thread)."""
        self._listeners.append(listener)

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
