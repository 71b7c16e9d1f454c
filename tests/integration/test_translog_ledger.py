"""The ledger shell on real files: group commit, blocks certified elsewhere, readers
that never wait behind an fsync, a full disk under the index, the on-disk format
version, and a restart plus `pyrsia log verify` after each failure."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path

import pytest
from nacl.signing import SigningKey

from pyrsia.errors import ChainBroken, FormatUnsupported, StorageError, TranslogError, TxInvalid
from pyrsia.formats.peer_id import peer_id_of
from pyrsia.translog import checkpoint, merkle
from pyrsia.translog.block import Block
from pyrsia.translog.chain import Chain
from pyrsia.translog.index import CHECKPOINT_EVERY_COMMITS, Index, Query
from pyrsia.translog.ledger import HOLD_S_MAX, INDEX_FILE, Ledger, verify_chain
from pyrsia.translog.store import FORMAT_FILE, BlockFiles
from pyrsia.translog.tx import (
    ADD_ARTIFACT,
    ADD_AUTHORIZED_NODE,
    AddArtifact,
    AuthorizedNode,
    Transaction,
    endorse,
    sign,
)

KEY = SigningKey(bytes(range(32)))
OTHERS = [SigningKey(bytes([n]) * 32) for n in range(1, 5)]
T0 = 1_700_000_000
WAIT_S = 60.0  # a bound on waiting for another thread, never a measure of speed


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        self.now += 1
        return self.now


def artifact(n: int, *, author: str = "Ada Lovelace") -> AddArtifact:
    return AddArtifact(
        package_type="docker",
        package_id=f"library/app:{n}",
        path=f"/v2/library/app/manifests/{n}",
        digest=f"sha256:{n:064x}",
        size=n,
        chunk_size=1 << 20,
        chunk_root=n.to_bytes(32, "big"),
        media_type="application/vnd.oci.image.manifest.v1+json",
        source="https://registry-1.docker.io",
        author=author,
        dependencies=(f"library/base:{n}",),
    )


def me(key: SigningKey) -> str:
    return peer_id_of(bytes(key.verify_key))


class GatedFiles(BlockFiles):
    """Block files whose next write can be held at a gate, or fail."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.hold_next = False
        self.entered = threading.Event()
        self.release = threading.Event()
        self.fail_next: StorageError | None = None

    def append(self, height: int, payload: bytes) -> None:
        if self.fail_next is not None:
            error, self.fail_next = self.fail_next, None
            raise error
        if self.hold_next:
            self.hold_next = False
            self.entered.set()
            assert self.release.wait(WAIT_S)
        super().append(height, payload)


class Disk:
    """Whether the disk under the index is full: SQLite's max_page_count pinned at the
    file's current size, so any growth fails with SQLITE_FULL, as on a full disk."""

    def __init__(self) -> None:
        self.full = False


class IndexOnDisk(Index):
    def __init__(self, path: Path, disk: Disk) -> None:
        self.disk = disk
        super().__init__(path)

    def _connect(self) -> object:  # type: ignore[override]
        db = super()._connect()
        if self.disk.full:
            (pages,) = db.execute("PRAGMA page_count").fetchone()
            db.execute(f"PRAGMA max_page_count = {max(pages, 2)}")
        return db

    def fill(self) -> None:
        self.disk.full = True
        (pages,) = self._db.execute("PRAGMA page_count").fetchone()
        self._db.execute(f"PRAGMA max_page_count = {pages}")

    def free(self) -> None:
        self.disk.full = False
        self._db.execute("PRAGMA max_page_count = 1073741823")


def opened(root: Path, **seams: object) -> Ledger:
    return Ledger.open(root, KEY, clock=Clock(), **seams)  # type: ignore[arg-type]


def everything(ledger: Ledger) -> list[dict[str, object]]:
    return [r.to_json() for r in ledger.search(Query(limit=10_000))]


def payloads(block: Block) -> list[object]:
    return [tx.payload for tx in block.transactions]


