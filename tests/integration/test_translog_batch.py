"""Batches of blocks certified elsewhere (`Ledger.submit_blocks`, what sync uses), on disk.

A batch is applied through the chain core block by block and stored with one fsync
pass: a bad block in the middle keeps the good prefix before it (stored, indexed,
verifiable) and fails the rest; blocks held already are no-ops; a write that fails
stores none of the batch and the log goes on from where it was.
"""

from __future__ import annotations

import dataclasses
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest
from nacl.signing import SigningKey

from pyrsia.errors import ChainBroken, StorageError
from pyrsia.translog import ledger as ledger_module
from pyrsia.translog import sigcheck
from pyrsia.translog.block import ZERO_HASH, Block, commit_signature
from pyrsia.translog.chain import origin_of
from pyrsia.translog.index import Query
from pyrsia.translog.ledger import Ledger, verify_chain
from pyrsia.translog.store import BlockFiles
from pyrsia.translog.tx import AddArtifact

AUTHORITY = SigningKey(bytes(range(32)))
FOLLOWER = SigningKey(bytes(range(1, 33)))
BLOCKS = 40
WAIT_S = 60.0


def artifact(n: int) -> AddArtifact:
    digest = f"sha256:{n:064x}"
    return AddArtifact(
        package_type="docker", package_id=f"library/batch:{n}", path=f"/v2/library/batch/blobs/{digest}",
        digest=digest, size=n, chunk_size=1 << 20, chunk_root=bytes(32),
        media_type="application/octet-stream", source="https://registry.example", author="batch",
    )  # fmt: skip


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> list[Block]:
    """An authority's log of BLOCKS one-transaction blocks after its genesis."""
    ledger = Ledger.open(tmp_path_factory.mktemp("authority"), AUTHORITY)
    try:
        for n in range(1, BLOCKS + 1):
            ledger.publish([artifact(n)])
        return [ledger.block(h) for h in range(BLOCKS + 1)]
    finally:
        ledger.close()


@pytest.fixture(scope="module")
def legacy_chain(chain: list[Block]) -> list[Block]:
    """The same log as blocks written before headers carried `transactions_hash`:
    relinked and certified again by the same authority."""
    out: list[Block] = []
    for block in chain:
        prev_hash = out[-1].header.hash if out else ZERO_HASH
        header = dataclasses.replace(block.header, transactions_hash=b"", prev_hash=prev_hash)
        origin = origin_of(out[0].header if out else header)
        signature = commit_signature(AUTHORITY, header, origin)
        out.append(Block(header=header, transactions=block.transactions, certificate=(signature,)))
    return out


@pytest.fixture(params=["threads", "helper", "no helper"])
def checker(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Who checks a batch's signatures: the node's threads (a batch below
    `HELPER_BLOCKS_MIN`), the helper process, or, when the helper cannot start, the
    writer as it applies each block."""
    if request.param != "threads":
        monkeypatch.setattr(ledger_module, "HELPER_BLOCKS_MIN", 2)
    if request.param == "no helper":
        monkeypatch.setattr(sigcheck, "helper_command", lambda: [sys.executable, "-c", ""])
    return str(request.param)


def helpers() -> list[int]:
    """This process's child processes running the signature helper."""
    found = []
    for task in Path("/proc/self/task").iterdir():
        for child in (task / "children").read_text().split():
            with open(f"/proc/{child}/cmdline", "rb") as f:
                if b"pyrsia.translog.sigcheck" in f.read():
                    found.append(int(child))
    return found


def follower(root: Path, chain: Sequence[Block], files: BlockFiles | None = None) -> Ledger:
    return Ledger.open(root, FOLLOWER, genesis=chain[0], files=files)


def sizes(ledger: Ledger) -> list[int]:
    return sorted(r.size for r in ledger.search(Query(limit=1000)))


def forged(block: Block) -> Block:
    """The block with its certificate's signature over the block hash replaced."""
    [signature] = block.certificate
    bad = dataclasses.replace(signature, block=bytes(64))
    return dataclasses.replace(block, certificate=(bad,))


def forged_kind(block: Block, kind: str) -> Block:
    """The block with one signature of the given kind replaced; none of them is covered
    by the block hash, so the block still links and its certificate still names it (a
    transaction's or endorsement's is covered by the header's `transactions_hash`)."""
    [tx] = block.transactions
    [signature] = block.certificate
    match kind:
        case "submitter":
            return dataclasses.replace(block, transactions=(dataclasses.replace(tx, signature=bytes(64)),))
        case "endorsement":
            [endorsement] = tx.endorsements
            bad = dataclasses.replace(endorsement, signature=bytes(64))
            return dataclasses.replace(block, transactions=(tx.with_endorsements((bad,)),))
        case "certificate over the block":
            return forged(block)
        case "certificate over the checkpoint":
            bad_point = dataclasses.replace(signature, checkpoint=bytes(64))
            return dataclasses.replace(block, certificate=(bad_point,))
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind", ["submitter", "endorsement", "certificate over the block", "certificate over the checkpoint"]
)
@pytest.mark.parametrize("height", [3, 33])  # in the first and in the last part checked at once
@pytest.mark.parametrize("legacy", [False, True], ids=["covered", "legacy"])
def test_every_forged_signature_in_a_batch_is_refused(
    tmp_path: Path,
    chain: list[Block],
    legacy_chain: list[Block],
    kind: str,
    height: int,
    legacy: bool,
    checker: str,
) -> None:
    """In a block whose header carries `transactions_hash`, a swapped transaction or
    endorsement signature breaks the hash; in one written before it, its own check."""
    chain = legacy_chain if legacy else chain
    ledger = follower(tmp_path, chain)
    bad = forged_kind(chain[height], kind)
    assert bad.header.hash == chain[height].header.hash
    with pytest.raises(ChainBroken) as caught:
        ledger.submit_blocks([*chain[1:height], bad, *chain[height + 1 :]]).result(WAIT_S)
    assert caught.value.height == height
    if kind.startswith("certificate") or legacy or checker == "no helper":  # the writer checks all
        assert "does not verify" in caught.value.reason or "not signed" in caught.value.reason
    else:
        assert "transactions hash does not match" in caught.value.reason
    assert ledger.height == height - 1 and sizes(ledger) == list(range(1, height))
    assert not list((tmp_path / "blocks").glob(".*.part"))
    ledger.close()
    assert verify_chain(tmp_path).ok


