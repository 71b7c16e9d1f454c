"""A node's log filled fast before it starts: one-transaction blocks built by the chain
core exactly as the node's writer builds them (signed, endorsed, certified), written
in durable batches, then indexed by opening the ledger. For logs of many thousands of
blocks, where publishing one block per fsync would take minutes."""

from __future__ import annotations

import time
from pathlib import Path

from pyrsia.node.home import load_identity
from pyrsia.translog.block import Block
from pyrsia.translog.chain import Chain
from pyrsia.translog.chunks import CHUNK_BYTES
from pyrsia.translog.ledger import Ledger
from pyrsia.translog.store import BlockFiles
from pyrsia.translog.tx import ADD_ARTIFACT, AddArtifact, sign

FILL_BATCH_BLOCKS = 2048


def fill_fast(home: Path, count: int) -> None:
    """`count` one-transaction blocks in `home`'s log (its own network, its own key)."""
    home.mkdir(parents=True, exist_ok=True)
    key = load_identity(home).signing_key
    root = home / "translog"
    Ledger.open(root, key).close()  # FORMAT and the genesis block
    files = BlockFiles(root)
    chain = Chain()
    for height in files.heights():
        chain.apply(Block.decode(files.read(height)), verify_signatures=False)
    now = int(time.time())
    batch: list[tuple[int, bytes]] = []
    for i in range(count):
        digest = f"sha256:{i:064x}"
        artifact = AddArtifact(
            package_type="docker", package_id=f"library/filler:{i}",
            path=f"/v2/library/filler/blobs/{digest}", digest=digest, size=1, chunk_size=CHUNK_BYTES,
            chunk_root=bytes(32), media_type="application/octet-stream",
            source="https://registry.example", author="filler",
        )  # fmt: skip
        tx = sign(key, type=ADD_ARTIFACT, payload=artifact, time=now, nonce=i)
        block = chain.propose_certified([tx], now, key)
        chain.apply(block, verify_signatures=False)
        batch.append((block.header.height, block.encode()))
        if len(batch) == FILL_BATCH_BLOCKS or i == count - 1:
            files.write_many(batch)
            batch = []
    Ledger.open(root, key).close()  # indexes them
