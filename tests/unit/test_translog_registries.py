"""The agreed Docker registries as the chain core keeps them: AddRegistry/RemoveRegistry
applied in log order, in force from the next height, the list at a height a pure
function of the log; Docker records checked against the list in force at their height.
Real Ed25519 keys, blocks made and applied in memory."""

from __future__ import annotations

import json
import random
from pathlib import Path

import httpx
import pytest

from pyrsia.cli import registries as registries_cli
from pyrsia.consensus.mempool import key_of
from pyrsia.errors import StorageError, TxInvalid, UsageError
from pyrsia.node.approvals import Approvals
from pyrsia.registry.api import registry_change_from
from pyrsia.translog import codec
from pyrsia.translog.block import REGISTRIES_MAX, Block
from pyrsia.translog.chain import Chain, genesis_block
from pyrsia.translog.tx import (
    ADD_ARTIFACT,
    ADD_REGISTRY,
    REMOVE_REGISTRY,
    AddArtifact,
    Registry,
    Transaction,
    sign,
)
from pyrsia.upstream.http import DENIAL_BYTES_MAX, _denial_reason
from tests.unit.test_translog_chain_core import T0, broken, key, made, me


def change(kind: str, host: str, nonce: int = 0, submitter: int = 0) -> Transaction:
    return sign(key(submitter), type=kind, payload=Registry(host=host), time=T0, nonce=nonce)


def docker_record(registry: str, n: int) -> Transaction:
    prefix = "" if registry == "docker.io" else f"{registry}/"
    payload = AddArtifact(
        package_type="docker",
        package_id=f"{prefix}org/app:{n}",
        path=f"/v2/{prefix}org/app/manifests/{n}",
        digest=f"sha256:{n:064x}",
        size=n,
        chunk_size=1 << 20,
        chunk_root=bytes(32),
        media_type="application/vnd.oci.image.manifest.v1+json",
        source=f"https://{registry}",
        author="",
        registry="" if registry == "docker.io" else registry,
    )
    return sign(key(0), type=ADD_ARTIFACT, payload=payload, time=T0, nonce=10_000 + n)


def started(*registries: str) -> tuple[Chain, list[Block]]:
    genesis = genesis_block(key(0), T0, registries=registries)
    chain = Chain()
    chain.apply(genesis)
    return chain, [genesis]


def commit(chain: Chain, blocks: list[Block], txs: list[Transaction]) -> None:
    block = made(chain, txs, [key(0)])
    chain.apply(block)
    blocks.append(block)


def replayed(blocks: list[Block]) -> Chain:
    """A fresh chain fed the same blocks, through bytes."""
    chain = Chain()
    for block in blocks:
        chain.apply(Block.decode(block.encode()))
    return chain


def test_an_added_registry_is_in_force_from_the_next_height_with_its_height() -> None:
    chain, blocks = started("docker.io")
    assert chain.registries_since == (("docker.io", 0),)
    before = chain.registries_since
    # A record of ghcr.io in the very block that adds it is refused: the list changes after it.
    same_block = made(chain, [change(ADD_REGISTRY, "ghcr.io"), docker_record("ghcr.io", 1)], [key(0)])
    broken(chain, same_block, "names registry ghcr.io")
    assert chain.registries_since == before
    commit(chain, blocks, [change(ADD_REGISTRY, "ghcr.io")])
    assert chain.registries == ("docker.io", "ghcr.io")
    assert chain.registries_since == (("docker.io", 0), ("ghcr.io", 1))
    commit(chain, blocks, [docker_record("ghcr.io", 1), docker_record("docker.io", 2)])
    assert chain.height == 2
    assert replayed(blocks).registries_since == chain.registries_since


def test_records_of_a_removed_registry_stay_valid_and_new_ones_are_refused() -> None:
    chain, blocks = started("docker.io", "ghcr.io")
    commit(chain, blocks, [docker_record("ghcr.io", 1)])
    commit(chain, blocks, [change(REMOVE_REGISTRY, "ghcr.io")])
    assert chain.registries == ("docker.io",)
    broken(chain, made(chain, [docker_record("ghcr.io", 2)], [key(0)]), "does not vouch for")
    commit(chain, blocks, [docker_record("docker.io", 3)])
    # The whole log, the old ghcr.io record in it, still replays: the chain never looks back.
    again = replayed(blocks)
    assert again.registries_since == (("docker.io", 0),) and again.height == chain.height
    # Added back, it has the height of its return.
    commit(chain, blocks, [change(ADD_REGISTRY, "ghcr.io", 1)])
    assert chain.registries_since == (("docker.io", 0), ("ghcr.io", chain.height))


