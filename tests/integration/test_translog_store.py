"""The ledger on real files: append and reopen, torn writes, damage named by height,
the SQLite index rebuilt or caught up, search filters, proofs, concurrent publishers."""

from __future__ import annotations

import dataclasses
import shutil
import threading
from pathlib import Path

import pytest
from nacl.signing import SigningKey

from pyrsia.errors import ChainBroken, EntryUnknown, StorageError, TxInvalid
from pyrsia.translog import checkpoint, merkle
from pyrsia.translog.block import Block
from pyrsia.translog.index import Query
from pyrsia.translog.ledger import INDEX_FILE, Ledger, verify_chain
from pyrsia.translog.store import FORMAT_FILE, MAGIC, BlockFiles, frame
from pyrsia.translog.tx import AddArtifact

KEY = SigningKey(bytes(range(32)))
T0 = 1_700_000_000


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        self.now += 10
        return self.now


def artifact(
    n: int,
    *,
    package_id: str | None = None,
    path: str | None = None,
    author: str = "Ada Lovelace",
    deps: tuple[str, ...] = (),
    package_type: str = "docker",
) -> AddArtifact:
    return AddArtifact(
        package_type=package_type,
        package_id=package_id or f"library/app:{n}",
        path=path or f"/v2/library/app/blobs/sha256:{n:064x}",
        digest=f"sha256:{n:064x}",
        size=n,
        chunk_size=1_048_576,
        chunk_root=bytes(32),
        media_type="application/octet-stream",
        source="https://registry-1.docker.io",
        author=author,
        dependencies=deps,
    )


def opened(root: Path) -> Ledger:
    return Ledger.open(root, KEY, clock=Clock())


def chain_of(root: Path, blocks: int) -> Ledger:
    ledger = opened(root)
    for n in range(1, blocks + 1):
        ledger.publish([artifact(n)])
    return ledger


def everything(ledger: Ledger) -> list[object]:
    return [r.to_json() for r in ledger.search(Query(limit=10_000))]


def test_append_and_reopen(tmp_path: Path) -> None:
    ledger = opened(tmp_path)
    assert (ledger.height, ledger.size) == (0, 1)  # genesis: the node authorizes itself
    first = ledger.publish([artifact(1), artifact(2)])
    second = ledger.publish([artifact(3)])
    assert (first.header.height, second.header.height) == (1, 2)
    assert second.header.prev_hash == first.header.hash and second.header.log_size == 4
    note, origin = ledger.checkpoint(), ledger.origin
    ledger.close()
    names = sorted(p.name for p in (tmp_path / "blocks").iterdir())
    assert names == ["000000000000.blk", "000000000001.blk", "000000000002.blk"]
    assert all(p.read_bytes().startswith(MAGIC) for p in (tmp_path / "blocks").iterdir())

    again = opened(tmp_path)
    assert (again.height, again.size, again.origin) == (2, 4, origin)
    assert again.block(2) == second and again.checkpoint() == note
    assert origin == f"pyrsia.log/{again.block(0).header.hash.hex()[:16]}"
    third = again.publish([artifact(4)])
    assert third.header.prev_hash == second.header.hash
    assert again.verify().ok and verify_chain(tmp_path).blocks == 4
    with pytest.raises(EntryUnknown):
        again.block(4)
    with pytest.raises(TxInvalid):
        again.publish([])


def test_leftover_temp_files_of_a_crashed_write_are_removed(tmp_path: Path) -> None:
    chain_of(tmp_path, 1).close()
    leftover = tmp_path / "blocks" / ".000000000002.blk.part"
    leftover.write_bytes(b"half a block")
    assert opened(tmp_path).height == 1 and not leftover.exists()


@pytest.mark.parametrize("keep", ["nothing", "magic part", "header", "header+1", "all but one"])
def test_torn_last_file_is_dropped_and_the_height_reused(tmp_path: Path, keep: str) -> None:
    chain_of(tmp_path, 2).close()
    last = tmp_path / "blocks" / "000000000002.blk"
    data = last.read_bytes()
    header = len(MAGIC) + 44
    cut = {
        "nothing": 0,
        "magic part": 5,
        "header": header,
        "header+1": header + 1,
        "all but one": len(data) - 1,
    }
    last.write_bytes(data[: cut[keep]])
    before = verify_chain(tmp_path)  # as a kill -9 mid-write leaves it: it never committed
    assert before.ok and before.blocks == 2
    ledger = opened(tmp_path)
    assert (ledger.height, ledger.size) == (1, 2) and not last.exists()
    assert [r.size for r in ledger.search(Query())] == [1]  # the index forgot the dropped block too
    ledger.publish([artifact(9)])
    assert ledger.height == 2 and verify_chain(tmp_path).ok


