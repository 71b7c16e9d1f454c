"""The Kademlia shell: drives the pure `kademlia.Kademlia` core over a real libp2p `Host`.

What it owns: one thread (`kad-core`) that alone touches the core. Everything else
reaches the core through one bounded input queue: inbound requests (from the Host's
handler threads), replies and failures of our own requests (from a small pool of
request workers), peers that identify as kad servers, and calls of the blocking API
below. The thread calls `tick` by the core's `next_deadline_s()` and executes each
effect as the core's docstring orders: `Send` goes to a request worker (dial the given
addrs, open `/pyrsia/kad/1.0.0`, write one framed message, read one framed reply
within `request_timeout_s` unless none is expected); `Reply`/`Refuse` go back to the
handler thread that waits on that inbound request; `LookupDone`/`ProvideDone` wake
the API caller that started the lookup.

Inbound streams follow libp2p/specs kad-dht and js-libp2p: a stream may carry several
requests in sequence, each answered before the next is read; a `Refuse` resets the
stream, an unanswered ADD_PROVIDER closes it. The sender's listen addrs go to the core
only when its identify lists the kad protocol, so clients are answered but never
enter the routing table. The addrs the core records and serves are those identify
advertises (or, at bootstrap, the one we dialled), never the remote socket address of
a connection (an inbound one's port is ephemeral); that remote IP goes to the core
apart, as `remote_ip`, to place the peer in its IP group and to tell whether the asker
is on loopback.

Bounds: the input queue (a full queue refuses inbound requests, it never grows), the
Host's handler pool, the request workers, and the core's own limits (per-peer token
bucket, provider store, lookups). The routing table is saved (msgpack, atomic write)
every `snapshot_interval_s` and on stop, and restored on start, after which a
bootstrap lookup through the restored peers reconnects the node with no bootstrap
addresses. Failures reach callers as `PeerError` subclasses.

Public API (any thread, blocking): `start()`, `stop()`, `bootstrap(addrs)`,
`provide(digest)`, `stop_providing(digest)`, `find_providers(digest, timeout)`,
`find_peer(peer_id, timeout)`, `peers()`, `routing_table_size`, `stats()`; and
`lookup_providers(key)` / `lookup_node(key)` for the whole `LookupDone` (hops, requests).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar, cast

import msgpack

from pyrsia.config import Config
from pyrsia.durable import write_atomic
from pyrsia.errors import (
    DigestInvalid,
    PeerError,
    PeerTimeout,
    PeerUnreachable,
    ProtocolViolation,
    StorageError,
    StreamClosed,
)
from pyrsia.p2p.behaviours.kad import messages as dm
from pyrsia.p2p.behaviours.kad.core import (
    Effect,
    KadConfig,
    Kademlia,
    LookupDone,
    LookupEnd,
    ProvideDone,
    Refuse,
    Reply,
    Rng,
    Send,
)
from pyrsia.p2p.identity import Identity
from pyrsia.p2p.swarm.host import Host, PeerEvent, PeerIdentified, PeerInfo, Stream
from pyrsia.p2p.wire.multiaddr import Multiaddr
from pyrsia.p2p.wire.varint import LengthPrefixedReader

log = logging.getLogger("pyrsia.p2p.kad")
T = TypeVar("T")

PROTOCOL_ID = dm.PROTOCOL_ID
SNAPSHOT_BYTES_MAX = 16 * 1024 * 1024
# With the core's deadline already past (a republish waiting for a lookup slot), the
# loop still sleeps this long between ticks instead of spinning.
TICK_FLOOR_S = 0.02


@dataclass(frozen=True, slots=True, kw_only=True)
class KadServiceLimits:
    inputs_max: int = 1024
    send_workers: int = 16
    # A stream's first request, and each next one, must arrive within this time.
    stream_idle_timeout_s: float = 10.0
    snapshot_interval_s: float = 300.0
    # How long an API call may wait for room in the input queue.
    enqueue_timeout_s: float = 10.0


@dataclass(frozen=True, slots=True, kw_only=True)
class KadStats:
    table_peers: int = 0
    provider_records: int = 0
    provided_keys: int = 0
    active_lookups: int = 0
    pending_requests: int = 0
    requests_in: int = 0  # inbound requests handed to the core
    requests_refused: int = 0  # answered with Refuse (rate limit, bad key, unsupported)
    requests_dropped: int = 0  # refused because the input queue was full
    requests_out: int = 0  # Send effects executed
    requests_failed: int = 0  # of those, dial, stream, timeout or decode failures
    lookups_done: int = 0
    # Refused by peer diversity: the peer's IP group was at its bound in the bucket / table.
    table_refused_bucket_group: int = 0
    table_refused_table_group: int = 0
    # ADD_PROVIDER records refused: store full, the sender's quota, its IP group's quota.
    provider_refused_store_full: int = 0
    provider_refused_peer_quota: int = 0
    provider_refused_group_quota: int = 0
    # Addresses left out of answers and out of replies taken in (loopback, link-local,
    # unspecified, port 0, not a multiaddr).
    addrs_withheld: int = 0


# -- inputs to the core thread (a closed union, consumed with match) ---------------


@dataclass(frozen=True, slots=True, kw_only=True)
class _Inbound:
    peer: str
    addrs: tuple[bytes, ...]
    remote_ip: str
    message: dm.Message
    waiter: Future[Reply | Refuse | None]


@dataclass(frozen=True, slots=True, kw_only=True)
class _Answered:
    request_id: int
    message: dm.Message
    peer: str
    # The peer's listen addrs from identify, if it lists kad: the core learns where it
    # listens now, not only the (perhaps stale) addrs the request was meant for.
    addrs: tuple[bytes, ...]
    remote_ip: str


@dataclass(frozen=True, slots=True, kw_only=True)
class _Failed:
    request_id: int
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class _KadPeer:
    peer: str
    addrs: tuple[bytes, ...]
    remote_ip: str


@dataclass(frozen=True, slots=True, kw_only=True)
class _Call:
    run: Callable[[float], object]
    future: Future[object]


@dataclass(frozen=True, slots=True, kw_only=True)
class _Stop:
    pass


_Input = _Inbound | _Answered | _Failed | _KadPeer | _Call | _Stop


class KadService:
    """Kademlia on a `Host`; `start()` after the Host started, `stop()` before it stops."""

    def __init__(
        self,
        host: Host,
        identity: Identity,
        *,
        config: KadConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: Rng | None = None,
        snapshot_path: Path | None = None,
        limits: KadServiceLimits | None = None,
    ) -> None:
        if identity.peer_id != host.peer_id:
            raise ValueError("the kad service and its host must share one identity")
        self.host = host
        self.peer_id = identity.peer_id
        self.config = config or KadConfig()
        self.limits = limits = limits or KadServiceLimits()
        self._clock = clock
        self._rng: Rng = rng if rng is not None else random.Random()
        self._snapshot_path = snapshot_path
        self._inputs: queue.Queue[_Input] = queue.Queue(maxsize=limits.inputs_max)
        self._core: Kademlia | None = None
        self._thread: threading.Thread | None = None
        self._senders: ThreadPoolExecutor | None = None
        self._running = False
        self._subscribed = False
        self._lifecycle = threading.Lock()
        # Owned by the core thread:
        self._inbound: dict[int, Future[Reply | Refuse | None]] = {}
        self._waiting: dict[int, Future[LookupDone | ProvideDone]] = {}
        self._next_inbound_id = 1
        self._next_snapshot_s = 0.0
        self._counts = {name: 0 for name in KadStats.__dataclass_fields__}
        # Written by handler threads (the input queue was full).
        self._dropped = 0
        self._dropped_lock = threading.Lock()
        self._stats = KadStats()

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> KadService:
        """Build the core, restore the saved table, serve `/pyrsia/kad/1.0.0`."""
        with self._lifecycle:
            if self._running:
                return self
            if self.host.listen_port == 0:
                raise ValueError("start the Host before its kad service")
            now = self._clock()
            own_addrs = tuple(a.to_bytes() for a in self.host.listen_addrs)
            core = Kademlia(
                peer_id=self.peer_id, addrs=own_addrs, rng=self._rng, now_s=now, config=self.config
            )
            restored = self._restore(core, now)
            self._core = core
            self._next_snapshot_s = now + self.limits.snapshot_interval_s
            self._inputs = queue.Queue(maxsize=self.limits.inputs_max)
            self._senders = ThreadPoolExecutor(self.limits.send_workers, thread_name_prefix="kad-send")
            self._running = True
            self._thread = threading.Thread(target=self._loop, name="kad-core", daemon=True)
            self._thread.start()
            if not self._subscribed:
                self.host.subscribe(self._on_peer_event)
                self._subscribed = True
            self.host.set_handler(PROTOCOL_ID, self._serve, workers=4, streams_per_peer_max=4)
            for info in self.host.peers().values():
                if info.identified and PROTOCOL_ID in info.protocols:
                    self._offer(_kad_peer(info))
            if restored:
                # Reconnect through the saved peers: libp2p/specs kad-dht bootstrap.
                self._call(lambda now: self._execute(self._core_now().bootstrap(now)))
            return self

    def stop(self) -> None:
        """Stop serving, end the core thread, save the routing table."""
        with self._lifecycle:
            if not self._running:
                return
            self._running = False
            self.host.remove_handler(PROTOCOL_ID)
            self._inputs.put(_Stop())
            if self._thread is not None:
                self._thread.join()
            if self._senders is not None:
                self._senders.shutdown(wait=True, cancel_futures=True)
            self._fail_leftovers()
            self._save()

    def __enter__(self) -> KadService:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- public API (any thread) -------------------------------------------------------

    @property
    def routing_table_size(self) -> int:
        return self._stats.table_peers

    def stats(self) -> KadStats:
        with self._dropped_lock:
            dropped = self._dropped
        stats = self._stats
        return KadStats(**{**_fields(stats), "requests_dropped": dropped})

    def peers(self, timeout: float = 10.0) -> list[tuple[str, list[Multiaddr]]]:
        """The routing table: each peer id with the addrs it is dialled at."""
        found = self._call(lambda now: self._core_now().peers(), timeout)
        return [(p.peer_id, _parse_addrs(p.addrs)) for p in found]

    def bootstrap(self, addrs: list[str], timeout: float = 30.0) -> int:
        """Dial each `/…/p2p/<id>` address, add those serving kad, look ourselves up.

        Returns the routing table's size once the lookup ended. PeerUnreachable when
        no address could be dialled or none of those peers serves kad.
        """
        deadline = time.monotonic() + timeout
        errors: list[str] = []
        added = 0
        for text in addrs:
            try:
                address = Multiaddr.parse(text)
                peer = self.host.connect(address, timeout=_left(deadline))
                info = self.host.wait_identified(peer, timeout=_left(deadline))
            except PeerError as exc:
                errors.append(f"{text}: {exc}")
                continue
            if PROTOCOL_ID not in info.protocols:
                errors.append(f"{text}: {peer} does not serve {PROTOCOL_ID}")
                continue
            listen = _addr_bytes(info.listen_addrs) or _addr_bytes([address])
            self._call(self._adder(peer, listen, _remote_ip(info)), _left(deadline))
            added += 1
        if addrs and not added:
            raise PeerUnreachable(f"no bootstrap peer reachable: {'; '.join(errors)}")
        own_key = dm.peer_id_to_bytes(self.peer_id)
        self._lookup(lambda core, now: core.find_node(own_key, now), deadline)
        return self._call(lambda now: len(self._core_now().table), _left(deadline))

    def provide(self, digest: str, timeout: float = 60.0) -> list[str]:
        """Announce that we hold blob `digest`, now and every republish interval.

        Returns the peers the provider record was sent to (ADD_PROVIDER has no reply).
        """
        key = _provider_key(digest)
        done = self._lookup(lambda core, now: core.provide(key, now), time.monotonic() + timeout)
        assert isinstance(done, ProvideDone)
        return list(done.stored_at)

    def hold(self, digest: str) -> None:
        """Answer for blob `digest` as its provider at once; `provide` announces it.

        Never waits: a stopped or full service raises `PeerError`, and the announcement
        that follows marks the key as ours all the same.
        """
        key = _provider_key(digest)
        self._put(_Call(run=lambda now: self._core_now().hold(key, now), future=Future()), timeout=0.0)

    def stop_providing(self, digest: str, timeout: float = 10.0) -> None:
        key = _provider_key(digest)
        self._call(lambda now: self._core_now().stop_providing(key), timeout)

    def find_providers(self, digest: str, timeout: float = 30.0) -> list[tuple[str, list[Multiaddr]]]:
        """Peers that announced blob `digest` (not us), each with its addrs; [] if none."""
        done = self.lookup_providers(_provider_key(digest), timeout=timeout)
        found = []
        for provider in done.providers:
            if provider.peer_id == self.peer_id:
                continue
            addrs = _parse_addrs(provider.addrs)
            self.host.add_addresses(provider.peer_id, addrs)
            found.append((provider.peer_id, addrs))
        return found

    def find_peer(self, peer_id: str, timeout: float = 30.0) -> list[Multiaddr]:
        """Addresses `peer_id` answered the lookup at; [] when the DHT does not reach it."""
        done = self.lookup_node(dm.peer_id_to_bytes(peer_id), timeout=timeout)
        for peer in done.closest:
            if peer.peer_id == peer_id:
                # It answered: over a live connection, identify says where it listens now.
                addrs = _parse_addrs(self._kad_addrs(peer_id) or peer.addrs)
                self.host.add_addresses(peer_id, addrs)
                return addrs
        return []

    def lookup_providers(self, key: bytes, *, wanted: int | None = None, timeout: float = 30.0) -> LookupDone:
        """The whole GET_PROVIDERS lookup of a raw key: providers, hops, requests, time."""
        done = self._lookup(
            lambda core, now: core.find_providers(key, now, wanted=wanted), time.monotonic() + timeout
        )
        assert isinstance(done, LookupDone)
        return done

    def lookup_node(self, key: bytes, *, timeout: float = 30.0) -> LookupDone:
        """The whole FIND_NODE lookup of a raw key: the k closest that answered, hops, time."""
        done = self._lookup(lambda core, now: core.find_node(key, now), time.monotonic() + timeout)
        assert isinstance(done, LookupDone)
        return done

    # -- API plumbing --------------------------------------------------------------------

    def _adder(self, peer: str, addrs: tuple[bytes, ...], remote_ip: str) -> Callable[[float], None]:
        return lambda now: self._execute(self._core_now().add_peer(peer, addrs, now, remote_ip=remote_ip))

    def _core_now(self) -> Kademlia:
        assert self._core is not None
        return self._core

    def _put(self, item: _Input, timeout: float) -> None:
        if not self._running:
            raise PeerUnreachable("the kad service is not running")
        try:
            self._inputs.put(item, timeout=max(0.0, timeout))
        except queue.Full:
            raise PeerTimeout(f"the kad service is busy: {self.limits.inputs_max} inputs queued") from None

    def _call(self, function: Callable[[float], T], timeout: float | None = None) -> T:
        """Run `function(now)` on the core thread and return its result."""
        timeout = self.limits.enqueue_timeout_s if timeout is None else timeout
        future: Future[object] = Future()
        deadline = time.monotonic() + timeout
        self._put(_Call(run=function, future=future), timeout)
        return cast(T, _wait(future, deadline, "the kad service"))

    def _lookup(
        self,
        start: Callable[[Kademlia, float], tuple[int, list[Effect]]],
        deadline: float,
    ) -> LookupDone | ProvideDone:
        """Start a lookup on the core thread and wait for the effect that ends it."""
        done: Future[LookupDone | ProvideDone] = Future()

        def begin(now: float) -> None:
            try:
                lookup_id, effects = start(self._core_now(), now)
            except ValueError as exc:  # the core's own bound on provided keys
                raise PeerTimeout(str(exc)) from exc
            if not effects:
                # Only a provide the core could not start (every lookup slot taken)
                # returns nothing: it is scheduled for a later tick, sent nowhere yet.
                _resolve(done, ProvideDone(lookup_id=lookup_id, key=b"", stored_at=()))
                return
            self._waiting[lookup_id] = done
            self._execute(effects)

        self._call(begin, _left(deadline))
        result = _wait(done, deadline, "the kad lookup")
        if isinstance(result, LookupDone) and result.end is LookupEnd.BUSY:
            raise PeerTimeout(f"{self.config.lookups_active_max} kad lookups are already running")
        return result

    # -- the core thread -----------------------------------------------------------------

    def _loop(self) -> None:
        core = self._core_now()
        while True:
            now = self._clock()
            core_due = core.next_deadline_s()
            due = self._next_snapshot_s if core_due is None else min(core_due, self._next_snapshot_s)
            try:
                item: _Input | None = self._inputs.get(timeout=max(due - now, TICK_FLOOR_S))
            except queue.Empty:
                item = None
            if isinstance(item, _Stop):
                return
            now = self._clock()
            try:
                if item is not None:
                    self._step(core, item, now)
                deadline = core.next_deadline_s()
                if deadline is not None and now >= deadline:
                    self._execute(core.tick(now))
                if now >= self._next_snapshot_s:
                    self._next_snapshot_s = now + self.limits.snapshot_interval_s
                    self._save()
            except Exception:
                log.exception("kad: the core thread failed on %s", type(item).__name__)
            self._publish(core)

    def _step(self, core: Kademlia, item: _Input, now: float) -> None:
        match item:
            case _Inbound(peer=peer, addrs=addrs, remote_ip=remote_ip, message=message, waiter=waiter):
                inbound_id = self._next_inbound_id
                self._next_inbound_id += 1
                self._inbound[inbound_id] = waiter
                self._counts["requests_in"] += 1
                try:
                    self._execute(
                        core.request_received(peer, inbound_id, message, now, addrs, remote_ip=remote_ip)
                    )
                finally:
                    pending = self._inbound.pop(inbound_id, None)
                    if pending is not None:
                        _resolve(pending, None)  # accepted, never answered: close the stream
            case _Answered(request_id=request_id, message=message, peer=peer, addrs=addrs, remote_ip=ip):
                self._execute(core.response_received(request_id, message, now, remote_ip=ip))
                if addrs:
                    self._execute(core.add_peer(peer, addrs, now, remote_ip=ip))
            case _Failed(request_id=request_id, reason=reason):
                self._counts["requests_failed"] += 1
                log.debug("kad: request %d failed: %s", request_id, reason)
                self._execute(core.request_failed(request_id, now))
            case _KadPeer(peer=peer, addrs=addrs, remote_ip=remote_ip):
                self._execute(core.add_peer(peer, addrs, now, remote_ip=remote_ip))
            case _Call(run=run, future=future):
                if future.set_running_or_notify_cancel():
                    try:
                        future.set_result(run(now))
                    except Exception as exc:
                        future.set_exception(exc)
            case _Stop():
                pass

    def _execute(self, effects: list[Effect]) -> None:
        for effect in effects:
            match effect:
                case Send():
                    self._counts["requests_out"] += 1
                    assert self._senders is not None
                    with contextlib.suppress(RuntimeError):  # the pool shut down: stopping
                        self._senders.submit(self._send, effect)
                case Reply(inbound_id=inbound_id) | Refuse(inbound_id=inbound_id):
                    if isinstance(effect, Refuse):
                        self._counts["requests_refused"] += 1
                    waiter = self._inbound.pop(inbound_id, None)
                    if waiter is not None:
                        _resolve(waiter, effect)
                case LookupDone(lookup_id=lookup_id) | ProvideDone(lookup_id=lookup_id):
                    self._counts["lookups_done"] += 1
                    done = self._waiting.pop(lookup_id, None)
                    if done is not None:
                        _resolve(done, effect)

    def _publish(self, core: Kademlia) -> None:
        counts = self._counts
        refused = core.refusals()
        self._stats = KadStats(
            table_peers=len(core.table),
            provider_records=len(core.providers),
            provided_keys=len(core.provided_keys()),
            active_lookups=core.active_lookups,
            pending_requests=core.pending_requests,
            requests_in=counts["requests_in"],
            requests_refused=counts["requests_refused"],
            requests_out=counts["requests_out"],
            requests_failed=counts["requests_failed"],
            lookups_done=counts["lookups_done"],
            table_refused_bucket_group=refused["table_bucket_group"],
            table_refused_table_group=refused["table_group"],
            provider_refused_store_full=refused["provider_store_full"],
            provider_refused_peer_quota=refused["provider_peer_quota"],
            provider_refused_group_quota=refused["provider_group_quota"],
            addrs_withheld=refused["addrs_withheld"],
        )

    def _fail_leftovers(self) -> None:
        """After the core thread ended: nobody waits forever on an input it never read."""
        stopped = PeerUnreachable("the kad service stopped")
        while True:
            try:
                item = self._inputs.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, _Inbound):
                _resolve(item.waiter, Refuse(peer=item.peer, inbound_id=0, reason="stopping"))
            elif isinstance(item, _Call) and not item.future.done():
                item.future.set_exception(stopped)
        for waiter in self._inbound.values():
            _resolve(waiter, Refuse(peer="", inbound_id=0, reason="stopping"))
        for done in self._waiting.values():
            if not done.done():
                done.set_exception(stopped)
        self._inbound.clear()
        self._waiting.clear()

    # -- peers from the Host -------------------------------------------------------------

    def _on_peer_event(self, event: PeerEvent) -> None:
        if not self._running or not isinstance(event, PeerIdentified):
            return
        if PROTOCOL_ID in event.info.protocols:
            self._offer(_kad_peer(event.info))

    def _offer(self, item: _KadPeer) -> None:
        try:
            self._inputs.put_nowait(item)
        except queue.Full:
            log.info("kad: input queue full, %s not added to the routing table", item.peer)

    # -- outbound requests (request workers) ---------------------------------------------

    def _send(self, effect: Send) -> None:
        try:
            reply = self._exchange(effect)
        except PeerError as exc:
            if effect.expects_reply:
                self._feed(_Failed(request_id=effect.request_id, reason=str(exc)))
            else:
                log.debug("kad: %s to %s failed: %s", effect.message.type.name, effect.peer, exc)
            return
        except Exception as exc:
            log.exception("kad: request to %s failed", effect.peer)
            if effect.expects_reply:
                self._feed(_Failed(request_id=effect.request_id, reason=repr(exc)))
            return
        if reply is not None:
            info = self.host.peer_info(effect.peer)
            answered = _Answered(
                request_id=effect.request_id,
                message=reply,
                peer=effect.peer,
                addrs=_kad_listen_addrs(info),
                remote_ip=_remote_ip(info),
            )
            self._feed(answered)

    def _exchange(self, effect: Send) -> dm.Message | None:
        deadline = time.monotonic() + self.config.request_timeout_s
        addrs = _parse_addrs(effect.addrs)
        if addrs:
            self.host.add_addresses(effect.peer, addrs)
        stream = self.host.open_stream(effect.peer, [PROTOCOL_ID], timeout=_left(deadline))
        try:
            stream.write(dm.encode_framed(effect.message), timeout=_left(deadline))
            if not effect.expects_reply:
                stream.close()
                return None
            reply = _read_message(stream, dm.reader(), deadline)
            if reply is None:
                raise StreamClosed(f"{effect.peer} closed {PROTOCOL_ID} without a reply")
            stream.close()
            return reply
        except BaseException:
            stream.reset()
            raise

    def _feed(self, item: _Answered | _Failed) -> None:
        # A reply is bounded by the core's own requests in flight; wait for room, but
        # never past the point where the core thread is gone.
        while self._running:
            try:
                self._inputs.put(item, timeout=0.5)
                return
            except queue.Full:
                continue

    # -- inbound requests (the Host's handler threads) -----------------------------------

    def _serve(self, stream: Stream) -> None:
        peer = stream.peer_id
        reader = dm.reader()
        while True:
            deadline = time.monotonic() + self.limits.stream_idle_timeout_s
            try:
                message = _read_message(stream, reader, deadline)
            except PeerTimeout:
                if reader.buffered:
                    raise
                return  # idle between requests: close our side
            if message is None:
                return
            if not self._running:
                stream.reset()
                return
            waiter: Future[Reply | Refuse | None] = Future()
            info = self.host.peer_info(peer)
            item = _Inbound(
                peer=peer,
                addrs=_kad_listen_addrs(info),
                remote_ip=_remote_ip(info),
                message=message,
                waiter=waiter,
            )
            try:
                self._inputs.put_nowait(item)
            except queue.Full:
                with self._dropped_lock:
                    self._dropped += 1
                stream.reset()
                return
            try:
                answer = waiter.result(self.config.request_timeout_s)
            except FutureTimeout:
                stream.reset()
                return
            match answer:
                case Reply(message=reply):
                    stream.write(dm.encode_framed(reply), timeout=self.config.request_timeout_s)
                case Refuse(reason=reason):
                    log.debug("kad: refused %s from %s: %s", message.type.name, peer, reason)
                    stream.reset()
                    return
                case None:
                    return

    def _kad_addrs(self, peer: str) -> tuple[bytes, ...]:
        return _kad_listen_addrs(self.host.peer_info(peer))

    # -- the routing table on disk -------------------------------------------------------

    def _save(self) -> None:
        if self._snapshot_path is None or self._core is None:
            return
        try:
            data = msgpack.packb(self._core.snapshot(), use_bin_type=True)
            write_atomic(self._snapshot_path, data, mode=0o600)
        except (StorageError, ValueError, TypeError) as exc:
            log.warning("kad: cannot save the routing table: %s", exc)

    def _restore(self, core: Kademlia, now: float) -> int:
        path = self._snapshot_path
        if path is None:
            return 0
        try:
            with path.open("rb") as file:
                data = file.read(SNAPSHOT_BYTES_MAX + 1)
        except FileNotFoundError:
            return 0
        except OSError as exc:
            log.warning("kad: cannot read %s: %s", path, exc.strerror)
            return 0
        if len(data) > SNAPSHOT_BYTES_MAX:
            log.warning("kad: %s is larger than %d bytes; starting empty", path, SNAPSHOT_BYTES_MAX)
            return 0
        try:
            snapshot = msgpack.unpackb(data, raw=False, strict_map_key=True)
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            log.warning("kad: %s is unreadable (%s); starting empty", path, exc)
            return 0
        return core.restore(snapshot, now)


# -- module helpers ----------------------------------------------------------------------


def kad_config(config: Config) -> KadConfig:
    """The core's limits from the node's settings (the rest keep `KadConfig`'s defaults)."""
    return KadConfig(
        ip_group_peers_per_bucket_max=config.kad_ip_group_peers_per_bucket_max,
        ip_group_peers_max=config.kad_ip_group_peers_max,
        ip_group_exempt=config.kad_ip_group_exempt,
        provider_records_per_peer_max=config.kad_provider_records_per_peer_max,
        provider_records_per_ip_group_max=config.kad_provider_records_per_ip_group_max,
    )


def _kad_listen_addrs(info: PeerInfo | None) -> tuple[bytes, ...]:
    """What a peer advertises by identify, if it serves kad: never its socket's address."""
    if info is None or not info.identified or PROTOCOL_ID not in info.protocols:
        return ()
    return _addr_bytes(info.listen_addrs)


def _remote_ip(info: PeerInfo | None) -> str:
    """The IP at the far end of the peer's connection: what its diversity group comes from."""
    if info is None or not info.address.components:
        return ""
    name, value = info.address.components[0]
    return value if name in ("ip4", "ip6") else ""


def _kad_peer(info: PeerInfo) -> _KadPeer:
    return _KadPeer(peer=info.peer_id, addrs=_kad_listen_addrs(info), remote_ip=_remote_ip(info))


def _read_message(stream: Stream, reader: LengthPrefixedReader, deadline: float) -> dm.Message | None:
    """The next framed kad message on `stream`; None when it ended between messages."""
    while (raw := reader.next_message()) is None:
        chunk = stream.read(dm.MESSAGE_BYTES_MAX, timeout=_left(deadline))
        if not chunk:
            if reader.buffered:
                raise ProtocolViolation(f"{stream.peer_id} ended {PROTOCOL_ID} inside a message")
            return None
        reader.feed(chunk)
    return dm.decode(raw)


def _provider_key(digest: str) -> bytes:
    try:
        return dm.provider_key(digest)
    except ValueError as exc:
        raise DigestInvalid(str(exc)) from exc


def _addr_bytes(addrs: tuple[Multiaddr, ...] | list[Multiaddr]) -> tuple[bytes, ...]:
    """Binary multiaddrs, TCP ones first: the core keeps only the first few."""
    ordered = sorted(addrs, key=lambda a: a.tcp_endpoint() is None)
    return tuple(a.without_peer().to_bytes() for a in ordered)


def _parse_addrs(addrs: tuple[bytes, ...]) -> list[Multiaddr]:
    parsed = []
    for raw in addrs:
        try:
            address = Multiaddr.from_bytes(raw).without_peer()
        except ProtocolViolation:
            continue
        if address not in parsed:
            parsed.append(address)
    return parsed


def _fields(stats: KadStats) -> dict[str, int]:
    return {name: getattr(stats, name) for name in KadStats.__dataclass_fields__}


def _left(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())


def _resolve(future: Future[T], value: T) -> None:
    if not future.done():
        with contextlib.suppress(Exception):
            future.set_result(value)


def _wait(future: Future[T], deadline: float, what: str) -> T:
    try:
        return future.result(_left(deadline))
    except FutureTimeout:
        future.cancel()
        raise PeerTimeout(f"{what} did not answer in time") from None


__all__ = ["PROTOCOL_ID", "KadService", "KadServiceLimits", "KadStats", "kad_config"]
