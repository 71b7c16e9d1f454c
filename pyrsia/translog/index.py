"""SQLite index over the block files: search and lookups without reading blocks.

The blocks are the truth; this is a cache of them (`<root>/index.sqlite3`). It records
the height and hash of the last block it holds, and the ledger brings it up to date
on open: applying the blocks it lacks, or rebuilding it from all block files when it
is missing, unreadable, or disagrees with them. Queries are parameterized only.
Package search matches `package_id` exactly or as the name before `:` or `@`
(`library/alpine` finds `library/alpine:3.18`); author search matches a prefix.
Both use range scans on indexes, never `LIKE '%…'`, to stay fast at millions of rows.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pyrsia.errors import StorageError
from pyrsia.translog.block import Block
from pyrsia.translog.tx import ADD_ARTIFACT, AddArtifact

log = logging.getLogger("pyrsia.translog")
SCHEMA_VERSION = "2"
SEARCH_LIMIT_MAX = 10_000
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS artifact (
    leaf INTEGER PRIMARY KEY, height INTEGER NOT NULL, tx_id BLOB NOT NULL,
    time INTEGER NOT NULL, submitter TEXT NOT NULL,
    package_type TEXT NOT NULL, package_id TEXT NOT NULL, path TEXT NOT NULL,
    digest TEXT NOT NULL, size INTEGER NOT NULL, chunk_size INTEGER NOT NULL, chunk_root BLOB NOT NULL,
    media_type TEXT NOT NULL,
    source TEXT NOT NULL, author TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS artifact_path ON artifact (package_type, path, leaf);
CREATE INDEX IF NOT EXISTS artifact_digest ON artifact (digest, package_type);
CREATE INDEX IF NOT EXISTS artifact_package ON artifact (package_id);
CREATE INDEX IF NOT EXISTS artifact_author ON artifact (author);
CREATE INDEX IF NOT EXISTS artifact_time ON artifact (time);
CREATE TABLE IF NOT EXISTS dependency (leaf INTEGER NOT NULL, name TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS dependency_name ON dependency (name, leaf);
CREATE INDEX IF NOT EXISTS dependency_leaf ON dependency (leaf);
"""
_COLUMNS = (
    "leaf, height, tx_id, time, submitter, package_type, package_id, path, digest, size, chunk_size, "
    "chunk_root, media_type, source, author"
)


@dataclass(frozen=True, slots=True, kw_only=True)
class ArtifactRecord:
    leaf: int
    height: int
    tx_id: str
    time: int
    submitter: str
    package_type: str
    package_id: str
    path: str
    digest: str
    size: int
    chunk_size: int
    chunk_root: bytes
    media_type: str
    source: str
    author: str
    dependencies: tuple[str, ...] = ()

    def to_json(self) -> dict[str, object]:
        doc = {f: getattr(self, f) for f in self.__slots__}
        return {**doc, "chunk_root": self.chunk_root.hex(), "dependencies": list(self.dependencies)}


@dataclass(frozen=True, slots=True, kw_only=True)
class Query:
    author: str | None = None
    package: str | None = None
    depends_on: str | None = None
    digest: str | None = None
    package_type: str | None = None
    since: int | None = None
    limit: int = 100


