"""A fake clock: simulated seconds that advance only when the driver moves them."""

from __future__ import annotations


class SimClock:
    def __init__(self, start_s: float = 0.0) -> None:
        self._now_s = start_s

    def now(self) -> float:
        return self._now_s

    def advance_to(self, when_s: float) -> None:
        if when_s < self._now_s:
            raise ValueError(f"simulated time cannot go back from {self._now_s} to {when_s}")
        self._now_s = when_s