def test_maven_records_are_not_docker_registries() -> None:
    chain, blocks = started("docker.io")
    maven = AddArtifact(
        package_type="maven", package_id="com.example:hello:1.0", path="/maven2/com/example/hello/1.0/x.jar",
        digest=f"sha256:{1:064x}", size=1, chunk_size=1 << 20, chunk_root=bytes(32), media_type="",
        source="https://repo.example", author="", registry="company",
    )  # fmt: skip
    commit(chain, blocks, [sign(key(0), type=ADD_ARTIFACT, payload=maven, time=T0, nonce=1)])
    assert chain.height == 1


@pytest.mark.parametrize(
    ("txs", "reason"),
    [
        ([change(REMOVE_REGISTRY, "docker.io")], "docker.io cannot be removed"),
        ([change(REMOVE_REGISTRY, "registry.k8s.io")], "is not agreed"),
        ([change(ADD_REGISTRY, "quay.io")], "quay.io is agreed already"),
        ([change(ADD_REGISTRY, "gcr.io"), change(ADD_REGISTRY, "gcr.io", 1)], "gcr.io is agreed already"),
        ([change(REMOVE_REGISTRY, "quay.io"), change(REMOVE_REGISTRY, "quay.io", 1)], "is not agreed"),
    ],
)
def test_changes_the_chain_refuses(txs: list[Transaction], reason: str) -> None:
    chain, _ = started("docker.io", "quay.io")
    broken(chain, made(chain, txs, [key(0)]), reason)


def test_only_an_authority_changes_the_list_and_the_last_one_stays() -> None:
    chain, _ = started("docker.io")
    stranger = change(ADD_REGISTRY, "ghcr.io", submitter=5)
    broken(chain, made(chain, [stranger], [key(0)]), f"submitted by {me(key(5))}, not an authority")
    lone, _ = started("ghcr.io")  # a genesis may leave Docker Hub out
    broken(lone, made(lone, [change(REMOVE_REGISTRY, "ghcr.io")], [key(0)]), "remove every registry")


def test_the_list_has_a_limit() -> None:
    hosts = [f"r{n}.example" for n in range(REGISTRIES_MAX)]
    chain, _ = started(*hosts)
    broken(chain, made(chain, [change(ADD_REGISTRY, "one-more.example")], [key(0)]), "more than")


def test_a_proposal_check_leaves_the_list_as_it_was() -> None:
    chain, _ = started("docker.io")
    block = made(chain, [change(ADD_REGISTRY, "ghcr.io")], [key(0)])
    chain.check_proposal(block)
    assert chain.registries_since == (("docker.io", 0),) and chain.height == 0


@pytest.mark.parametrize(
    "host",
    [
        "ghcr.io/org",  # a path
        "https://ghcr.io",  # a URL
        " ghcr.io",  # whitespace
        "ghcr.io\n",
        "a" * 300,  # too long
        "x." * 126 + "io",  # too long, though every label is fine
        "GHCR.io",  # not as the log writes it
        "localhost:70000",  # no port
        "ghcr.io:",
        "myorg",  # a namespace, not a host
        "index.docker.io",  # Docker Hub by another name
        "",
    ],
)
def test_a_registry_host_that_is_no_host_is_refused_built_decoded_or_asked_for(host: str) -> None:
    with pytest.raises(TxInvalid):
        Registry(host=host)
    with pytest.raises(TxInvalid):
        Registry.from_map({"host": host})
    good = change(ADD_REGISTRY, "ghcr.io")
    doc = codec.decode(good.encoded())
    doc["payload"]["host"] = host
    with pytest.raises(TxInvalid):
        Transaction.from_map(doc)
    with pytest.raises(UsageError) as refused:
        registry_change_from(json.dumps({"host": host, "action": "add"}).encode())
    assert "\n" not in refused.value.message


def test_an_api_body_is_checked_for_shape_and_action() -> None:
    assert registry_change_from(b'{"host": "ghcr.io", "action": "remove"}') == ("ghcr.io", True)
    for body in (b"[]", b'{"host": 1, "action": "add"}', b'{"host": "ghcr.io", "action": "drop"}', b"{"):
        with pytest.raises(UsageError):
            registry_change_from(body)


def test_a_registry_change_round_trips_and_is_its_own_publication() -> None:
    tx = change(ADD_REGISTRY, "ghcr.io")
    back = Transaction.from_map(codec.decode(tx.encoded()))
    assert back == tx and back.id == tx.id
    assert key_of(tx) == ("registry", ADD_REGISTRY, "ghcr.io")
    assert key_of(change(REMOVE_REGISTRY, "ghcr.io")) != key_of(tx)


