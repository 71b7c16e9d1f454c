"""The lookup view's core, driven directly: what it holds is never older than the log.

A simulation over many seeds interleaves blocks applied by the writer with readers
that take a token, read the "index" (a model of the log) and fill later, possibly
after blocks landed in between; after every step, every entry the view holds must be
the newest record the log has for its key.
"""

from __future__ import annotations

import random

import pytest
from nacl.signing import SigningKey

from pyrsia.translog.block import Block
from pyrsia.translog.chain import Chain, genesis_block
from pyrsia.translog.tx import ADD_ARTIFACT, AddArtifact, endorse, sign
from pyrsia.translog.view import ArtifactRecord, LookupView, digest_key, path_key, records_of

SEEDS = range(300)


def record(leaf: int, path: str, digest: str, package_type: str = "docker") -> ArtifactRecord:
    return ArtifactRecord(
        leaf=leaf, height=leaf, tx_id=f"{leaf:064x}", time=leaf, submitter="node", package_type=package_type,
        package_id="library/app:1", path=path, digest=digest, size=leaf, chunk_size=1 << 20,
        chunk_root=bytes(32), media_type="application/json", source="upstream", author="",
    )  # fmt: skip


def test_a_miss_is_filled_and_then_held() -> None:
    view = LookupView()
    key = path_key("docker", "/v2/a/manifests/1")
    assert view.get(key) == (False, None)
    found = record(1, "/v2/a/manifests/1", "sha256:1")
    assert view.fill(view.generation, key, found)
    assert view.get(key) == (True, found)


def test_a_block_replaces_a_held_none_for_every_key_it_touches() -> None:
    view = LookupView()
    path, digest = path_key("docker", "/v2/a/manifests/1"), digest_key("docker", "sha256:1")
    assert view.fill(view.generation, path, None) and view.fill(view.generation, digest, None)
    committed = record(1, "/v2/a/manifests/1", "sha256:1")
    view.apply([committed])
    assert view.get(path) == (True, committed) and view.get(digest) == (True, committed)
    assert view.get(digest_key("maven", "sha256:1")) == (False, None)  # other package types are other keys


def test_a_fill_read_before_a_block_is_dropped() -> None:
    view = LookupView()
    key = path_key("docker", "/v2/a/manifests/1")
    token = view.generation  # a reader looks, finds nothing in the index ...
    view.apply([record(1, "/v2/a/manifests/1", "sha256:1")])  # ... the writer commits the tag ...
    assert not view.fill(token, key, None)  # ... and the reader's stale "none" is not stored
    assert view.get(key) == (False, None)  # the next lookup reads the index, which has the block


def test_the_newest_record_of_a_block_wins() -> None:
    view = LookupView()
    path, digest = path_key("docker", "/v2/a/manifests/1"), digest_key("docker", "sha256:1")
    for key in (path, digest):
        view.fill(view.generation, key, None)
    older, newer = record(1, "/v2/a/manifests/1", "sha256:1"), record(2, "/v2/a/manifests/1", "sha256:2")
    view.apply([older, newer])
    assert view.get(path) == (True, newer) and view.get(digest) == (True, older)


def test_a_block_adds_no_entries_for_keys_not_held() -> None:
    view = LookupView()
    view.apply([record(n, f"/q/{n}", f"sha256:{n}") for n in range(10)])
    assert len(view) == 0 and view.get(path_key("docker", "/q/1")) == (False, None)


def test_entries_are_bounded_and_the_least_recently_used_go_first() -> None:
    view = LookupView(entries_max=3)
    keys = [path_key("docker", f"/p/{n}") for n in range(4)]
    for key in keys[:3]:
        view.fill(view.generation, key, None)
    assert view.get(keys[0])[0]  # used: now the most recent
    view.fill(view.generation, keys[3], None)
    assert len(view) == 3
    assert [view.get(k)[0] for k in keys] == [True, False, True, True]
    view.apply([record(n, f"/p/{n}", f"sha256:{n}") for n in range(10)])
    assert len(view) == 3 and [view.get(k)[0] for k in keys] == [True, False, True, True]


