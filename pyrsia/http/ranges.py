"""Single byte-range requests (RFC 9110 §14), as a pure function of header and size.

Only one range per request is served; a multi-range request is answered with the
whole body, which RFC 9110 permits. Other units are ignored. Ranges that are
malformed, start past the end, or end before they start are refused with 416, which
is what the registry conformance rules for blobs ask for.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pyrsia.errors import RangeNotSatisfiable

_SPEC = re.compile(r"^(\d*)-(\d*)$")


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
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiable("empty suffix range", size=size)
        return ByteRange(max(0, size - suffix), size - 1)
    start = int(first)
    end = int(last) if last else size - 1
    if start >= size or end < start:
        raise RangeNotSatisfiable(f"range {spec} not satisfiable for {size} bytes", size=size)
    return ByteRange(start, min(end, size - 1))