def test_approvals_keep_both_kinds_and_read_an_older_file(tmp_path: Path) -> None:
    path = tmp_path / "approvals.json"
    peer = me(key(1))
    path.write_text(json.dumps([{"peer_id": peer, "action": "add"}, {"junk": 1}, "x"]))
    approvals = Approvals(path)
    assert approvals.has(peer, "add") and not approvals.has_registry(peer, "add")
    approvals.approve_registry("ghcr.io", "add")
    again = Approvals(path)
    assert again.has_registry("ghcr.io", "add") and not again.has_registry("ghcr.io", "remove")
    assert not again.has("ghcr.io", "add")
    assert again.entries() == [{"peer_id": peer, "action": "add"}]
    assert again.registry_entries() == [{"registry": "ghcr.io", "action": "add"}]
    path.write_text("{garbage")
    with pytest.raises(StorageError):
        Approvals(path)


@pytest.mark.parametrize("seed", range(40))
def test_random_changes_match_a_model_and_replay_to_the_same_list(seed: int) -> None:
    """Random valid and invalid changes and records: the chain takes exactly what the
    model allows, and a replay of what it took gives the same list with the same heights."""
    rng = random.Random(seed)
    hosts = ["docker.io", "ghcr.io", "quay.io", "gcr.io", "registry.k8s.io", "r.example"]
    chain, blocks = started("docker.io", "quay.io")
    model = {"docker.io": 0, "quay.io": 0}
    for step in range(25):
        host = rng.choice(hosts)
        kind = rng.choice([ADD_REGISTRY, REMOVE_REGISTRY, ADD_ARTIFACT])
        if kind == ADD_ARTIFACT:
            tx = docker_record(host, step)
            allowed = host in model
        else:
            tx = change(kind, host, step)
            if kind == ADD_REGISTRY:
                allowed = host not in model
            else:
                allowed = host in model and host != "docker.io" and len(model) > 1
        block = made(chain, [tx], [key(0)])
        if allowed:
            chain.apply(block)
            blocks.append(block)
            if kind == ADD_REGISTRY:
                model[host] = chain.height
            elif kind == REMOVE_REGISTRY:
                del model[host]
        else:
            broken(chain, block, "")
        assert chain.registries_since == tuple(sorted(model.items())), f"seed={seed}"
    assert replayed(blocks).registries_since == chain.registries_since, f"seed={seed}"


def test_the_registries_render_as_tables(capsys: pytest.CaptureFixture[str]) -> None:
    peer = me(key(1))
    registries_cli.render(
        {
            "height": 7,
            "quorum": 3,
            "registries": [{"host": "docker.io", "since": 0}, {"host": "ghcr.io", "since": 5}],
            "upstreams": {"ghcr.io": "http://127.0.0.1:5000"},
            "me": peer,
            "is_authority": True,
            "approvals": [{"registry": "quay.io", "action": "add"}],
            "pending": [
                {
                    "tx_id": "ab" * 32,
                    "action": "add",
                    "host": "quay.io",
                    "submitter": peer,
                    "endorsed_by": [peer],
                }
            ],
        }
    )
    out = capsys.readouterr().out
    assert "2 registries agreed at height 7, quorum 3" in out
    assert ["ghcr.io", "5", "http://127.0.0.1:5000"] in [line.split() for line in out.splitlines()]
    assert "approved by this node's admin (1)" in out and "pending registry changes (1)" in out
    assert "1 of 3 needed" in out


def test_a_refusal_says_why_in_one_line_and_reads_a_bounded_body() -> None:
    denied = {
        "errors": [{"code": "DENIED", "message": "registry quay.io is not one\\nthis network vouches for"}]
    }
    reason = _denial_reason(httpx.Response(403, content=json.dumps(denied).encode()))
    assert reason == ": registry quay.io is not one\\nthis network vouches for"
    spread = {"errors": [{"message": "two\nlines"}]}
    assert _denial_reason(httpx.Response(403, json=spread)) == ": two lines"
    assert _denial_reason(httpx.Response(403, content=b"<html>no</html>")) == ""
    assert _denial_reason(httpx.Response(403, json={"errors": []})) == ""
    huge = {"errors": [{"message": "x" * (DENIAL_BYTES_MAX + 1)}]}
    assert _denial_reason(httpx.Response(403, json=huge)) == ""


def test_a_registry_with_a_port_is_a_host_of_its_own() -> None:
    assert Registry(host="localhost:5000").host == "localhost:5000"
    assert Registry.from_map({"host": "registry.example.com:5443"}).host == "registry.example.com:5443"