def cli_verify(home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pyrsia", "log", "verify", "--home", str(home)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def poll(condition: Callable[[], bool]) -> bool:
    """Poll until `condition` holds, within WAIT_S; each try is also a repair nudge."""
    done = threading.Event()
    for _ in range(int(WAIT_S * 100)):
        if condition():
            return True
        done.wait(0.01)
    return False


def gathered(ledger: Ledger, txs: int) -> bool:
    """Wait until the writer has gathered `txs` transactions for its next block: a publish
    reaches it through the signing thread, a moment after `submit` returns."""
    return poll(lambda: ledger._group_txs == txs)


# -- group commit ---------------------------------------------------------------------


def test_publishes_waiting_behind_a_write_share_the_next_block(tmp_path: Path) -> None:
    files = GatedFiles(tmp_path)
    ledger = opened(tmp_path, files=files)
    files.hold_next = True
    first = ledger.submit([artifact(1)])
    assert files.entered.wait(WAIT_S)
    waiting = {n: ledger.submit([artifact(n)]) for n in range(2, 22)}
    waiting[30] = ledger.submit([artifact(30), artifact(31), artifact(32)])
    with pytest.raises(TxInvalid):  # a bad publish fails alone, before anything is queued
        ledger.submit([])
    with pytest.raises(TxInvalid):
        ledger.submit([AuthorizedNode(peer_id=me(KEY))])  # type: ignore[list-item]
    assert gathered(ledger, 23)
    files.release.set()
    assert first.result(WAIT_S).header.height == 1
    blocks = {n: future.result(WAIT_S) for n, future in waiting.items()}
    assert {b.header.height for b in blocks.values()} == {2}
    block = blocks[2]
    assert len(block.transactions) == 23 and ledger.height == 2 and ledger.size == 25
    for n in range(2, 22):
        assert artifact(n) in payloads(block)
    ours = [p for p in payloads(block) if isinstance(p, AddArtifact) and p.size in (30, 31, 32)]
    assert ours == [artifact(30), artifact(31), artifact(32)]  # a caller's batch stays together, in order
    assert ledger.block(2) == block and len(everything(ledger)) == 24
    ledger.close()
    assert verify_chain(tmp_path).ok and opened(tmp_path).size == 25


def test_a_record_the_chain_refuses_fails_alone_and_its_block_mates_commit(tmp_path: Path) -> None:
    """A Docker record for a registry the network does not vouch for (removed while a
    pull was in flight, say) is refused with the chain's reason; the publishes gathered
    into the same block with it still commit."""
    files = GatedFiles(tmp_path)
    ledger = opened(tmp_path, files=files)
    files.hold_next = True
    first = ledger.submit([artifact(1)])
    assert files.entered.wait(WAIT_S)
    good = [ledger.submit([artifact(n)]) for n in (2, 3)]
    stray = dataclasses.replace(artifact(4), registry="registry.example")
    bad = ledger.submit([stray])
    good.append(ledger.submit([artifact(5)]))
    assert gathered(ledger, 4)
    files.release.set()
    assert first.result(WAIT_S).header.height == 1
    with pytest.raises(TxInvalid, match=r"names registry registry\.example, which the network does not"):
        bad.result(WAIT_S)
    blocks = [future.result(WAIT_S) for future in good]
    assert {b.header.height for b in blocks} == {2}, "the others still share one block"
    assert payloads(blocks[0]) == [artifact(2), artifact(3), artifact(5)]
    alone = ledger.submit([stray])  # alone, the same refusal; nothing is written
    with pytest.raises(TxInvalid, match="does not vouch"):
        alone.result(WAIT_S)
    assert ledger.height == 2
    ledger.close()
    assert verify_chain(tmp_path).ok and opened(tmp_path).height == 2


class Stopwatch:
    """A monotonic clock that moves only when the test moves it."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _landed_with_two_waiting(tmp_path: Path) -> tuple[Ledger, Stopwatch, list[Future[Block]]]:
    """A ledger whose block 1 took a (stopwatch) second to write while two publishes
    gathered; block 1 has landed and its caller has been told."""
    files, watch = GatedFiles(tmp_path), Stopwatch()
    ledger = opened(tmp_path, files=files, monotonic=watch)
    files.hold_next = True
    first = ledger.submit([artifact(1)])
    assert files.entered.wait(WAIT_S)
    waiting = [ledger.submit([artifact(n)]) for n in (2, 3)]
    assert gathered(ledger, 2)  # before block 1 lands
    watch.now += 1.0
    files.release.set()
    assert first.result(WAIT_S).header.height == 1
    return ledger, watch, waiting


def test_publishes_waiting_when_a_block_lands_are_held_for_its_callers(tmp_path: Path) -> None:
    ledger, _watch, waiting = _landed_with_two_waiting(tmp_path)
    # The stopwatch stands still, so the hold lasts until block 1's caller is back.
    back = ledger.submit([artifact(4)])
    blocks = [future.result(WAIT_S) for future in (*waiting, back)]
    assert {b.header.height for b in blocks} == {2} and len(blocks[0].transactions) == 3
    # A lone publisher is never held: nothing waits when its block lands.
    for n in range(5, 8):
        assert ledger.publish([artifact(n)]).header.height == n - 2
    ledger.close()
    assert verify_chain(tmp_path).ok


def test_a_held_group_goes_out_when_the_hold_ends(tmp_path: Path) -> None:
    ledger, watch, waiting = _landed_with_two_waiting(tmp_path)
    watch.now += HOLD_S_MAX  # block 1's caller never came back
    blocks = [future.result(WAIT_S) for future in waiting]
    assert {b.header.height for b in blocks} == {2} and len(blocks[0].transactions) == 2
    ledger.close()


def test_the_same_payload_published_twice_at_once_makes_two_transactions(tmp_path: Path) -> None:
    ledger = opened(tmp_path)
    block = ledger.publish([artifact(1), artifact(1)])  # one call: one time, so only nonces differ
    assert len({tx.id for tx in block.transactions}) == 2
    assert len({tx.nonce for tx in block.transactions}) == 2
    ledger.close()
    other = opened(tmp_path)  # a restart does not draw the same nonces again
    again = other.publish([artifact(1), artifact(1)])
    assert not {tx.nonce for tx in again.transactions} & {tx.nonce for tx in block.transactions}
    other.close()
    assert verify_chain(tmp_path).ok


def test_many_threads_publishing_at_once_each_get_their_block(tmp_path: Path) -> None:
    ledger = opened(tmp_path)
    barrier = threading.Barrier(32)
    got: dict[int, Block] = {}
    errors: list[BaseException] = []

    def publish(worker: int) -> None:
        barrier.wait()
        try:
            for i in range(5):
                got[worker * 10 + i] = ledger.publish([artifact(worker * 10 + i)])
        except BaseException as exc:  # reported below; a thread must not swallow it
            errors.append(exc)

    threads = [threading.Thread(target=publish, args=(w,)) for w in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(got) == 160 and ledger.size == 161
    for n, block in got.items():
        assert artifact(n) in payloads(block) and ledger.block(block.header.height) == block
    assert sorted(r["size"] for r in everything(ledger)) == sorted(got)  # type: ignore[type-var]
    ledger.close()
    assert verify_chain(tmp_path).ok


def test_a_publish_whose_signing_fails_fails_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pyrsia.translog import ledger as ledger_module

    def failing(key: SigningKey, **fields: object) -> Transaction:
        if getattr(fields["payload"], "size", None) == 2:
            raise TxInvalid("signing refused this payload")
        return sign(key, **fields)  # type: ignore[arg-type]

    monkeypatch.setattr(ledger_module, "sign", failing)
    files = GatedFiles(tmp_path)
    ledger = opened(tmp_path, files=files)
    files.hold_next = True
    first = ledger.submit([artifact(1)])
    assert files.entered.wait(WAIT_S)
    waiting = [ledger.submit([artifact(n)]) for n in (2, 3, 4)]  # queued behind the write
    files.release.set()
    with pytest.raises(TxInvalid, match="signing refused"):
        waiting[0].result(WAIT_S)
    assert first.result(WAIT_S).header.height == 1
    for n, future in zip((3, 4), waiting[1:], strict=True):
        assert artifact(n) in payloads(future.result(WAIT_S))
    assert artifact(5) in payloads(ledger.publish([artifact(5)]))  # the signing thread goes on
    assert sorted(r["size"] for r in everything(ledger)) == [1, 3, 4, 5]  # type: ignore[type-var]
    ledger.close()
    assert verify_chain(tmp_path).ok


def test_publishes_submitted_while_the_log_closes_are_committed_or_refused(tmp_path: Path) -> None:
    ledger = opened(tmp_path)
    submitted: list[tuple[int, Future[Block]]] = []
    started = threading.Event()
    refused: list[int] = []

    def submit() -> None:
        for n in range(1, 2001):
            try:
                submitted.append((n, ledger.submit([artifact(n)])))
            except StorageError:
                refused.append(n)
                return
            started.set()

    thread = threading.Thread(target=submit)
    thread.start()
    assert started.wait(WAIT_S)
    ledger.close()
    thread.join(WAIT_S)
    committed = []
    for n, future in submitted:
        try:
            block = future.result(WAIT_S)  # never left waiting
        except StorageError as exc:
            assert "closed" in str(exc)
        else:
            assert artifact(n) in payloads(block)
            committed.append(n)
    assert committed and (refused or len(submitted) == 2000)
    assert committed == [n for n, _f in submitted][: len(committed)]  # a prefix, in the order submitted
    assert verify_chain(tmp_path).ok
    assert sorted(r["size"] for r in everything(opened(tmp_path))) == committed  # type: ignore[type-var]


def test_readers_do_not_wait_behind_a_block_being_written(tmp_path: Path) -> None:
    files = GatedFiles(tmp_path)
    ledger = opened(tmp_path, files=files)
    ledger.publish([artifact(1)])
    files.hold_next = True
    pending = ledger.submit([artifact(2)])
    assert files.entered.wait(WAIT_S)
    seen: dict[str, object] = {}
    done = threading.Event()

    def read() -> None:
        seen["height"] = ledger.height
        seen["records"] = [r.size for r in ledger.search(Query())]
        seen["latest"] = ledger.latest("docker", artifact(1).path)
        proof = ledger.proof(artifact(1).digest)
        head = checkpoint.verify(proof.checkpoint, set(ledger.authorities))
        merkle.verify_inclusion(proof.leaf_hash, proof.leaf_index, head.size, proof.hashes, head.root)
        seen["proved"] = head.size
        seen["tip"] = ledger.block(ledger.height).header.height
        done.set()

    reader = threading.Thread(target=read)
    reader.start()
    assert done.wait(WAIT_S), "a reader waited behind the write"  # the writer is still held
    assert not pending.done()
    assert seen["height"] == 1 and seen["records"] == [1] and seen["proved"] == 2 and seen["tip"] == 1
    files.release.set()
    reader.join()
    assert pending.result(WAIT_S).header.height == 2
    assert [r.size for r in ledger.search(Query())] == [2, 1]
    ledger.close()


def test_a_failed_block_write_fails_its_callers_and_changes_nothing(tmp_path: Path) -> None:
    files = GatedFiles(tmp_path)
    ledger = opened(tmp_path, files=files)
    ledger.publish([artifact(1)])
    before = (ledger.height, ledger.size, ledger.checkpoint(), everything(ledger))
    files.fail_next = StorageError("cannot write block 2: No space left on device")
    with pytest.raises(StorageError, match="No space left"):
        ledger.publish([artifact(2)])
    assert (ledger.height, ledger.size, ledger.checkpoint(), everything(ledger)) == before
    assert ledger.publish([artifact(3)]).header.height == 2  # the chain went on from where it was
    ledger.close()
    assert verify_chain(tmp_path).ok
    assert [r["size"] for r in everything(opened(tmp_path))] == [3, 1]


# -- blocks certified elsewhere ---------------------------------------------------------


def replica_of(ledger: Ledger, height_max: int | None = None) -> Chain:
    """The ledger's chain (up to `height_max`), rebuilt in memory."""
    chain = Chain()
    for height in range((ledger.height if height_max is None else height_max) + 1):
        chain.apply(ledger.block(height))
    return chain


def certified(
    chain: Chain,
    txs: list[Transaction],
    signers: list[SigningKey],
    proposer: SigningKey,
    endorsers: list[SigningKey] | None = None,
) -> Block:
    """The next block of `txs`, endorsed by `endorsers` (default: the signers), certified by `signers`."""
    txs = [
        tx.with_endorsements(tuple(endorse(k, tx.id) for k in (signers if endorsers is None else endorsers)))
        for tx in txs
    ]
    header = chain.propose(txs, T0 + 100, me(proposer))
    return Block(
        header=header, transactions=tuple(txs), certificate=tuple(chain.certify(header, k) for k in signers)
    )


def artifact_tx(key: SigningKey, n: int) -> Transaction:
    return sign(key, type=ADD_ARTIFACT, payload=artifact(n), time=T0, nonce=n)


def test_append_takes_blocks_certified_elsewhere_and_refuses_bad_ones(tmp_path: Path) -> None:
    ledger = opened(tmp_path)
    ledger.publish([artifact(1)])
    network = replica_of(ledger)
    # Another peer submits; this node's authority certifies (as consensus will).
    block = certified(network, [artifact_tx(OTHERS[0], 2)], [KEY], KEY)
    assert ledger.append(Block.decode(block.encode())) == block
    network.apply(block)
    assert ledger.height == 2 and ledger.latest("docker", artifact(2).path) is not None

    state = (ledger.height, ledger.size, everything(ledger), sorted((tmp_path / "blocks").iterdir()))
    stranger = certified(network, [artifact_tx(KEY, 3)], [OTHERS[3]], OTHERS[3])
    forged = certified(network, [artifact_tx(KEY, 3)], [KEY], KEY)
    forged = Block(
        header=forged.header,
        transactions=(Transaction(**{**_fields(forged.transactions[0]), "signature": bytes(64)}),),
        certificate=forged.certificate,
    )
    assert ledger.append(block) == block  # held already (sync and consensus both bring it): a no-op
    assert (ledger.height, ledger.size) == state[:2]
    for bad, reason in (
        (stranger, "not an authority"),
        (forged, "not signed by its submitter"),
        (certified(replica_of(ledger, 1), [artifact_tx(KEY, 9)], [KEY], KEY), "follows"),  # another block 2
    ):
        with pytest.raises(ChainBroken, match=reason) as raised:
            ledger.append(bad)
        assert raised.value.height == bad.header.height
        assert (
            ledger.height,
            ledger.size,
            everything(ledger),
            sorted((tmp_path / "blocks").iterdir()),
        ) == state

    # Three more authorities join; from the next height a quorum of four signs.
    adds = [sign(KEY, type=ADD_AUTHORIZED_NODE, payload=AuthorizedNode(peer_id=me(k)), time=T0, nonce=n)
            for n, k in enumerate(OTHERS[:3])]  # fmt: skip
    joined = certified(network, adds, [KEY], KEY)
    ledger.append(joined)
    network.apply(joined)
    assert ledger.authorities == {me(KEY), *(me(k) for k in OTHERS[:3])}
    with pytest.raises(TranslogError, match="cannot commit blocks alone"):
        ledger.publish([artifact(4)])
    too_few = certified(
        network, [artifact_tx(OTHERS[1], 5)], [KEY, OTHERS[0]], OTHERS[1], endorsers=[KEY, *OTHERS[:2]]
    )
    with pytest.raises(ChainBroken, match="2 signatures of 3"):
        ledger.append(too_few)
    ledger.append(certified(network, [artifact_tx(OTHERS[1], 5)], [OTHERS[2], KEY, OTHERS[0]], OTHERS[1]))
    assert ledger.height == 4
    head = checkpoint.verify(ledger.checkpoint(), {me(OTHERS[2])})
    assert head.size == ledger.size
    ledger.close()

    again = opened(tmp_path)  # authorities come back from the blocks alone
    assert again.height == 4 and again.authorities == ledger.authorities
    assert [r["size"] for r in everything(again)] == [5, 2, 1]
    assert verify_chain(tmp_path).ok


def _fields(tx: Transaction) -> dict[str, object]:
    return {f: getattr(tx, f) for f in ("type", "payload", "submitter", "time", "nonce", "signature")}


# -- the index never answers partially --------------------------------------------------


def big(n: int) -> AddArtifact:
    return artifact(n, author=f"{n} " + "x" * 4000)


def test_a_full_disk_under_the_index_never_leaves_it_partial(tmp_path: Path) -> None:
    home = tmp_path / "home"
    root = home / "translog"
    root.mkdir(parents=True)
    index = IndexOnDisk(root / INDEX_FILE, Disk())
    ledger = opened(root, index=index)
    for n in range(1, 4):
        ledger.publish([artifact(n)])
    before = everything(ledger)
    index.fill()
    committed = ledger.publish([big(n) for n in range(10, 30)])  # durable, even though indexing fails
    assert committed.header.height == 4 and (root / "blocks" / "000000000004.blk").exists()
    for lookup in (
        lambda: ledger.search(Query()),
        lambda: ledger.latest("docker", artifact(1).path),
        lambda: ledger.by_digest(artifact(1).digest),
        lambda: ledger.proof(artifact(1).digest),
    ):
        with pytest.raises(StorageError) as refused:
            lookup()
        assert "lacks blocks up to height 4" in refused.value.message and "\n" not in refused.value.message
    with pytest.raises(StorageError, match="lacks blocks up to height 4"):
        ledger.publish([artifact(5)])  # nothing new is committed while the index lags
    assert ledger.height == 4 and verify_chain(root).ok
    index.free()
    assert poll(lambda: _answers(ledger)), "the index never caught up once space was free"
    assert everything(ledger)[-3:] == before and len(everything(ledger)) == 23
    assert ledger.publish([artifact(6)]).header.height == 5
    ledger.close()
    verified = cli_verify(home)
    assert verified.returncode == 0, verified.stderr


def _answers(ledger: Ledger) -> bool:
    try:
        ledger.search(Query())
    except StorageError:
        return False
    return True


def test_the_index_wal_is_copied_into_the_database_by_a_thread_of_its_own(tmp_path: Path) -> None:
    def checkpointers() -> int:  # other tests' ledgers left open may have theirs
        return sum(t.name == "translog-checkpoint" for t in threading.enumerate())

    ledger, running = opened(tmp_path), checkpointers()
    database = tmp_path / INDEX_FILE
    before = database.stat().st_size
    for n in range(1, CHECKPOINT_EVERY_COMMITS + 2):
        ledger.publish([artifact(n)])
    # SQLite's automatic checkpoint is off: only the checkpoint thread grows the file now.
    assert poll(lambda: database.stat().st_size > before)
    assert checkpointers() == running + 1
    assert len(everything(ledger)) == CHECKPOINT_EVERY_COMMITS + 1
    ledger.close()
    assert checkpointers() == running
    assert len(everything(opened(tmp_path))) == CHECKPOINT_EVERY_COMMITS + 1


def test_a_restart_with_the_disk_still_full_refuses_with_one_line_then_rebuilds(tmp_path: Path) -> None:
    disk = Disk()
    index = IndexOnDisk(tmp_path / INDEX_FILE, disk)
    ledger = opened(tmp_path, index=index)
    ledger.publish([artifact(1)])
    index.fill()
    ledger.publish([big(n) for n in range(10, 30)])
    ledger.close()
    with pytest.raises(StorageError) as refused:
        opened(tmp_path, index=IndexOnDisk(tmp_path / INDEX_FILE, disk))
    assert "database or disk is full" in refused.value.message and "\n" not in refused.value.message
    (tmp_path / INDEX_FILE).unlink()  # even from nothing, a full disk is refused, not half-built
    for suffix in ("-wal", "-shm"):
        Path(f"{tmp_path / INDEX_FILE}{suffix}").unlink(missing_ok=True)
    with pytest.raises(StorageError, match="database or disk is full"):
        opened(tmp_path, index=IndexOnDisk(tmp_path / INDEX_FILE, disk))
    disk.full = False
    again = opened(tmp_path, index=IndexOnDisk(tmp_path / INDEX_FILE, disk))
    assert len(everything(again)) == 21 and again.height == 2
    again.close()
    assert verify_chain(tmp_path).ok


@pytest.mark.parametrize("damage", ["rows deleted", "rows and meta deleted", "stale meta"])
def test_a_partial_index_is_detected_at_open_and_rebuilt(tmp_path: Path, damage: str) -> None:
    import sqlite3

    ledger = opened(tmp_path)
    for n in range(1, 6):
        ledger.publish([artifact(n)])
    expected = everything(ledger)
    ledger.close()
    db = sqlite3.connect(tmp_path / INDEX_FILE, isolation_level=None)
    if damage in ("rows deleted", "rows and meta deleted"):
        db.execute("DELETE FROM artifact WHERE leaf < 3")  # records of earlier blocks vanish
    if damage == "rows and meta deleted":  # and the meta agrees with what is left
        db.execute("UPDATE meta SET value = value - 2 WHERE key = 'artifacts'")
    if damage == "stale meta":
        db.execute("UPDATE meta SET value = 2 WHERE key = 'dependencies'")
    db.close()
    again = opened(tmp_path)
    assert everything(again) == expected


# -- the on-disk format version ----------------------------------------------------------


def test_a_new_log_records_its_format(tmp_path: Path) -> None:
    opened(tmp_path).close()
    assert (tmp_path / FORMAT_FILE).read_text() == "3\n"


@pytest.mark.parametrize("written", [None, "1\n", "2\n", "4\n", "garbage"])
def test_a_log_of_another_format_is_refused_with_one_line(tmp_path: Path, written: str | None) -> None:
    home = tmp_path / "home"
    root = home / "translog"
    opened(root).close()
    if written is None:
        (root / FORMAT_FILE).unlink()  # as format 1 wrote it: no FORMAT file at all
    else:
        (root / FORMAT_FILE).write_text(written)
    with pytest.raises(FormatUnsupported) as refused:
        opened(root)
    message = refused.value.message
    if written in (None, "1\n"):
        assert message == (
            "this transparency log was written in format 1 by an older pyrsia; "
            f"move {root} aside and restart to start a new log"
        )
    elif written == "2\n":
        assert "format 2 by an older pyrsia" in message
    elif written == "4\n":
        assert "format 4 by a newer pyrsia" in message
    else:
        assert f"move {root} aside" in message
    with pytest.raises(FormatUnsupported):
        verify_chain(root)
    verified = cli_verify(home)
    lines = [line for line in verified.stderr.splitlines() if line.strip()]
    assert verified.returncode == 1 and lines == [f"error: {message}"]
    started = subprocess.run(
        [sys.executable, "-m", "pyrsia", "daemon", "--home", str(home), "--http-port", "0"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    lines = [line for line in started.stderr.splitlines() if line.strip()]
    assert started.returncode == 1 and lines == [f"error: {message}"]


# -- restart after each failure mode -----------------------------------------------------


@pytest.mark.parametrize("failure", ["block write", "index update", "torn last block", "leftover temp file"])
def test_restart_after_each_failure_reopens_and_verifies(tmp_path: Path, failure: str) -> None:
    home = tmp_path / "home"
    root = home / "translog"
    root.mkdir(parents=True)
    files = GatedFiles(root)
    index = IndexOnDisk(root / INDEX_FILE, Disk())
    ledger = opened(root, files=files, index=index)
    ledger.publish([artifact(1)])
    published = 1
    match failure:
        case "block write":
            files.fail_next = StorageError("cannot write block 2: Input/output error")
            with pytest.raises(StorageError):
                ledger.publish([artifact(2)])
        case "index update":
            index.fill()
            ledger.publish([big(n) for n in range(10, 30)])
            published += 20
        case "torn last block" | "leftover temp file":
            ledger.publish([artifact(2)])
    ledger.close()
    if failure == "torn last block":
        last = root / "blocks" / "000000000002.blk"
        last.write_bytes(last.read_bytes()[:-3])
    if failure == "leftover temp file":
        (root / "blocks" / ".000000000003.blk.part").write_bytes(b"half")
        published += 1
    again = opened(root)  # a disk with room again
    assert len(everything(again)) == published
    again.publish([artifact(99)])
    again.close()
    verified = cli_verify(home)
    assert verified.returncode == 0, verified.stderr
    assert "blocks and" in verified.stderr and "verify" in verified.stderr


def test_reader_connections_end_with_their_threads(tmp_path: Path) -> None:
    import gc

    ledger = opened(tmp_path)
    ledger.publish([artifact(1)])
    found: list[int] = []
    for _ in range(20):
        reader = threading.Thread(target=lambda: found.append(len(ledger.search(Query()))))
        reader.start()
        reader.join()
    gc.collect()
    assert found == [1] * 20 and len(ledger._readers) == 0
    assert [r.size for r in ledger.search(Query())] == [1] and len(ledger._readers) == 1
    ledger.close()
    assert len(ledger._readers) == 0
    with pytest.raises(StorageError, match="closed"):
        ledger.publish([artifact(2)])


# -- what consensus asks of the ledger -----------------------------------------------------


def test_consensus_proposes_and_checks_on_the_writer_and_commits_authority_changes(tmp_path: Path) -> None:
    ledger = opened(tmp_path)
    block = ledger.publish([artifact(1)])
    assert ledger.has_tx(block.transactions[0].id) and not ledger.has_tx(bytes(32))
    # Every committed transaction carries this authority's endorsement (the quorum of one).
    assert [e.signer for e in block.transactions[0].endorsements] == [me(KEY)]

    tx = artifact_tx(KEY, 2).with_endorsements((endorse(KEY, artifact_tx(KEY, 2).id),))
    header = ledger.call(lambda chain: chain.propose([tx], T0 + 5, me(KEY)))
    proposal = Block(header=header, transactions=(tx,), certificate=())
    ledger.call(lambda chain: chain.check_proposal(proposal))  # a valid proposal; nothing changes
    assert ledger.height == 1
    bare = Block(header=header, transactions=(artifact_tx(KEY, 2),), certificate=())
    with pytest.raises(ChainBroken, match="0 endorsements of 1"):
        ledger.call(lambda chain: chain.check_proposal(bare))  # the caller gets the chain's error
    assert ledger.height == 1

    change = sign(
        KEY, type=ADD_AUTHORIZED_NODE, payload=AuthorizedNode(peer_id=me(OTHERS[0])), time=T0, nonce=7
    )
    committed = ledger.commit_signed([change])
    assert committed.transactions[0].id == change.id and ledger.authorities == {me(KEY), me(OTHERS[0])}
    with pytest.raises(TranslogError, match="cannot commit blocks alone"):
        ledger.commit_signed([change])
    ledger.close()
