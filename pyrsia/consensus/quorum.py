"""Vote counting: who voted for what, counted once per signer, against thresholds.

A `Tally` holds the votes of one (height, round, vote type): at most one vote per
signer, only from the authority set in force at that height. The first vote a signer
casts is the one counted; a later vote for a different value is reported back as a
`Conflict` (equivocation evidence) and never counted, and a replay of the same vote is
a `Duplicate`. `add_justified` is the one exception: a vote that arrives as part of a
proof (the prevotes a proposer attaches for its `valid_round`) counts for its value
even if the signer told us something else first, as in the paper, where a message
counts for the value it names (an equivocating signer is then in two value sets, but
still once in `total`). Two quorums share more than f signers, so with at most f
faulty authorities at most one value (or nil) can reach a quorum in one tally.

Two thresholds over n authorities (Tendermint: arXiv:1807.04938, §2 "2f+1" and
"f+1", generalised to any n):

    quorum(n)            more than two thirds: n*2//3 + 1 (the translog's own rule)
    honest_threshold(n)  n - quorum(n) + 1: more signers than can be faulty while a
                         quorum of honest nodes still exists, so at least one is honest

`Participation` records, per round, which authorities sent anything at all; a round
ahead of ours with `honest_threshold` of them is where honest nodes already are
(Algorithm 1, line 55).
"""

from __future__ import annotations

from dataclasses import dataclass

from pyrsia.translog.block import quorum

__all__ = [
    "Added",
    "Conflict",
    "Duplicate",
    "NotAuthority",
    "Participation",
    "Tally",
    "Vote",
    "honest_threshold",
    "quorum",
]

# A vote is for a value hash, or for nil (None).
Value = bytes | None


def honest_threshold(count: int) -> int:
    """Signers among `count` authorities of whom at least one must be honest."""
    return count - quorum(count) + 1


@dataclass(frozen=True, slots=True, kw_only=True)
class Vote:
    signer: str
    value: Value
    signature: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Added:
    vote: Vote


@dataclass(frozen=True, slots=True, kw_only=True)
class Duplicate:
    vote: Vote


@dataclass(frozen=True, slots=True, kw_only=True)
class Conflict:
    first: Vote
    second: Vote


@dataclass(frozen=True, slots=True, kw_only=True)
class NotAuthority:
    vote: Vote


AddOutcome = Added | Duplicate | Conflict | NotAuthority


class Tally:
    """The votes of one (height, round, type) from a fixed authority set."""

    __slots__ = ("_by_signer", "_by_value", "_justified", "authorities", "quorum")

    def __init__(self, authorities: frozenset[str]) -> None:
        self.authorities = authorities
        self.quorum = quorum(len(authorities))
        self._by_signer: dict[str, Vote] = {}
        self._by_value: dict[Value, list[Vote]] = {}
        self._justified: set[tuple[str, Value]] = set()

    def add(self, vote: Vote) -> AddOutcome:
        if vote.signer not in self.authorities:
            return NotAuthority(vote=vote)
        first = self._by_signer.get(vote.signer)
        if first is not None:
            if first.value == vote.value:
                return Duplicate(vote=vote)
            return Conflict(first=first, second=vote)
        self._by_signer[vote.signer] = vote
        self._by_value.setdefault(vote.value, []).append(vote)
        return Added(vote=vote)

    def add_justified(self, vote: Vote) -> AddOutcome:
        """Count `vote` for its value even if its signer already voted for another one."""
        outcome = self.add(vote)
        if not isinstance(outcome, Conflict) or (vote.signer, vote.value) in self._justified:
            return outcome
        self._justified.add((vote.signer, vote.value))
        self._by_value.setdefault(vote.value, []).append(vote)
        return outcome

    def count(self, value: Value) -> int:
        return len(self._by_value.get(value, ()))

    def total(self) -> int:
        return len(self._by_signer)

    def has_quorum(self, value: Value) -> bool:
        return self.count(value) >= self.quorum

    def has_quorum_of_any(self) -> bool:
        return self.total() >= self.quorum

    def quorum_values(self) -> list[Value]:
        """The value (or nil) with a quorum: at most one, since a quorum is a majority."""
        return [value for value, votes in self._by_value.items() if len(votes) >= self.quorum]

    def votes_for(self, value: Value) -> list[Vote]:
        return list(self._by_value.get(value, ()))

    def vote_of(self, signer: str) -> Vote | None:
        return self._by_signer.get(signer)


class Participation:
    """Which authorities sent anything (proposal or vote) in each round of one height."""

    __slots__ = ("_by_round", "authorities", "threshold")

    def __init__(self, authorities: frozenset[str]) -> None:
        self.authorities = authorities
        self.threshold = honest_threshold(len(authorities))
        self._by_round: dict[int, set[str]] = {}

    def add(self, round_: int, signer: str) -> None:
        if signer in self.authorities:
            self._by_round.setdefault(round_, set()).add(signer)

    def count(self, round_: int) -> int:
        return len(self._by_round.get(round_, ()))

    def highest_round_joined_above(self, round_: int) -> int | None:
        """The highest round above `round_` that `threshold` authorities took part in."""
        rounds = [r for r, signers in self._by_round.items() if r > round_ and len(signers) >= self.threshold]
        return max(rounds, default=None)
