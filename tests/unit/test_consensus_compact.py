"""Compact proposals: a block as its header and transaction ids, rebuilt from a mempool;
the assembly that holds a value until its missing transactions arrive; the hard-state
file of appended records."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey

from pyrsia.consensus import compact as c
from pyrsia.consensus import wire
from pyrsia.consensus.mempool import Mempool
from pyrsia.consensus.state_file import StateFile, last_record, record
from pyrsia.errors import MessageRejected, TxInvalid
from pyrsia.formats.peer_id import peer_id_of
from pyrsia.translog import codec
from pyrsia.translog.block import Block, BlockHeader, tx_root
from pyrsia.translog.tx import ADD_ARTIFACT, AddArtifact, Transaction, endorse, sign

KEYS = [SigningKey(bytes([n + 1]) * 32) for n in range(4)]
IDS = [peer_id_of(bytes(k.verify_key)) for k in KEYS]
FOUR = frozenset(IDS)
T0 = 1_700_000_000


def artifact(n: int) -> Transaction:
    payload = AddArtifact(
        package_type="maven",
        package_id=f"com.example:a{n}:1.0",
        path=f"com/example/a{n}/1.0/a{n}-1.0.jar",
        digest=f"sha256:{n:064x}",
        size=n,
        chunk_size=1 << 20,
        chunk_root=bytes(32),
        media_type="application/java-archive",
        source="http://upstream",
        author="Ada",
    )
    return sign(KEYS[n % 4], type=ADD_ARTIFACT, payload=payload, time=T0, nonce=n)


def endorsed(tx: Transaction, signers: list[int]) -> Transaction:
    return tx.with_endorsements(tuple(endorse(KEYS[i], tx.id) for i in sorted(signers, key=lambda i: IDS[i])))


def block_of(txs: list[Transaction]) -> Block:
    header = BlockHeader(
        height=3,
        prev_hash=bytes(32),
        tx_root=tx_root(txs),
        log_size=7,
        log_root=bytes(32),
        time=T0,
        proposer=IDS[0],
        authorities_hash=bytes(32),
    )
    return Block(header=header, transactions=tuple(txs), certificate=())


def pool_with(txs: list[Transaction]) -> Mempool:
    pool = Mempool()
    for tx in txs:
        pool.add(tx, 0.0)
    return pool


def lookup(pool: Mempool) -> c.Lookup:
    def find(tx_id: bytes) -> tuple[Transaction, dict[str, object]] | None:
        entry = pool.get(tx_id)
        return None if entry is None else (entry.tx, dict(entry.endorsements))

    return find  # type: ignore[return-value]


def test_a_compact_block_is_small_and_rebuilds_to_the_same_bytes() -> None:
    txs = [endorsed(artifact(n), [0, 1, 2] if n % 2 else [1, 2, 3, 0]) for n in range(50)]
    block = block_of(txs)
    value = c.compact(block, FOUR)
    encoded = value.encode()
    assert len(encoded) < len(block.encode()) / 8
    again = c.CompactBlock.decode(encoded)
    assert again == value
    # A peer holding the transactions with more endorsements than the block names.
    pool = pool_with([endorsed(artifact(n), [0, 1, 2, 3]) for n in range(50)])
    rebuilt = c.rebuild(again, FOUR, lookup(pool))
    assert isinstance(rebuilt, Block)
    assert rebuilt.encode() == block.encode()


def test_rebuild_names_exactly_the_missing_transactions_and_endorsements() -> None:
    txs = [endorsed(artifact(n), [0, 1, 2]) for n in range(6)]
    value = c.compact(block_of(txs), FOUR)
    held = [endorsed(artifact(n), [0, 1, 2]) for n in (0, 2, 4)] + [endorsed(artifact(5), [0, 1])]
    result = c.rebuild(value, FOUR, lookup(pool_with(held)))
    assert result == [txs[1].id, txs[3].id, txs[5].id]  # 5 lacks one endorsement the block names


@pytest.mark.parametrize(
    "doc",
    [
        {"header": {}, "txs": []},
        {"txs": []},
        "not a map",
        None,
    ],
)
def test_a_malformed_compact_block_is_refused(doc: object) -> None:
    with pytest.raises(MessageRejected):
        c.CompactBlock.decode(codec.encode(doc))


def test_compact_entries_are_bounded_and_typed() -> None:
    good = c.compact(block_of([endorsed(artifact(1), [0, 1, 2])]), FOUR)
    header = good.header.to_map()
    bad = ([b"short", b"\x01"], [bytes(32), bytes(14)], [bytes(32), 1], [bytes(32)], "x", [bytes(32), True])
    for entry in bad:
        with pytest.raises(MessageRejected):
            c.CompactBlock.decode(codec.encode({"header": header, "txs": [entry]}))
    beyond = c.CompactBlock(header=good.header, txs=((good.txs[0][0], 1 << 4),))
    with pytest.raises(MessageRejected):
        c.rebuild(beyond, FOUR, lambda tx_id: None)
    # A hundred authorities' bits survive the wire (msgpack integers stop at 64 bits).
    wide = c.CompactBlock(header=good.header, txs=((good.txs[0][0], (1 << 99) | 1),))
    assert c.CompactBlock.decode(wide.encode()) == wide


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=300))
def test_arbitrary_bytes_never_crash_the_compact_decoder(data: bytes) -> None:
    with contextlib.suppress(MessageRejected):
        c.CompactBlock.decode(data)


def test_fetch_messages_round_trip_and_are_bounded() -> None:
    ids = tuple(os.urandom(32) for _ in range(3))
    assert wire.decode(wire.encode(wire.FetchTxs(ids=ids))) == wire.FetchTxs(ids=ids)
    txs = (endorsed(artifact(1), [0, 1, 2]),)
    again = wire.decode(wire.encode(wire.Txs(txs=txs)))
    assert isinstance(again, wire.Txs) and again.txs[0].endorsements == txs[0].endorsements
    assert wire.check_size(wire.encode(wire.FetchTxs(ids=ids))) == "fetch_txs"
    with pytest.raises(MessageRejected):
        wire.decode(codec.encode({"type": "fetch_txs", "want": [b"short"]}))
    with pytest.raises(MessageRejected):
        wire.decode(codec.encode({"type": "fetch_txs", "want": [bytes(32)] * (wire.FETCH_IDS_MAX + 1)}))


# -- the assembly ------------------------------------------------------------------------


def test_a_held_message_is_asked_of_its_sender_then_of_others_with_backoff() -> None:
    assembly = c.Assembly()
    first = assembly.hold(b"v", "proposer", "msg", 3, [b"a", b"b"], now_s=0.0)
    assert first == c.Fetch(peer="proposer", ids=(b"a", b"b"))
    assert assembly.hold(b"v", "proposer", "msg", 3, [b"a", b"b"], now_s=0.1) is None  # once
    assert assembly.due(0.1, ["proposer", "x", "y"]) == []
    second = assembly.due(c.REFETCH_S, ["proposer", "x", "y"])
    assert [f.peer for f in second] == ["x"]
    assert assembly.due(c.REFETCH_S * 2, ["proposer", "x", "y"]) == []  # the wait doubled
    assert [f.peer for f in assembly.due(c.REFETCH_S * 3, ["proposer", "x", "y"])] == ["y"]
    assert [f.peer for f in assembly.due(100.0, ["proposer", "x", "y"])] == ["proposer"]
    assert assembly.wanted(b"a") and not assembly.wanted(b"z")
    assert assembly.arrived([b"a"]) == []
    assert assembly.arrived([b"b", b"z"]) == [("proposer", "msg")]
    assert len(assembly) == 0 and not assembly.wanted(b"a")


def test_the_assembly_is_bounded_and_forgets_passed_heights() -> None:
    assembly = c.Assembly(held_max=3)
    for h in range(5):
        assembly.hold(bytes([h]), "p", h, 10 + h, [bytes([h]) * 32], now_s=0.0)
    assert len(assembly) == 3 and assembly.dropped == 2
    # The nearest heights stay: a node needs those first.
    assert assembly.wanted(bytes([0]) * 32) and not assembly.wanted(bytes([4]) * 32)
    assembly.hold(b"lower", "p", "m", 9, [b"x" * 32], now_s=0.0)
    assert assembly.wanted(b"x" * 32) and not assembly.wanted(bytes([2]) * 32)
    assembly.forget_below(11)
    assert len(assembly) == 1
    many = [os.urandom(32) for _ in range(c.FETCH_IDS_MAX + 1)]
    assert assembly.hold(b"big", "p", "m", 20, many, 0.0) is None
    assert len(assembly) == 1


# -- the hard-state file -------------------------------------------------------------------


def test_the_last_whole_record_wins_and_a_torn_tail_is_cut(tmp_path: Path) -> None:
    path = tmp_path / "state.msgpack"
    f = StateFile(path)
    assert f.load() is None
    for n in range(5):
        f.write(b"state %d" % n)
    f.close()
    whole = path.read_bytes()
    path.write_bytes(whole + record(b"state 5")[:-3])  # a crash mid-append
    again = StateFile(path)
    assert again.load() == b"state 4"
    assert path.read_bytes() == whole  # cut back before anything is appended
    again.write(b"state 6")
    assert StateFile(path).load() == b"state 6"
    again.close()


def test_the_file_is_replaced_once_it_grows_and_old_files_still_load(tmp_path: Path) -> None:
    path = tmp_path / "state.msgpack"
    f = StateFile(path, compact_bytes=200)
    for n in range(20):
        f.write(b"x" * 50 + bytes([n]))
        assert len(path.read_bytes()) <= 200
        assert StateFile(path).load() == b"x" * 50 + bytes([n])
    f.close()
    legacy = codec.encode({"height": 1})
    path.write_bytes(legacy)
    assert StateFile(path).load() == legacy
    assert last_record(b"PHS1" + bytes(3)) == (None, 0)


def test_with_endorsements_keeps_the_signed_transaction_and_checks_the_endorsements() -> None:
    tx = artifact(1)
    endorsed_tx = tx.with_endorsements((endorse(KEYS[1], tx.id),))
    assert endorsed_tx.id == tx.id and endorsed_tx.encoded() == tx.encoded()
    assert endorsed_tx == Transaction.from_map(tx.to_map(), endorsed_tx.endorsements)
    with pytest.raises(TxInvalid):
        tx.with_endorsements((endorse(KEYS[1], artifact(2).id),))
    with pytest.raises(TxInvalid):
        tx.with_endorsements((endorse(KEYS[1], tx.id),) * 2)
