"""Proposals by transaction id: the value authorities agree on, and what waits to be rebuilt.

Authorities already hold a proposal's transactions: each was submitted to all of them
and endorsed by them before it could be proposed. So the value the consensus core
agrees on is not the block but a `CompactBlock`: the block's header (which fixes its
hash and its transactions' Merkle root) and, per transaction, its id and which
authorities' endorsements the block carries (a bit per authority, over the sorted
authority set of the height). A peer rebuilds the block from its mempool; Ed25519
endorsements are deterministic, so one signer's endorsement of one id is the same
bytes everywhere, and the rebuilt block is the proposer's byte for byte. Its header's
tx root is then checked by the chain (`Chain.check_proposal`), so a compact value
whose ids do not match its header never validates.

A peer that lacks transactions (a lost submit, a restart) holds the message that
carried the value in an `Assembly` and asks for exactly the missing ids (`FetchTxs`),
first from the peer that sent it, then, with backoff, from the other authorities in
turn; what arrives (`Txs`) goes into its mempool like a submit, and the held message
is stepped once nothing is missing. Everything here is bounded: ids per value, held
messages, requests in flight. Pure: time is an argument.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pyrsia.errors import MessageRejected, TxInvalid
from pyrsia.translog import codec
from pyrsia.translog.block import AUTHORITIES_MAX, BLOCK_TXS_MAX, Block, BlockHeader
from pyrsia.translog.tx import HASH_BYTES, Endorsement, Transaction

COMPACT_TXS_MAX = BLOCK_TXS_MAX
MASK_BYTES_MAX = (AUTHORITIES_MAX + 7) // 8
# Messages held for missing transactions, and ids asked for at once.
HELD_MAX = 32
FETCH_IDS_MAX = BLOCK_TXS_MAX
# Backoff between re-requests of a held message's missing ids, in seconds.
REFETCH_S = 0.5
REFETCH_S_MAX = 8.0


@dataclass(frozen=True, slots=True, kw_only=True)
class CompactBlock:
    header: BlockHeader
    # (transaction id, bit i set: the endorsement of sorted(authorities)[i] is in the block)
    txs: tuple[tuple[bytes, int], ...]

    def encode(self) -> bytes:
        # The bit set as little-endian bytes: up to AUTHORITIES_MAX bits, past msgpack's 64.
        txs = [[i, mask.to_bytes((mask.bit_length() + 7) // 8, "little")] for i, mask in self.txs]
        return codec.encode({"header": self.header.to_map(), "txs": txs})

    @classmethod
    def decode(cls, data: bytes) -> CompactBlock:
        """The compact block in proposal bytes; `MessageRejected` for anything else."""
        try:
            doc = codec.decode(data)
            entries = codec.field(doc, "txs", list)
            if len(entries) > COMPACT_TXS_MAX:
                raise MessageRejected(f"a compact block names more than {COMPACT_TXS_MAX} transactions")
            txs = []
            for entry in entries:
                if not (isinstance(entry, list) and len(entry) == 2):
                    raise MessageRejected("a compact block entry is not [id, endorsers]")
                tx_id, mask = entry
                if not isinstance(tx_id, bytes) or len(tx_id) != HASH_BYTES:
                    raise MessageRejected("a compact block entry's id is not a hash")
                if not isinstance(mask, bytes) or len(mask) > MASK_BYTES_MAX:
                    raise MessageRejected("a compact block entry's endorsers are not a bit set")
                txs.append((tx_id, int.from_bytes(mask, "little")))
            return cls(header=BlockHeader.from_map(codec.field(doc, "header", dict)), txs=tuple(txs))
        except TxInvalid as exc:
            raise MessageRejected(exc.message) from exc

    @property
    def ids(self) -> list[bytes]:
        return [tx_id for tx_id, _ in self.txs]


def compact(block: Block, authorities: Iterable[str]) -> CompactBlock:
    """The compact form of an uncertified block whose endorsers are all `authorities`."""
    index = {peer: i for i, peer in enumerate(sorted(authorities))}
    txs = []
    for tx in block.transactions:
        mask = 0
        for e in tx.endorsements:
            mask |= 1 << index[e.signer]
        txs.append((tx.id, mask))
    return CompactBlock(header=block.header, txs=tuple(txs))


# lookup(tx id) -> (the transaction, its endorsements by signer), or None if not held.
Lookup = Callable[[bytes], tuple[Transaction, dict[str, Endorsement]] | None]


def rebuild(value: CompactBlock, authorities: Iterable[str], lookup: Lookup) -> Block | list[bytes]:
    """The block, or the ids of the transactions (or endorsements) this node lacks."""
    ordered = sorted(authorities)
    txs: list[Transaction] = []
    missing: list[bytes] = []
    for tx_id, mask in value.txs:
        if mask >> len(ordered):
            raise MessageRejected("a compact block names an endorser beyond the authority set")
        held = lookup(tx_id)
        signers = [peer for i, peer in enumerate(ordered) if mask >> i & 1]
        if held is None or any(s not in held[1] for s in signers):
            missing.append(tx_id)
            continue
        tx, endorsements = held
        txs.append(tx.with_endorsements(tuple(endorsements[s] for s in signers)))
    if missing:
        return missing
    return Block(header=value.header, transactions=tuple(txs), certificate=())


# -- waiting for transactions ---------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Fetch:
    """Ask `peer` for these transactions (with their endorsements)."""

    peer: str
    ids: tuple[bytes, ...]


@dataclass(slots=True)
class _Held:
    sender: str
    message: Any
    height: int
    missing: set[bytes]
    asked: int = 0  # requests sent so far
    next_s: float = 0.0
    tried: list[str] = field(default_factory=list)


class Assembly:
    """Messages carrying a compact value this node cannot rebuild yet, by value hash."""

    def __init__(self, *, held_max: int = HELD_MAX) -> None:
        self.held_max = held_max
        self._held: dict[bytes, _Held] = {}
        self.fetches = 0
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._held)

    def hold(
        self, key: bytes, sender: str, message: Any, height: int, missing: Iterable[bytes], now_s: float
    ) -> Fetch | None:
        """Keep `message` until `missing` arrive; the first request for them, if one is due."""
        ids = set(missing)
        if not ids:
            return None
        held = self._held.get(key)
        if held is not None:
            held.missing = ids
            return None
        if len(ids) > FETCH_IDS_MAX:
            self.dropped += 1
            return None
        if len(self._held) >= self.held_max:
            # Full: the value furthest ahead goes (the node needs the nearest heights first).
            highest = max(self._held, key=lambda k: self._held[k].height)
            self.dropped += 1
            if self._held[highest].height <= height:
                return None
            del self._held[highest]
        held = self._held[key] = _Held(sender=sender, message=message, height=height, missing=ids)
        return self._ask(held, sender, now_s)

    def arrived(self, ids: Iterable[bytes]) -> list[tuple[str, Any]]:
        """Held messages with nothing missing any more, to be stepped again (and let go)."""
        got = set(ids)
        done = []
        for key, held in list(self._held.items()):
            held.missing -= got
            if not held.missing:
                done.append((held.sender, held.message))
                del self._held[key]
        return done

    def wanted(self, tx_id: bytes) -> bool:
        return any(tx_id in held.missing for held in self._held.values())

    def forget_below(self, height: int) -> None:
        for key in [k for k, held in self._held.items() if held.height < height]:
            del self._held[key]

    def due(self, now_s: float, holders: Sequence[str]) -> list[Fetch]:
        """Re-requests whose backoff ran out, each to the next holder in turn."""
        out = []
        for held in self._held.values():
            if now_s < held.next_s or not holders:
                continue
            untried = [p for p in holders if p not in held.tried]
            if not untried:
                held.tried.clear()
                untried = list(holders)
            fetch = self._ask(held, untried[0], now_s)
            if fetch is not None:
                out.append(fetch)
        return out

    def _ask(self, held: _Held, peer: str, now_s: float) -> Fetch | None:
        held.tried.append(peer)
        held.next_s = now_s + min(REFETCH_S * 2**held.asked, REFETCH_S_MAX)
        held.asked += 1
        self.fetches += 1
        return Fetch(peer=peer, ids=tuple(sorted(held.missing)))
