"""The Merkle tree against a naive recursive RFC 6962 reference (§2.1, written as the
RFC states it), over hypothesis-chosen sizes, plus known roots."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyrsia.errors import ProofInvalid
from pyrsia.translog.merkle import Tree, leaf_hash, node_hash, verify_consistency, verify_inclusion


def mth(d: list[bytes]) -> bytes:
    n = len(d)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashlib.sha256(b"\x00" + d[0]).digest()
    k = 1 << ((n - 1).bit_length() - 1)
    return hashlib.sha256(b"\x01" + mth(d[:k]) + mth(d[k:])).digest()


def path(m: int, d: list[bytes]) -> list[bytes]:
    n = len(d)
    if n <= 1:
        return []
    k = 1 << ((n - 1).bit_length() - 1)
    return [*path(m, d[:k]), mth(d[k:])] if m < k else [*path(m - k, d[k:]), mth(d[:k])]


def subproof(m: int, d: list[bytes], complete: bool) -> list[bytes]:
    n = len(d)
    if m == n:
        return [] if complete else [mth(d)]
    k = 1 << ((n - 1).bit_length() - 1)
    if m <= k:
        return [*subproof(m, d[:k], complete), mth(d[k:])]
    return [*subproof(m - k, d[k:], False), mth(d[:k])]


def leaves(n: int) -> list[bytes]:
    return [i.to_bytes(4, "big") for i in range(n)]


def test_known_roots() -> None:
    assert Tree().root().hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    # RFC 6962 leaf and node prefixes: one empty leaf is sha256(0x00).
    assert Tree([b""]).root().hex() == "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
    assert Tree([b"a", b"b"]).root() == node_hash(leaf_hash(b"a"), leaf_hash(b"b"))


@given(st.integers(min_value=0, max_value=300), st.data())
def test_tree_matches_the_reference(n: int, data: st.DataObject) -> None:
    d = leaves(n)
    tree = Tree(d)
    assert tree.root() == mth(d)
    if n == 0:
        return
    m = data.draw(st.integers(min_value=0, max_value=n - 1))
    proof = tree.inclusion_proof(m)
    assert proof == path(m, d)
    verify_inclusion(leaf_hash(d[m]), m, n, proof, tree.root())
    old = data.draw(st.integers(min_value=1, max_value=n))
    consistency = tree.consistency_proof(old)
    assert consistency == (subproof(old, d, True) if old < n else [])
    assert tree.root(old) == mth(d[:old])
    verify_consistency(old, n, tree.root(old), tree.root(), consistency)


@given(st.integers(min_value=2, max_value=200), st.data())
def test_tampered_proofs_fail(n: int, data: st.DataObject) -> None:
    d = leaves(n)
    tree = Tree(d)
    m = data.draw(st.integers(min_value=0, max_value=n - 1))
    proof = tree.inclusion_proof(m)
    with pytest.raises(ProofInvalid):
        verify_inclusion(leaf_hash(b"other"), m, n, proof, tree.root())
    if proof:
        i = data.draw(st.integers(min_value=0, max_value=len(proof) - 1))
        bad = [*proof[:i], bytes(32), *proof[i + 1 :]]
        with pytest.raises(ProofInvalid):
            verify_inclusion(leaf_hash(d[m]), m, n, bad, tree.root())
    old = data.draw(st.integers(min_value=1, max_value=n - 1))
    with pytest.raises(ProofInvalid):
        verify_consistency(old, n, mth([*d[: old - 1], b"x"]), tree.root(), tree.consistency_proof(old))


def test_truncate_undoes_appends() -> None:
    tree = Tree(leaves(37))
    root = tree.root()
    for i in range(10):
        tree.append(b"extra%d" % i)
    tree.truncate(37)
    assert tree.root() == root and tree.size == 37
    tree.append(b"next")
    assert tree.root() == mth([*leaves(37), b"next"])
