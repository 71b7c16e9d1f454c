"""Node identity: an Ed25519 key pair and the libp2p peer id derived from it.

The key is the node's name on the network (its peer id, `pyrsia.formats.peer_id`),
the key it signs transactions, blocks and Noise handshakes with. Pure: no files, no
clock; `node.home` loads and stores the seed.
"""

from __future__ import annotations

from dataclasses import dataclass

from nacl.signing import SigningKey

from pyrsia.formats.peer_id import peer_id_of

SEED_BYTES = 32


@dataclass(frozen=True, slots=True)
class Identity:
    signing_key: SigningKey

    @classmethod
    def from_seed(cls, seed: bytes) -> Identity:
        return cls(SigningKey(seed))

    @property
    def public_key(self) -> bytes:
        return bytes(self.signing_key.verify_key)

    @property
    def peer_id(self) -> str:
        return peer_id_of(self.public_key)
