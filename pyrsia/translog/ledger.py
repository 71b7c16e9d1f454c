"""The node's transparency log: open, verify, publish, look up, prove.

One object owns the block files, the Merkle tree over every transaction id and the
SQLite index, behind one lock (HTTP workers call in concurrently). Opening checks the
chain: every block file's checksum, each header's link to its predecessor, every
block's transaction root and log root against the rebuilt tree, and the last block in
full (signatures and commit certificate); `verify_chain` checks every block in full.
A torn last file is dropped; anything else broken raises `ChainBroken` naming the
height, and the node refuses to start.

The embedded default is its own only authority: `publish` signs the transactions,
proposes the block, certifies it alone (one signature is the quorum of one) and
returns only once the block file is durable. Consensus among several authorities will
replace that certification step; nothing else here changes.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time as _time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from nacl.signing import SigningKey

from pyrsia.errors import ChainBroken, EntryUnknown, StorageError, TxInvalid
from pyrsia.formats.peer_id import peer_id_of
from pyrsia.translog import block as blocks
from pyrsia.translog import checkpoint, merkle
from pyrsia.translog.block import Block, BlockHeader
from pyrsia.translog.index import ArtifactRecord, Index, Query
from pyrsia.translog.store import BlockFiles, Torn
from pyrsia.translog.tx import (
    ADD_ARTIFACT,
    ADD_AUTHORIZED_NODE,
    AddArtifact,
    AuthorizedNode,
    sign,
)

log = logging.getLogger("pyrsia.translog")
INDEX_FILE = "index.sqlite3"
PUBLISH_TXS_MAX = 10_000


@dataclass(frozen=True, slots=True, kw_only=True)
class InclusionProof:
    record: ArtifactRecord
    leaf_index: int
    tree_size: int
    leaf_hash: bytes
    hashes: tuple[bytes, ...]
    checkpoint: str


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifyReport:
    blocks: int
    transactions: int
    bad_height: int | None = None
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.bad_height is None


@dataclass
class _Replay:
    """What walking the chain yields: the tip, the tree, the authorities in force."""

    tip: Block | None = None
    tree: merkle.Tree | None = None
    authorities: frozenset[str] = frozenset()
    origin: str = ""
    blocks: int = 0


def origin_of(genesis: BlockHeader) -> str:
    """The log's name in checkpoints, fixed by its genesis block."""
    return f"pyrsia.log/{genesis.hash.hex()[:16]}"


def _walk(files: BlockFiles, state: _Replay, *, full: bool, drop_torn: bool) -> Iterator[tuple[Block, int]]:
    """Each block in order, verified, with the leaf index of its first transaction;
    `state` follows along (tip, tree, authorities in force)."""
    state.tree = merkle.Tree()
    heights = files.heights()
    for height in heights:
        try:
            payload = files.read(height)
        except Torn as exc:
            if height != heights[-1] or not drop_torn:
                raise ChainBroken(height, "block file is truncated") from exc
            files.drop_torn(height)
            return
        try:
            block = Block.decode(payload)
        except TxInvalid as exc:
            raise ChainBroken(height, f"block does not decode: {exc.message}") from exc
        prev = state.tip.header if state.tip else None
        if height == 0:
            state.authorities = blocks.genesis_authorities(block)
            state.origin = origin_of(block.header)
        if full or height == heights[-1]:
            blocks.verify_link(prev, block, state.authorities, state.origin)
        elif (
            block.header.prev_hash != (prev.hash if prev else blocks.ZERO_HASH)
            or block.header.height != height
        ):
            raise ChainBroken(height, "previous block hash does not match")
        first_leaf = state.tree.size
        for tx in block.transactions:
            state.tree.append(tx.id)
        if block.header.tx_root != blocks.tx_root(block.transactions):
            raise ChainBroken(height, "transaction root does not match its transactions")
        if block.header.log_size != state.tree.size or block.header.log_root != state.tree.root():
            raise ChainBroken(height, "log root does not match the transactions so far")
        state.tip = block
        state.blocks += 1
        yield block, first_leaf
        state.authorities = blocks.next_authorities(state.authorities, block)


