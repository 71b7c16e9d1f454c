"""The Kademlia shell: the `Kad` behaviour on a libp2p `Host`, behind a blocking API.

What it owns: one `Kad` behaviour (`kad/behaviour.py`), added to the Host once and
driven on its selector thread like identify and ping; no thread of its own. The core
is built on `start()` (the saved routing table restored into it) and handed to the
behaviour; `stop()` takes it back. Callers on any thread reach the core through
`Host.run` and a future: a call runs on the selector thread and returns at once
(`peers`, `stop_providing`, …), a lookup resolves when the behaviour reports
`Finished` with the call's tag. Peers that identify as kad servers (a `PeerIdentified`
event, on the Host's event pool) are added the same way.

The routing table is saved (msgpack, atomic write) off the selector thread: the
behaviour reports `SnapshotDue` with the table as plain data every
`snapshot_interval_s`, and a short-lived thread (`kad-snapshot`, one at a time; a
snapshot due while one is being written is skipped) encodes and writes it; `stop()`
writes the last one on the caller's thread. It is restored on start, after which a
bootstrap lookup through the restored peers reconnects the node with no bootstrap
addresses. Failures reach callers as `PeerError` subclasses.

Public API (any thread, blocking): `start()`, `stop()`, `bootstrap(addrs)`,
`provide(digest)`, `hold(digest)`, `stop_providing(digest)`, `find_providers(digest,
timeout)`, `find_peer(peer_id, timeout)`, `peers()`, `routing_table_size`, `stats()`; and
`lookup_providers(key)` / `lookup_node(key)` for the whole `LookupDone` (hops, requests).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import TypeVar

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
)
from pyrsia.p2p.behaviours.kad import messages as dm
from pyrsia.p2p.behaviours.kad.behaviour import (
    Finished,
    Kad,
    KadLimits,
    KadStats,
    SnapshotDue,
    busy,
)
from pyrsia.p2p.behaviours.kad.core import (
    KadConfig,
    Kademlia,
    LookupDone,
    ProvideDone,
    Rng,
)
from pyrsia.p2p.identity import Identity
from pyrsia.p2p.swarm import behaviour as sw
from pyrsia.p2p.swarm.host import Host, PeerEvent, PeerIdentified, PeerInfo
from pyrsia.p2p.wire.multiaddr import Multiaddr

log = logging.getLogger("pyrsia.p2p.kad")
T = TypeVar("T")

PROTOCOL_ID = dm.PROTOCOL_ID
SNAPSHOT_BYTES_MAX = 16 * 1024 * 1024
# How long a call waits for the selector thread when it names no timeout of its own.
CALL_TIMEOUT_S = 10.0
# Stopping waits this long for the selector thread to give the core back.
STOP_TIMEOUT_S = 5.0
KadServiceLimits = KadLimits


class KadService:
    """Kademlia on a `Host`; `start()` after the Host started, `stop()` before it stops."""

    def __init__(
        self,
        host: Host,
        identity: Identity,
        *,
        config: KadConfig | None = None,
        rng: Rng | None = None,
        snapshot_path: Path | None = None,
        limits: KadLimits | None = None,
    ) -> None:
        if identity.peer_id != host.peer_id:
            raise ValueError("the kad service and its host must share one identity")
        self.host = host
        self.peer_id = identity.peer_id
        self.config = config or KadConfig()
        self.limits = limits = limits or KadLimits()
        self._rng: Rng = rng if rng is not None else random.Random()
        self._snapshot_path = snapshot_path
        self._behaviour = Kad(kad_addrs=self._kad_addrs, dial_addrs=self._dial_addrs, limits=limits)
        self._added = False
        self._running = False
        self._subscribed = False
        self._lifecycle = threading.Lock()
        self._tags = itertools.count(1)
        self._waiting: dict[int, Future[LookupDone | ProvideDone]] = {}  # by tag
        self._waiting_lock = threading.Lock()
        self._saving = threading.Lock()  # one snapshot write at a time

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> KadService:
        """Build the core, restore the saved table, serve `/pyrsia/kad/1.0.0`."""
        with self._lifecycle:
            if self._running:
                return self
            if self.host.listen_port == 0:
                raise ValueError("start the Host before its kad service")
            own_addrs = tuple(a.to_bytes() for a in self.host.listen_addrs)
            saved = self._read_snapshot()
            behaviour = self._behaviour

            def begin(now: float) -> tuple[None, list[sw.Effect]]:
                core = Kademlia(
                    peer_id=self.peer_id, addrs=own_addrs, rng=self._rng, now_s=now, config=self.config
                )
                restored = core.restore(saved, now) if saved is not None else 0
                behaviour.start(core, now)
                effects: list[sw.Effect] = []
                for info in self.host.peers().values():
                    if info.identified and PROTOCOL_ID in info.protocols:
                        effects += behaviour.add_peer(info.peer_id, _kad_listen_addrs(info), now)
                if restored:
                    # Reconnect through the saved peers: libp2p/specs kad-dht bootstrap.
                    effects += behaviour.bootstrap(now)
                behaviour.publish()
                return None, effects

            if not self._added:
                self.host.add_behaviour(behaviour, self._on_report)
                self._added = True
            if not self._subscribed:
                self.host.subscribe(self._on_peer_event)
                self._subscribed = True
            self._running = True
            try:
                self._call(begin)
            except PeerError:
                self._running = False
                raise
            return self

    def stop(self) -> None:
        """Stop serving, take the core back from the selector thread, save the routing table."""
        with self._lifecycle:
            if not self._running:
                return
            behaviour = self._behaviour

            def end(now: float) -> tuple[tuple[dict[str, object] | None, list[object]], list[sw.Effect]]:
                core = behaviour.core
                snapshot = None if core is None else core.snapshot()
                effects, tags = behaviour.stop(now)
                return (snapshot, tags), effects

            try:
                snapshot, _ = self._call(end, STOP_TIMEOUT_S)
            except PeerError as exc:  # the Host stopped first: nothing left to save
                log.warning("kad: stopping without the routing table: %s", exc)
                snapshot = None
            self._running = False
            stopped = PeerUnreachable("the kad service stopped")
            with self._waiting_lock:
                waiting, self._waiting = self._waiting, {}
            for future in waiting.values():
                if not future.done():
                    with contextlib.suppress(Exception):
                        future.set_exception(stopped)
            if snapshot is not None:
                with self._saving:
                    self._save(snapshot)

    def __enter__(self) -> KadService:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- public API (any thread) -------------------------------------------------------

    @property
    def routing_table_size(self) -> int:
        return self._behaviour.published.table_peers

    def stats(self) -> KadStats:
        published = self._behaviour.published
        counts = dict(self._behaviour.counts)
        return KadStats(**{**_fields(published), **counts})

    def peers(self, timeout: float = 10.0) -> list[tuple[str, list[Multiaddr]]]:
        """The routing table: each peer id with the addrs it is dialled at."""
        found = self._call(lambda now: (self._core().peers(), ()), timeout)
        return [(p.peer_id, _parse_addrs(p.addrs)) for p in found]

    def bootstrap(self, addrs: list[str], timeout: float = 30.0) -> int:
        """Dial each `/…/p2p/<id>` address, add those serving kad, look ourselves up.

        Returns the routing table's size once the lookup ended. PeerUnreachable when
        no address could be dialled or none of those peers serves kad.
        """
        deadline = time.monotonic() + timeout
        errors: list[str] = []
        added = 0
        behaviour = self._behaviour
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
            self._call(_adding(behaviour, peer, listen), _left(deadline))
            added += 1
        if addrs and not added:
            raise PeerUnreachable(f"no bootstrap peer reachable: {'; '.join(errors)}")
        own_key = dm.peer_id_to_bytes(self.peer_id)
        self._lookup(lambda tag, now: behaviour.find_node(own_key, tag, now), deadline)
        return self._call(lambda now: (len(self._core().table), ()), _left(deadline))

    def provide(self, digest: str, timeout: float = 60.0) -> list[str]:
        """Announce that we hold blob `digest`, now and every republish interval.

        Returns the peers the provider record was sent to (ADD_PROVIDER has no reply).
        """
        key = _provider_key(digest)
        behaviour = self._behaviour
        done = self._lookup(lambda tag, now: behaviour.provide(key, tag, now), time.monotonic() + timeout)
        assert isinstance(done, ProvideDone)
        return list(done.stored_at)

    def hold(self, digest: str) -> None:
        """Answer for blob `digest` as its provider at once; `provide` announces it.

        Never waits: a stopped service raises `PeerError`, and the announcement that
        follows marks the key as ours all the same.
        """
        key = _provider_key(digest)
        if not self._running:
            raise PeerUnreachable("the kad service is not running")

        def hold(now: float) -> Sequence[sw.Effect]:
            core = self._behaviour.core
            if core is not None:
                with contextlib.suppress(ValueError):  # the core's bound on provided keys
                    core.hold(key, now)
            return ()

        self.host.run(self._behaviour, hold)

    def stop_providing(self, digest: str, timeout: float = 10.0) -> None:
        key = _provider_key(digest)

        def stop(now: float) -> tuple[None, Sequence[sw.Effect]]:
            self._core().stop_providing(key)
            return None, ()

        self._call(stop, timeout)

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
        behaviour = self._behaviour
        done = self._lookup(
            lambda tag, now: behaviour.find_providers(key, tag, now, wanted=wanted),
            time.monotonic() + timeout,
        )
        assert isinstance(done, LookupDone)
        return done

    def lookup_node(self, key: bytes, *, timeout: float = 30.0) -> LookupDone:
        """The whole FIND_NODE lookup of a raw key: the k closest that answered, hops, time."""
        behaviour = self._behaviour
        done = self._lookup(lambda tag, now: behaviour.find_node(key, tag, now), time.monotonic() + timeout)
        assert isinstance(done, LookupDone)
        return done

    # -- API plumbing (the caller's thread) ----------------------------------------------

    def _core(self) -> Kademlia:
        """The core, on the selector thread; PeerUnreachable once the service stopped."""
        core = self._behaviour.core
        if core is None:
            raise PeerUnreachable("the kad service is not running")
        return core

    def _call(
        self, function: Callable[[float], tuple[T, Sequence[sw.Effect]]], timeout: float | None = None
    ) -> T:
        """Run `function(now)` on the selector thread: its result, and effects for the Host."""
        if not self._running:
            raise PeerUnreachable("the kad service is not running")
        timeout = CALL_TIMEOUT_S if timeout is None else timeout
        deadline = time.monotonic() + timeout
        future: Future[T] = Future()

        def action(now: float) -> Sequence[sw.Effect]:
            if not future.set_running_or_notify_cancel():
                return ()
            try:
                result, effects = function(now)
            except Exception as exc:
                future.set_exception(exc)
                return ()
            finally:
                self._behaviour.publish()
            future.set_result(result)
            return effects

        self.host.run(self._behaviour, action)
        return _wait(future, deadline, "the kad service")

    def _lookup(
        self,
        start: Callable[[int, float], list[sw.Effect]],
        deadline: float,
    ) -> LookupDone | ProvideDone:
        """Start a lookup on the selector thread and wait until the behaviour reports its end."""
        tag = next(self._tags)
        done: Future[LookupDone | ProvideDone] = Future()
        with self._waiting_lock:
            self._waiting[tag] = done

        def begin(now: float) -> tuple[None, list[sw.Effect]]:
            self._core()
            try:
                return None, start(tag, now)
            except ValueError as exc:  # the core's own bound on provided keys
                raise PeerTimeout(str(exc)) from exc

        try:
            self._call(begin, _left(deadline))
            result = _wait(done, deadline, "the kad lookup")
        finally:
            with self._waiting_lock:
                self._waiting.pop(tag, None)
        if busy(result):
            raise PeerTimeout(f"{self.config.lookups_active_max} kad lookups are already running")
        return result

    # -- the selector thread ---------------------------------------------------------------

    def _on_report(self, _peer: str | None, outcome: object) -> None:
        match outcome:
            case Finished(tag=tag, done=done) if isinstance(tag, int):
                with self._waiting_lock:
                    future = self._waiting.pop(tag, None)
                if future is not None:
                    _resolve(future, done)
            case SnapshotDue(snapshot=snapshot):
                self._save_later(snapshot)

    def _kad_addrs(self, peer: str) -> tuple[bytes, ...]:
        return _kad_listen_addrs(self.host.peer_info(peer))

    def _dial_addrs(self, peer: str, addrs: tuple[bytes, ...]) -> tuple[Multiaddr, ...]:
        """Remember where the core was told `peer` listens; every address the node knows for it."""
        parsed = _parse_addrs(addrs)
        if parsed:
            self.host.add_addresses(peer, parsed)
        return self.host.known_addresses(peer)

    # -- peers from the Host (its event pool) ------------------------------------------------

    def _on_peer_event(self, event: PeerEvent) -> None:
        if not self._running or not isinstance(event, PeerIdentified):
            return
        if PROTOCOL_ID in event.info.protocols:
            peer, addrs = event.info.peer_id, _kad_listen_addrs(event.info)
            behaviour = self._behaviour
            self.host.run(behaviour, lambda now: behaviour.add_peer(peer, addrs, now))

    # -- the routing table on disk -------------------------------------------------------

    def _save_later(self, snapshot: dict[str, object]) -> None:
        """Write `snapshot` on a short-lived thread, never the selector thread's; skipped
        while the last one is still being written."""
        if self._snapshot_path is None or not self._saving.acquire(blocking=False):
            return

        def write() -> None:
            try:
                self._save(snapshot)
            finally:
                self._saving.release()

        threading.Thread(target=write, name="kad-snapshot", daemon=True).start()

    def _save(self, snapshot: dict[str, object]) -> None:
        if self._snapshot_path is None:
            return
        try:
            data = msgpack.packb(snapshot, use_bin_type=True)
            write_atomic(self._snapshot_path, data, mode=0o600)
        except (StorageError, ValueError, TypeError) as exc:
            log.warning("kad: cannot save the routing table: %s", exc)

    def _read_snapshot(self) -> object | None:
        path = self._snapshot_path
        if path is None:
            return None
        try:
            with path.open("rb") as file:
                data = file.read(SNAPSHOT_BYTES_MAX + 1)
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("kad: cannot read %s: %s", path, exc.strerror)
            return None
        if len(data) > SNAPSHOT_BYTES_MAX:
            log.warning("kad: %s is larger than %d bytes; starting empty", path, SNAPSHOT_BYTES_MAX)
            return None
        try:
            snapshot: object = msgpack.unpackb(data, raw=False, strict_map_key=True)
            return snapshot
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            log.warning("kad: %s is unreadable (%s); starting empty", path, exc)
            return None


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


def _adding(
    behaviour: Kad, peer: str, addrs: tuple[bytes, ...]
) -> Callable[[float], tuple[None, Sequence[sw.Effect]]]:
    return lambda now: (None, behaviour.add_peer(peer, addrs, now))


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
