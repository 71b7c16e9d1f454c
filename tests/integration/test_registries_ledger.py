"""The agreed registries through the ledger shell on real files: a change committed by
the one authority of an embedded network is what readers see at once, a Docker record of
a registry outside the list is refused before anything is written, and reopening the
log rebuilds the list, with each host's height, from the blocks alone."""

from __future__ import annotations

from pathlib import Path

import pytest
from nacl.signing import SigningKey

from pyrsia.errors import TxInvalid
from pyrsia.translog.ledger import Ledger
from pyrsia.translog.tx import ADD_REGISTRY, REMOVE_REGISTRY, AddArtifact, Registry, sign

KEY = SigningKey(bytes(range(32)))
T0 = 1_700_000_000


def record(registry: str, n: int) -> AddArtifact:
    return AddArtifact(
        package_type="docker",
        package_id=f"{registry}/org/app:{n}",
        path=f"/v2/{registry}/org/app/manifests/{n}",
        digest=f"sha256:{n:064x}",
        size=n,
        chunk_size=1 << 20,
        chunk_root=bytes(32),
        media_type="application/vnd.oci.image.manifest.v1+json",
        source=f"https://{registry}",
        author="",
        registry=registry,
    )


def opened(root: Path) -> Ledger:
    return Ledger.open(root, KEY, clock=lambda: T0, registries=["docker.io", "quay.io"])


def test_changes_are_seen_at_once_and_rebuilt_from_the_blocks(tmp_path: Path) -> None:
    ledger = opened(tmp_path)
    try:
        assert ledger.registries_since == (("docker.io", 0), ("quay.io", 0))
        with pytest.raises(TxInvalid, match=r"registry ghcr\.io"):
            ledger.publish([record("ghcr.io", 1)])
        added = ledger.commit_signed(
            [sign(KEY, type=ADD_REGISTRY, payload=Registry(host="ghcr.io"), time=T0, nonce=1)]
        )
        assert ledger.registries == ("docker.io", "ghcr.io", "quay.io")
        ledger.publish([record("ghcr.io", 2), record("quay.io", 3)])
        removed = ledger.commit_signed(
            [sign(KEY, type=REMOVE_REGISTRY, payload=Registry(host="quay.io"), time=T0, nonce=2)]
        )
        with pytest.raises(TxInvalid, match=r"registry quay\.io"):
            ledger.publish([record("quay.io", 4)])
        expected = (("docker.io", 0), ("ghcr.io", added.header.height))
        assert ledger.registries_since == expected
        height = ledger.height
        assert height == removed.header.height
    finally:
        ledger.close()
    again = opened(tmp_path)
    try:
        assert again.registries_since == expected and again.height == height
        assert again.has_digest("docker", f"sha256:{3:064x}")  # the quay.io record stays
    finally:
        again.close()
