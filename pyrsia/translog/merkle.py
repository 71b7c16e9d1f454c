"""RFC 6962 Merkle tree over transaction ids, with inclusion and consistency proofs.

Hashes are domain-separated (RFC 6962 §2.1): a leaf is SHA-256(0x00 || data), an inner
node SHA-256(0x01 || left || right), the empty tree SHA-256(""). `Tree` keeps the root
of every complete, aligned power-of-two subtree, so appending is O(1) amortised and a
root or proof for any size costs O(log² n) hashes. The verifiers are pure functions
that follow RFC 9162 §2.1.3.2 and §2.1.4.2 and raise `ProofInvalid`; the HTTP layer
never does tree math.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from pyrsia.errors import ProofInvalid

EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def root_of(leaves: Sequence[bytes]) -> bytes:
    """MTH of `leaves` (their data, hashed here): `Tree(leaves).root()` without keeping
    the tree (RFC 6962 §2.1: pairs combine level by level; an odd last node moves up
    unchanged, which is the same split as the largest power of two below n)."""
    if not leaves:
        return EMPTY_ROOT
    level = [hashlib.sha256(b"\x00" + leaf).digest() for leaf in leaves]
    while len(level) > 1:
        paired = [
            hashlib.sha256(b"\x01" + level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)
        ]
        if len(level) & 1:
            paired.append(level[-1])
        level = paired
    return level[0]


def _split(n: int) -> int:
    """The largest power of two smaller than n (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


class Tree:
    """Append-only; `levels[k][i]` is the root of leaves [i·2^k, (i+1)·2^k)."""

    def __init__(self, leaves: Sequence[bytes] = ()) -> None:
        self.levels: list[list[bytes]] = [[]]
        for leaf in leaves:
            self.append(leaf)

    @property
    def size(self) -> int:
        return len(self.levels[0])

    def append(self, data: bytes) -> int:
        """Adds a leaf (its data, hashed here); returns its index."""
        index = self.size
        self.levels[0].append(leaf_hash(data))
        level, i = 0, index
        while i & 1:  # completing a right child completes its parent
            if level + 1 == len(self.levels):
                self.levels.append([])
            self.levels[level + 1].append(node_hash(self.levels[level][i - 1], self.levels[level][i]))
            level, i = level + 1, i >> 1
        return index

    def truncate(self, size: int) -> None:
        """Forget leaves from `size` on (undoing an append whose block was not written)."""
        for k, level in enumerate(self.levels):
            del level[size >> k :]

    def leaf(self, index: int) -> bytes:
        return self.levels[0][index]

    def _range(self, lo: int, hi: int) -> bytes:
        """MTH(D[lo:hi]) for the ranges the RFC's recursion produces."""
        n = hi - lo
        if n & (n - 1) == 0 and lo % n == 0:
            return self.levels[n.bit_length() - 1][lo // n]
        k = _split(n)
        return node_hash(self._range(lo, lo + k), self._range(lo + k, hi))

    def root(self, size: int | None = None) -> bytes:
        size = self.size if size is None else size
        if not 0 <= size <= self.size:
            raise ValueError(f"tree has {self.size} leaves, not {size}")
        return EMPTY_ROOT if size == 0 else self._range(0, size)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """RFC 6962 §2.1.1 PATH(index, D[0:size])."""
        size = self.size if size is None else size
        if not 0 <= index < size <= self.size:
            raise ValueError(f"no leaf {index} in a tree of {size}")
        proof: list[bytes] = []
        lo, hi = 0, size
        while hi - lo > 1:
            k = _split(hi - lo)
            if index < lo + k:
                proof.append(self._range(lo + k, hi))
                hi = lo + k
            else:
                proof.append(self._range(lo, lo + k))
                lo += k
        return list(reversed(proof))

    def consistency_proof(self, old_size: int, size: int | None = None) -> list[bytes]:
        """RFC 6962 §2.1.2 PROOF(old_size, D[0:size])."""
        size = self.size if size is None else size
        if not 0 <= old_size <= size <= self.size:
            raise ValueError(f"no consistency between sizes {old_size} and {size}")
        if old_size in (0, size):
            return []
        proof: list[bytes] = []
        lo, hi, m, complete = 0, size, old_size, True
        while m != hi - lo:
            k = _split(hi - lo)
            if m <= k:
                proof.append(self._range(lo + k, hi))
                hi = lo + k
            else:
                proof.append(self._range(lo, lo + k))
                lo, m, complete = lo + k, m - k, False
        if not complete:
            proof.append(self._range(lo, hi))
        return list(reversed(proof))


def verify_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> None:
    """`leaf` (a leaf hash) is entry `index` of the tree of `size` with `root` (RFC 9162 §2.1.3.2)."""
    if index >= size:
        raise ProofInvalid(f"inclusion proof for leaf {index} of a tree of {size}")
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            raise ProofInvalid("inclusion proof (too long)")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0 or r != root:
        raise ProofInvalid("inclusion proof", expected=root.hex(), calculated=r.hex())


def verify_consistency(
    old_size: int, size: int, old_root: bytes, root: bytes, proof: Sequence[bytes]
) -> None:
    """The tree of `size` with `root` extends the one of `old_size` (RFC 9162 §2.1.4.2)."""
    if old_size > size:
        raise ProofInvalid(f"consistency from size {old_size} down to {size}")
    if old_size == size:
        if proof or old_root != root:
            raise ProofInvalid("consistency of equal sizes", expected=root.hex(), calculated=old_root.hex())
        return
    if old_size == 0:
        if proof:
            raise ProofInvalid("consistency from the empty tree (proof must be empty)")
        return
    if not proof:
        raise ProofInvalid("consistency proof (empty)")
    path = list(proof)
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    fn, sn = old_size - 1, size - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofInvalid("consistency proof (too long)")
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0 or fr != old_root or sr != root:
        raise ProofInvalid("consistency proof", expected=root.hex(), calculated=sr.hex())
