"""`pyrsia genesis` end to end: the real CLI writes the file, `Block.decode` reads it
back, and daemons started from it are authorities or regular nodes by their peer ids.
Every refusal is one line and a non-zero exit, and leaves no file behind."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from pyrsia.translog.block import AUTHORITIES_MAX, DEFAULT_REGISTRIES, Block, quorum
from pyrsia.translog.chain import Chain, origin_of
from pyrsia.translog.tx import ADD_AUTHORIZED_NODE, AuthorizedNode
from tests.support.cli import ok, one_line_error, run
from tests.support.node import NodeProcess


@pytest.fixture(autouse=True)
def isolated_client(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("xdg")))
    for name in ("PYRSIA_NODE", "PYRSIA_HOME", "PYRSIA_GENESIS", "PYRSIA_BOOTSTRAP"):
        monkeypatch.delenv(name, raising=False)


def peer_ids(tmp_path: Path, count: int) -> list[str]:
    """Peer ids of `count` fresh homes, as their daemons will have them (`pyrsia id`)."""
    return [ok(run("id", "--home", str(tmp_path / f"a{i}"))).strip() for i in range(count)]


def authorities(*peers: str) -> list[str]:
    return [arg for peer in peers for arg in ("--authority", peer)]


def test_genesis_names_the_authorities_origin_and_quorum(tmp_path: Path) -> None:
    peers = peer_ids(tmp_path, 4)
    target = tmp_path / "net" / "genesis.blk"
    result = run(
        "genesis", *authorities(*peers), "--origin", "example.org/pyrsia", "-o", str(target),
        "--home", str(tmp_path / "creator"),
    )  # fmt: skip
    out = ok(result)
    block = Block.decode(target.read_bytes())
    assert block.header.height == 0
    assert [tx.type for tx in block.transactions] == [ADD_AUTHORIZED_NODE] * 4
    named = [tx.payload.peer_id for tx in block.transactions if isinstance(tx.payload, AuthorizedNode)]
    assert named == peers
    creator = ok(run("id", "--home", str(tmp_path / "creator"))).strip()
    assert block.header.proposer == creator and creator not in peers
    chain = Chain()
    chain.apply(block)  # a valid genesis: signatures, certificate, authority set
    assert chain.authorities == set(peers) and chain.origin == "example.org/pyrsia"
    assert f"genesis      {block.header.hash.hex()}" in out.splitlines()
    assert "origin       example.org/pyrsia" in out.splitlines()
    assert "quorum       3 of 4 authorities" in out.splitlines()
    assert [line.split()[1] for line in out.splitlines() if line.startswith("authority ")] == peers
    assert f"wrote the genesis block to {target}" in result.stderr


def test_genesis_json_and_a_derived_origin(tmp_path: Path) -> None:
    peers = peer_ids(tmp_path, 1)
    target = tmp_path / "g.blk"
    doc = json.loads(
        ok(run("genesis", "-a", peers[0], "-o", str(target), "--home", str(tmp_path / "c"), "--json"))
    )
    header = Block.decode(target.read_bytes()).header
    assert doc == {
        "file": str(target), "genesis": header.hash.hex(), "origin": origin_of(header),
        "creator": header.proposer, "authorities": peers, "quorum": quorum(1),
        "registries": list(DEFAULT_REGISTRIES),
    }  # fmt: skip
    assert header.registries == ()  # the built-in list is what a genesis without one means
    assert doc["origin"] == f"pyrsia.log/{header.hash.hex()[:16]}"


def test_an_existing_file_is_replaced_only_with_force(tmp_path: Path) -> None:
    peers = peer_ids(tmp_path, 2)
    target = tmp_path / "g.blk"
    target.write_bytes(b"keep me")
    args = ["genesis", *authorities(*peers), "-o", str(target), "--home", str(tmp_path / "c")]
    one_line_error(run(*args), 2, str(target), "exists", "--force")
    assert target.read_bytes() == b"keep me"
    ok(run(*args, "--force"))
    assert Block.decode(target.read_bytes()).header.height == 0


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        ([], "name at least one authority"),
        (["--authority", "12D3KooWnope"], "'12D3KooWnope' is not a peer id"),
        (["--authority", "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N"], "is not a peer id"),
        (["--origin", "two\nlines"], "--origin must be 1 to 200 printable ASCII characters"),
        (["--origin", ""], "--origin must be"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    tmp_path: Path, flags: list[str], needle: str
) -> None:
    good = peer_ids(tmp_path, 1) if "--origin" in flags else []
    target = tmp_path / "g.blk"
    result = run("genesis", *authorities(*good), *flags, "-o", str(target), "--home", str(tmp_path / "c"))
    one_line_error(result, 2, needle)
    assert not target.exists()


def test_a_duplicate_authority_is_refused(tmp_path: Path) -> None:
    peers = peer_ids(tmp_path, 2)
    target = tmp_path / "g.blk"
    result = run("genesis", *authorities(peers[0], peers[1], peers[0]), "-o", str(target))
    one_line_error(result, 2, f"--authority {peers[0]} is given more than once")
    assert not target.exists()


def test_more_than_the_maximum_of_authorities_is_refused(tmp_path: Path) -> None:
    from nacl.signing import SigningKey

    from pyrsia.formats.peer_id import peer_id_of

    peers = [
        peer_id_of(bytes(SigningKey(i.to_bytes(32, "big")).verify_key)) for i in range(AUTHORITIES_MAX + 1)
    ]
    target = tmp_path / "g.blk"
    result = run("genesis", *authorities(*peers), "-o", str(target), "--home", str(tmp_path / "c"))
    one_line_error(result, 2, f"{AUTHORITIES_MAX + 1} authorities given", f"at most {AUTHORITIES_MAX}")
    assert not target.exists()


def test_an_unwritable_file_is_one_line(tmp_path: Path) -> None:
    peers = peer_ids(tmp_path, 1)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = run("genesis", "-a", peers[0], "-o", str(blocker / "g.blk"), "--home", str(tmp_path / "c"))
    one_line_error(result, 1, "cannot write", "is not a directory")
    # /proc takes no new files, not even from root.
    proc = run("genesis", "-a", peers[0], "-o", "/proc/pyrsia-genesis.blk", "--home", str(tmp_path / "c"))
    one_line_error(proc, 1, "cannot write /proc/pyrsia-genesis.blk")


def test_daemons_from_the_file_are_authorities_by_peer_id(tmp_path: Path) -> None:
    members = peer_ids(tmp_path, 2)  # homes a0 and a1
    outsider = tmp_path / "regular"
    target = tmp_path / "genesis.blk"
    ok(run("genesis", *authorities(*members), "-o", str(target), "--home", str(tmp_path / "c")))
    genesis_hash = Block.decode(target.read_bytes()).header.hash.hex()
    with (
        NodeProcess(tmp_path / "a0", "--genesis", str(target)) as authority,
        NodeProcess(outsider, "--genesis", str(target)) as regular,
    ):
        for node, expected in ((authority, True), (regular, False)):
            p2p = httpx.get(f"{node.url}/api/v1/status", timeout=10).json()["p2p"]
            assert p2p["authority"] is expected
            assert p2p["genesis"] == genesis_hash
