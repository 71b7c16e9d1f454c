"""Which chunk of one blob to ask which provider for, and when to give up on one — a pure core.

The downloader holds a chunk list that matches the logged chunk root, so every chunk
can be checked on arrival and a bad one pinned on the peer that sent it (DESIGN §3).
This core decides the requests; the shell moves bytes, verifies each chunk and
reports back. It tracks chunk indexes, never bytes, so its memory does not grow with
the blob.

Rules:
- Pull, pipelined: each provider has a window of outstanding chunks and gets a new
  request (a run of at most `request_chunks_max` consecutive missing chunks, lowest
  first) whenever its window has room for a whole run (or for all that is left), so
  a request is never a single chunk while runs remain. A faster provider empties its window sooner and
  so is asked more often; its window is also wider: `window_chunks_max` scaled by its
  measured throughput against the best one's, never below `window_chunks_min`.
- Measured, not assumed: throughput is a moving average of chunk bytes over the time
  since that peer's previous progress; before a first chunk, peers are ordered by RTT.
- End game: once nothing is left unrequested, a peer with room re-requests a chunk
  still outstanding at a slower peer when it would finish it sooner (or the slower
  peer is late); the first verified copy wins, the other copies are cancelled, late
  duplicates are dropped. At most `copies_max` peers are asked for one chunk.
- A chunk that fails verification (wrong hash, wrong length) evicts its sender for this
  blob; a peer with outstanding chunks and no progress for `stall_timeout_s` is evicted
  too, as is one whose stream failed or that refused. Their chunks go back to the pool.
- Resume: the core starts from the chunks already verified (an input).
- With chunks missing and no provider left, the download has `Failed`.

Inputs return effects (`Request`, `Cancel`, `Evict`, `Done`, `Failed`); time is an
input (`now_s`); nothing here does I/O.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable
from dataclasses import dataclass, field

# -- configuration and effects ----------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ExchangeConfig:
    window_chunks_max: int = 8
    window_chunks_min: int = 2
    request_chunks_max: int = 4
    stall_timeout_s: float = 10.0
    copies_max: int = 2
    throughput_weight: float = 0.3  # weight of the newest sample in the moving average
    endgame_check_s: float = 0.25  # how often the end game looks for late chunks
    peers_max: int = 32


@dataclass(frozen=True, slots=True, kw_only=True)
class Request:
    """Ask `peer` for chunks `first .. first+count-1`, answered in order."""

    peer: str
    first: int
    count: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Cancel:
    """Chunks `first .. first+count-1` are no longer wanted from `peer` (another copy won)."""

    peer: str
    first: int
    count: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Evict:
    """Stop using `peer` for this blob; `reason` is for the log."""

    peer: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Done:
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class Failed:
    reason: str


Effect = Request | Cancel | Evict | Done | Failed


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerStats:
    """One provider as the core sees it (for logs, status pages and tests)."""

    chunks: int  # first verified copies it delivered
    duplicates: int  # verified copies that arrived after another peer's
    outstanding: int
    throughput_bytes_s: float | None
    rtt_s: float | None
    evicted: str | None  # the reason, once evicted


# -- the core ------------------------------------------------------------------------------


@dataclass(slots=True)
class _Peer:
    rtt_s: float | None
    # index -> when requested; insertion order is the order the peer answers in
    outstanding: dict[int, float] = field(default_factory=dict)
    throughput_bytes_s: float | None = None
    last_progress_s: float = 0.0
    chunks: int = 0
    duplicates: int = 0
    evicted: str | None = None


class ExchangeCore:
    """One blob of `chunk_count` chunks; `have` are verified already (resume)."""

    def __init__(
        self,
        *,
        chunk_count: int,
        chunk_bytes: int,
        size: int,
        have: Iterable[int] = (),
        config: ExchangeConfig = ExchangeConfig(),
    ) -> None:
        self.config = config
        self.chunk_count = chunk_count
        self._chunk_bytes = chunk_bytes
        self._size = size
        self._have: set[int] = {i for i in have if 0 <= i < chunk_count}
        self._free: list[int] = [i for i in range(chunk_count) if i not in self._have]
        heapq.heapify(self._free)
        self._free_set: set[int] = set(self._free)
        self._holders: dict[int, list[str]] = {}
        self._peers: dict[str, _Peer] = {}
        self._finished = False
        self._last_tick_s = 0.0

    # -- queries ---------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        return self._finished

    @property
    def have(self) -> frozenset[int]:
        return frozenset(self._have)

    @property
    def missing(self) -> int:
        return self.chunk_count - len(self._have)

    def active_peers(self) -> list[str]:
        return [name for name, p in self._peers.items() if p.evicted is None]

    def peer_stats(self) -> dict[str, PeerStats]:
        return {
            name: PeerStats(
                chunks=p.chunks,
                duplicates=p.duplicates,
                outstanding=len(p.outstanding),
                throughput_bytes_s=p.throughput_bytes_s,
                rtt_s=p.rtt_s,
                evicted=p.evicted,
            )
            for name, p in self._peers.items()
        }

    def wanted_from(self, peer: str, index: int) -> bool:
        """Whether a chunk arriving from `peer` is still worth writing (not cancelled, not had)."""
        state = self._peers.get(peer)
        return index not in self._have and state is not None and index in state.outstanding

    # -- inputs ----------------------------------------------------------------------

    def add_peers(self, peers: Iterable[tuple[str, float | None]], now_s: float) -> list[Effect]:
        """Providers `(peer id, rtt_s or None)`; the first call starts the download."""
        self._last_tick_s = now_s
        for name, rtt_s in peers:
            if name not in self._peers and len(self._peers) < self.config.peers_max:
                self._peers[name] = _Peer(rtt_s=rtt_s, last_progress_s=now_s)
        return self._settle(now_s, "no provider")

    def chunk_verified(self, peer: str, index: int, now_s: float) -> list[Effect]:
        """The shell checked chunk `index` from `peer` against the chunk list and wrote it."""
        if self._finished or not 0 <= index < self.chunk_count:
            return []
        state = self._peers.get(peer)
        if state is not None and state.evicted is None:
            # A cancelled copy still arriving is progress too: the peer answers in order.
            state.outstanding.pop(index, None)
            self._measure(state, self._chunk_length(index), now_s)
        if index in self._have:
            if state is not None:
                state.duplicates += 1
            return self._settle(now_s, "")
        self._have.add(index)
        if state is not None:
            state.chunks += 1
        effects: list[Effect] = []
        for other in self._holders.pop(index, []):
            other_state = self._peers[other]
            if other != peer and other_state.outstanding.pop(index, None) is not None:
                effects.append(Cancel(peer=other, first=index, count=1))
        if index in self._free_set:
            self._free_set.discard(index)  # left in the heap; skipped when popped
        return effects + self._settle(now_s, "")

    def chunk_refused(self, peer: str, index: int, reason: str, now_s: float) -> list[Effect]:
        """Chunk `index` from `peer` did not verify (hash or length): evict the peer."""
        return self.peer_failed(peer, f"sent a bad chunk {index}: {reason}", now_s)

    def peer_failed(self, peer: str, reason: str, now_s: float) -> list[Effect]:
        """The peer's stream failed, it refused, or it sent something its protocol forbids."""
        if self._finished:
            return []
        state = self._peers.get(peer)
        if state is None or state.evicted is not None:
            return []
        return self._evict(peer, state, reason) + self._settle(now_s, reason)

    def tick(self, now_s: float) -> list[Effect]:
        if self._finished:
            return []
        self._last_tick_s = now_s
        effects: list[Effect] = []
        for name, state in self._peers.items():
            # Same sum as in next_deadline_s, so the deadline tick always fires it.
            due = state.last_progress_s + self.config.stall_timeout_s
            if state.evicted is None and state.outstanding and now_s >= due:
                effects += self._evict(
                    name, state, f"stalled: no chunk for {self.config.stall_timeout_s:g} s"
                )
        return effects + self._settle(now_s, "every provider stalled")

    def next_deadline_s(self) -> float | None:
        if self._finished:
            return None
        deadlines = [
            p.last_progress_s + self.config.stall_timeout_s
            for p in self._peers.values()
            if p.evicted is None and p.outstanding
        ]
        if not self._free_set and deadlines:
            deadlines.append(self._last_tick_s + self.config.endgame_check_s)
        return min(deadlines) if deadlines else None

    # -- internals -------------------------------------------------------------------

    def _chunk_length(self, index: int) -> int:
        return min(self._chunk_bytes, self._size - index * self._chunk_bytes)

    def _measure(self, state: _Peer, length: int, now_s: float) -> None:
        elapsed = now_s - state.last_progress_s
        state.last_progress_s = now_s
        if elapsed <= 0:
            return
        sample = length / elapsed
        if state.throughput_bytes_s is None:
            state.throughput_bytes_s = sample
        else:
            weight = self.config.throughput_weight
            state.throughput_bytes_s = weight * sample + (1 - weight) * state.throughput_bytes_s

    def _evict(self, name: str, state: _Peer, reason: str) -> list[Effect]:
        state.evicted = reason
        for index in state.outstanding:
            holders = self._holders.get(index, [])
            if name in holders:
                holders.remove(name)
            if not holders:
                self._holders.pop(index, None)
                if index not in self._have and index not in self._free_set:
                    heapq.heappush(self._free, index)
                    self._free_set.add(index)
        state.outstanding.clear()
        return [Evict(peer=name, reason=reason)]

    def _settle(self, now_s: float, reason: str) -> list[Effect]:
        """Done, Failed, or the requests that keep every window full."""
        if self._finished:
            return []
        if len(self._have) == self.chunk_count:
            self._finished = True
            return [Done()]
        active = [(name, p) for name, p in self._peers.items() if p.evicted is None]
        if not active:
            self._finished = True
            evicted = "; ".join(f"{n}: {p.evicted}" for n, p in self._peers.items()) or reason
            missing = f"{self.missing} of {self.chunk_count} chunks missing"
            return [Failed(reason=f"{missing}, no provider left ({evicted})")]
        effects: list[Effect] = []
        for name, state in sorted(active, key=self._preference):
            effects += self._fill(name, state, now_s)
        return effects

    def _preference(self, item: tuple[str, _Peer]) -> tuple[float, float, str]:
        name, state = item
        throughput = state.throughput_bytes_s if state.throughput_bytes_s is not None else 0.0
        rtt = state.rtt_s if state.rtt_s is not None else math.inf
        return (-throughput, rtt, name)

    def _window(self, state: _Peer) -> int:
        best = max(
            (p.throughput_bytes_s or 0.0 for p in self._peers.values() if p.evicted is None), default=0.0
        )
        if state.throughput_bytes_s is None or best <= 0:
            return self.config.window_chunks_min
        scaled = math.ceil(self.config.window_chunks_max * state.throughput_bytes_s / best)
        return max(self.config.window_chunks_min, min(self.config.window_chunks_max, scaled))

    def _fill(self, name: str, state: _Peer, now_s: float) -> list[Effect]:
        window = self._window(state)
        room = window - len(state.outstanding)
        # Whole runs only: a request waits until the next run (`request_chunks_max`
        # chunks, fewer where the window is narrower or the missing chunks end) fits,
        # so each costs one request, not one per chunk that came in.
        run_max = min(self.config.request_chunks_max, window)
        effects: list[Effect] = []
        while room > 0 and 0 < self._next_run_length(run_max) <= room:
            run = self._take_run(run_max)
            if not run:
                break
            effects.append(self._ask(name, state, run, now_s))
            room -= len(run)
        while room > 0:
            index = self._endgame_pick(name, state, now_s)
            if index is None:
                break
            effects.append(self._ask(name, state, [index], now_s))
            room -= 1
        return effects

    def _next_run_length(self, count_max: int) -> int:
        """How many chunks `_take_run(count_max)` would take now."""
        while self._free and self._free[0] not in self._free_set:
            heapq.heappop(self._free)  # verified meanwhile
        if not self._free:
            return 0
        first, length = self._free[0], 1
        while length < count_max and first + length in self._free_set:
            length += 1
        return length

    def _take_run(self, count_max: int) -> list[int]:
        run: list[int] = []
        while self._free and len(run) < count_max:
            index = self._free[0]
            if index not in self._free_set:
                heapq.heappop(self._free)  # verified meanwhile
                continue
            if run and index != run[-1] + 1:
                break
            heapq.heappop(self._free)
            self._free_set.discard(index)
            run.append(index)
        return run

    def _ask(self, name: str, state: _Peer, run: list[int], now_s: float) -> Request:
        if not state.outstanding:
            state.last_progress_s = now_s  # the stall clock and the next sample start now
        for index in run:
            state.outstanding[index] = now_s
            self._holders.setdefault(index, []).append(name)
        return Request(peer=name, first=run[0], count=len(run))

    def _chunk_time_s(self, state: _Peer) -> float | None:
        if not state.throughput_bytes_s:
            return None
        return self._chunk_bytes / state.throughput_bytes_s

    def _endgame_pick(self, name: str, state: _Peer, now_s: float) -> int | None:
        """A chunk outstanding elsewhere that this peer would deliver sooner, slowest holder first."""
        own = self._chunk_time_s(state)
        if own is None or self._free_set:
            return None
        own_done_s = (len(state.outstanding) + 1) * own
        best: tuple[float, int] | None = None
        for index, holders in self._holders.items():
            if name in holders or len(holders) >= self.config.copies_max:
                continue
            remaining_s = min(self._remaining_s(self._peers[h], index, now_s) for h in holders)
            if remaining_s > own_done_s and (best is None or remaining_s > best[0]):
                best = (remaining_s, index)
        return None if best is None else best[1]

    def _remaining_s(self, holder: _Peer, index: int, now_s: float) -> float:
        """When `holder` should deliver `index`; infinite once it is late by twice that."""
        per_chunk = self._chunk_time_s(holder)
        if per_chunk is None:
            return math.inf
        position = list(holder.outstanding).index(index) + 1
        expected_s = position * per_chunk
        waited_s = now_s - holder.last_progress_s
        if waited_s > 2 * expected_s:
            return math.inf
        return expected_s - waited_s