def test_a_block_is_written_in_place_and_replaces_a_torn_leftover_at_its_height(tmp_path: Path) -> None:
    chain_of(tmp_path, 1).close()
    files = BlockFiles(tmp_path)
    leftover = files.path(2)
    leftover.write_bytes(MAGIC[:5])  # a write of height 2 that failed midway
    block = Block.decode(files.read(1))
    files.append(2, block.encode())
    assert files.read(2) == block.encode() and files.heights() == [0, 1, 2]
    assert not list(files.dir.glob(".*.part"))  # no temp file: written under its own name


def test_a_failed_block_write_is_refused_with_one_line(tmp_path: Path) -> None:
    ledger = chain_of(tmp_path, 1)
    ledger.close()
    files = BlockFiles(tmp_path)
    shutil.rmtree(files.dir)
    files.dir.write_bytes(b"not a directory")
    with pytest.raises(StorageError, match="cannot write block 2"):
        files.append(2, b"payload")
    assert files.dir.read_bytes() == b"not a directory"


def test_a_torn_file_that_is_not_the_last_is_damage(tmp_path: Path) -> None:
    chain_of(tmp_path, 3).close()
    middle = tmp_path / "blocks" / "000000000002.blk"
    middle.write_bytes(middle.read_bytes()[:-7])
    with pytest.raises(ChainBroken) as broken:
        opened(tmp_path)
    assert broken.value.height == 2 and middle.exists()


def _flip(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("at", "reason"),
    [
        (0, "header is damaged"),  # magic
        (len(MAGIC) + 3, "header is damaged"),  # length (its CRC catches it)
        (len(MAGIC) + 20, "checksum does not match"),  # the payload digest
        (-1, "checksum does not match"),  # the payload
    ],
)
def test_a_flipped_byte_in_a_middle_block_names_that_height(tmp_path: Path, at: int, reason: str) -> None:
    chain_of(tmp_path, 4).close()
    _flip(tmp_path / "blocks" / "000000000002.blk", at)
    with pytest.raises(ChainBroken) as broken:
        opened(tmp_path)
    assert broken.value.height == 2 and reason in broken.value.reason
    assert str(broken.value).startswith("transparency log is broken at height 2: ")
    report = verify_chain(tmp_path)
    assert (report.ok, report.bad_height, report.blocks) == (False, 2, 2) and reason in report.reason


def test_a_missing_middle_file_is_named(tmp_path: Path) -> None:
    chain_of(tmp_path, 3).close()
    (tmp_path / "blocks" / "000000000001.blk").unlink()
    with pytest.raises(ChainBroken) as broken:
        opened(tmp_path)
    assert broken.value.height == 1


def test_a_rewritten_block_with_a_valid_frame_is_caught_by_the_chain(tmp_path: Path) -> None:
    chain_of(tmp_path, 3).close()
    files = BlockFiles(tmp_path)
    original = Block.decode(files.read(2))
    tx = original.transactions[0]
    assert isinstance(tx.payload, AddArtifact)
    evil = AddArtifact(**{**tx.payload.to_map(), "digest": "sha256:" + "e" * 64, "dependencies": ()})
    forged = Block(
        header=original.header,
        transactions=(dataclasses.replace(tx, payload=evil, endorsements=()),),
        certificate=original.certificate,
    )
    (tmp_path / "blocks" / "000000000002.blk").write_bytes(frame(forged.encode()))  # checksum is fine
    report = verify_chain(tmp_path)
    assert report.bad_height == 2 and "not signed by its submitter" in report.reason
    with pytest.raises(ChainBroken) as broken:
        opened(tmp_path)
    assert broken.value.height == 2


