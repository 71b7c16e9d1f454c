"""`RequestGuard`, driven directly: per-peer token buckets, build admission, the negative cache."""

from __future__ import annotations

import pytest

from pyrsia.p2p.behaviours.requests import (
    BUILD_FORBIDDEN,
    KNOWN_MISSING,
    RATE_LIMITED,
    PublishReply,
    PublishRequest,
    RequestGuard,
)

PULL = PublishRequest(kind="docker_manifest", name="library/missing", reference="1.0")
BUILD = PublishRequest(kind="build_docker", name="library/alpine:3.18")
NOT_FOUND = PublishReply(ok=False, status=404, error="library/missing:1.0: not found upstream")


def guard(**limits: float) -> RequestGuard:
    settings = {"rate_per_s": 2.0, "burst": 5, "missing_ttl_s": 60.0} | limits
    return RequestGuard(
        rate_per_s=settings["rate_per_s"],
        burst=int(settings["burst"]),
        missing_ttl_s=settings["missing_ttl_s"],
    )


def test_a_peer_gets_its_burst_then_the_rate() -> None:
    g = guard()
    answers = [g.admit("a", PULL, 0.0, may_build=False) for _ in range(8)]
    assert answers[:5] == [None] * 5
    assert [r.reason if r else None for r in answers[5:]] == [RATE_LIMITED] * 3
    refusal = answers[5]
    assert refusal is not None and refusal.reply.status == 429 and not refusal.reply.ok
    assert g.admit("a", PULL, 0.49, may_build=False) is not None  # 0.98 of a token back
    assert g.admit("a", PULL, 0.5, may_build=False) is None  # one token at 2 per second
    assert g.admit("a", PULL, 0.5, may_build=False) is not None


def test_each_peer_has_its_own_bucket() -> None:
    g = guard(burst=1)
    assert g.admit("a", PULL, 0.0, may_build=False) is None
    assert g.admit("a", PULL, 0.0, may_build=False) is not None
    assert g.admit("b", PULL, 0.0, may_build=False) is None


def test_a_bucket_never_holds_more_than_the_burst() -> None:
    g = guard(burst=3)
    g.admit("a", PULL, 0.0, may_build=False)
    admitted = sum(g.admit("a", PULL, 1000.0, may_build=False) is None for _ in range(10))
    assert admitted == 3


def test_rate_zero_is_unlimited() -> None:
    g = guard(rate_per_s=0, burst=1)
    assert all(g.admit("a", PULL, 0.0, may_build=False) is None for _ in range(1000))


def test_tracked_peers_are_bounded() -> None:
    g = RequestGuard(rate_per_s=1.0, burst=1, missing_ttl_s=0, peers_max=10)
    for i in range(100):
        g.admit(f"peer-{i}", PULL, 0.0, may_build=False)
    assert g.peers_tracked == 10


def test_builds_only_from_who_may_build() -> None:
    g = guard()
    refusal = g.admit("stranger", BUILD, 0.0, may_build=False)
    assert refusal is not None and refusal.reason == BUILD_FORBIDDEN
    assert refusal.reply.status == 403 and "\n" not in refusal.reply.error
    assert "stranger may not request builds" in refusal.reply.error
    assert g.admit("authority", BUILD, 0.0, may_build=True) is None
    # A pull-driven publish needs no such right.
    assert g.admit("stranger", PULL, 0.0, may_build=False) is None


def test_a_missing_name_is_answered_from_memory_until_its_ttl_ends() -> None:
    g = guard(rate_per_s=0, missing_ttl_s=60.0)
    assert g.admit("a", PULL, 0.0, may_build=False) is None
    g.served(PULL, NOT_FOUND, 1.0)
    for now in (1.0, 30.0, 60.9):
        refusal = g.admit("b", PULL, now, may_build=False)
        assert refusal is not None and refusal.reason == KNOWN_MISSING
        assert refusal.reply == NOT_FOUND
    assert g.admit("b", PULL, 61.0, may_build=False) is None  # expired: asked upstream again
    assert g.missing_count == 0
    other = PublishRequest(kind="docker_manifest", name="library/missing", reference="2.0")
    g.served(PULL, NOT_FOUND, 61.5)
    assert g.admit("b", other, 62.0, may_build=False) is None  # another reference is another key


@pytest.mark.parametrize(
    "reply",
    [
        PublishReply(ok=True, height=3),
        PublishReply(ok=False, status=503, error="upstream down"),
        PublishReply(ok=False, status=502, error="digest mismatch"),
    ],
)
def test_only_not_found_is_remembered(reply: PublishReply) -> None:
    g = guard(rate_per_s=0)
    g.served(PULL, reply, 0.0)
    assert g.admit("a", PULL, 1.0, may_build=False) is None


def test_a_ttl_of_zero_remembers_nothing() -> None:
    g = guard(rate_per_s=0, missing_ttl_s=0)
    g.served(PULL, NOT_FOUND, 0.0)
    assert g.admit("a", PULL, 0.0, may_build=False) is None


def test_the_negative_cache_is_bounded_oldest_first() -> None:
    g = RequestGuard(rate_per_s=0, burst=1, missing_ttl_s=60.0, missing_max=3)
    requests = [PublishRequest(kind="maven", name=f"com/example/a/{i}/a-{i}.pom") for i in range(5)]
    for r in requests:
        g.served(r, NOT_FOUND, 0.0)
    assert g.missing_count == 3
    assert g.admit("a", requests[0], 1.0, may_build=False) is None  # dropped first
    assert g.admit("a", requests[4], 1.0, may_build=False) is not None


def test_limits_must_be_sane() -> None:
    with pytest.raises(ValueError):
        RequestGuard(rate_per_s=-1, burst=1, missing_ttl_s=0)
    with pytest.raises(ValueError):
        RequestGuard(rate_per_s=1, burst=0, missing_ttl_s=0)
