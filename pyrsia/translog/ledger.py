"""The node's transparency log: open, verify, commit, look up, prove.

Shape. One writer thread owns the chain core (`chain.Chain`), the block files and the
index's write connection. Everything that changes the log reaches it through one
bounded queue, and callers get a `concurrent.futures.Future`. Readers take no lock and
never wait behind an fsync: they read an immutable `Head` (tip block, size,
authorities) that the writer swaps in once a block is durable, the Merkle tree up to
that head's size (the tree only grows past it), block files (immutable once renamed),
and the index through a read-only SQLite connection of their own thread.

Hot lookups. The newest record of a path (a tag) and of a digest (the vouch decision)
come from a bounded in-memory view (`view.LookupView`) in front of the index: readers
fill it from the index, and the writer corrects every held key a block touches once
the index holds the block and before the block's callers are told, so a GET right
after a commit sees it, and a fill that raced a block is dropped (see `view`).

Group commit, pipelined. `submit` checks its payloads in the caller's thread and queues
them for the signing thread (`translog-sign`), which takes every publish waiting, signs
and endorses each payload (a random nonce keeps ids unique, as consensus does) and
hands them all to the writer as one request, in the order submitted: many callers each
signing would take turns at the GIL around every signature, and the writer never
signs a transaction. The writer takes every publish waiting in the queue, up to a block's
limits, into one block: proposed and certified by this node (the embedded network,
where it is its own one authority), applied through the chain core, encoded, and
handed to the disk thread (`translog-disk`), which writes it as one block file in
place with `O_DSYNC` (`BlockFiles.append`: no rename, no directory fsync; the store's
docstring says why that is durable). At most one block is on its way to disk. While it
is, the publishes that arrive gather for the next block, so a block holds what arrived
during the previous write: groups grow with load and a lone publisher never waits.
Once the file is durable the writer hands the next block to the disk at once, swaps
the head (readers see the block) and passes the durable block to the index thread
(`translog-index`), which indexes every durable block waiting for it in one SQLite
transaction, then updates the lookup view, runs the listeners and only then resolves
the blocks' callers: the writer goes on proposing meanwhile. A write that fails
rewinds the chain to before that block and fails exactly its callers; nothing after it
was applied. Appends, calls and repairs first wait for the block on disk, commit what
has gathered and wait for the index thread to finish, so they see the chain as it is
durable and indexed, and the writer alone uses the index. `submit` refuses bad input
in the caller's thread before anything is queued.

Holding. With many closed-loop publishers, a block lands while the publishes that
arrived during its write wait, and its own callers come back only after they are told:
sent at once, the waiting ones would make the next block and the callers of the landed
one the block after, two groups alternating with half the publishers in each block. So
when a block lands and publishes wait, the next block is held until the callers of the
landed block are back (as many transactions as it held have joined the waiting ones),
for at most as long as the landed block took to write and never more than
`HOLD_S_MAX`: blocks grow with load and each write carries more transactions. A lone
publisher is never held (nothing waits when its block lands), and appends, calls,
repairs and close end a hold at once.

`append` takes a block proposed and certified elsewhere (sync, consensus) through the
same chain core, with every signature checked, then stores and indexes it the same way.

Batches. `submit_blocks` (sync) takes many such blocks at once. In the caller's thread,
off the writer, each block is encoded and its signatures are checked (`chain.
signature_claims`): they depend on nothing but the log's origin. A batch of
`HELPER_BLOCKS_MIN` blocks or more has them checked by a helper process (`sigcheck`)
while the caller stages the block files and goes on (sync decodes its next batch); the
writer takes the helper's count when it comes to the batch, and checks each block as it
applies it if the helper could not answer. A smaller batch is checked over
`VERIFY_THREADS` threads. The writer then applies the blocks in order through the chain
core (link, authorities, certificate quorum, roots; signatures again only for a block
whose check failed, or if the origin it was checked against is not the chain's), writes
the applied ones with one fsync pass and one directory fsync (`BlockFiles.write_many`),
swaps the head, indexes them in one SQLite transaction, and then tells the caller. A
block that fails stops the batch: the good prefix before it is stored as above and the
caller gets the failure. A write that fails stores none of the batch.
`call(fn)` runs `fn(chain)` on the writer thread, between blocks: how consensus proposes
the next block and checks a peer's proposal against the chain it would follow.

Open. FORMAT checked, leftovers of interrupted writes removed, then every block file
read and applied in order: without signature checks for all but the last block (each
was verified before it was written), in full for the last; `verify_chain` (`pyrsia
log verify`) checks every block in full. A torn last file is dropped. The index is
compared with the chain (tip height and hash, and its row counts with both its own
meta and the chain's transactions) and caught up, or rebuilt when anything differs.

Index failures. The block files are the truth, and a block is committed once its file
is durable. If indexing it fails (a full disk), the index stays whole as of the block
before, and lookups refuse with one `StorageError` line rather than answer from an
index that lacks a committed block (a pull would otherwise publish it again). The
writer (once the index thread is idle) retries the catch-up when a lookup finds the
index behind and before the next block, and commits nothing new until it succeeds (but
the one block already on its way to disk, which the catch-up then indexes too); a
restart rebuilds it.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import random
import secrets
import threading
import time as _time
import weakref
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TypeVar, cast

from nacl.signing import SigningKey

from pyrsia.errors import ChainBroken, EntryUnknown, PyrsiaError, StorageError, TranslogError, TxInvalid
from pyrsia.formats.peer_id import peer_id_of
from pyrsia.translog import checkpoint
from pyrsia.translog.block import BLOCK_TXS_BYTES_MAX, BLOCK_TXS_MAX, Block, quorum
from pyrsia.translog.chain import Chain, Mark, check_signatures, genesis_block, signature_claims
from pyrsia.translog.index import ArtifactRecord, Index, IndexReader, IndexTip, Query, rows_of
from pyrsia.translog.sigcheck import Item, SignatureHelper
from pyrsia.translog.store import BlockFiles, Torn
from pyrsia.translog.tx import (
    ADD_ARTIFACT,
    TX_BYTES_MAX,
    AddArtifact,
    Transaction,
    endorse,
    sign,
    verify_key_of,
)
from pyrsia.translog.view import VIEW_ENTRIES_MAX, Key, LookupView, digest_key, path_key

log = logging.getLogger("pyrsia.translog")
T = TypeVar("T")
INDEX_FILE = "index.sqlite3"
PUBLISH_TXS_MAX = BLOCK_TXS_MAX
QUEUE_REQUESTS_MAX = 4096
TX_ENVELOPE_BYTES_MAX = 256  # what signing adds to a payload's encoding: keys, submitter, ints
VERIFY_THREADS = 2  # signature checks of a batch at once (PyNaCl releases the GIL)
HELPER_BLOCKS_MIN = 64  # a batch this large has its signatures checked by the helper process
BATCH_BLOCKS_MAX = 8192  # blocks in one `submit_blocks`
HOLD_S_MAX = 0.05  # the longest the next block is held for the callers of the one that landed


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


@dataclass(frozen=True, slots=True, kw_only=True)
class Head:
    """The log as of its last durable block: what readers see."""

    tip: Block
    size: int
    authorities: frozenset[str]
    # The Docker registries in force for the next height, each with the height that added it.
    registries_since: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True, slots=True)
class _Publish:
    txs: tuple[Transaction, ...]  # signed and endorsed
    size_bytes: int
    future: Future[Block]


@dataclass(frozen=True, slots=True)
class _Unsigned:
    """A publish on its way to the signing thread."""

    payloads: tuple[AddArtifact, ...]
    size_bytes: int
    time: int
    future: Future[Block]


@dataclass(frozen=True, slots=True)
class _Signed:
    """Publishes the signing thread signed together, in the order they were submitted."""

    publishes: list[_Publish]


@dataclass(slots=True)
class _Flight:
    """A block applied to the chain and on its way to disk."""

    block: Block
    first_leaf: int
    group: list[_Publish]
    mark: Mark  # the chain before it
    authorities: frozenset[str]  # in force after it
    registries_since: tuple[tuple[str, int], ...]  # in force after it
    written: Future[None]
    started: float  # time.monotonic() when it went to disk


@dataclass(frozen=True, slots=True)
class _Durable:
    """A block on disk whose rows, view entries, listeners and callers are still to come."""

    block: Block
    first_leaf: int
    group: list[_Publish]


@dataclass(frozen=True, slots=True)
class _Flushed:
    """The disk thread finished a flight (its `written` says how)."""

    flight: _Flight


@dataclass(frozen=True, slots=True)
class _Append:
    block: Block
    future: Future[Block]


@dataclass(frozen=True, slots=True)
class _AppendBatch:
    blocks: tuple[Block, ...]
    staged: tuple[str, ...]  # the files of leading blocks, written under temp names
    origin: str  # the origin their signatures were checked against
    checked: int | Future[int]  # blocks[:checked] have every signature valid (or will say)
    future: Future[int]


@dataclass(frozen=True, slots=True)
class _Call:
    fn: Callable[[Chain], object]
    future: Future[object]


class _Repair:
    """A reader found the index behind: try to catch it up."""


class _Stop:
    pass


def _nothing() -> None:
    pass


_Request = _Signed | _Append | _AppendBatch | _Call | _Repair | _Stop | _Flushed


def _decode(files: BlockFiles, height: int) -> Block:
    try:
        return Block.decode(files.read(height))
    except Torn as exc:
        raise ChainBroken(height, "block file is truncated") from exc
    except TxInvalid as exc:
        raise ChainBroken(height, f"block does not decode: {exc.message}") from exc


def verify_chain(root: Path) -> VerifyReport:
    """Every block on disk in full, changing nothing; `FormatUnsupported` for a log
    this version cannot read. A torn last file (a write killed midway) never committed:
    it is not counted, as open drops it."""
    files = BlockFiles(root, create=False)
    files.check_format(create=False)
    chain = Chain()
    count = txs = 0
    try:
        heights = files.heights()
        for height in heights:
            if height == heights[-1]:
                try:
                    files.read(height)
                except Torn:
                    break
            block = _decode(files, height)
            chain.apply(block)
            count += 1
            txs += len(block.transactions)
    except ChainBroken as exc:
        return VerifyReport(blocks=count, transactions=txs, bad_height=exc.height, reason=exc.reason)
    return VerifyReport(blocks=count, transactions=txs)


class Ledger:
    def __init__(
        self,
        root: Path,
        key: SigningKey,
        files: BlockFiles,
        index: Index,
        clock: Callable[[], float],
        view_entries_max: int = VIEW_ENTRIES_MAX,
        monotonic: Callable[[], float] = _time.monotonic,
    ) -> None:
        self.root = root
        self._key = key
        self._me = peer_id_of(bytes(key.verify_key))
        self._files = files
        self._index = index
        self._clock = clock
        self._monotonic = monotonic  # how long a write took, and a hold
        # Nonces only keep ids of equal payloads apart: a generator seeded once from the OS
        # serves them without a system call (each would let go of the GIL) per transaction.
        self._nonces = random.Random(secrets.randbits(256))
        self._chain = Chain()
        self._head: Head | None = None
        # The height lookups answer for: the head runs ahead of it while a block is indexed.
        self._lookup_height = -1
        self._listeners: list[Callable[[Block], None]] = []
        self._genesis_hash = b""
        self.origin = ""
        self._queue: queue.Queue[_Request] = queue.Queue(QUEUE_REQUESTS_MAX)
        self._writer = threading.Thread(target=self._run, name="translog-writer", daemon=True)
        # Publishes go to the writer through the signing thread, in the order submitted.
        self._signing: queue.Queue[_Unsigned | _Publish | None] = queue.Queue(QUEUE_REQUESTS_MAX)
        self._signer = threading.Thread(target=self._sign_run, name="translog-sign", daemon=True)
        self._closed = False
        self._close_lock = threading.Lock()
        self._index_problem: str | None = None  # why lookups refuse; None while the index is whole
        self._repair_queued = threading.Event()
        self._local = threading.local()
        # Weak: a reader thread that ends takes its connection with it.
        self._readers: weakref.WeakSet[IndexReader] = weakref.WeakSet()
        self._readers_lock = threading.Lock()
        self._view = LookupView(view_entries_max)
        self._view_lock = threading.Lock()
        self._verifiers: ThreadPoolExecutor | None = None
        self._helper = SignatureHelper()  # started at the first large batch
        self._disk = ThreadPoolExecutor(1, thread_name_prefix="translog-disk")
        # Durable blocks of this node's own, indexed (several in one transaction when they
        # queue up), then shown in the view, then told, off the writer (see Group commit).
        self._indexer = ThreadPoolExecutor(1, thread_name_prefix="translog-index")
        self._durable: list[_Durable] = []
        self._durable_lock = threading.Lock()
        self._flight: _Flight | None = None
        self._group: list[_Publish] = []
        self._group_txs = self._group_bytes = 0
        self._hold_until: float | None = None  # see `_holding`
        self._hold_txs = 0

    @classmethod
    def open(
        cls,
        root: Path,
        key: SigningKey,
        clock: Callable[[], float] = _time.time,
        *,
        files: BlockFiles | None = None,
        index: Index | None = None,
        genesis: Block | None = None,
        registries: Sequence[str] = (),
        view_entries_max: int = VIEW_ENTRIES_MAX,
        monotonic: Callable[[], float] = _time.monotonic,
    ) -> Ledger:
        """Open (or start) the log under `root`: chain verified, index whole, writer running.

        A log with no blocks yet starts from `genesis` (a network's first block, verified
        in full here) when one is given, else from a genesis of its own (the embedded
        one-authority network, vouching for `registries`, else the built-in ones). A log
        that has blocks must begin with `genesis` if given.
        """
        files = files or BlockFiles(root)
        files.check_format(create=True)
        removed = files.remove_leftovers()
        if removed:
            log.info("removed %d block writes a crash interrupted", removed)
        index = index or Index(root / INDEX_FILE)
        ledger = cls(root, key, files, index, clock, view_entries_max, monotonic)
        try:
            ledger._load(genesis, tuple(registries))
        except BaseException:
            index.close()
            raise
        ledger._writer.start()
        ledger._signer.start()
        return ledger

    def close(self) -> None:
        """Commit what is queued, stop the writer, close the index."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        # Last in the signing queue (`_put` queues nothing once closed): the signing thread
        # hands the writer every publish before it, then ends, before the writer is stopped.
        self._signing.put(None)
        self._signer.join()
        self._queue.put(_Stop())
        self._writer.join()
        self._disk.shutdown()
        self._indexer.shutdown()
        self._index.close()
        self._files.close()
        if self._verifiers is not None:
            self._verifiers.shutdown()
        self._helper.close()
        with self._readers_lock:
            for reader in list(self._readers):
                reader.close()
            self._readers.clear()

    # -- opening --------------------------------------------------------------------

    def _load(self, genesis: Block | None, registries: tuple[str, ...] = ()) -> None:
        chain, files = self._chain, self._files
        heights = files.heights()
        if heights:
            try:
                files.read(heights[-1])
            except Torn:
                files.drop_torn(heights[-1])
                heights.pop()
        indexed = self._index.tip()
        at_index_tip: IndexTip | None = None  # what the chain says the index should hold
        artifacts = dependencies = 0
        for height in heights:
            block = _decode(files, height)
            chain.apply(block, verify_signatures=height == heights[-1])
            added = rows_of(block)
            artifacts, dependencies = artifacts + added[0], dependencies + added[1]
            if indexed is not None and height == indexed.height:
                at_index_tip = IndexTip(
                    height=height, hash=block.header.hash, artifacts=artifacts, dependencies=dependencies
                )
        if not heights:
            first = (
                genesis
                if genesis is not None
                else genesis_block(self._key, int(self._clock()), registries=registries)
            )
            chain.apply(first)
            files.write(0, first.encode())
            at_index_tip = None
        elif genesis is not None and self._read(0).header.hash != genesis.header.hash:
            raise ChainBroken(0, "this log belongs to another network than the genesis given")
        assert chain.tip is not None
        self.origin = chain.origin
        self._genesis_hash = self._read(0).header.hash
        self._head = Head(
            tip=chain.tip,
            size=chain.size,
            authorities=chain.authorities,
            registries_since=chain.registries_since,
        )
        self._sync_index(indexed, at_index_tip)
        self._lookup_height = chain.tip.header.height

    def _sync_index(self, indexed: IndexTip | None, expected: IndexTip | None) -> None:
        """Catch the index up, or rebuild it when it is not exactly what the chain says
        it should hold at its recorded height."""
        if indexed is not None and indexed == expected and self._holds(indexed):
            start = indexed.height + 1
        else:
            if indexed is not None:
                log.warning(
                    "rebuilding the log index: it does not match the blocks at height %d", indexed.height
                )
            self._index.reset()
            start = 0
        if start <= self._chain.height:
            self._index.apply(self._blocks_from(start))

    def _holds(self, tip: IndexTip) -> bool:
        """Whether the index's rows are as many as its meta says (not partial)."""
        return self._index.counts() == (tip.artifacts, tip.dependencies)

    def _blocks_from(self, start: int) -> Iterator[tuple[Block, int]]:
        for height in range(start, self._chain.height + 1):
            block = self._read(height)
            yield block, block.header.log_size - len(block.transactions)

    def _read(self, height: int) -> Block:
        try:
            return Block.decode(self._files.read(height))
        except (Torn, TxInvalid) as exc:
            raise ChainBroken(height, "block file changed while the node ran") from exc

    # -- writing (callers) ----------------------------------------------------------

    def submit(self, payloads: Sequence[AddArtifact]) -> Future[Block]:
        """Queue one AddArtifact per payload, all in one block; the future resolves with
        that block once it is durable. Bad payloads raise `TxInvalid` here, before
        anything is queued; each is signed and endorsed here too, off the writer."""
        payloads = tuple(payloads)
        if not 0 < len(payloads) <= PUBLISH_TXS_MAX:
            raise TxInvalid(f"a block holds 1 to {PUBLISH_TXS_MAX} transactions")
        size = 0
        for p in payloads:
            if not isinstance(p, AddArtifact):
                raise TxInvalid(f"publish takes AddArtifact payloads, not {type(p).__name__}")
            encoded = len(p.encoded()) + TX_ENVELOPE_BYTES_MAX
            if encoded > TX_BYTES_MAX:
                raise TxInvalid(
                    f"a transaction would encode to about {encoded} bytes, more than {TX_BYTES_MAX}"
                )
            size += encoded
        if size > BLOCK_TXS_BYTES_MAX:
            raise TxInvalid(f"the payloads encode to {size} bytes, more than a block's {BLOCK_TXS_BYTES_MAX}")
        future: Future[Block] = Future()
        self._enqueue_publish(_Unsigned(payloads, size, int(self._clock()), future))
        return future

    def publish(self, payloads: Sequence[AddArtifact]) -> Block:
        """Commit one AddArtifact per payload in one block; durable on return."""
        return self.submit(payloads).result()

    def commit_signed(self, txs: Sequence[Transaction]) -> Block:
        """Commit transactions this node signed (an authority change) in one block of its
        own, as the one authority; durable on return."""
        txs = tuple(txs)
        if not 0 < len(txs) <= PUBLISH_TXS_MAX or not all(isinstance(t, Transaction) for t in txs):
            raise TxInvalid(f"a block holds 1 to {PUBLISH_TXS_MAX} transactions")
        size = sum(len(t.encoded()) for t in txs)
        if size > BLOCK_TXS_BYTES_MAX:
            raise TxInvalid(
                f"the transactions encode to {size} bytes, more than a block's {BLOCK_TXS_BYTES_MAX}"
            )
        future: Future[Block] = Future()
        self._enqueue_publish(_Publish(txs, size, future))
        return future.result()

    def call(self, fn: Callable[[Chain], T]) -> T:
        """`fn(chain)` on the writer thread, between blocks; `fn` must leave the chain as it
        found it (`Chain.propose`, `Chain.check_proposal`). Its exception is the caller's."""
        future: Future[object] = Future()
        self._enqueue(_Call(fn, future))
        return cast(T, future.result())

    def has_tx(self, tx_id: bytes) -> bool:
        """Whether an AddArtifact transaction with this id is committed (a replay otherwise)."""
        return self._reader().has_tx(tx_id)

    def append(self, block: Block) -> Block:
        """Store a block proposed and certified elsewhere, once the chain core accepts
        it with every signature checked; `ChainBroken`/`TxInvalid` change nothing. A
        block the log holds already (the same hash at its height) is accepted as is."""
        if not isinstance(block, Block):
            raise TxInvalid(f"append takes a Block, not {type(block).__name__}")
        future: Future[Block] = Future()
        self._enqueue(_Append(block, future))
        return future.result()

    def submit_blocks(self, blocks: Sequence[Block]) -> Future[int]:
        """Store blocks proposed and certified elsewhere, in height order, as one batch (see
        Batches); the future resolves with the log's height once they are durable and
        indexed, or fails with the first bad block's `ChainBroken` after the good blocks
        before it are stored. Blocks the log holds already are accepted as they are."""
        blocks = tuple(blocks)
        if not 0 < len(blocks) <= BATCH_BLOCKS_MAX or not all(isinstance(b, Block) for b in blocks):
            raise TxInvalid(f"a batch holds 1 to {BATCH_BLOCKS_MAX} blocks")
        origin = self.origin
        checked, staged = self._prepare(blocks, origin)
        future: Future[int] = Future()
        try:
            self._enqueue(_AppendBatch(blocks, staged, origin, checked, future))
        except BaseException:
            self._files.discard(staged)
            raise
        return future

    def _prepare(self, blocks: tuple[Block, ...], origin: str) -> tuple[int | Future[int], tuple[str, ...]]:
        """(how many leading blocks have every signature valid, or a future of that count;
        the files of leading blocks, written under temp names: at least those counted);
        `StorageError` (nothing left staged) if writing fails."""
        if len(blocks) >= HELPER_BLOCKS_MIN:
            return self._prepare_with_helper(blocks, origin)

        def run(part: Sequence[Block]) -> tuple[int, list[str], StorageError | None]:
            staged: list[str] = []
            for i, block in enumerate(part):
                try:
                    check_signatures(block, origin)
                    staged.append(self._files.stage(block.encode()))
                except TranslogError:
                    return i, staged, None
                except StorageError as exc:
                    return i, staged, exc
            return len(part), staged, None

        if len(blocks) < 2 * VERIFY_THREADS:
            results = [run(blocks)]
            parts: list[Sequence[Block]] = [blocks]
        else:
            pool = self._verifier_pool()
            step = -(-len(blocks) // VERIFY_THREADS)
            parts = [blocks[i : i + step] for i in range(0, len(blocks), step)]
            results = list(pool.map(run, parts))
        checked = 0
        whole = True  # every part so far checked in full
        staged: list[str] = []
        failed: StorageError | None = None
        for part, (good, files, error) in zip(parts, results, strict=True):
            if whole:
                checked += good
                whole = good == len(part)
            staged += files
            failed = failed or error
        if failed is not None:
            self._files.discard(staged)
            raise failed
        self._files.discard(staged[checked:])  # after the first bad block: never stored
        return checked, tuple(staged[:checked])

    def _prepare_with_helper(
        self, blocks: tuple[Block, ...], origin: str
    ) -> tuple[Future[int], tuple[str, ...]]:
        """`_prepare` with the signatures sent to the helper process and every block
        staged meanwhile; the count comes later, so this thread can decode the next batch
        while the helper checks this one. When the helper cannot answer the count is 0:
        the writer checks each block as it applies it."""
        items: list[Item] = []
        owners: list[int] = []  # the block of each item
        listed = len(blocks)  # blocks before the first that names a signer with no Ed25519 key
        for i, block in enumerate(blocks):
            try:
                claims = [
                    (bytes(verify_key_of(signer)), message, signature)
                    for signer, message, signature, _ in signature_claims(block, origin)
                ]
            except ValueError:
                listed = i
                break
            items += claims
            owners += [i] * len(claims)
        helper = self._helper

        def count() -> int:
            flags = helper.check(items)
            if flags is None:
                return 0
            return next((owners[n] for n, ok in enumerate(flags) if not ok), listed)

        checked = self._verifier_pool().submit(count)
        staged: list[str] = []
        try:
            for block in blocks[:listed]:
                staged.append(self._files.stage(block.encode()))
        except BaseException:
            self._files.discard(staged)
            raise
        return checked, tuple(staged)

    def _sign_run(self) -> None:
        """The signing thread: every publish waiting is signed and endorsed, then all of
        them reach the writer as one request (see Group commit)."""
        stopping = False
        while not stopping:
            waiting = [self._signing.get()]
            with contextlib.suppress(queue.Empty):
                while True:
                    waiting.append(self._signing.get_nowait())
            signed = []
            for item in waiting:
                if item is None:
                    stopping = True
                elif isinstance(item, _Publish):
                    signed.append(item)
                elif (publish := self._signed(item)) is not None:
                    signed.append(publish)
            if signed:
                self._queue.put(_Signed(signed))

    def _signed(self, item: _Unsigned) -> _Publish | None:
        """`item`'s payloads as transactions signed and endorsed by this node; None, with
        the caller told, if signing failed."""
        key, nonces = self._key, self._nonces
        try:
            txs = []
            for p in item.payloads:
                tx = sign(key, type=ADD_ARTIFACT, payload=p, time=item.time, nonce=nonces.getrandbits(62))
                txs.append(tx.with_endorsements((endorse(key, tx.id),)))
        except Exception as exc:
            if not isinstance(exc, PyrsiaError):
                log.exception("transparency log signer failed")
            if item.future.set_running_or_notify_cancel():
                item.future.set_exception(exc)
            return None
        return _Publish(tuple(txs), item.size_bytes, item.future)

    def _verifier_pool(self) -> ThreadPoolExecutor:
        with self._close_lock:
            if self._verifiers is None:
                self._verifiers = ThreadPoolExecutor(VERIFY_THREADS, thread_name_prefix="translog-verify")
            return self._verifiers

    def _enqueue(self, request: _Request) -> None:
        self._put(self._queue, request)

    def _enqueue_publish(self, publish: _Unsigned | _Publish) -> None:
        self._put(self._signing, publish)

    def _put(self, into: queue.Queue[T], item: T) -> None:
        """Queue `item` unless the log is closed. Under the close lock: once `close` has
        marked the log closed, nothing more is queued, so what was queued is either
        handled or refused by the drains that follow, never left waiting."""
        with self._close_lock:
            if self._closed:
                raise StorageError("the transparency log is closed")
            into.put(item)

    # -- writing (the writer thread) ------------------------------------------------

    def _run(self) -> None:
        stopping = False
        while not stopping:
            request = self._next()
            match request:
                case _Signed():
                    for publish in request.publishes:
                        if publish.future.set_running_or_notify_cancel():
                            self._gather(publish)
                case _Flushed():
                    if request.flight is self._flight:
                        self._landed()
                case _Append():
                    self._quiesce()
                    if request.future.set_running_or_notify_cancel():
                        self._guarded([request], partial(self._append, request))
                case _AppendBatch():
                    self._quiesce()
                    if request.future.set_running_or_notify_cancel():
                        self._guarded([request], partial(self._append_batch, request))
                    else:
                        self._files.discard(request.staged)
                case _Call():
                    self._quiesce()
                    if request.future.set_running_or_notify_cancel():
                        try:
                            request.future.set_result(request.fn(self._chain))
                        except BaseException as exc:  # the caller's to handle
                            request.future.set_exception(exc)
                case _Repair():
                    self._quiesce()
                    self._repair_queued.clear()
                    self._repair()
                case _Stop():
                    self._quiesce()
                    stopping = True
            if self._flight is None and self._group and self._queue.empty() and not self._holding():
                self._launch()
        # Nothing with a caller can follow the stop: `_put` queues nothing once the log is
        # marked closed, and the signing thread has ended before `close` queues the stop.

    def _next(self) -> _Request | None:
        """The next request; None when a hold ends before one comes."""
        if self._hold_until is None:
            return self._queue.get()
        try:
            return self._queue.get(timeout=min(HOLD_S_MAX, max(0.0, self._hold_until - self._monotonic())))
        except queue.Empty:
            return None

    def _holding(self) -> bool:
        """Whether the gathered group waits a little longer (see Holding)."""
        if self._hold_until is None:
            return False
        if self._group_txs >= self._hold_txs or self._monotonic() >= self._hold_until:
            self._hold_until = None
            return False
        return True

    def _gather(self, request: _Publish) -> None:
        """Add a publish to the next block; a full block is launched (or waits for the disk)."""
        if self._group and (
            self._group_txs + len(request.txs) > BLOCK_TXS_MAX
            or self._group_bytes + request.size_bytes > BLOCK_TXS_BYTES_MAX
        ):
            if self._flight is not None:
                self._land()
            self._launch()
        self._group.append(request)
        self._group_txs += len(request.txs)
        self._group_bytes += request.size_bytes

    def _quiesce(self) -> None:
        """Wait for the block on disk, commit what has gathered, and wait until the index
        holds it all: the chain is durable and the writer alone uses the index."""
        while self._flight is not None or self._group:
            if self._flight is not None:
                self._land()
            else:
                self._launch()
        self._drain_index()

    def _drain_index(self) -> None:
        """Wait until the index thread has handled every durable block handed to it."""
        self._indexer.submit(_nothing).result()

    def _land(self) -> None:
        flight = self._flight
        assert flight is not None
        with contextlib.suppress(BaseException):
            flight.written.result()  # its outcome is handled by `_landed`
        self._landed()

    def _launch(self) -> None:
        """Propose the gathered publishes as the next block and hand it to the disk."""
        group, self._group = self._group, []
        self._group_txs = self._group_bytes = 0
        self._hold_until = None
        if group:
            self._guarded(group, lambda: self._propose(group))

    def _propose(self, group: list[_Publish]) -> None:
        assert self._flight is None, "one block on its way to disk at a time"
        if not self._repair():
            raise StorageError(self._index_problem or "the log index is behind")
        chain = self._chain
        if self._me not in chain.authorities or quorum(len(chain.authorities)) > 1:
            raise TranslogError(
                f"this node cannot commit blocks alone: {len(chain.authorities)} authorities are in force"
                f" and {quorum(len(chain.authorities))} must certify"
            )
        txs = [tx for request in group for tx in request.txs]
        mark = chain.mark()
        try:
            block = chain.propose_certified(txs, int(self._clock()), self._key)
            encoded = block.encode()
            first = chain.apply(block, verify_signatures=False)  # signed by us, just now
        except ChainBroken as exc:
            chain.rewind(mark)
            kept = self._acceptable(group) if len(group) > 1 else group
            if len(kept) == len(group):  # a refused publish, not a broken log
                raise TxInvalid(exc.reason) from exc
            self._propose(kept)
            return
        except BaseException:
            chain.rewind(mark)
            raise
        started = self._monotonic()  # before the disk thread may begin
        written = self._disk.submit(self._files.append, block.header.height, encoded)
        flight = self._flight = _Flight(
            block, first, group, mark, chain.authorities, chain.registries_since, written, started
        )
        written.add_done_callback(lambda _done: self._queue.put(_Flushed(flight)))

    def _acceptable(self, group: list[_Publish]) -> list[_Publish]:
        """The publishes in `group` the chain takes each on its own; the others are refused
        here, so one caller's record the chain refuses (a registry no longer vouched for)
        does not fail the records gathered into the same block with it."""
        chain, now, kept = self._chain, int(self._clock()), []
        for request in group:
            mark = chain.mark()
            try:
                chain.apply(chain.propose_certified(request.txs, now, self._key), verify_signatures=False)
            except ChainBroken as exc:
                request.future.set_exception(TxInvalid(exc.reason))
            else:
                kept.append(request)
            finally:
                chain.rewind(mark)
        if not kept:
            raise TxInvalid("the chain refused every transaction gathered for the block")
        return kept

    def _landed(self) -> None:
        """The block on disk is written, or failed: the next block goes out, then its callers learn."""
        flight = self._flight
        assert flight is not None and flight.written.done()
        self._flight = None
        error = flight.written.exception()
        if error is not None:
            self._chain.rewind(flight.mark)
            if not isinstance(error, PyrsiaError):
                log.error("transparency log writer failed", exc_info=error)
            for request in flight.group:
                request.future.set_exception(error)
            return
        if self._group and self._index_problem is None:
            # Held until the callers of this block are back, at most one write time.
            self._hold_txs = self._group_txs + len(flight.block.transactions)
            hold = min(self._monotonic() - flight.started, HOLD_S_MAX)
            self._hold_until = self._monotonic() + hold
        # The chain may hold the next block already: the head is this one's own.
        self._show(flight.block, (flight.authorities, flight.registries_since))
        with self._durable_lock:
            self._durable.append(_Durable(flight.block, flight.first_leaf, flight.group))
        self._indexer.submit(self._index_durable)

    def _index_durable(self) -> None:
        """On the index thread: every durable block handed over so far, indexed in one
        transaction, then learnt by the view and the listeners; then their callers are told."""
        with self._durable_lock:
            durable, self._durable = self._durable, []
        if not durable:
            return  # an earlier call took them
        try:
            self._index_and_tell([(d.block, d.first_leaf) for d in durable])
        except BaseException as exc:
            log.exception("transparency log writer failed after a block was durable")
            for d in durable:
                for request in d.group:
                    request.future.set_exception(exc)
            return
        for d in durable:
            for request in d.group:
                request.future.set_result(d.block)

    def _guarded(
        self, requests: Sequence[_Publish | _Append | _AppendBatch], step: Callable[[], None]
    ) -> None:
        """Run one writer step; whatever it raises reaches its callers, never the loop."""
        try:
            step()
        except BaseException as exc:
            if not isinstance(exc, PyrsiaError):
                log.exception("transparency log writer failed")
            for request in requests:
                if not request.future.done():
                    request.future.set_exception(exc)

    def _append(self, request: _Append) -> None:
        if not self._repair():
            raise StorageError(self._index_problem or "the log index is behind")
        chain = self._chain
        height = request.block.header.height
        held = None if height > chain.height else chain.tip if height == chain.height else self._read(height)
        if held is not None and held.header.hash == request.block.header.hash:
            # Held already: sync and consensus may both bring one block; the second is a no-op.
            request.future.set_result(request.block)
            return
        mark = chain.mark()
        first = chain.apply(request.block)  # raises, changing nothing, for a bad block
        try:
            self._files.append(request.block.header.height, request.block.encode())
        except BaseException:
            chain.rewind(mark)
            raise
        self._committed(request.block, first)
        request.future.set_result(request.block)

    def _append_batch(self, request: _AppendBatch) -> None:
        used: set[str] = set()
        try:
            self._store_batch(request, used)
        finally:  # staged files of blocks not stored (held, refused, or the batch failed)
            self._files.discard([tmp for tmp in request.staged if tmp not in used])

    def _store_batch(self, request: _AppendBatch, used: set[str]) -> None:
        if not self._repair():
            raise StorageError(self._index_problem or "the log index is behind")
        chain = self._chain
        mark = chain.mark()
        checked = _resolved(request.checked)
        applied: list[tuple[Block, int]] = []
        writes: list[tuple[int, str]] = []
        failure: TranslogError | None = None
        for i, block in enumerate(request.blocks):
            height = block.header.height
            if 0 <= height <= chain.height:
                fresh = height - (chain.height - len(applied) + 1)  # its place among `applied`
                held = applied[fresh][0] if fresh >= 0 else chain.tip if height == chain.height else None
                held = held or self._read(height)
                if held.header.hash == block.header.hash:
                    continue  # held already (an overlapping batch, or consensus brought it)
            verified = i < checked and chain.origin == request.origin
            try:
                first = chain.apply(block, verify_signatures=not verified)
            except TranslogError as exc:
                failure = exc
                break
            applied.append((block, first))
            try:
                staged = request.staged[i] if i < len(request.staged) else self._files.stage(block.encode())
            except BaseException:
                chain.rewind(mark)
                self._files.discard([tmp for _height, tmp in writes if tmp not in request.staged])
                raise
            writes.append((height, staged))
        if writes:
            try:
                self._files.commit(writes)  # on failure it leaves none of them
            except BaseException:
                chain.rewind(mark)
                raise
            finally:
                used.update(tmp for _height, tmp in writes)
            self._committed_many(applied)
        if failure is not None:
            raise failure
        request.future.set_result(chain.height)

    def _committed(self, block: Block, first_leaf: int) -> None:
        self._committed_many([(block, first_leaf)])

    def _committed_many(self, blocks: Sequence[tuple[Block, int]]) -> None:
        """The blocks (appended or a batch, on the writer thread, the index thread idle)
        are durable: readers see them, then the index, the view and the listeners learn them."""
        self._show(blocks[-1][0], (self._chain.authorities, self._chain.registries_since))
        self._index_and_tell(blocks)

    def _show(self, last: Block, in_force: tuple[frozenset[str], tuple[tuple[str, int], ...]]) -> None:
        """Readers see the log up to `last`, a durable block, with the authorities and
        registries in force after it."""
        authorities, registries = in_force
        self._head = Head(
            tip=last, size=last.header.log_size, authorities=authorities, registries_since=registries
        )

    def _index_and_tell(self, blocks: Sequence[tuple[Block, int]]) -> None:
        """Durable blocks, in order, shown to readers already: the index learns them (one
        transaction), then the lookup view, then listeners, block by block."""
        last = blocks[-1][0]
        if self._index_problem is not None:
            pass  # it lacks an earlier block (the next block went to disk meanwhile): `_repair`
        else:
            try:
                self._index.apply(blocks)
            except Exception as exc:
                self._index_failed(last.header.height, exc)
        # After the index: a reader that misses the view from now on finds the block there.
        # Even when indexing failed: the view follows the chain (lookups refuse meanwhile).
        for block, first_leaf in blocks:
            with self._view_lock:
                self._view.apply_block(block, first_leaf)
        self._lookup_height = last.header.height
        for block, _first in blocks:
            for listener in self._listeners:
                listener(block)

    def on_commit(self, listener: Callable[[Block], None]) -> None:
        """`listener(block)` runs after each durable block, in height order, on the writer or
        the index thread, once the index holds the block: keep it short."""
        self._listeners.append(listener)

    def block_bytes(self, height: int) -> bytes:
        """A stored block as encoded on disk (what peers are sent), without decoding it."""
        if not 0 <= height <= self.height:
            raise EntryUnknown(f"no block at height {height}; the log is at {self.height}")
        return self._files.read(height)

    @property
    def genesis_hash(self) -> bytes:
        return self._genesis_hash

    def _index_failed(self, height: int, exc: Exception) -> None:
        reason = exc.message if isinstance(exc, PyrsiaError) else f"{type(exc).__name__}: {exc}"
        self._index_problem = (
            f"the transparency log index lacks blocks up to height {height} after a failed update "
            f"({reason}); lookups are refused until it catches up "
            "(free disk space; it is retried on the next request)"
        )
        log.warning("%s", self._index_problem)

    def _repair(self) -> bool:
        """Bring a lagging index up to the chain; whether it is whole now."""
        if self._index_problem is None:
            return True
        self._drain_index()  # the index thread may have seen it fail: the writer repairs it alone
        height = self._chain.height
        try:
            indexed = self._index.tip()
            if (
                indexed is not None
                and indexed.height <= height
                and self._read(indexed.height).header.hash == indexed.hash
                and self._holds(indexed)
            ):
                self._index.apply(self._blocks_from(indexed.height + 1))
            else:
                self._index.apply(self._blocks_from(0), replace=True)
        except (StorageError, ChainBroken) as exc:
            self._index_failed(height, exc)
            return False
        self._index_problem = None
        log.info("the log index caught up with the blocks at height %d", height)
        return True

    # -- reading --------------------------------------------------------------------

    @property
    def head(self) -> Head:
        head = self._head
        assert head is not None, "opened ledgers have a head"
        return head

    @property
    def height(self) -> int:
        return self.head.tip.header.height

    @property
    def lookup_height(self) -> int:
        """The height lookups answer for. Readers see a durable block (`height`) before the
        index and the view learn it; who waits for a block in order to look it up waits
        for this."""
        return self._lookup_height

    @property
    def size(self) -> int:
        return self.head.size

    @property
    def authorities(self) -> frozenset[str]:
        return self.head.authorities

    @property
    def registries(self) -> tuple[str, ...]:
        """The Docker registries the network vouches for at the tip (genesis, then changes)."""
        return tuple(host for host, _ in self.head.registries_since)

    @property
    def registries_since(self) -> tuple[tuple[str, int], ...]:
        """Each registry in force at the tip with the height that added it."""
        return self.head.registries_since

    def _reader(self) -> IndexReader:
        """This thread's index connection, unless the index lacks a committed block."""
        problem = self._index_problem
        if problem is not None:
            if not self._repair_queued.is_set() and not self._closed:
                self._repair_queued.set()
                try:
                    self._queue.put_nowait(_Repair())
                except queue.Full:
                    self._repair_queued.clear()
            raise StorageError(problem)
        reader: IndexReader | None = getattr(self._local, "reader", None)
        if reader is None:
            reader = self._index.reader()
            self._local.reader = reader
            with self._readers_lock:
                self._readers.add(reader)
        return reader

    def block(self, height: int) -> Block:
        head = self.head
        if not 0 <= height <= head.tip.header.height:
            raise EntryUnknown(f"no block at height {height}; the log is at {head.tip.header.height}")
        return head.tip if height == head.tip.header.height else self._read(height)

    def latest(self, package_type: str, path: str) -> ArtifactRecord | None:
        """The newest committed record of a path."""
        return self._lookup(path_key(package_type, path), lambda r: r.latest(package_type, path))

    def newest_by_digest(self, package_type: str, digest: str) -> ArtifactRecord | None:
        """The newest committed record of a digest of this package type."""
        return self._lookup(
            digest_key(package_type, digest), lambda r: r.newest_by_digest(package_type, digest)
        )

    def _lookup(
        self, key: Key, query: Callable[[IndexReader], ArtifactRecord | None]
    ) -> ArtifactRecord | None:
        reader = self._reader()  # refuses while the index lacks a committed block
        with self._view_lock:
            held, record = self._view.get(key)
            token = self._view.generation
        if held:
            return record
        record = query(reader)
        with self._view_lock:
            self._view.fill(token, key, record)
        return record

    def by_digest(self, digest: str) -> list[ArtifactRecord]:
        """Every committed record of `digest`, newest first."""
        return self._reader().by_digest(digest)

    def has_digest(self, package_type: str, digest: str) -> bool:
        return self.newest_by_digest(package_type, digest) is not None

    def package_ids(self, package_type: str, prefix: str) -> list[str]:
        return self._reader().package_ids(package_type, prefix)

    def paths(self, package_type: str, prefix: str, after: str, limit: int) -> list[str]:
        return self._reader().paths(package_type, prefix, after, limit)

    def search(self, query: Query) -> list[ArtifactRecord]:
        return self._reader().search(query)

    def checkpoint(self) -> str:
        """The C2SP note for the current tree head, signed by the tip's certificate."""
        return self._note(self.head.tip)

    def _note(self, block: Block) -> str:
        point = checkpoint.Checkpoint(
            origin=self.origin, size=block.header.log_size, root=block.header.log_root
        )
        return checkpoint.note(point, [(s.signer, s.checkpoint) for s in block.certificate])

    def proof(self, digest: str) -> InclusionProof:
        """Inclusion of the newest transaction logging `digest`, against the current head."""
        found = self._reader().by_digest(digest)
        head = self.head  # read after the index: a block is in the head before the index
        if not found:
            raise EntryUnknown(f"the transparency log has no artifact with digest {digest}")
        record, size, tree = found[0], head.size, self._chain.tree
        assert record.leaf < size, "the index never runs ahead of the head"
        return InclusionProof(
            record=record,
            leaf_index=record.leaf,
            tree_size=size,
            leaf_hash=tree.leaf(record.leaf),
            hashes=tuple(tree.inclusion_proof(record.leaf, size)),
            checkpoint=self._note(head.tip),
        )

    def verify(self) -> VerifyReport:
        """Every block on disk in full (`pyrsia log verify` on a running node)."""
        return verify_chain(self.root)

    def consistency(self, old_size: int) -> tuple[list[bytes], str]:
        """Proof that the current tree extends the one of `old_size`, and the checkpoint it ends at."""
        head = self.head
        if not 0 < old_size <= head.size:
            raise EntryUnknown(f"no tree of size {old_size}; the log holds {head.size} entries")
        return self._chain.tree.consistency_proof(old_size, head.size), self._note(head.tip)


def _resolved(checked: int | Future[int]) -> int:
    """A batch's count of blocks with every signature valid; 0 (each block is checked as
    it is applied) if counting them failed."""
    if isinstance(checked, int):
        return checked
    try:
        return checked.result()
    except Exception:
        log.exception("checking a batch's signatures failed; the writer checks them")
        return 0
