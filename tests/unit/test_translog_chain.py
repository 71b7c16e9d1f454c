"""Transactions, blocks, checkpoints, block files and the index, on real files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from nacl.signing import SigningKey

from pyrsia.errors import ChainBroken, ProofInvalid, TxInvalid
from pyrsia.formats.peer_id import peer_id_of
from pyrsia.translog import checkpoint, codec, merkle
from pyrsia.translog.index import Query
from pyrsia.translog.ledger import INDEX_FILE, Ledger, verify_chain
from pyrsia.translog.merkle import Tree
from pyrsia.translog.tx import ADD_ARTIFACT, AddArtifact, Transaction, check, sign


def artifact(i: int, *, author: str = "Ada <ada@example.com>", deps: tuple[str, ...] = ()) -> AddArtifact:
    return AddArtifact(
        package_type="maven" if i % 2 else "docker",
        package_id=f"com.example:lib:{i}" if i % 2 else f"library/app:{i}",
        path=f"/p/{i}",
        digest=f"sha256:{i:064x}",
        size=i,
        chunk_size=1_048_576,
        chunk_root=bytes(32),
        media_type="application/octet-stream",
        source="https://upstream.example",
        author=author,
        dependencies=deps,
    )


def test_canonical_encoding_is_order_independent_and_refuses_floats() -> None:
    assert codec.encode({"b": 1, "a": [1, 2]}) == codec.encode({"a": [1, 2], "b": 1})
    with pytest.raises(TxInvalid):
        codec.encode({"x": 1.5})
    with pytest.raises(TxInvalid):
        codec.decode(b"\xc1garbage")


def test_signed_transaction_round_trips_and_forgeries_fail() -> None:
    key = SigningKey.generate()
    tx = sign(key, type=ADD_ARTIFACT, payload=artifact(1), time=1_700_000_000, nonce=7)
    again = Transaction.from_map(codec.decode(codec.encode(tx.to_map())))
    assert again == tx and again.id == tx.id
    check(again)
    forged = Transaction.from_map({**tx.to_map(), "nonce": 8})  # same signature, other content
    with pytest.raises(TxInvalid):
        check(forged)
    impostor = Transaction.from_map(
        {**tx.to_map(), "submitter": peer_id_of(bytes(SigningKey.generate().verify_key))}
    )
    with pytest.raises(TxInvalid):
        check(impostor)


def test_checkpoint_note_verifies_only_for_trusted_signers() -> None:
    key = SigningKey.generate()
    me = peer_id_of(bytes(key.verify_key))
    point = checkpoint.Checkpoint(origin="pyrsia.log/test", size=3, root=bytes(range(32)))
    note = checkpoint.note(point, [(me, checkpoint.sign_body(key, point))])
    assert note.splitlines()[:3] == ["pyrsia.log/test", "3", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="]
    assert checkpoint.verify(note, {me}) == point
    with pytest.raises(ProofInvalid):
        checkpoint.verify(note, {peer_id_of(bytes(SigningKey.generate().verify_key))})
    with pytest.raises(ProofInvalid):
        checkpoint.verify(note.replace("\n3\n", "\n4\n"), {me})


def test_publish_reopen_search_and_prove(tmp_path: Path) -> None:
    key = SigningKey.generate()
    ledger = Ledger.open(tmp_path, key, clock=lambda: 1_700_000_000)
    ledger.publish([artifact(1, deps=("com.example:base:1",)), artifact(2)])
    ledger.publish([artifact(3, author="Bob")])
    assert (ledger.height, ledger.size) == (2, 4)  # genesis holds the authority transaction
    ledger.close()

    reopened = Ledger.open(tmp_path, key)
    assert (reopened.height, reopened.size) == (2, 4)
    ids = [tx.id for h in range(3) for tx in reopened.block(h).transactions]
    assert [r.digest for r in reopened.search(Query(package="com.example:lib"))] == [
        artifact(3).digest,
        artifact(1).digest,
    ]
    assert [r.package_id for r in reopened.search(Query(package="library/app"))] == ["library/app:2"]
    assert [r.size for r in reopened.search(Query(author="Ada"))] == [2, 1]
    assert [r.size for r in reopened.search(Query(depends_on="com.example:base:1"))] == [1]
    assert [r.size for r in reopened.search(Query(package_type="maven", limit=1))] == [3]
    proof = reopened.proof(artifact(1).digest)
    head = checkpoint.verify(proof.checkpoint, set(reopened.authorities))
    merkle.verify_inclusion(proof.leaf_hash, proof.leaf_index, head.size, proof.hashes, head.root)
    assert verify_chain(tmp_path).ok
    hashes, note = reopened.consistency(2)
    merkle.verify_consistency(2, head.size, Tree(ids[:2]).root(), head.root, hashes)
    assert checkpoint.verify(note, set(reopened.authorities)) == head


def test_index_is_rebuilt_when_missing_or_corrupt(tmp_path: Path) -> None:
    key = SigningKey.generate()
    ledger = Ledger.open(tmp_path, key)
    for i in range(1, 6):
        ledger.publish([artifact(i)])
    expected = ledger.search(Query(limit=100))
    ledger.close()
    (tmp_path / INDEX_FILE).unlink()
    assert Ledger.open(tmp_path, key).search(Query(limit=100)) == expected
    (tmp_path / INDEX_FILE).write_bytes(b"this is not a database" * 100)
    for suffix in ("-wal", "-shm"):
        Path(f"{tmp_path / INDEX_FILE}{suffix}").unlink(missing_ok=True)
    assert Ledger.open(tmp_path, key).search(Query(limit=100)) == expected


def test_index_behind_the_blocks_catches_up(tmp_path: Path) -> None:
    key = SigningKey.generate()
    ledger = Ledger.open(tmp_path, key)
    ledger.publish([artifact(1)])
    ledger.close()
    stale = {p.name: p.read_bytes() for p in tmp_path.glob(INDEX_FILE + "*")}
    ledger = Ledger.open(tmp_path, key)
    ledger.publish([artifact(2)])
    ledger.publish([artifact(3)])
    expected = ledger.search(Query(limit=100))
    ledger.close()
    for p in tmp_path.glob(INDEX_FILE + "*"):
        p.unlink()
    for name, data in stale.items():  # the index as it was two blocks ago
        (tmp_path / name).write_bytes(data)
    assert Ledger.open(tmp_path, key).search(Query(limit=100)) == expected


def test_torn_last_block_is_dropped_but_damage_is_named(tmp_path: Path) -> None:
    key = SigningKey.generate()
    ledger = Ledger.open(tmp_path, key)
    ledger.publish([artifact(1)])
    ledger.publish([artifact(2)])
    ledger.close()
    blocks = tmp_path / "blocks"
    last = blocks / "000000000002.blk"
    data = last.read_bytes()
    last.write_bytes(data[: len(data) - 10])  # a write that never completed
    assert Ledger.open(tmp_path, key).height == 1 and not last.exists()

    middle = bytearray((blocks / "000000000001.blk").read_bytes())
    middle[-20] ^= 0x40
    (blocks / "000000000001.blk").write_bytes(bytes(middle))
    with pytest.raises(ChainBroken) as broken:
        Ledger.open(tmp_path, key)
    assert broken.value.height == 1
    report = verify_chain(tmp_path)
    assert not report.ok and report.bad_height == 1


def test_a_block_signed_by_a_stranger_breaks_the_chain(tmp_path: Path) -> None:
    key = SigningKey.generate()
    Ledger.open(tmp_path, key).close()
    stranger = Ledger.open(tmp_path / "other", SigningKey.generate())
    stranger.publish([artifact(1)])
    os.replace(tmp_path / "other" / "blocks" / "000000000001.blk", tmp_path / "blocks" / "000000000001.blk")
    report = verify_chain(tmp_path)
    assert report.bad_height == 1 and "previous block hash" in report.reason