def verify_chain(root: Path) -> VerifyReport:
    """Every block in full, without changing anything on disk."""
    files = BlockFiles(root)
    count = txs = 0
    try:
        for block, _ in _walk(files, _Replay(), full=True, drop_torn=False):
            count += 1
            txs += len(block.transactions)
    except ChainBroken as exc:
        return VerifyReport(blocks=count, transactions=txs, bad_height=exc.height, reason=exc.reason)
    return VerifyReport(blocks=count, transactions=txs)


class Ledger:
    def __init__(
        self, root: Path, key: SigningKey, files: BlockFiles, index: Index, clock: Callable[[], float]
    ) -> None:
        self.root = root
        self._key = key
        self._files = files
        self._index = index
        self._clock = clock
        self._lock = threading.Lock()
        self._tip: Block | None = None
        self._tree = merkle.Tree()
        self._authorities: frozenset[str] = frozenset()
        self.origin = ""

    @classmethod
    def open(cls, root: Path, key: SigningKey, clock: Callable[[], float] = _time.time) -> Ledger:
        files = BlockFiles(root)
        ledger = cls(root, key, files, Index(root / INDEX_FILE), clock)
        ledger._load()
        return ledger

    def close(self) -> None:
        with self._lock:
            self._index.close()

    # -- opening --------------------------------------------------------------------

    def _load(self) -> None:
        state = _Replay()
        deque(_walk(self._files, state, full=False, drop_torn=True), maxlen=0)
        if state.tip is None:
            self._genesis()
        else:
            assert state.tree is not None
            self._tip, self._tree, self.origin = state.tip, state.tree, state.origin
            self._authorities = blocks.next_authorities(state.authorities, state.tip)
        self._sync_index()

    def _genesis(self) -> None:
        me = peer_id_of(bytes(self._key.verify_key))
        now = int(self._clock())
        tx = sign(self._key, type=ADD_AUTHORIZED_NODE, payload=AuthorizedNode(peer_id=me), time=now, nonce=0)
        tree = merkle.Tree([tx.id])
        authorities = frozenset({me})
        header = blocks.propose(
            prev=None, transactions=[tx], tree=tree, authorities=authorities, time=now, proposer=me
        )
        self.origin = origin_of(header)
        genesis = Block(
            header=header,
            transactions=(tx,),
            certificate=(blocks.commit_signature(self._key, header, self.origin),),
        )
        self._files.write(0, genesis.encode())
        self._tip, self._tree, self._authorities = genesis, tree, authorities

    def _sync_index(self) -> None:
        assert self._tip is not None
        tip = self._index.tip()
        height = self._tip.header.height
        if tip is not None and tip[0] <= height and tip[1] == self._read(tip[0]).header.hash:
            start = tip[0] + 1
        else:
            self._index.reset()
            start = 0
        if start <= height:
            self._index.apply(self._blocks_from(start))

    def _blocks_from(self, start: int) -> Iterator[tuple[Block, int]]:
        for height in range(start, self.height + 1):
            block = self._read(height)
            yield block, block.header.log_size - len(block.transactions)

    def _read(self, height: int) -> Block:
        try:
            return Block.decode(self._files.read(height))
        except (Torn, TxInvalid) as exc:
            raise ChainBroken(height, "block file changed while the node ran") from exc

    # -- writing --------------------------------------------------------------------

    def publish(self, payloads: list[AddArtifact]) -> Block:
        """Commit one AddArtifact per payload in one block; durable on return."""
        if not 0 < len(payloads) <= PUBLISH_TXS_MAX:
            raise TxInvalid(f"a block holds 1 to {PUBLISH_TXS_MAX} transactions")
        with self._lock:
            assert self._tip is not None
            now = int(self._clock())
            base = self._tree.size
            txs = [
                sign(self._key, type=ADD_ARTIFACT, payload=p, time=now, nonce=base + i)
                for i, p in enumerate(payloads)
            ]
            me = peer_id_of(bytes(self._key.verify_key))
            for tx in txs:
                self._tree.append(tx.id)
            header = blocks.propose(
                prev=self._tip.header,
                transactions=txs,
                tree=self._tree,
                authorities=self._authorities,
                time=max(now, self._tip.header.time),
                proposer=me,
            )
            certificate = (blocks.commit_signature(self._key, header, self.origin),)
            block = Block(header=header, transactions=tuple(txs), certificate=certificate)
            try:
                self._files.write(header.height, block.encode())
            except StorageError:
                self._tree.truncate(base)
                raise
            self._tip = block
            try:
                self._index.apply([(block, base)])
            except sqlite3.Error as exc:  # the block is committed; the index is only a cache of it
                log.warning("log index update failed (%s); rebuilding it from the blocks", exc)
                self._index.reset()
                self._index.apply(self._blocks_from(0))
            return block

    # -- reading --------------------------------------------------------------------

    @property
    def height(self) -> int:
        assert self._tip is not None
        return self._tip.header.height

    @property
    def size(self) -> int:
        return self._tree.size

    @property
    def authorities(self) -> frozenset[str]:
        return self._authorities

    def block(self, height: int) -> Block:
        if not 0 <= height <= self.height:
            raise EntryUnknown(f"no block at height {height}; the log is at {self.height}")
        with self._lock:
            return self._read(height)

    def latest(self, package_type: str, path: str) -> ArtifactRecord | None:
        with self._lock:
            return self._index.latest(package_type, path)

    def by_digest(self, digest: str) -> list[ArtifactRecord]:
        """Every committed record of `digest`, newest first."""
        with self._lock:
            return self._index.by_digest(digest)

    def has_digest(self, package_type: str, digest: str) -> bool:
        with self._lock:
            return self._index.has_digest(package_type, digest)

    def package_ids(self, package_type: str, prefix: str) -> list[str]:
        with self._lock:
            return self._index.package_ids(package_type, prefix)

    def paths(self, package_type: str, prefix: str, after: str, limit: int) -> list[str]:
        with self._lock:
            return self._index.paths(package_type, prefix, after, limit)

    def search(self, query: Query) -> list[ArtifactRecord]:
        with self._lock:
            return self._index.search(query)

    def checkpoint(self) -> str:
        """The C2SP note for the current tree head, signed by the tip's certificate."""
        with self._lock:
            return self._note(self._tip)

    def _note(self, block: Block | None) -> str:
        assert block is not None
        point = checkpoint.Checkpoint(
            origin=self.origin, size=block.header.log_size, root=block.header.log_root
        )
        return checkpoint.note(point, [(s.signer, s.checkpoint) for s in block.certificate])

    def proof(self, digest: str) -> InclusionProof:
        """Inclusion of the newest transaction logging `digest`, against the current head."""
        with self._lock:
            found = self._index.by_digest(digest)
            if not found:
                raise EntryUnknown(f"the transparency log has no artifact with digest {digest}")
            record, size = found[0], self._tree.size
            return InclusionProof(
                record=record,
                leaf_index=record.leaf,
                tree_size=size,
                leaf_hash=self._tree.leaf(record.leaf),
                hashes=tuple(self._tree.inclusion_proof(record.leaf, size)),
                checkpoint=self._note(self._tip),
            )

    def verify(self) -> VerifyReport:
        """Every block on disk in full (`pyrsia log verify` on a running node)."""
        with self._lock:
            return verify_chain(self.root)

    def consistency(self, old_size: int) -> tuple[list[bytes], str]:
        """Proof that the current tree extends the one of `old_size`, and the checkpoint it ends at."""
        with self._lock:
            if not 0 < old_size <= self._tree.size:
                raise EntryUnknown(f"no tree of size {old_size}; the log holds {self._tree.size} entries")
            return self._tree.consistency_proof(old_size), self._note(self._tip)
