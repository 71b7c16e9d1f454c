"""The lookup view's core, driven directly: what it holds is never older than the log.

Blocks are built as the ledger hands them to the view (`apply_block(block, first_leaf)`),
and what the view must hold is read from `records_of`, the records the index stores.
A simulation over many seeds interleaves blocks applied by the writer with readers
that take a token, read the "index" (a model of the log) and fill later, possibly
after blocks landed in between; after every step, every entry the view holds must be
the newest record the log has for its key.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest
from nacl.signing import SigningKey

from pyrsia.translog.block import Block, BlockHeader, tx_root
from pyrsia.translog.tx import (
    ADD_ARTIFACT,
    ADD_AUTHORIZED_NODE,
    AddArtifact,
    AuthorizedNode,
    Transaction,
    sign,
    signer_id,
)
from pyrsia.translog.view import ArtifactRecord, Key, LookupView, digest_key, path_key, records_of

SEEDS = range(300)
KEY = SigningKey(bytes(range(32)))
NODE = signer_id(KEY)


def artifact(path: str, digest: str, package_type: str = "docker", nonce: int = 0) -> Transaction:
    payload = AddArtifact(
        package_type=package_type, package_id="library/app:1", path=path, digest=digest, size=nonce,
        chunk_size=1 << 20, chunk_root=bytes(32), media_type="application/json", source="upstream",
        author="", dependencies=(f"dep{nonce}",),
    )  # fmt: skip
    return sign(KEY, type=ADD_ARTIFACT, payload=payload, time=1, nonce=nonce)


def authorization(nonce: int) -> Transaction:
    """A transaction that is no artifact: it takes a leaf and touches no key of the view."""
    return sign(KEY, type=ADD_AUTHORIZED_NODE, payload=AuthorizedNode(peer_id=NODE), time=1, nonce=nonce)


class Log:
    """Blocks of the given transactions, each as the ledger applies it: with the leaf index
    of its first transaction."""

    def __init__(self) -> None:
        self.height = 0
        self.size = 0  # leaves so far

    def block(self, *transactions: Transaction) -> tuple[Block, int]:
        self.height += 1
        first_leaf, self.size = self.size, self.size + len(transactions)
        header = BlockHeader(
            height=self.height, prev_hash=bytes(32), tx_root=tx_root(transactions), log_size=self.size,
            log_root=bytes(32), time=self.height, proposer=NODE, authorities_hash=bytes(32),
        )  # fmt: skip
        return Block(header=header, transactions=transactions, certificate=()), first_leaf


def apply(view: LookupView, log: Log, *transactions: Transaction) -> list[ArtifactRecord]:
    """One block of `transactions` applied to the view; its records, as the index has them."""
    block, first_leaf = log.block(*transactions)
    view.apply_block(block, first_leaf)
    return records_of(block, first_leaf)


def found_record(path: str, digest: str) -> ArtifactRecord:
    """A record as a reader would have read it from the index."""
    block, first_leaf = Log().block(artifact(path, digest))
    return records_of(block, first_leaf)[0]


def test_a_miss_is_filled_and_then_held() -> None:
    view = LookupView()
    key = path_key("docker", "/v2/a/manifests/1")
    assert view.get(key) == (False, None)
    found = found_record("/v2/a/manifests/1", "sha256:1")
    assert view.fill(view.generation, key, found)
    assert view.get(key) == (True, found)


def test_a_block_replaces_a_held_none_for_every_key_it_touches() -> None:
    view, log = LookupView(), Log()
    path, digest = path_key("docker", "/v2/a/manifests/1"), digest_key("docker", "sha256:1")
    assert view.fill(view.generation, path, None) and view.fill(view.generation, digest, None)
    (committed,) = apply(view, log, authorization(0), artifact("/v2/a/manifests/1", "sha256:1"))
    assert committed.leaf == 1 and committed.height == 1  # the second leaf of the first block
    assert view.get(path) == (True, committed) and view.get(digest) == (True, committed)
    assert view.get(digest_key("maven", "sha256:1")) == (False, None)  # other package types are other keys


def test_a_fill_read_before_a_block_is_dropped() -> None:
    view, log = LookupView(), Log()
    key = path_key("docker", "/v2/a/manifests/1")
    token = view.generation  # a reader looks, finds nothing in the index ...
    apply(view, log, artifact("/v2/a/manifests/1", "sha256:1"))  # ... the writer commits the tag ...
    assert view.generation != token
    assert not view.fill(token, key, None)  # ... and the reader's stale "none" is not stored
    assert view.get(key) == (False, None)  # the next lookup reads the index, which has the block


def test_a_block_of_no_entries_still_turns_the_generation() -> None:
    view, log = LookupView(), Log()
    token = view.generation
    apply(view, log, authorization(0))
    assert not view.fill(token, path_key("docker", "/p"), None)


def test_the_newest_record_of_a_block_wins() -> None:
    view, log = LookupView(), Log()
    path, digest = path_key("docker", "/v2/a/manifests/1"), digest_key("docker", "sha256:1")
    for key in (path, digest):
        view.fill(view.generation, key, None)
    older, newer = apply(
        view,
        log,
        artifact("/v2/a/manifests/1", "sha256:1"),
        artifact("/v2/a/manifests/1", "sha256:2", nonce=1),
    )
    assert older.leaf < newer.leaf
    assert view.get(path) == (True, newer) and view.get(digest) == (True, older)


def test_a_block_adds_no_entries_for_keys_not_held() -> None:
    view, log = LookupView(), Log()
    apply(view, log, *(artifact(f"/q/{n}", f"sha256:{n}", nonce=n) for n in range(10)))
    assert len(view) == 0 and view.get(path_key("docker", "/q/1")) == (False, None)
    view.fill(view.generation, path_key("docker", "/q/1"), None)  # one key held, others still not
    apply(view, log, *(artifact(f"/q/{n}", f"sha256:{n}", nonce=n) for n in range(10)))
    assert len(view) == 1 and view.get(path_key("docker", "/q/1"))[1] is not None


def test_entries_are_bounded_and_the_least_recently_used_go_first() -> None:
    view, log = LookupView(entries_max=3), Log()
    keys = [path_key("docker", f"/p/{n}") for n in range(4)]
    for key in keys[:3]:
        view.fill(view.generation, key, None)
    assert view.get(keys[0])[0]  # used: now the most recent
    view.fill(view.generation, keys[3], None)
    assert len(view) == 3
    assert [view.get(k)[0] for k in keys] == [True, False, True, True]
    apply(view, log, *(artifact(f"/p/{n}", f"sha256:{n}", nonce=n) for n in range(10)))
    assert len(view) == 3 and [view.get(k)[0] for k in keys] == [True, False, True, True]


def test_a_view_of_no_entries_holds_nothing() -> None:
    view, log = LookupView(entries_max=0), Log()
    view.fill(view.generation, path_key("docker", "/p"), None)
    apply(view, log, artifact("/p", "sha256:1"))
    assert len(view) == 0 and view.get(path_key("docker", "/p")) == (False, None)
    with pytest.raises(ValueError):
        LookupView(entries_max=-1)


def newest_in(records: Sequence[ArtifactRecord], key: Key) -> ArtifactRecord | None:
    kind, package_type, value = key
    for r in reversed(records):
        if r.package_type == package_type and (r.path if kind == "path" else r.digest) == value:
            return r
    return None


@pytest.mark.parametrize("seed", SEEDS)
def test_simulated_readers_and_writer_never_leave_a_stale_entry(seed: int) -> None:
    rng = random.Random(seed)
    paths = [f"/v2/app/manifests/{n}" for n in range(6)]
    digests = [f"sha256:{n}" for n in range(4)]
    view, log = LookupView(entries_max=rng.choice([2, 5, 100])), Log()
    committed: list[ArtifactRecord] = []
    types = ["docker", "maven"]
    keys = [path_key(t, p) for t in types for p in paths]
    keys += [digest_key(t, d) for t in types for d in digests]
    pending: list[tuple[int, Key, ArtifactRecord | None]] = []  # reads not yet filled
    try:
        for step in range(200):
            action = rng.random()
            if action < 0.3:  # the writer commits a block, now and then with a transaction of another kind
                txs = [
                    artifact(rng.choice(paths), rng.choice(digests), rng.choice(types), nonce=step * 4 + i)
                    if rng.random() < 0.9
                    else authorization(step * 4 + i)
                    for i in range(rng.randint(1, 3))
                ]
                committed.extend(apply(view, log, *txs))
            elif action < 0.65:  # a reader misses and reads the index now
                key = rng.choice(keys)
                if not view.get(key)[0]:
                    pending.append((view.generation, key, newest_in(committed, key)))
            elif pending:  # a reader fills what it read, maybe blocks later
                token, key, found = pending.pop(rng.randrange(len(pending)))
                view.fill(token, key, found)
            for key in keys:
                held, found = view.get(key)
                assert not held or found == newest_in(committed, key), key
    except AssertionError:
        print(f"seed={seed}")
        raise


@pytest.mark.parametrize("seed", range(20))
def test_a_block_sets_each_held_key_to_its_newest_record_and_leaves_the_rest(seed: int) -> None:
    rng = random.Random(seed)
    keys = [path_key("docker", f"/v2/app/manifests/{n}") for n in range(5)]
    keys += [digest_key(t, f"sha256:{n}") for t in ("docker", "maven") for n in range(5)]
    view, log = LookupView(), Log()
    before = apply(view, log, artifact("/v2/app/manifests/4", "sha256:4"))  # held keys hold a record ...
    held = rng.sample(keys, rng.randrange(len(keys) + 1))
    for key in held:
        view.fill(view.generation, key, newest_in(before, key))  # ... or None
    expected = {key: view.get(key) for key in keys}
    txs = [
        artifact(f"/v2/app/manifests/{rng.randrange(4)}", f"sha256:{rng.randrange(4)}", nonce=n)
        for n in range(6)
    ]
    records = apply(view, log, *txs)
    for key in held:
        newest = newest_in(records, key)
        if newest is not None:
            expected[key] = (True, newest)
    assert view.generation == 2
    assert {key: view.get(key) for key in keys} == expected
    assert len(view) == len(held)