def test_a_view_of_no_entries_holds_nothing() -> None:
    view = LookupView(entries_max=0)
    view.fill(view.generation, path_key("docker", "/p"), None)
    view.apply([record(1, "/p", "sha256:1")])
    assert len(view) == 0 and view.get(path_key("docker", "/p")) == (False, None)
    with pytest.raises(ValueError):
        LookupView(entries_max=-1)


@pytest.mark.parametrize("seed", SEEDS)
def test_simulated_readers_and_writer_never_leave_a_stale_entry(seed: int) -> None:
    rng = random.Random(seed)
    paths = [f"/v2/app/manifests/{n}" for n in range(6)]
    digests = [f"sha256:{n}" for n in range(4)]
    view = LookupView(entries_max=rng.choice([2, 5, 100]))
    log: list[ArtifactRecord] = []

    def newest(key: tuple[str, str, str]) -> ArtifactRecord | None:
        kind, package_type, value = key
        for r in reversed(log):
            if r.package_type == package_type and (r.path if kind == "path" else r.digest) == value:
                return r
        return None

    types = ["docker", "maven"]
    keys = [path_key(t, p) for t in types for p in paths]
    keys += [digest_key(t, d) for t in types for d in digests]
    pending: list[tuple[int, tuple[str, str, str], ArtifactRecord | None]] = []  # reads not yet filled
    try:
        for _ in range(200):
            action = rng.random()
            if action < 0.3:  # the writer commits a block
                block = [
                    record(len(log) + i, rng.choice(paths), rng.choice(digests), rng.choice(types))
                    for i in range(rng.randint(1, 3))
                ]
                log.extend(block)
                view.apply(block)
            elif action < 0.65:  # a reader misses and reads the index now
                key = rng.choice(keys)
                if not view.get(key)[0]:
                    pending.append((view.generation, key, newest(key)))
            elif pending:  # a reader fills what it read, maybe blocks later
                token, key, found = pending.pop(rng.randrange(len(pending)))
                view.fill(token, key, found)
            for key in keys:
                held, found = view.get(key)
                assert not held or found == newest(key), key
    except AssertionError:
        print(f"seed={seed}")
        raise


def _block_of_artifacts(paths_digests: list[tuple[str, str]]) -> tuple[Block, int]:
    """A real block (height 1) holding one AddArtifact per (path, digest), and the leaf
    index of its first transaction."""
    key = SigningKey(bytes(range(32)))
    chain = Chain()
    chain.apply(genesis_block(key, 1))
    txs = []
    for n, (path, digest) in enumerate(paths_digests):
        payload = AddArtifact(
            package_type="docker", package_id="library/app:1", path=path, digest=digest, size=n,
            chunk_size=1 << 20, chunk_root=bytes(32), media_type="application/json", source="upstream",
            author="", dependencies=(f"dep{n}",),
        )  # fmt: skip
        tx = sign(key, type=ADD_ARTIFACT, payload=payload, time=2, nonce=n)
        txs.append(tx.with_endorsements((endorse(key, tx.id),)))
    return chain.propose_certified(txs, 2, key), chain.size


@pytest.mark.parametrize("seed", range(20))
def test_applying_a_block_sets_exactly_what_applying_its_records_does(seed: int) -> None:
    rng = random.Random(seed)
    items = [(f"/v2/app/manifests/{rng.randrange(4)}", f"sha256:{rng.randrange(4)}") for _ in range(6)]
    block, first_leaf = _block_of_artifacts(items)
    keys = [path_key("docker", f"/v2/app/manifests/{n}") for n in range(5)]
    keys += [digest_key(t, f"sha256:{n}") for t in ("docker", "maven") for n in range(5)]
    held = rng.sample(keys, rng.randrange(len(keys) + 1))
    by_records, by_block = LookupView(), LookupView()
    for view in (by_records, by_block):
        for key in held:
            view.fill(view.generation, key, None)
    by_records.apply(records_of(block, first_leaf))
    by_block.apply_block(block, first_leaf)
    assert by_block.generation == by_records.generation == 1
    assert [by_block.get(k) for k in keys] == [by_records.get(k) for k in keys]
    assert len(by_block) == len(held)
