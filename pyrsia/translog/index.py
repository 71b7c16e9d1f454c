"""SQLite index over the block files: search and lookups without reading blocks.

The blocks are the truth; this is a cache of them (`<root>/index.sqlite3`). Its meta
table records the height and hash of the last block it holds and how many artifact
and dependency rows those blocks make; the ledger compares them with the chain on
open and rebuilds the index from the block files when it is missing, unreadable,
from another schema, disagrees with the chain, or holds other row counts than its
meta says (a partial index). Each update is one SQLite transaction: after a failure
it is rolled back (when SQLite has not already done so: a full disk ends the
transaction itself), so the index stays whole as of an earlier block, never partial.

One writer connection (`Index`, the ledger's writer thread); readers each open their
own read-only connection (`IndexReader`), so in WAL mode they read the last committed
state and never wait behind a write. Queries are parameterized only. Package search
matches `package_id` exactly or as the name before `:` or `@` (`library/alpine` finds
`library/alpine:3.18`); author search matches a prefix; registry search matches the
record's registry (a record without one is indexed under its package type's default,
`docker.io`). Records rebuilt from source are found by their git URL (`build_source`,
exact) and by whether they reproduce the upstream's file (`reproduces_upstream`). All use range scans on
indexes, never `LIKE '%…'`, to stay fast at millions of rows.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyrsia.errors import StorageError
from pyrsia.translog.block import Block
from pyrsia.translog.tx import ADD_ARTIFACT, AddArtifact
from pyrsia.translog.view import ArtifactRecord

__all__ = ["ArtifactRecord", "Index", "IndexReader", "IndexTip", "Query", "rows_of"]

log = logging.getLogger("pyrsia.translog")
SCHEMA_VERSION = "5"
SEARCH_LIMIT_MAX = 10_000
CHECKPOINT_EVERY_COMMITS = 32  # index transactions between WAL checkpoints (each ~100 pages)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS artifact (
    leaf INTEGER PRIMARY KEY, height INTEGER NOT NULL, tx_id BLOB NOT NULL,
    time INTEGER NOT NULL, submitter TEXT NOT NULL,
    package_type TEXT NOT NULL, package_id TEXT NOT NULL, path TEXT NOT NULL,
    digest TEXT NOT NULL, size INTEGER NOT NULL, chunk_size INTEGER NOT NULL,
    chunk_root BLOB NOT NULL, media_type TEXT NOT NULL,
    source TEXT NOT NULL, author TEXT NOT NULL, registry TEXT NOT NULL,
    build_source TEXT NOT NULL, build_commit TEXT NOT NULL, build_spec TEXT NOT NULL,
    builder_jdk TEXT NOT NULL, builder_maven TEXT NOT NULL, reproduces_upstream TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS artifact_path ON artifact (package_type, path, leaf);
CREATE INDEX IF NOT EXISTS artifact_digest ON artifact (digest, package_type);
CREATE INDEX IF NOT EXISTS artifact_package ON artifact (package_id);
CREATE INDEX IF NOT EXISTS artifact_author ON artifact (author);
CREATE INDEX IF NOT EXISTS artifact_registry ON artifact (registry);
CREATE INDEX IF NOT EXISTS artifact_time ON artifact (time);
CREATE INDEX IF NOT EXISTS artifact_build_source ON artifact (build_source);
CREATE INDEX IF NOT EXISTS artifact_reproduces ON artifact (reproduces_upstream);
CREATE INDEX IF NOT EXISTS artifact_tx ON artifact (tx_id);
CREATE TABLE IF NOT EXISTS dependency (leaf INTEGER NOT NULL, name TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS dependency_name ON dependency (name, leaf);
CREATE INDEX IF NOT EXISTS dependency_leaf ON dependency (leaf);
"""
_COLUMNS = (
    "leaf, height, tx_id, time, submitter, package_type, package_id, path, digest, size, chunk_size, "
    "chunk_root, media_type, source, author, registry, build_source, build_commit, build_spec, "
    "builder_jdk, builder_maven, reproduces_upstream"
)
_PLACES = ",".join("?" * len(_COLUMNS.split(",")))


@dataclass(frozen=True, slots=True, kw_only=True)
class Query:
    author: str | None = None
    package: str | None = None
    depends_on: str | None = None
    digest: str | None = None
    package_type: str | None = None
    registry: str | None = None
    build_source: str | None = None  # records rebuilt from this git URL
    reproduces_upstream: str | None = None  # yes | no | absent
    since: int | None = None
    limit: int = 100