def test_a_block_from_another_chain_is_named(tmp_path: Path) -> None:
    chain_of(tmp_path / "a", 2).close()
    other = Ledger.open(tmp_path / "b", SigningKey.generate(), clock=Clock())
    other.publish([artifact(1)])
    other.publish([artifact(2)])
    other.close()
    shutil.copy(
        tmp_path / "b" / "blocks" / "000000000002.blk", tmp_path / "a" / "blocks" / "000000000002.blk"
    )
    with pytest.raises(ChainBroken) as broken:
        opened(tmp_path / "a")
    assert broken.value.height == 2 and "previous block hash" in broken.value.reason


# -- the index ----------------------------------------------------------------------


def _index_files(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in root.glob(INDEX_FILE + "*")}


def _put_index(root: Path, files: dict[str, bytes]) -> None:
    for p in root.glob(INDEX_FILE + "*"):
        p.unlink()
    for name, data in files.items():
        (root / name).write_bytes(data)


@pytest.mark.parametrize("state", ["deleted", "garbage", "empty file", "behind", "ahead", "foreign"])
def test_the_index_is_rebuilt_or_caught_up_and_equals_the_blocks(tmp_path: Path, state: str) -> None:
    ledger = chain_of(tmp_path, 2)
    ledger.close()
    early = _index_files(tmp_path)
    ledger = opened(tmp_path)
    ledger.publish([artifact(3, deps=("library/base:1",))])
    ledger.publish([artifact(4), artifact(5)])
    ledger.close()
    late = _index_files(tmp_path)
    foreign = tmp_path / "foreign"
    other = Ledger.open(foreign, SigningKey.generate(), clock=Clock())  # same heights, other blocks
    for n in range(1, 5):
        other.publish([artifact(n)])
    other.close()
    if state == "ahead":  # the chain lost its last block; the index still has it
        (tmp_path / "blocks" / "000000000004.blk").unlink()

    expected_root = tmp_path / "expected"
    shutil.copytree(tmp_path / "blocks", expected_root / "blocks")
    shutil.copy(tmp_path / FORMAT_FILE, expected_root / FORMAT_FILE)
    expected = everything(opened(expected_root))  # built from nothing but the blocks

    match state:
        case "deleted":
            _put_index(tmp_path, {})
        case "garbage":
            _put_index(tmp_path, {INDEX_FILE: b"not a database at all " * 200})
        case "empty file":
            _put_index(tmp_path, {INDEX_FILE: b""})
        case "behind":
            _put_index(tmp_path, early)
        case "ahead":
            _put_index(tmp_path, late)
        case "foreign":
            _put_index(tmp_path, _index_files(foreign))
    ledger = opened(tmp_path)
    assert everything(ledger) == expected
    assert len(expected) == (3 if state == "ahead" else 5)
    tip = ledger._index.tip()
    assert tip is not None and tip.height == ledger.height
    assert tip.hash == ledger.block(ledger.height).header.hash
    assert (tip.artifacts, tip.dependencies) == (len(expected), 1) == (ledger._index.counts()[0], 1)
    assert [r.size for r in ledger.search(Query(depends_on="library/base:1"))] == [3]


