"""Transactions waiting for a quorum of endorsements, and what each authority said.

Every authority verifies each pending transaction on its own and gossips a signed
verdict; `Mempool` collects them. A transaction is *ready* to be ordered once
endorsements from a quorum of the authorities in force back it, and *refused* once so
many refused that a quorum can no longer endorse it (more than n - quorum: with four
authorities, two). The first verdict of an authority on a transaction is the one that
counts; it cannot change its mind.

Two transactions may publish the same thing (several authorities asked to build one
image): they share a *key* — (package type, path, digest) for an artifact, the peer
id and the change for an authority — and only the first ready one per key is proposed;
when one commits, the others are settled with it. One that comes after its twin has
committed (an authority that looked at its log before the twin's block arrived, then
fetched and submitted) is settled at once with the twin's height (`committed_height`),
never proposed again. Bounded by count; entries older than `ttl_s` expire. Pure: time is
an argument.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from pyrsia.consensus.wire import Verdict
from pyrsia.translog.block import quorum
from pyrsia.translog.tx import AddArtifact, AuthorizedNode, Endorsement, Registry, Transaction

TXS_MAX = 10_000
TTL_S = 600.0
ORPHAN_VERDICTS_MAX = 10_000


def key_of(tx: Transaction) -> tuple[str, str, str]:
    """What a transaction publishes; two with one key are one publication."""
    payload = tx.payload
    if isinstance(payload, AddArtifact):
        return (payload.package_type, payload.path, payload.digest)
    if isinstance(payload, Registry):
        return ("registry", tx.type, payload.host)
    assert isinstance(payload, AuthorizedNode), "tx.py pairs every other type with this payload"
    return ("authority", tx.type, payload.peer_id)


class Committed(Protocol):
    """What the log says of a path: its newest record's digest and height."""

    @property
    def digest(self) -> str: ...

    @property
    def height(self) -> int: ...


def committed_height(tx: Transaction, latest: Callable[[str, str], Committed | None]) -> int | None:
    """The height at which the log already holds what `tx` publishes — the newest record
    of its path has its digest — or None. `latest(package_type, path)` reads the log. Only
    artifacts: an authority change is judged by the chain's own rules."""
    payload = tx.payload
    if not isinstance(payload, AddArtifact):
        return None
    record = latest(payload.package_type, payload.path)
    return record.height if record is not None and record.digest == payload.digest else None


@dataclass(slots=True)
class Entry:
    tx: Transaction  # as submitted, without endorsements (they are `endorsements`)
    key: tuple[str, str, str]
    received_s: float
    local: bool
    endorsements: dict[str, Endorsement] = field(default_factory=dict)
    refusals: dict[str, str] = field(default_factory=dict)
    resends: int = 0  # how often the shell re-sent it (or its verdict): its backoff

    def verdicts(self, authorities: Iterable[str]) -> dict[str, tuple[str, str]]:
        """Per authority: ("endorsed", ""), ("refused", reason) or ("pending", "")."""
        out = {}
        for peer in sorted(authorities):
            if peer in self.endorsements:
                out[peer] = ("endorsed", "")
            elif peer in self.refusals:
                out[peer] = ("refused", self.refusals[peer])
            else:
                out[peer] = ("pending", "")
        return out

    def endorsed(self, authorities: frozenset[str]) -> Transaction:
        signers = sorted(s for s in self.endorsements if s in authorities)
        return self.tx.with_endorsements(tuple(self.endorsements[s] for s in signers))

    def is_ready(self, authorities: frozenset[str]) -> bool:
        return sum(1 for s in self.endorsements if s in authorities) >= quorum(len(authorities))

    def is_refused(self, authorities: frozenset[str]) -> bool:
        refused = sum(1 for s in self.refusals if s in authorities)
        return refused > len(authorities) - quorum(len(authorities))


class Mempool:
    def __init__(self, *, txs_max: int = TXS_MAX, ttl_s: float = TTL_S) -> None:
        self.txs_max = txs_max
        self.ttl_s = ttl_s
        self._entries: dict[bytes, Entry] = {}  # insertion order is arrival order
        self._orphans: dict[bytes, list[Verdict]] = {}  # verdicts that came before their tx

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, tx_id: bytes) -> Entry | None:
        return self._entries.get(tx_id)

    def entries(self) -> list[Entry]:
        return list(self._entries.values())

    def add(self, tx: Transaction, now_s: float, *, local: bool = False) -> Entry | None:
        """The new entry (its carried endorsements and early verdicts counted), or None
        if it is here already or the pool is full."""
        if tx.id in self._entries or len(self._entries) >= self.txs_max:
            return None
        entry = Entry(tx=tx.with_endorsements(()), key=key_of(tx), received_s=now_s, local=local)
        self._entries[tx.id] = entry
        for e in tx.endorsements:
            entry.endorsements.setdefault(e.signer, e)
        for verdict in self._orphans.pop(tx.id, []):
            self._record(entry, verdict)
        return entry

    def verdict(self, verdict: Verdict) -> Entry | None:
        """Count a (verified) verdict; the entry it changed, or None. A verdict for a
        transaction not seen yet waits for it, within a bound."""
        entry = self._entries.get(verdict.tx_id)
        if entry is None:
            if len(self._orphans) < ORPHAN_VERDICTS_MAX or verdict.tx_id in self._orphans:
                waiting = self._orphans.setdefault(verdict.tx_id, [])
                if len(waiting) < 128:
                    waiting.append(verdict)
            return None
        return entry if self._record(entry, verdict) else None

    @staticmethod
    def _record(entry: Entry, verdict: Verdict) -> bool:
        if verdict.signer in entry.endorsements or verdict.signer in entry.refusals:
            return False  # the first word counts
        if verdict.endorse:
            entry.endorsements[verdict.signer] = verdict.endorsement()
        else:
            entry.refusals[verdict.signer] = verdict.reason
        return True

    def ready(self, authorities: frozenset[str], count_max: int) -> list[Transaction]:
        """Transactions a quorum endorsed, oldest first, one per key, with those endorsements."""
        out: list[Transaction] = []
        keys: set[tuple[str, str, str]] = set()
        for entry in self._entries.values():
            if len(out) >= count_max:
                break
            if entry.key not in keys and entry.is_ready(authorities):
                keys.add(entry.key)
                out.append(entry.endorsed(authorities))
        return out

    def settle(self, committed: Iterable[Transaction]) -> list[Entry]:
        """Remove what a block committed, and whatever publishes the same; the entries removed."""
        ids = set()
        keys = set()
        for tx in committed:
            ids.add(tx.id)
            keys.add(key_of(tx))
            self._orphans.pop(tx.id, None)
        removed = [e for i, e in self._entries.items() if i in ids or e.key in keys]
        for entry in removed:
            del self._entries[entry.tx.id]
        return removed

    def remove(self, tx_id: bytes) -> Entry | None:
        return self._entries.pop(tx_id, None)

    def expire(self, now_s: float) -> list[Entry]:
        old = [e for e in self._entries.values() if now_s - e.received_s > self.ttl_s]
        for entry in old:
            del self._entries[entry.tx.id]
        if len(self._orphans) > ORPHAN_VERDICTS_MAX // 2 and not old:
            self._orphans.clear()  # verdicts for transactions that never came
        return old