@dataclass(frozen=True, slots=True, kw_only=True)
class IndexTip:
    """What the index says it holds: blocks 0..height, the last with `hash`, making
    `artifacts` artifact rows and `dependencies` dependency rows."""

    height: int
    hash: bytes
    artifacts: int
    dependencies: int


def rows_of(block: Block) -> tuple[int, int]:
    """(artifact rows, dependency rows) indexing `block` adds."""
    artifacts = dependencies = 0
    for tx in block.transactions:
        if tx.type == ADD_ARTIFACT and isinstance(tx.payload, AddArtifact):
            artifacts += 1
            dependencies += len(tx.payload.dependencies)
    return artifacts, dependencies


class _Checkpointer:
    """Copies the WAL into the database on a thread of its own (`translog-checkpoint`),
    so the fsyncs of a checkpoint never stall an index update: SQLite's automatic
    checkpoint would run them inside the COMMIT of every few updates. A PASSIVE
    checkpoint never blocks the writer or readers; the next update after one that
    completed starts the WAL over. The index is a cache of the blocks, so whatever a
    checkpoint has not copied yet when the power goes is rebuilt from them on open."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def poke(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="translog-checkpoint", daemon=True)
            self._thread.start()
        self._wake.set()

    def close(self) -> None:
        if self._thread is not None:
            self._stopping = True
            self._wake.set()
            self._thread.join()
            self._thread, self._stopping = None, False

    def _run(self) -> None:
        try:
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        except sqlite3.Error as exc:
            log.warning("log index checkpoints stopped: cannot open %s: %s", self.path, exc)
            return
        try:
            while True:
                self._wake.wait()
                self._wake.clear()
                if self._stopping:
                    return
                try:
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error as exc:  # retried at the next poke; the index stays whole
                    log.debug("log index checkpoint failed: %s", exc)
        finally:
            db.close()


class Index:
    """The writer's connection: creates, updates and rebuilds the index."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._checkpointer = _Checkpointer(path)
        self._commits = 0
        try:
            self._db = self._connect()
        except StorageError as exc:  # unreadable: it is only a cache of the blocks
            log.warning("rebuilding the log index: %s", exc.message)
            self._remove_files()
            self._db = self._connect()

    def _connect(self) -> sqlite3.Connection:
        try:
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # a lost tail is rebuilt from the blocks
            db.execute("PRAGMA wal_autocheckpoint=0")  # `_Checkpointer` does it, off this thread
            db.executescript(_SCHEMA)
            return db
        except sqlite3.DatabaseError as exc:
            raise StorageError(f"cannot open index {self.path}: {exc}") from exc

    def close(self) -> None:
        self._checkpointer.close()
        self._db.close()

    def reset(self) -> None:
        """Start over from an empty file (missing, corrupt or disagreeing index).
        Only while no reader has a connection open."""
        self._checkpointer.close()
        with contextlib.suppress(sqlite3.Error):
            self._db.close()
        self._remove_files()
        self._db = self._connect()

    def _remove_files(self) -> None:
        for suffix in ("", "-wal", "-shm"):
            try:
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)
            except OSError as exc:
                raise StorageError(f"cannot remove the log index {self.path}: {exc.strerror}") from exc

    def reader(self) -> IndexReader:
        return IndexReader(self.path)

    def tip(self) -> IndexTip | None:
        """What the meta table says; None when empty, unreadable or of another schema."""
        try:
            rows = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
            return (
                IndexTip(
                    height=int(rows["height"]),
                    hash=bytes(rows["hash"]),
                    artifacts=int(rows["artifacts"]),
                    dependencies=int(rows["dependencies"]),
                )
                if rows.get("schema") == SCHEMA_VERSION
                else None
            )
        except (sqlite3.DatabaseError, KeyError, TypeError, ValueError):
            return None

    def counts(self) -> tuple[int, int]:
        """Rows actually held: (artifacts, dependencies)."""
        try:
            (artifacts,) = self._db.execute("SELECT COUNT(*) FROM artifact").fetchone()
            (dependencies,) = self._db.execute("SELECT COUNT(*) FROM dependency").fetchone()
        except sqlite3.DatabaseError as exc:
            raise StorageError(f"cannot read the log index {self.path}: {exc}") from exc
        return int(artifacts), int(dependencies)

    def apply(self, blocks: Iterable[tuple[Block, int]], *, replace: bool = False) -> IndexTip | None:
        """Index blocks in order, in one transaction; each pair is (block, leaf index of
        its first transaction). `replace` empties the index first (in the same
        transaction, so readers see the old index until the new one is whole).

        A SQLite failure leaves the index as it was and raises `StorageError`.
        """
        db = self._db
        try:
            db.execute("BEGIN")
            if replace:
                db.execute("DELETE FROM dependency")
                db.execute("DELETE FROM artifact")
                db.execute("DELETE FROM meta")
            before = self.tip()
            artifacts, dependencies = (before.artifacts, before.dependencies) if before else (0, 0)
            last: Block | None = None
            for block, first_leaf in blocks:
                added = self._insert(block, first_leaf)
                artifacts, dependencies = artifacts + added[0], dependencies + added[1]
                last = block
            tip = before
            if last is not None:
                tip = IndexTip(
                    height=last.header.height,
                    hash=last.header.hash,
                    artifacts=artifacts,
                    dependencies=dependencies,
                )
                db.executemany(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                    [("schema", SCHEMA_VERSION), ("height", tip.height), ("hash", tip.hash),
                     ("artifacts", tip.artifacts), ("dependencies", tip.dependencies)],
                )  # fmt: skip
            db.execute("COMMIT")
            self._commits += 1
            if self._commits % CHECKPOINT_EVERY_COMMITS == 0:
                self._checkpointer.poke()
            return tip
        except BaseException as exc:
            self._abandon()
            if isinstance(exc, sqlite3.Error | OverflowError):
                raise StorageError(f"cannot update the log index {self.path}: {exc}") from exc
            raise

    def _abandon(self) -> None:
        """Roll back a failed update, unless SQLite already did (it ends the
        transaction itself on a full disk or I/O error); reconnect if even that fails."""
        if not self._db.in_transaction:
            return
        try:
            self._db.execute("ROLLBACK")
        except sqlite3.Error as exc:
            log.warning("log index rollback failed (%s); reopening it", exc)
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._db = self._connect()

    def _insert(self, block: Block, first_leaf: int) -> tuple[int, int]:
        header = block.header
        artifacts = dependencies = 0
        rows = []
        deps: list[tuple[int, str]] = []
        for offset, tx in enumerate(block.transactions):
            if tx.type != ADD_ARTIFACT or not isinstance(tx.payload, AddArtifact):
                continue
            p, leaf = tx.payload, first_leaf + offset
            rows.append(
                (
                    leaf, header.height, tx.id, tx.time, tx.submitter, p.package_type, p.package_id,
                    p.path, p.digest, p.size, p.chunk_size, p.chunk_root, p.media_type, p.source, p.author,
                    p.registry_or_default, p.build_source, p.build_commit, p.build_spec, p.builder_jdk,
                    p.builder_maven, p.reproduces_upstream,
                )
            )  # fmt: skip
            deps += [(leaf, d) for d in p.dependencies]
            artifacts += 1
            dependencies += len(p.dependencies)
        self._db.executemany(f"INSERT INTO artifact ({_COLUMNS}) VALUES ({_PLACES})", rows)
        self._db.executemany("INSERT INTO dependency (leaf, name) VALUES (?, ?)", deps)
        return artifacts, dependencies


