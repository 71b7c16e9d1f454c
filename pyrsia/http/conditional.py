"""Conditional requests (RFC 9110 §13) as a pure function of request headers and validators.

The front ends put `ETag` and `Last-Modified` on what they serve; the server asks
`evaluate` what to do with a 200 answer to GET or HEAD before sending it. The
preconditions are evaluated in the order of RFC 9110 §13.2.2:

1. `If-Match` (strong comparison, `*`) — false → 412;
2. else `If-Unmodified-Since` — modified since → 412;
3. `If-None-Match` (weak comparison, `*`, lists) — a match → 304;
4. else, for GET/HEAD, `If-Modified-Since` — not modified since → 304;
5. `If-Range` with a `Range` on GET (strong ETag comparison, or an HTTP-date equal to
   `Last-Modified`) — false → ignore the Range and send the whole 200, so a client
   resuming a download never splices two versions of a file.

Anything unparsable is ignored as the RFC asks (an invalid date, a field with more
than one date); an unparsable entity-tag list matches nothing. Nothing here raises on
client input.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

Headers = Iterable[tuple[str, str]]

# RFC 9110 §8.8.3: entity-tag = [ "W/" ] DQUOTE *etagc DQUOTE; etagc excludes DQUOTE,
# SP and controls but not the comma, so a list is split by this grammar, never on ",".
_ETAG = re.compile(r'(W/)?"([\x21\x23-\x7e\x80-\xff]*)"')
_LIST_SEPARATOR = re.compile(r"[ \t]*,[ \t]*")

# RFC 9110 §15.4.5: what a 304 carries from the 200 it stands for.
NOT_MODIFIED_HEADERS = frozenset(
    {"cache-control", "content-location", "date", "etag", "expires", "vary", "last-modified"}
)


class Outcome(enum.Enum):
    PROCEED = "proceed"  # send the response; a Range, if any, applies
    IGNORE_RANGE = "ignore-range"  # send the whole 200: If-Range was false
    NOT_MODIFIED = "not-modified"  # 304
    PRECONDITION_FAILED = "precondition-failed"  # 412


@dataclass(frozen=True, slots=True, kw_only=True)
class EntityTag:
    opaque: str  # between the quotes
    weak: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Validators:
    """What the selected representation can be compared by (RFC 9110 §8.8)."""

    etag: EntityTag | None = None
    last_modified: datetime | None = None

    @classmethod
    def of(cls, response_headers: Headers) -> Validators:
        etag: EntityTag | None = None
        last_modified: datetime | None = None
        for name, value in response_headers:
            lowered = name.lower()
            if lowered == "etag":
                tags = parse_etags(value)
                etag = tags[0] if tags and len(tags) == 1 else None
            elif lowered == "last-modified":
                last_modified = parse_http_date(value)
        return cls(etag=etag, last_modified=last_modified)


def evaluate(method: str, request_headers: Headers, validators: Validators) -> Outcome:
    """What to send instead of (or how to trim) a 200 answer to this request."""
    fields: dict[str, list[str]] = {}
    for name, value in request_headers:
        fields.setdefault(name.lower(), []).append(value)
    safe = method in ("GET", "HEAD")

    # Steps 1-2: the client's copy must still be the current one.
    if (if_match := fields.get("if-match")) is not None:
        holds = _matches(", ".join(if_match), validators.etag, strong=True)
    else:
        since = _single_date(fields.get("if-unmodified-since"))
        holds = since is None or validators.last_modified is None or validators.last_modified <= since
    if not holds:
        return Outcome.PRECONDITION_FAILED

    # Steps 3-4: the client's cached copy may still be good.
    if (if_none_match := fields.get("if-none-match")) is not None:
        changed = not _matches(", ".join(if_none_match), validators.etag, strong=False)
    else:
        since = _single_date(fields.get("if-modified-since")) if safe else None
        changed = since is None or validators.last_modified is None or validators.last_modified > since
    if not changed:
        return Outcome.NOT_MODIFIED if safe else Outcome.PRECONDITION_FAILED

    # Step 5: a resumed download continues only the representation it started on.
    if_range = fields.get("if-range")
    ranged = method == "GET" and "range" in fields and if_range is not None
    if ranged and not (
        if_range is not None and len(if_range) == 1 and _if_range_holds(if_range[0], validators)
    ):
        return Outcome.IGNORE_RANGE
    return Outcome.PROCEED


def parse_etags(value: str) -> list[EntityTag] | None:
    """A comma-separated list of entity-tags, or None if it does not parse."""
    tags: list[EntityTag] = []
    position = 0
    value = value.strip(" \t")
    while position < len(value):
        match = _ETAG.match(value, position)
        if match is None:
            return None
        tags.append(EntityTag(opaque=match.group(2), weak=match.group(1) is not None))
        position = match.end()
        if position == len(value):
            break
        separator = _LIST_SEPARATOR.match(value, position)
        if separator is None:
            return None
        position = separator.end()
        # RFC 9110 §5.6.1: empty list elements are allowed and ignored.
        while (more := _LIST_SEPARATOR.match(value, position)) is not None:
            position = more.end()
    return tags


def parse_http_date(value: str) -> datetime | None:
    """An HTTP-date (RFC 9110 §5.6.7) in UTC, or None when it is not one."""
    try:
        parsed = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    # A date with no zone (asctime form) is in GMT by definition.
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _matches(field: str, current: EntityTag | None, *, strong: bool) -> bool:
    """RFC 9110 §13.1.1/§13.1.2: does the field name the current representation?"""
    if field.strip(" \t") == "*":
        return True  # a 200 means a current representation exists
    tags = parse_etags(field)
    if not tags or current is None:
        return False
    if strong:
        return not current.weak and any(not t.weak and t.opaque == current.opaque for t in tags)
    return any(t.opaque == current.opaque for t in tags)


def _if_range_holds(value: str, validators: Validators) -> bool:
    """RFC 9110 §13.1.5: strong ETag comparison, or an exact Last-Modified date."""
    value = value.strip(" \t")
    if value.startswith(('"', "W/")):
        tags = parse_etags(value)
        if tags is None or len(tags) != 1:
            return False
        tag, current = tags[0], validators.etag
        return current is not None and not tag.weak and not current.weak and tag.opaque == current.opaque
    date = parse_http_date(value)
    return date is not None and validators.last_modified is not None and date == validators.last_modified


def _single_date(values: list[str] | None) -> datetime | None:
    # RFC 9110 §13.1.3/§13.1.4: ignore the field if it has more than one member or no valid date.
    if values is None or len(values) != 1:
        return None
    return parse_http_date(values[0])