def test_search_filters(tmp_path: Path) -> None:
    ledger = opened(tmp_path)
    ledger.publish(
        [
            artifact(
                1, package_id="library/alpine:3.18", author="Natanael Copa", deps=("library/busybox:1.36",)
            ),
            artifact(2, package_id="library/alpine@sha256:" + "2" * 64, author="Natanael Copa"),
            artifact(3, package_id="library/alpine-extra:1", author="Someone Else"),
            artifact(4, package_id="library/alpinex:1", author="Nat King"),
        ]
    )
    ledger.publish(
        [
            artifact(5, package_id="com.example:hello:1.0", package_type="maven", author="Example Corp",
                     deps=("com.example:base:2.0", "library/busybox:1.36"),
                     path="/maven2/com/example/hello/1.0/hello-1.0.jar"),
            artifact(6, package_id="library/alpine:3.19", author="Natanael Copa"),
        ]
    )  # fmt: skip

    def sizes(**query: object) -> list[int]:
        return [r.size for r in ledger.search(Query(**query))]  # type: ignore[arg-type]

    assert sizes() == [6, 5, 4, 3, 2, 1]  # newest first
    assert sizes(package="library/alpine") == [6, 2, 1]  # name before ':' or '@', not a bare prefix
    assert sizes(package="library/alpine:3.18") == [1]
    assert sizes(package="library/alp") == []
    assert sizes(package="com.example:hello:1.0") == [5]
    assert sizes(author="Nat") == [6, 4, 2, 1]  # authors match by prefix
    assert sizes(author="Natanael Copa", limit=2) == [6, 2]
    assert sizes(depends_on="library/busybox:1.36") == [5, 1]
    assert sizes(depends_on="library/busybox") == []
    assert sizes(digest=f"sha256:{5:064x}") == [5]
    assert sizes(package_type="maven") == [5]
    assert sizes(package_type="docker", depends_on="library/busybox:1.36") == [1]
    block_two_time = ledger.block(2).transactions[0].time
    assert sizes(since=block_two_time) == [6, 5]
    assert sizes(since=block_two_time + 1) == []
    assert sizes(author="Natanael", since=block_two_time) == [6]
    record = ledger.search(Query(package="com.example:hello:1.0"))[0]
    assert record.dependencies == ("com.example:base:2.0", "library/busybox:1.36")
    assert (record.height, record.leaf, record.package_type) == (2, 5, "maven")
    assert record.tx_id == ledger.block(2).transactions[0].id.hex()


def test_lookups_by_path_and_digest(tmp_path: Path) -> None:
    ledger = opened(tmp_path)
    tag = "/v2/library/alpine/manifests/3.18"
    ledger.publish([artifact(1, package_id="library/alpine:3.18", path=tag)])
    ledger.publish([artifact(2, package_id="library/alpine:3.18", path=tag)])  # the tag moved
    ledger.publish([artifact(2, package_id="library/alpine@sha256:" + "2" * 64, path="/v2/x/manifests/y")])
    found = ledger.latest("docker", tag)
    assert found is not None and (found.size, found.height) == (2, 2)
    assert ledger.latest("maven", tag) is None and ledger.latest("docker", "/v2/none") is None
    assert [r.height for r in ledger.by_digest(f"sha256:{2:064x}")] == [3, 2]
    assert ledger.has_digest("docker", f"sha256:{1:064x}") and not ledger.has_digest(
        "maven", f"sha256:{1:064x}"
    )
    assert ledger.by_digest("sha256:" + "f" * 64) == []


def test_proofs_verify_against_the_checkpoint_and_every_earlier_head(tmp_path: Path) -> None:
    ledger = chain_of(tmp_path, 6)
    trusted = set(ledger.authorities)
    for n in (1, 3, 6):
        proof = ledger.proof(f"sha256:{n:064x}")
        head = checkpoint.verify(proof.checkpoint, trusted)
        assert (head.size, proof.tree_size, head.origin) == (7, 7, ledger.origin)
        assert proof.leaf_hash == merkle.leaf_hash(bytes.fromhex(proof.record.tx_id))
        merkle.verify_inclusion(proof.leaf_hash, proof.leaf_index, head.size, proof.hashes, head.root)
    for height in range(ledger.height):
        old = ledger.block(height).header
        hashes, note = ledger.consistency(old.log_size)
        head = checkpoint.verify(note, trusted)
        merkle.verify_consistency(old.log_size, head.size, old.log_root, head.root, hashes)
    with pytest.raises(EntryUnknown):
        ledger.proof("sha256:" + "f" * 64)


def test_concurrent_publishers_each_get_the_block_holding_their_transactions(tmp_path: Path) -> None:
    ledger = opened(tmp_path)
    errors: list[BaseException] = []
    got: dict[int, Block] = {}

    def publish(worker: int) -> None:
        try:
            for i in range(10):
                n = worker * 100 + i
                got[n] = ledger.publish([artifact(n)])
        except BaseException as exc:  # reported below; a thread must not swallow it
            errors.append(exc)

    threads = [threading.Thread(target=publish, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert ledger.size == 41 and 1 <= ledger.height <= 40
    for n, block in got.items():
        assert artifact(n) in [tx.payload for tx in block.transactions]
        assert ledger.block(block.header.height) == block
    assert len(ledger.search(Query(limit=1000))) == 40
    ledger.close()
    assert verify_chain(tmp_path).ok and opened(tmp_path).size == 41