def test_a_batch_is_stored_indexed_and_verifies(tmp_path: Path, chain: list[Block]) -> None:
    ledger = follower(tmp_path, chain)
    seen: list[int] = []
    ledger.on_commit(lambda block: seen.append(block.header.height))
    assert ledger.submit_blocks(chain[1:]).result(WAIT_S) == BLOCKS
    assert ledger.height == BLOCKS and seen == list(range(1, BLOCKS + 1))
    assert sizes(ledger) == list(range(1, BLOCKS + 1))
    assert ledger.latest("docker", artifact(7).path) is not None
    assert ledger.checkpoint() and ledger.proof(artifact(BLOCKS).digest).tree_size == BLOCKS + 1
    ledger.close()
    report = verify_chain(tmp_path)
    assert report.ok and report.blocks == BLOCKS + 1
    assert not list((tmp_path / "blocks").glob(".*.part"))
    for h in range(BLOCKS + 1):
        assert BlockFiles(tmp_path).read(h) == chain[h].encode()


def test_a_bad_block_in_the_middle_keeps_the_good_prefix(
    tmp_path: Path, chain: list[Block], checker: str
) -> None:
    ledger = follower(tmp_path, chain)
    batch = [*chain[1:15], forged(chain[15]), *chain[16:]]
    with pytest.raises(ChainBroken) as caught:
        ledger.submit_blocks(batch).result(WAIT_S)
    assert caught.value.height == 15 and "does not verify" in caught.value.reason
    assert ledger.height == 14 and sizes(ledger) == list(range(1, 15))
    # A block that does not link fails the same way, after the good ones before it.
    with pytest.raises(ChainBroken) as caught:
        ledger.submit_blocks([chain[15], chain[17]]).result(WAIT_S)
    assert caught.value.height == 17 and ledger.height == 15
    assert ledger.submit_blocks(chain[16:]).result(WAIT_S) == BLOCKS
    ledger.close()
    assert verify_chain(tmp_path).ok
    reopened = follower(tmp_path, chain)
    assert reopened.height == BLOCKS and sizes(reopened) == list(range(1, BLOCKS + 1))
    reopened.close()


def test_a_large_batch_is_checked_by_one_helper_process(
    tmp_path: Path, chain: list[Block], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ledger_module, "HELPER_BLOCKS_MIN", 10)
    ledger = follower(tmp_path, chain)
    try:
        assert ledger.submit_blocks(chain[1:5]).result(WAIT_S) == 4
        assert helpers() == []  # a small batch: checked on the node's threads
        assert ledger.submit_blocks(chain[5:20]).result(WAIT_S) == 19
        [helper] = helpers()
        assert ledger.submit_blocks(chain[20:]).result(WAIT_S) == BLOCKS
        assert helpers() == [helper]  # the same helper for every batch
    finally:
        ledger.close()
    assert helpers() == [] and not Path(f"/proc/{helper}").exists()  # ended and reaped
    assert verify_chain(tmp_path).ok


