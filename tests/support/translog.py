"""A node's log filled before it starts: many small blocks, written as the node would."""

from __future__ import annotations

from pathlib import Path

from pyrsia.node.home import load_identity
from pyrsia.translog.chunks import CHUNK_BYTES
from pyrsia.translog.ledger import Ledger
from pyrsia.translog.tx import AddArtifact


def fill(home: Path, count: int) -> None:
    """`count` one-transaction blocks in `home`'s log (its own network, its own key)."""
    home.mkdir(parents=True, exist_ok=True)
    ledger = Ledger.open(home / "translog", load_identity(home).signing_key)
    try:
        for i in range(count):
            digest = f"sha256:{i:064x}"
            ledger.publish(
                [
                    AddArtifact(
                        package_type="docker",
                        package_id=f"library/filler:{i}",
                        path=f"/v2/library/filler/blobs/{digest}",
                        digest=digest,
                        size=1,
                        chunk_size=CHUNK_BYTES,
                        chunk_root=bytes(32),
                        media_type="application/octet-stream",
                        source="https://registry.example",
                        author="filler",
                    )
                ]
            )
    finally:
        ledger.close()


def genesis_bytes(home: Path) -> bytes:
    """The encoded genesis block of `home`'s log (what a `--genesis` file holds)."""
    ledger = Ledger.open(home / "translog", load_identity(home).signing_key)
    try:
        return ledger.block_bytes(0)
    finally:
        ledger.close()