class Index:
    def __init__(self, path: Path) -> None:
        self.path = path
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
            db.executescript(_SCHEMA)
            return db
        except sqlite3.DatabaseError as exc:
            raise StorageError(f"cannot open index {self.path}: {exc}") from exc

    def close(self) -> None:
        self._db.close()

    def reset(self) -> None:
        """Start over from an empty file (missing, corrupt or disagreeing index)."""
        with contextlib.suppress(sqlite3.Error):
            self._db.close()
        self._remove_files()
        self._db = self._connect()

    def _remove_files(self) -> None:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)

    def tip(self) -> tuple[int, bytes] | None:
        """(height, block hash) of the last block indexed; None when empty or unreadable."""
        try:
            rows = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.DatabaseError:
            return None
        if rows.get("schema") != SCHEMA_VERSION or "height" not in rows:
            return None
        return int(rows["height"]), bytes(rows["hash"])

    def apply(self, blocks: Iterable[tuple[Block, int]]) -> None:
        """Index blocks in order; each pair is (block, leaf index of its first transaction)."""
        db = self._db
        db.execute("BEGIN")
        try:
            last: Block | None = None
            for block, first_leaf in blocks:
                self._insert(block, first_leaf)
                last = block
            if last is not None:
                db.executemany(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                    [("schema", SCHEMA_VERSION), ("height", last.header.height), ("hash", last.header.hash)],
                )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _insert(self, block: Block, first_leaf: int) -> None:
        header = block.header
        for offset, tx in enumerate(block.transactions):
            if tx.type != ADD_ARTIFACT or not isinstance(tx.payload, AddArtifact):
                continue
            p, leaf = tx.payload, first_leaf + offset
            self._db.execute(
                f"INSERT INTO artifact ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    leaf, header.height, tx.id, tx.time, tx.submitter, p.package_type, p.package_id,
                    p.path, p.digest, p.size, p.chunk_size, p.chunk_root, p.media_type, p.source, p.author,
                ),
            )  # fmt: skip
            self._db.executemany(
                "INSERT INTO dependency (leaf, name) VALUES (?, ?)", [(leaf, d) for d in p.dependencies]
            )

    # -- queries --------------------------------------------------------------------

    def _records(
        self, where: str, params: list[object], limit: int, order: str = "leaf DESC"
    ) -> list[ArtifactRecord]:
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM artifact WHERE {where} ORDER BY {order} LIMIT ?", [*params, limit]
        ).fetchall()
        out = []
        for row in rows:
            deps = self._db.execute("SELECT name FROM dependency WHERE leaf = ? ORDER BY rowid", (row[0],))
            out.append(
                ArtifactRecord(
                    leaf=row[0], height=row[1], tx_id=bytes(row[2]).hex(), time=row[3], submitter=row[4],
                    package_type=row[5], package_id=row[6], path=row[7], digest=row[8], size=row[9],
                    chunk_size=row[10], chunk_root=bytes(row[11]), media_type=row[12], source=row[13],
                    author=row[14],
                    dependencies=tuple(d for (d,) in deps.fetchall()),
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

    def has_digest(self, package_type: str, digest: str) -> bool:
        row = self._db.execute(
            "SELECT 1 FROM artifact WHERE digest = ? AND package_type = ? LIMIT 1", (digest, package_type)
        ).fetchone()
        return row is not None

    def package_ids(self, package_type: str, prefix: str) -> list[str]:
        rows = self._db.execute(
            "SELECT DISTINCT package_id FROM artifact WHERE package_id >= ? AND package_id < ?"
            " AND package_type = ? ORDER BY package_id",
            (prefix, prefix + "\U0010ffff", package_type),
        )
        return [r[0] for r in rows.fetchall()]

    def paths(self, package_type: str, prefix: str, after: str, limit: int) -> list[str]:
        """Distinct logged paths starting with `prefix` and sorting after `after`, in order."""
        rows = self._db.execute(
            "SELECT DISTINCT path FROM artifact WHERE package_type = ? AND path >= ? AND path < ?"
            " AND path > ? ORDER BY path LIMIT ?",
            (package_type, prefix, prefix + "\U0010ffff", after, max(1, min(limit, SEARCH_LIMIT_MAX))),
        )
        return [r[0] for r in rows.fetchall()]

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
        if query.since is not None:
            where.append("time >= ?")
            params.append(query.since)
        if query.depends_on:
            where.append("leaf IN (SELECT leaf FROM dependency WHERE name = ?)")
            params.append(query.depends_on)
        limit = max(1, min(query.limit, SEARCH_LIMIT_MAX))
        return self._records(" AND ".join(where) or "1", params, limit)

    def count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM artifact").fetchone()[0])