def test_blocks_held_already_are_no_ops(tmp_path: Path, chain: list[Block]) -> None:
    ledger = follower(tmp_path, chain)
    assert ledger.submit_blocks(chain[1:11]).result(WAIT_S) == 10
    assert ledger.submit_blocks(chain[0:21]).result(WAIT_S) == 20  # overlapping: 0..10 held
    assert ledger.append(chain[20]) == chain[20]  # and consensus bringing one again
    assert sizes(ledger) == list(range(1, 21))
    assert ledger.submit_blocks([chain[21], forged(chain[21])]).result(WAIT_S) == 21  # same hash: held
    other = dataclasses.replace(chain[21], header=dataclasses.replace(chain[21].header, time=1))
    with pytest.raises(ChainBroken):  # another block at a held height is refused
        ledger.submit_blocks([chain[21], other]).result(WAIT_S)
    assert ledger.height == 21 and ledger.block(21) == chain[21]
    ledger.close()
    assert verify_chain(tmp_path).ok


class FailingFiles(BlockFiles):
    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.fail_next = False

    def commit(self, staged: Sequence[tuple[int, str]]) -> None:
        if self.fail_next:
            self.fail_next = False
            # As the real one fails: the first renamed into place, then every file removed.
            super().commit(staged[:1])
            self.path(staged[0][0]).unlink()
            self.discard([tmp for _height, tmp in staged[1:]])
            raise StorageError("cannot write 20 file(s): No space left on device")
        super().commit(staged)


def test_a_failed_batch_write_stores_none_and_the_log_goes_on(
    tmp_path: Path, chain: list[Block], checker: str
) -> None:
    files = FailingFiles(tmp_path)
    ledger = follower(tmp_path, chain, files)
    assert ledger.submit_blocks(chain[1:6]).result(WAIT_S) == 5
    before = (ledger.height, ledger.size, ledger.checkpoint(), sizes(ledger))
    files.fail_next = True
    with pytest.raises(StorageError, match="No space left"):
        ledger.submit_blocks(chain[6:26]).result(WAIT_S)
    assert (ledger.height, ledger.size, ledger.checkpoint(), sizes(ledger)) == before
    assert files.heights() == list(range(6)) and not list(files.dir.glob(".*.part"))
    # A batch whose signatures fail from its third block: nothing staged for it is left.
    with pytest.raises(ChainBroken):
        ledger.submit_blocks([*chain[6:8], forged(chain[8]), *chain[9:30]]).result(WAIT_S)
    assert ledger.height == 7 and not list(files.dir.glob(".*.part"))
    assert ledger.submit_blocks(chain[8:]).result(WAIT_S) == BLOCKS
    assert not list(files.dir.glob(".*.part"))
    ledger.close()
    assert verify_chain(tmp_path).ok


def test_write_many_leaves_nothing_behind_when_it_fails(tmp_path: Path) -> None:
    files = BlockFiles(tmp_path)
    files.write_many([(0, b"zero"), (1, b"one")])
    assert [files.read(0), files.read(1)] == [b"zero", b"one"]
    in_the_way = files.path(3)
    in_the_way.mkdir()  # renaming block 3 into place fails, after block 2 was renamed
    with pytest.raises(StorageError):
        files.write_many([(2, b"two"), (3, b"three")])
    in_the_way.rmdir()
    assert files.heights() == [0, 1] and not list(files.dir.glob(".*.part"))


def test_pipelined_appends_show_readers_each_durable_block_as_it_is(tmp_path: Path) -> None:
    """While one block is written the next is already on the chain: the head readers see
    is always a durable block's own (its size, its authorities, its whole file on disk),
    never the chain's tip, and listeners are told no block the head has not reached."""
    ledger = Ledger.open(tmp_path, AUTHORITY)
    files = BlockFiles(tmp_path)
    seen: list[tuple[int, int, bool, bool]] = []

    def heard(block: Block) -> None:
        head = ledger.head  # one snapshot: height and size from the same head
        on_disk = Block.decode(files.read(head.tip.header.height)) == head.tip
        sized = head.size == head.tip.header.log_size
        seen.append((block.header.height, head.tip.header.height, sized, on_disk))

    ledger.on_commit(heard)
    errors: list[BaseException] = []

    def publish(worker: int) -> None:
        try:
            for i in range(8):
                ledger.publish([artifact(worker * 100 + i)])
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=publish, args=(w,)) for w in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and ledger.size == 1 + 16 * 8
    assert [h for h, *_ in seen] == list(range(1, ledger.height + 1))
    assert all(head >= h and sized and on_disk for h, head, sized, on_disk in seen), seen
    proof = ledger.proof(artifact(1507).digest)
    assert proof.tree_size == ledger.size
    ledger.close()
    assert verify_chain(tmp_path).ok
