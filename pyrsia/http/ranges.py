"""Single byte-range requests (RFC 9110 §14), as a pure function of header and size.

Only one range per request is served; a multi-range request is answered with the
whole body, which RFC 9110 permits. Other units are ignored. Ranges that are
malformed, start past the end, or end before they start are refused with 416, which
is what the registry conformance rules for blobs ask for.

Positions are `1*DIGIT` with no upper bound in the grammar, so a client may send
thousands of digits. Such a number is still meaningful — it lies past the end of any
body — so it is read as "larger than anything" (`POSITION_MAX`) without ever being
converted digit by digit: a first-pos that large is unsatisfiable (416), a last-pos
that large is clamped to the end, and a suffix that large asks for the whole body.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pyrsia.errors import RangeNotSatisfiable

# RFC 9110 §14.1.1: first-pos / last-pos / suffix-length = 1*DIGIT (ASCII digits only).
_SPEC = re.compile(r"^([0-9]*)-([0-9]*)$")
# Larger than any body we can hold (a signed 64-bit file offset); 19 digits reach it.
POSITION_MAX = 2**63 - 1
POSITION_DIGITS_MAX = len(str(POSITION_MAX))


@dataclass(frozen=True, slots=True)
class ByteRange:
    start: int
    end: int  # inclusive

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    def content_range(self, size: int) -> str:
        return f"bytes {self.start}-{self.end}/{size}"


def parse_range(header: str, size: int) -> ByteRange | None:
    """The range to serve, or None for the whole body."""
    unit, sep, spec = header.strip().partition("=")
    if not sep or unit.strip().lower() != "bytes":
        if sep:
            return None
        raise RangeNotSatisfiable(f"malformed Range {header[:100]!r}", size=size)
    spec = spec.strip()
    if "," in spec:
        return None
    match = _SPEC.match(spec)
    if match is None or match.group(0) == "-":
        raise RangeNotSatisfiable(f"malformed Range {header[:100]!r}", size=size)
    first, last = match.group(1), match.group(2)
    if not first:
        suffix = _position(last)
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiable("empty suffix range", size=size)
        return ByteRange(max(0, size - suffix), size - 1)
    start = _position(first)
    end = _position(last) if last else size - 1
    if start >= size or end < start:
        raise RangeNotSatisfiable(f"range {spec[:100]} not satisfiable for {size} bytes", size=size)
    return ByteRange(start, min(end, size - 1))


def _position(digits: str) -> int:
    """A decimal position, saturating at `POSITION_MAX` however many digits it has."""
    significant = digits.lstrip("0")
    if len(significant) > POSITION_DIGITS_MAX:
        return POSITION_MAX
    return min(int(significant or "0"), POSITION_MAX)
