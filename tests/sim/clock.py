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


class NodeClock:
    """One node's view of time: skewed by `offset_s` and running at `rate` times real speed.

    Cores only ever see local time; the driver needs the global instant at which a
    local deadline falls, so both directions are here.
    """

    def __init__(self, offset_s: float = 0.0, rate: float = 1.0) -> None:
        if rate <= 0:
            raise ValueError("a clock must run forward")
        self.offset_s = offset_s
        self.rate = rate

    def local_s(self, global_s: float) -> float:
        return global_s * self.rate + self.offset_s

    def global_s(self, local_s: float) -> float:
        return (local_s - self.offset_s) / self.rate
