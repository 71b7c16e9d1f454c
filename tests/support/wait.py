"""Polling with a deadline: how tests wait for something to become true, never a sleep."""

from __future__ import annotations

import time
from collections.abc import Callable


def eventually(
    condition: Callable[[], object],
    what: str | Callable[[], str] = "the condition",
    within_s: float = 30.0,
    every_s: float = 0.02,
) -> None:
    """Return once `condition()` is true; fail with `what` (or what it returns) at the deadline."""
    deadline = time.monotonic() + within_s
    while not condition():
        if time.monotonic() >= deadline:
            raise AssertionError(f"not within {within_s:g} s: {what if isinstance(what, str) else what()}")
        time.sleep(every_s)
