"""The log's hot lookups in memory: a bounded view kept in step with the blocks.

What it owns: for the keys asked most recently, the newest committed record of a
(package type, path) and of a (package type, digest), "none" answers included. Those
are what every GET of a tag, a manifest digest or a blob asks the log (which digest a
tag is, whether a digest is vouched for and what its record says), so they are
answered here without a query to the index. `ArtifactRecord`, the value every lookup
returns, is defined here too, and `records_of` makes a block's records exactly as
the index would store them.

Rules:
- Only the ledger's writer (or its index thread) changes what an entry says, with
  `apply_block(block, first_leaf)` for each block it commits or appends, after the
  index holds that block and before any caller learns of the commit. Every held key
  the block touches, "none" answers included, is set to the block's record (the
  newest wins within the block): so no entry is older than the log once a commit has
  returned. Keys not held stay so (the next lookup reads the index, which already has
  the block): a sync of many blocks neither costs an entry per record nor pushes the
  hot keys out.
- Readers fill misses from the index with `fill(token, key, record)`, where `token`
  is the `generation` they read before querying. A block applied meanwhile bumps the
  generation and the fill is dropped: an answer read from the index before a block
  must not be stored after it (a "none" for a tag the block just committed would
  stay wrong).
- At most `entries_max` entries; past that the least recently used go. Each entry
  holds one record (shared by its path and digest keys) or None.

No locks here: the ledger takes one around every call.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from pyrsia.translog.block import Block, BlockHeader
from pyrsia.translog.tx import ADD_ARTIFACT, AddArtifact, Transaction

# 16,384 entries: about 8 KB of memory per image (a tag, its manifests, config and
# layers, by path and digest) and at most some 16 MB in all.
VIEW_ENTRIES_MAX = 16_384
PATH = "path"
DIGEST = "digest"


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
    registry: str = ""  # the record's registry, or its package type's default (never empty once indexed)
    # Rebuilt from source (`AddArtifact.build_*`); empty on a mirror record.
    build_source: str = ""
    build_commit: str = ""
    build_spec: str = ""
    builder_jdk: str = ""
    builder_maven: str = ""
    reproduces_upstream: str = ""

    def to_json(self) -> dict[str, object]:
        doc = {f: getattr(self, f) for f in self.__slots__}
        return {**doc, "chunk_root": self.chunk_root.hex(), "dependencies": list(self.dependencies)}


# (PATH or DIGEST, package type, the path or digest): a plain tuple, cheap to hash.
Key = tuple[str, str, str]


def path_key(package_type: str, path: str) -> Key:
    return (PATH, package_type, path)


def digest_key(package_type: str, digest: str) -> Key:
    return (DIGEST, package_type, digest)


def records_of(block: Block, first_leaf: int) -> list[ArtifactRecord]:
    """The block's AddArtifact records, in log order; `first_leaf` is the leaf index of
    its first transaction."""
    return [
        _record(block.header, tx, tx.payload, first_leaf + offset)
        for offset, tx in enumerate(block.transactions)
        if tx.type == ADD_ARTIFACT and isinstance(tx.payload, AddArtifact)
    ]


def _record(header: BlockHeader, tx: Transaction, p: AddArtifact, leaf: int) -> ArtifactRecord:
    return ArtifactRecord(
        leaf=leaf, height=header.height, tx_id=tx.id.hex(), time=tx.time,
        submitter=tx.submitter, package_type=p.package_type, package_id=p.package_id, path=p.path,
        digest=p.digest, size=p.size, chunk_size=p.chunk_size, chunk_root=p.chunk_root,
        media_type=p.media_type, source=p.source, author=p.author,
        dependencies=tuple(p.dependencies), registry=p.registry_or_default,
        build_source=p.build_source, build_commit=p.build_commit, build_spec=p.build_spec,
        builder_jdk=p.builder_jdk, builder_maven=p.builder_maven,
        reproduces_upstream=p.reproduces_upstream,
    )  # fmt: skip


class LookupView:
    def __init__(self, entries_max: int = VIEW_ENTRIES_MAX) -> None:
        if entries_max < 0:
            raise ValueError("entries_max must not be negative")
        self.entries_max = entries_max
        self._entries: OrderedDict[Key, ArtifactRecord | None] = OrderedDict()
        self._generation = 0

    @property
    def generation(self) -> int:
        """Bumped by every `apply_block`: the token a reader's `fill` must still match."""
        return self._generation

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Key) -> tuple[bool, ArtifactRecord | None]:
        """(held, the newest record or None); (False, None) when the view does not know."""
        entries = self._entries
        if key not in entries:
            return False, None
        entries.move_to_end(key)
        return True, entries[key]

    def fill(self, token: int, key: Key, record: ArtifactRecord | None) -> bool:
        """Store what a reader found in the index, unless a block was applied since it
        read `token`; whether it was stored."""
        if token != self._generation:
            return False
        self._put(key, record)
        return True

    def apply_block(self, block: Block, first_leaf: int) -> None:
        """A committed block: each of its records (`records_of(block, first_leaf)`, in log
        order) is now the newest of its keys. A record is built only for a key the view
        holds: most of a block's records touch none."""
        self._generation += 1
        entries = self._entries
        if not entries:
            return
        header = block.header
        for offset, tx in enumerate(block.transactions):
            p = tx.payload
            if tx.type != ADD_ARTIFACT or not isinstance(p, AddArtifact):
                continue
            by_path, by_digest = path_key(p.package_type, p.path), digest_key(p.package_type, p.digest)
            held_path, held_digest = by_path in entries, by_digest in entries
            if held_path or held_digest:
                record = _record(header, tx, p, first_leaf + offset)
                if held_path:
                    entries[by_path] = record
                if held_digest:
                    entries[by_digest] = record

    def _put(self, key: Key, record: ArtifactRecord | None) -> None:
        entries = self._entries
        entries[key] = record
        entries.move_to_end(key)
        while len(entries) > self.entries_max:
            entries.popitem(last=False)
