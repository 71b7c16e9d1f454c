"""The thread that owns a pure core: inputs in through a queue, ticks on its deadline.

A service (sync, later others) keeps its core on one `CoreLoop`; handler and worker
threads never touch the core, they `post` a closure that runs on the loop thread and
returns the core's effects, which the loop hands to the service's `execute`. Between
inputs the loop sleeps until the core's `next_deadline_s()` and then calls `tick`.
The queue is bounded: a flood of inputs is refused (`post` returns False), never
buffered without limit.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Generic, Protocol, TypeVar

log = logging.getLogger("pyrsia.p2p")
E = TypeVar("E")
E_co = TypeVar("E_co", covariant=True)
INPUTS_MAX = 4096


class Ticking(Protocol[E_co]):
    def tick(self, now_s: float) -> Sequence[E_co]: ...

    def next_deadline_s(self) -> float | None: ...


class _Stop:
    pass


class CoreLoop(Generic[E]):
    def __init__(
        self,
        name: str,
        core: Ticking[E],
        execute: Callable[[Sequence[E]], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._core = core
        self._execute = execute
        self._clock = clock
        self._inputs: queue.Queue[Callable[[float], Sequence[E]] | _Stop] = queue.Queue(INPUTS_MAX)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._inputs.put(_Stop())
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(5.0)

    def post(self, action: Callable[[float], Sequence[E]]) -> bool:
        """Run `action(now_s)` on the loop thread; False when the queue is full."""
        try:
            self._inputs.put_nowait(action)
        except queue.Full:
            return False
        return True

    def _run(self) -> None:
        while True:
            deadline = self._core.next_deadline_s()
            wait = None if deadline is None else max(0.0, deadline - self._clock())
            try:
                action = self._inputs.get(timeout=wait)
            except queue.Empty:
                self._step(self._core.tick)
                continue
            if isinstance(action, _Stop):
                return
            self._step(action)

    def _step(self, action: Callable[[float], Sequence[E]]) -> None:
        try:
            effects = action(self._clock())
            if effects:
                self._execute(effects)
        except Exception:  # a bug in one input must not stop the node's p2p services
            log.exception("p2p service loop %s: an input failed", self._thread.name)
