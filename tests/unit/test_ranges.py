"""Single byte ranges: the registry conformance cases, plus a property over all inputs."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyrsia.errors import RangeNotSatisfiable
from pyrsia.http.ranges import ByteRange, parse_range


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        ("bytes=500-1499", 2048, ByteRange(500, 1499)),
        ("bytes=500-", 2048, ByteRange(500, 2047)),
        ("bytes=-500", 2048, ByteRange(1548, 2047)),
        ("bytes=2000-5000", 2048, ByteRange(2000, 2047)),
        ("bytes=-5000", 2048, ByteRange(0, 2047)),
        ("bytes=0-0", 1, ByteRange(0, 0)),
        ("BYTES = 1-2", 10, ByteRange(1, 2)),
        ("bytes=0-1,4-5", 10, None),
        ("items=0-5", 10, None),
    ],
)
def test_satisfiable_or_ignored(header: str, size: int, expected: ByteRange | None) -> None:
    assert parse_range(header, size) == expected


@pytest.mark.parametrize(
    ("header", "size"),
    [
        ("bytes=500-0", 2048),
        ("bytes=5000-10000", 2048),
        ("bytes=2048-", 2048),
        ("bytes=-0", 2048),
        ("bytes=-1", 0),
        ("bytes=0-", 0),
        ("bytes=-", 2048),
        ("bytes=a-b", 2048),
        ("bytes=1-2-3", 2048),
        ("garbage", 2048),
    ],
)
def test_refused(header: str, size: int) -> None:
    with pytest.raises(RangeNotSatisfiable) as info:
        parse_range(header, size)
    assert info.value.size == size


@given(size=st.integers(0, 10_000), first=st.integers(0, 20_000), last=st.integers(0, 20_000))
def test_served_range_lies_inside_the_body(size: int, first: int, last: int) -> None:
    try:
        chosen = parse_range(f"bytes={first}-{last}", size)
    except RangeNotSatisfiable:
        assert first >= size or last < first
        return
    assert chosen is not None
    assert 0 <= chosen.start == first <= chosen.end <= size - 1
    assert chosen.end == min(last, size - 1)
    assert chosen.content_range(size) == f"bytes {chosen.start}-{chosen.end}/{size}"
