"""The in-memory manifest cache: bounded in bytes, least recently used out first."""

from __future__ import annotations

import pytest

from pyrsia.artifacts.manifest_cache import ManifestCache
from pyrsia.formats.digest import Digest

JSON = "application/vnd.oci.image.manifest.v1+json"


def body(n: int, size: int) -> tuple[Digest, bytes]:
    data = bytes([n % 256]) * size
    return Digest.of(data), data


def test_a_held_manifest_comes_back_as_put() -> None:
    cache = ManifestCache(1024)
    digest, data = body(1, 100)
    assert cache.get(digest) is None
    assert cache.put(digest, JSON, data)
    found = cache.get(digest)
    assert found is not None and (found.media_type, found.body) == (JSON, data)


def test_bytes_are_bounded_and_the_least_recently_used_go_first() -> None:
    cache = ManifestCache(300)
    held = [body(n, 100) for n in range(4)]
    for digest, data in held[:3]:
        cache.put(digest, JSON, data)
    assert cache.get(held[0][0]) is not None  # used: now the most recent
    cache.put(*held[3][:1], JSON, held[3][1])
    assert cache.bytes_held == 300 and len(cache) == 3
    assert [cache.get(d) is not None for d, _ in held] == [True, False, True, True]


def test_putting_a_manifest_again_counts_its_bytes_once() -> None:
    cache = ManifestCache(1000)
    digest, data = body(1, 100)
    cache.put(digest, JSON, data)
    cache.put(digest, JSON, data)
    assert cache.bytes_held == 100 and len(cache) == 1


def test_a_manifest_larger_than_an_entry_may_be_is_not_held() -> None:
    cache = ManifestCache(10_000, entry_bytes_max=500)
    digest, data = body(1, 501)
    assert not cache.put(digest, JSON, data)
    assert cache.get(digest) is None and cache.bytes_held == 0
    small = ManifestCache(200)  # the entry bound never exceeds the whole bound
    assert not small.put(*body(2, 201)[:1], JSON, body(2, 201)[1])


def test_a_cache_of_zero_bytes_holds_nothing() -> None:
    cache = ManifestCache(0)
    digest, data = body(1, 1)
    assert not cache.put(digest, JSON, data)
    assert cache.get(digest) is None
    with pytest.raises(ValueError):
        ManifestCache(-1)
