"""Whole numbers in request URLs (`?n=`, `?limit=`, `?since=`, `/blocks/<height>`).

A number from a client is ASCII decimal digits only (no sign, exponent, spaces or
the other Unicode digits `str.isdigit` accepts, such as `²`), at most
`DIGITS_MAX` digits, and within the range the parameter allows. Anything else is a
400 that names the parameter and its range, decided before the value reaches
SQLite (whose integers stop at 2**63 - 1) or a loop.
"""

from __future__ import annotations

from pyrsia.errors import PyrsiaError, UsageError

DIGITS_MAX = 19  # 2**63 - 1 has 19 digits
INT64_MAX = 2**63 - 1


def whole_number(raw: str, what: str, low: int, high: int, error: type[PyrsiaError] = UsageError) -> int:
    """`raw` as an int in [low, high], or `error` naming `what`."""
    if 0 < len(raw) <= DIGITS_MAX and raw.isascii() and raw.isdigit():
        value = int(raw)
        if low <= value <= high:
            return value
    shown = raw if len(raw) <= 40 else raw[:37] + "..."
    raise error(f"{what} must be a whole number from {low} to {high}, not {shown!r}")
