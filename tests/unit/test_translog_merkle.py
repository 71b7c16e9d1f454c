"""The Merkle tree against a naive recursive RFC 6962 reference (§2.1, written as the
RFC states it), over hypothesis-chosen sizes, plus known roots."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyrsia.errors import ProofInvalid
from pyrsia.translog.merkle import Tree, leaf_hash, node_hash, root_of, verify_consistency, verify_inclusion


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


# Certificate Transparency's reference test data: eight leaves and the root of each prefix.
CT_LEAVES = [b"", b"\x00", b"\x10", b"\x20\x21", b"\x30\x31", b"\x40\x41\x42\x43",
             bytes(range(0x50, 0x58)), bytes(range(0x60, 0x70))]  # fmt: skip
CT_ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]


def test_certificate_transparency_vectors() -> None:
    tree = Tree(CT_LEAVES)
    assert [tree.root(n).hex() for n in range(1, 9)] == CT_ROOTS
    assert [mth(CT_LEAVES[:n]).hex() for n in range(1, 9)] == CT_ROOTS  # the reference agrees too


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


def test_root_after_every_append_matches_the_reference() -> None:
    tree, d = Tree(), leaves(130)
    for n, leaf in enumerate(d, start=1):
        assert tree.append(leaf) == n - 1
        assert tree.root() == mth(d[:n])
        assert tree.leaf(n - 1) == leaf_hash(leaf)


def test_mismatches_carry_expected_and_calculated() -> None:
    d = leaves(11)
    tree = Tree(d)
    with pytest.raises(ProofInvalid) as mismatch:
        verify_inclusion(leaf_hash(d[4]), 4, 11, tree.inclusion_proof(4), tree.root(10))
    assert mismatch.value.expected == tree.root(10).hex()
    assert mismatch.value.calculated == tree.root().hex()
    with pytest.raises(ProofInvalid) as mismatch:
        verify_consistency(5, 11, tree.root(5), tree.root(10), tree.consistency_proof(5))
    assert mismatch.value.expected == tree.root(10).hex() and mismatch.value.calculated == tree.root().hex()


@given(st.integers(min_value=2, max_value=120), st.data())
def test_proofs_for_other_positions_or_sizes_fail(n: int, data: st.DataObject) -> None:
    d = leaves(n)
    tree = Tree(d)
    m = data.draw(st.integers(min_value=0, max_value=n - 1))
    proof = tree.inclusion_proof(m)
    other = data.draw(st.integers(min_value=0, max_value=n).filter(lambda i: i != m))
    with pytest.raises(ProofInvalid):
        verify_inclusion(leaf_hash(d[m]), other, n, proof, tree.root())
    with pytest.raises(ProofInvalid):  # one hash too many or too few
        verify_inclusion(leaf_hash(d[m]), m, n, [*proof, bytes(32)], tree.root())
    if proof:
        with pytest.raises(ProofInvalid):
            verify_inclusion(leaf_hash(d[m]), m, n, proof[:-1], tree.root())
    old = data.draw(st.integers(min_value=1, max_value=n - 1))
    consistency = tree.consistency_proof(old)
    with pytest.raises(ProofInvalid):  # roots swapped
        verify_consistency(old, n, tree.root(), tree.root(old), consistency)
    with pytest.raises(ProofInvalid):
        verify_consistency(old, n, tree.root(old), tree.root(), [*consistency, bytes(32)])
    with pytest.raises(ProofInvalid):
        verify_consistency(old, n, tree.root(old), tree.root(), consistency[:-1])
    with pytest.raises(ProofInvalid):
        verify_consistency(n, old, tree.root(), tree.root(old), consistency)


def test_trivial_consistency_cases() -> None:
    tree = Tree(leaves(5))
    verify_consistency(0, 5, tree.root(0), tree.root(), [])
    verify_consistency(5, 5, tree.root(), tree.root(), [])
    with pytest.raises(ProofInvalid):
        verify_consistency(5, 5, tree.root(4), tree.root(), [])
    with pytest.raises(ProofInvalid):
        verify_consistency(0, 5, tree.root(0), tree.root(), [bytes(32)])


@given(st.lists(st.binary(max_size=8), max_size=70))
def test_root_of_equals_the_tree_root(leaves: list[bytes]) -> None:
    assert root_of(leaves) == Tree(leaves).root()
