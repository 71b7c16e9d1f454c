"""Vote counting: one vote per signer, only authorities, thresholds for every n."""

from __future__ import annotations

import pytest

from pyrsia.consensus.quorum import (
    Added,
    Conflict,
    Duplicate,
    NotAuthority,
    Participation,
    Tally,
    Vote,
    honest_threshold,
    quorum,
)

AUTHORITIES = frozenset({"a", "b", "c", "d"})
V = b"v" * 32


def vote(signer: str, value: bytes | None, signature: bytes = b"s") -> Vote:
    return Vote(signer=signer, value=value, signature=signature)


@pytest.mark.parametrize(
    ("n", "q", "honest"), [(1, 1, 1), (2, 2, 1), (3, 3, 1), (4, 3, 2), (6, 5, 2), (7, 5, 3), (31, 21, 11)]
)
def test_thresholds(n: int, q: int, honest: int) -> None:
    assert (quorum(n), honest_threshold(n)) == (q, honest)
    faulty = n - q  # the most faults a quorum of honest nodes survives
    assert 2 * q - n > faulty  # two quorums share an honest node
    assert honest == faulty + 1


def test_a_signer_counts_once_and_a_second_value_is_a_conflict() -> None:
    tally = Tally(AUTHORITIES)
    assert isinstance(tally.add(vote("a", V)), Added)
    assert isinstance(tally.add(vote("a", V, b"other encoding")), Duplicate)
    outcome = tally.add(vote("a", None))
    assert isinstance(outcome, Conflict) and outcome.first.value == V and outcome.second.value is None
    assert isinstance(tally.add(vote("mallory", V)), NotAuthority)
    assert (tally.count(V), tally.count(None), tally.total()) == (1, 0, 1)


def test_quorum_for_a_value_nil_or_anything() -> None:
    tally = Tally(AUTHORITIES)
    tally.add(vote("a", V))
    tally.add(vote("b", None))
    tally.add(vote("c", V))
    assert tally.has_quorum_of_any() and not tally.has_quorum(V) and tally.quorum_values() == []
    tally.add(vote("d", V))
    assert tally.has_quorum(V) and tally.quorum_values() == [V]
    assert sorted(v.signer for v in tally.votes_for(V)) == ["a", "c", "d"]


def test_participation_finds_the_highest_round_with_f_plus_one() -> None:
    seen = Participation(AUTHORITIES)
    seen.add(5, "a")
    seen.add(5, "a")
    seen.add(7, "b")
    seen.add(7, "mallory")
    assert seen.highest_round_joined_above(0) is None
    seen.add(5, "c")
    seen.add(7, "d")
    assert seen.highest_round_joined_above(0) == 7
    assert seen.highest_round_joined_above(7) is None