class IndexReader:
    """A read-only connection for one reader thread: lookups and search."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            uri = f"{path.resolve().as_uri()}?mode=ro"
            self._db = sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None)
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open the log index {path}: {exc}") from exc

    def close(self) -> None:
        self._db.close()

    def _rows(self, sql: str, params: Iterable[object]) -> list[tuple[object, ...]]:
        try:
            return self._db.execute(sql, tuple(params)).fetchall()
        except (sqlite3.Error, OverflowError) as exc:
            raise StorageError(f"cannot read the log index {self.path}: {exc}") from exc

    def _records(
        self, where: str, params: list[object], limit: int, order: str = "leaf DESC"
    ) -> list[ArtifactRecord]:
        rows: list[Any] = self._rows(
            f"SELECT {_COLUMNS} FROM artifact WHERE {where} ORDER BY {order} LIMIT ?", [*params, limit]
        )
        out = []
        for row in rows:
            deps = self._rows("SELECT name FROM dependency WHERE leaf = ? ORDER BY rowid", (row[0],))
            out.append(
                ArtifactRecord(
                    leaf=row[0], height=row[1], tx_id=bytes(row[2]).hex(), time=row[3], submitter=row[4],
                    package_type=row[5], package_id=row[6], path=row[7], digest=row[8], size=row[9],
                    chunk_size=row[10], chunk_root=bytes(row[11]), media_type=row[12],
                    source=row[13], author=row[14], registry=row[15], build_source=row[16],
                    build_commit=row[17], build_spec=row[18], builder_jdk=row[19], builder_maven=row[20],
                    reproduces_upstream=row[21],
                    dependencies=tuple(str(d) for (d,) in deps),
                )
            )  # fmt: skip
        return out

    def latest(self, package_type: str, path: str) -> ArtifactRecord | None:
        found = self._records("package_type = ? AND path = ?", [package_type, path], 1)
        return found[0] if found else None

    def by_digest(self, digest: str, package_type: str | None = None) -> list[ArtifactRecord]:
        if package_type is None:
            return self._records("digest = ?", [digest], SEARCH_LIMIT_MAX)
        return self._records("digest = ? AND package_type = ?", [digest, package_type], SEARCH_LIMIT_MAX)

    def newest_by_digest(self, package_type: str, digest: str) -> ArtifactRecord | None:
        found = self._records("digest = ? AND package_type = ?", [digest, package_type], 1)
        return found[0] if found else None

    def has_digest(self, package_type: str, digest: str) -> bool:
        rows = self._rows(
            "SELECT 1 FROM artifact WHERE digest = ? AND package_type = ? LIMIT 1", (digest, package_type)
        )
        return bool(rows)

    def has_tx(self, tx_id: bytes) -> bool:
        return bool(self._rows("SELECT 1 FROM artifact WHERE tx_id = ? LIMIT 1", (tx_id,)))

    def package_ids(self, package_type: str, prefix: str) -> list[str]:
        rows = self._rows(
            "SELECT DISTINCT package_id FROM artifact WHERE package_id >= ? AND package_id < ?"
            " AND package_type = ? ORDER BY package_id",
            (prefix, prefix + "\U0010ffff", package_type),
        )
        return [str(r[0]) for r in rows]

    def paths(self, package_type: str, prefix: str, after: str, limit: int) -> list[str]:
        """Distinct logged paths starting with `prefix` and sorting after `after`, in order."""
        rows = self._rows(
            "SELECT DISTINCT path FROM artifact WHERE package_type = ? AND path >= ? AND path < ?"
            " AND path > ? ORDER BY path LIMIT ?",
            (package_type, prefix, prefix + "\U0010ffff", after, max(1, min(limit, SEARCH_LIMIT_MAX))),
        )
        return [str(r[0]) for r in rows]

    def search(self, query: Query) -> list[ArtifactRecord]:
        where: list[str] = []
        params: list[object] = []
        if query.package:
            p = query.package
            between = "(package_id >= ? AND package_id < ?)"
            where.append(f"(package_id = ? OR {between} OR {between})")
            params += [p, p + ":", p + ";", p + "@", p + "A"]
        if query.author:
            where.append("author >= ? AND author < ?")
            params += [query.author, query.author + "\U0010ffff"]
        if query.digest:
            where.append("digest = ?")
            params.append(query.digest)
        if query.package_type:
            where.append("package_type = ?")
            params.append(query.package_type)
        if query.registry:
            where.append("registry = ?")
            params.append(query.registry)
        if query.build_source:
            where.append("build_source = ?")
            params.append(query.build_source)
        if query.reproduces_upstream:
            where.append("reproduces_upstream = ?")
            params.append(query.reproduces_upstream)
        if query.since is not None:
            where.append("time >= ?")
            params.append(query.since)
        if query.depends_on:
            where.append("leaf IN (SELECT leaf FROM dependency WHERE name = ?)")
            params.append(query.depends_on)
        limit = max(1, min(query.limit, SEARCH_LIMIT_MAX))
        return self._records(" AND ".join(where) or "1", params, limit)

    def count(self) -> int:
        (row,) = self._rows("SELECT COUNT(*) FROM artifact", ())
        return int(str(row[0]))
