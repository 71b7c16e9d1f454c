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
        # Positions of any length (RFC 9110: 1*DIGIT) are read without converting them.
        ("bytes=0-" + "9" * 5000, 2048, ByteRange(0, 2047)),
        ("bytes=-" + "9" * 5000, 2048, ByteRange(0, 2047)),
        ("bytes=" + "0" * 5000 + "1-" + "0" * 5000 + "2", 2048, ByteRange(1, 2)),
        ("bytes=0-9223372036854775808", 10, ByteRange(0, 9)),
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
        ("bytes=" + "9" * 5000 + "-", 2048),
        ("bytes=" + "9" * 5000 + "-" + "9" * 5000, 2048),
        ("bytes=9223372036854775807-", 2**62),
        ("bytes=\u0663-\u0664", 2048),  # Unicode digits are not DIGIT
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


@given(
    size=st.integers(0, 2**63 - 1),
    first=st.text("0123456789", max_size=6000),
    last=st.text("0123456789", max_size=6000),
)
def test_any_digit_strings_give_a_range_or_416(size: int, first: str, last: str) -> None:
    try:
        chosen = parse_range(f"bytes={first}-{last}", size)
    except RangeNotSatisfiable:
        return
    assert chosen is not None and 0 <= chosen.start <= chosen.end < size
