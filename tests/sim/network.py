"""A fake network: every fault is plain data, every choice comes from one seeded rng.

`Faults` says what the network does to each message: a delay (a fixed minimum plus an
exponential part, so later sends can overtake earlier ones), loss, duplication, and
whether one link keeps send order. On top, the scenario partitions nodes into groups
(and heals them), cuts single links, and crashes and restarts nodes. A message is
dropped when its endpoints cannot reach each other when it is sent or when it would
arrive, so a partition also swallows what was in flight across it.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class Faults:
    delay_s_min: float = 0.002
    # Mean of the exponential delay added to the minimum.
    delay_s_mean: float = 0.020
    loss: float = 0.0
    duplication: float = 0.0
    # False: each link delivers in send order (TCP-like); True: copies may overtake.
    reorder: bool = True


@dataclass(slots=True)
class NetStats:
    sent: int = 0
    lost: int = 0
    duplicated: int = 0
    unreachable: int = 0


class SimNetwork:
    def __init__(self, rng: random.Random, faults: Faults) -> None:
        self.faults = faults
        self.stats = NetStats()
        self._rng = rng
        self._group: dict[str, int] = {}
        self._cut: set[frozenset[str]] = set()
        self._down: set[str] = set()
        self._link_last_s: dict[tuple[str, str], float] = {}

    def partition(self, *groups: Iterable[str]) -> None:
        """Split the network: each group reaches only itself; unnamed nodes form one more."""
        self._group = {node: index for index, group in enumerate(groups, start=1) for node in group}

    def heal(self) -> None:
        self._group.clear()
        self._cut.clear()

    def cut(self, a: str, b: str) -> None:
        self._cut.add(frozenset((a, b)))

    def crash(self, node: str) -> None:
        self._down.add(node)

    def restart(self, node: str) -> None:
        self._down.discard(node)

    def is_up(self, node: str) -> bool:
        return node not in self._down

    def reachable(self, src: str, dst: str) -> bool:
        return (
            src not in self._down
            and dst not in self._down
            and self._group.get(src, 0) == self._group.get(dst, 0)
            and frozenset((src, dst)) not in self._cut
        )

    def arrivals(self, src: str, dst: str, now_s: float) -> list[float]:
        """When the copies of one message sent now arrive; empty when it is lost."""
        self.stats.sent += 1
        if not self.reachable(src, dst):
            self.stats.unreachable += 1
            return []
        if self._rng.random() < self.faults.loss:
            self.stats.lost += 1
            return []
        copies = 1
        if self._rng.random() < self.faults.duplication:
            copies = 2
            self.stats.duplicated += 1
        times = []
        for _ in range(copies):
            delay = self.faults.delay_s_min
            if self.faults.delay_s_mean > 0:
                delay += self._rng.expovariate(1.0 / self.faults.delay_s_mean)
            when = now_s + delay
            if not self.faults.reorder:
                when = max(when, self._link_last_s.get((src, dst), 0.0))
                self._link_last_s[(src, dst)] = when
            times.append(when)
        return times
