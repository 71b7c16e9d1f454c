"""The simulation driver: one event queue, a fake clock, cores behind a tiny interface.

A node is anything with `receive(src, payload, now_s)`, `tick(now_s)` and
`next_deadline_s()`, each input returning the messages to send (`Outgoing`). The
driver moves the clock straight to the next event — a delivery from `SimNetwork`, or
a node's own deadline — so idle simulated hours cost nothing. Ties break by insertion
order, so a seed fixes the whole run. Tests inject inputs with `call(node, action)`.
"""

from __future__ import annotations

import heapq
import os
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

from tests.sim.clock import SimClock
from tests.sim.network import Faults, SimNetwork

SEED_ENV = "PYRSIA_SIM_SEED"
SEEDS_ENV = "PYRSIA_SIM_SEEDS"


@dataclass(frozen=True, slots=True)
class Outgoing:
    dst: str
    payload: object


class Node(Protocol):
    def receive(self, src: str, payload: object, now_s: float) -> list[Outgoing]: ...

    def tick(self, now_s: float) -> list[Outgoing]: ...

    def next_deadline_s(self) -> float | None: ...


class SimulationStuck(AssertionError):
    """More events than `steps_max`: a core keeps asking for ticks without progress."""


@dataclass(frozen=True, slots=True)
class _Deliver:
    src: str
    dst: str
    payload: object


@dataclass(frozen=True, slots=True)
class _Timer:
    node: str


class Simulation:
    def __init__(self, seed: int, faults: Faults | None = None, *, steps_max: int = 50_000_000) -> None:
        self.seed = seed
        # Separate streams, so a scenario drawing one more number leaves the network's alone.
        self.rng = random.Random(f"{seed}/scenario")
        self.network = SimNetwork(random.Random(f"{seed}/network"), faults or Faults())
        self.clock = SimClock()
        self.nodes: dict[str, Node] = {}
        self.delivered = 0
        self.trace: list[tuple[float, str, str]] | None = None
        self._queue: list[tuple[float, int, _Deliver | _Timer]] = []
        self._seq = 0
        self._timers: dict[str, float] = {}
        self._steps = 0
        self._steps_max = steps_max

    @property
    def now_s(self) -> float:
        return self.clock.now()

    def add(self, name: str, node: Node) -> None:
        self.nodes[name] = node
        self._arm(name)

    def call(self, name: str, action: Callable[[float], list[Outgoing]]) -> None:
        """Give node `name` an input now (`action(now_s)`) and send what it returns."""
        if not self.network.is_up(name):
            raise ValueError(f"node {name} is down")
        self._send(name, action(self.now_s))
        self._arm(name)

    def crash(self, name: str) -> None:
        """The node stops: its state is gone, messages to and from it are dropped."""
        self.network.crash(name)
        self.nodes.pop(name, None)
        self._timers.pop(name, None)

    def restart(self, name: str, node: Node) -> None:
        """`node` (rebuilt from whatever the old one persisted) takes the crashed one's place."""
        self.network.restart(name)
        self.add(name, node)

    def step(self) -> bool:
        """Process the next event; False when nothing is left to happen."""
        if not self._queue:
            return False
        self._steps += 1
        if self._steps > self._steps_max:
            raise SimulationStuck(f"seed={self.seed}: more than {self._steps_max} events")
        when, _, event = heapq.heappop(self._queue)
        self.clock.advance_to(when)
        if isinstance(event, _Timer):
            if self._timers.get(event.node) != when:
                return True  # superseded by an earlier timer, or the node crashed
            del self._timers[event.node]
            node = self.nodes[event.node]
            self._send(event.node, node.tick(when))
            self._arm(event.node)
            return True
        if not self.network.reachable(event.src, event.dst):
            return True
        self.delivered += 1
        if self.trace is not None:
            self.trace.append((when, event.src, event.dst))
        self._send(event.dst, self.nodes[event.dst].receive(event.src, event.payload, when))
        self._arm(event.dst)
        return True

    def run_until(self, done: Callable[[], bool], *, within_s: float) -> bool:
        """Run events until `done()` holds or `within_s` simulated seconds pass."""
        deadline_s = self.now_s + within_s
        while not done():
            if not self._queue or self._queue[0][0] > deadline_s:
                self.clock.advance_to(max(self.now_s, deadline_s))
                return done()
            self.step()
        return True

    def run_for(self, duration_s: float) -> None:
        self.run_until(lambda: False, within_s=duration_s)

    def _send(self, src: str, outgoing: list[Outgoing]) -> None:
        for message in outgoing:
            for when in self.network.arrivals(src, message.dst, self.now_s):
                self._push(when, _Deliver(src, message.dst, message.payload))

    def _arm(self, name: str) -> None:
        node = self.nodes.get(name)
        if node is None:
            return
        deadline_s = node.next_deadline_s()
        if deadline_s is None:
            return
        when = max(deadline_s, self.now_s)
        armed = self._timers.get(name)
        if armed is None or when < armed:
            self._timers[name] = when
            self._push(when, _Timer(name))

    def _push(self, when: float, event: _Deliver | _Timer) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (when, self._seq, event))


def seeds(default: int, *, first: int = 1) -> list[int]:
    """The seeds a test runs: PYRSIA_SIM_SEED alone, or max(default, PYRSIA_SIM_SEEDS) of them."""
    replay = os.environ.get(SEED_ENV)
    if replay:
        return [int(replay)]
    count = max(default, int(os.environ.get(SEEDS_ENV) or 0))
    return list(range(first, first + count))


@contextmanager
def replayable(seed: int) -> Iterator[None]:
    """Any failure inside names its seed and how to replay it."""
    try:
        yield
    except BaseException as exc:
        hint = f"seed={seed} (replay with {SEED_ENV}={seed})"
        print(hint)
        exc.add_note(hint)
        raise
