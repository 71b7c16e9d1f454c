"""Kademlia on `/pyrsia/kad/1.0.0`: routing table, lookups, provider records — a pure core.

What it owns: the k-bucket routing table (libp2p/specs kad-dht: k = 20, 256 buckets by
the common prefix length of `sha256(key)` XOR `sha256(our key)`, where a peer's key is
its peer id's multihash bytes), iterative FIND_NODE and GET_PROVIDERS lookups (alpha = 3
requests in flight; done when the k closest peers seen have all answered, or enough
providers were found), answers to inbound requests, the provider store (records live
48 h, like go-libp2p's ProvideValidity) and the republishing of our own keys (every
22 h). It never touches a socket, a clock or a global random source: the shell feeds it
inputs with the current time and carries out the effects it returns (etcd-raft style).

Inputs (every one returns `list[Effect]`; `now_s` is any monotonic clock in seconds;
`remote_ip` is the IP at the far end of the connection the input came over, "" if
unknown; `addrs` are always the listen addrs a peer advertises, never that socket's):
    add_peer(peer, addrs, now_s, remote_ip=)  a peer known to serve kad (bootstrap, identify)
    bootstrap(now_s)                   look ourselves up to fill the table
    find_node / find_providers / provide(key, now_s)  -> (lookup_id, effects)
    request_received(peer, inbound_id, message, now_s, addrs, remote_ip=)
                                       a request read from a stream the peer opened;
                                       `addrs` are its listen addrs if it serves kad
                                       (empty: answer it, but keep it out of the table)
    response_received(request_id, message, now_s, remote_ip=)  the reply on a stream we opened
    request_failed(request_id, now_s)  that stream failed (dial error, reset, bad frame)
    tick(now_s)                        timeouts, refresh, republish, record expiry;
                                       call it by `next_deadline_s()` at the latest
Effects (the shell executes them in order):
    Send(peer, addrs, request_id, message)  open a stream (dialling `addrs` if needed),
        write the message; unless `expects_reply` is false (ADD_PROVIDER gets no
        reply), read one reply and feed `response_received` or `request_failed`.
    Reply(peer, inbound_id, message)   write the answer on inbound stream `inbound_id`
    Refuse(peer, inbound_id, reason)   reset that inbound stream (rate limit, bad key,
                                       unsupported request); nothing was stored
        An inbound request yields at most one Reply or Refuse; neither (an accepted
        ADD_PROVIDER, which is never answered) means: close the stream.
    LookupDone(...)                    a find_node/find_providers lookup finished
    ProvideDone(...)                   a provide (or republish) reached these peers

Nothing a peer sends makes this core raise: hostile requests are refused, hostile
replies fail that one request. Every collection is bounded (`KadConfig`), and a peer is
held to a token bucket of inbound requests, so a flood of FIND_NODE or ADD_PROVIDER
costs bounded memory and time. A full bucket keeps its peers while they answer: the
least-recently-seen one is pinged before a newcomer may replace it (Kademlia §2.2).

Sybils from one address are held off three ways (groups and scopes: `addresses.py`):
the table holds at most `ip_group_peers_per_bucket_max` peers of one IP group per
bucket and `ip_group_peers_max` in all (go-libp2p-kbucket's peer diversity filter);
the provider store holds at most `provider_records_per_peer_max` records from one
peer and `provider_records_per_ip_group_max` from one group; and answers carry only
addresses the asker could dial (no loopback or link-local unless it is on loopback).
A peer's group is that of `remote_ip`, which it cannot pick; only without one (a
restored table, a bare core in tests) that of the first IP it advertises. Refusals
are counted by name (`refusals()`).
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
from collections import OrderedDict
from dataclasses import dataclass
from enum import Enum
from typing import Protocol, TypeVar

from pyrsia.errors import ProtocolViolation
from pyrsia.p2p.behaviours.kad import addresses
from pyrsia.p2p.behaviours.kad import messages as dm
from pyrsia.p2p.behaviours.kad.messages import Message, MessageType, Peer

T = TypeVar("T")

KEY_BITS = 256
HOUR_S = 3600.0


class Rng(Protocol):
    """The randomness the core needs; `random.Random(seed)` satisfies it."""

    def randbytes(self, n: int, /) -> bytes: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class KadConfig:
    k: int = 20
    alpha: int = 3
    request_timeout_s: float = 10.0
    # Each lookup request is sent this many times before its peer counts as failed.
    request_attempts_max: int = 2
    lookup_timeout_s: float = 60.0
    lookup_candidates_max: int = 200
    lookups_active_max: int = 64
    providers_wanted: int = 3
    providers_returned_max: int = 20
    # A table peer that fails this many requests in a row leaves the table.
    peer_failures_max: int = 2
    replacements_per_bucket_max: int = 20
    # A least-recently-seen peer heard from within this time is not pinged again.
    ping_after_idle_s: float = 60.0
    # Addresses kept per peer (table and provider records), in count and in bytes.
    addrs_per_peer_max: int = 8
    addr_bytes_per_peer_max: int = 1024
    provider_ttl_s: float = 48 * HOUR_S
    republish_interval_s: float = 22 * HOUR_S
    provider_sweep_interval_s: float = HOUR_S
    provider_records_max: int = 65_536
    providers_per_key_max: int = 32
    provided_keys_max: int = 1_000_000
    republish_per_tick_max: int = 16
    refresh_interval_s: float = 600.0
    # A network smaller than k: once a lookup has answered with no peer beyond our table
    # (every node is among the k closest to every key, and we know them all), a provide
    # within this time stores at the table's peers without its FIND_NODE round. Any
    # lookup that meets a peer beyond the table, or a table of k, ends the shortcut.
    small_network_s: float = 300.0
    # While the table holds fewer than k peers (a join that lost its answers), sooner.
    sparse_refresh_interval_s: float = 60.0
    # Random keys for deeper buckets cost 2**(cpl+1) hashes to find; go-libp2p stops at 15.
    refresh_cpl_max: int = 15
    inbound_requests_per_s: float = 20.0
    inbound_burst: float = 100.0
    rate_limited_peers_max: int = 4096
    # Peer diversity (see `addresses.py` for the groups): table peers whose connection
    # comes from one IPv4 /24 or IPv6 /48, per bucket and in the whole table. Per
    # bucket, 16 of k = 20 leaves every bucket 4 places for other groups, and a
    # 20-node network on one address (tests on loopback) fills bucket 0 past 16
    # with odds below 1 in 2,500 per node. In the whole table, 64 is three times such
    # a network, and a quarter of 250 sybils from one address.
    ip_group_peers_per_bucket_max: int = 16
    ip_group_peers_max: int = 64
    # CIDRs whose peers count in no group (a private cluster behind one NAT, say).
    ip_group_exempt: tuple[str, ...] = ()
    # Provider records held per providing peer and per IP group of the peers that sent
    # them: no one peer or address fills the store. A quarter of the store each lets an
    # honest node announce 16,384 blobs to a network of up to k nodes (where every
    # node is among the k closest to every key), and more in a larger one.
    provider_records_per_peer_max: int = 16_384
    provider_records_per_ip_group_max: int = 16_384


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerInfo:
    peer_id: str
    addrs: tuple[bytes, ...] = ()


class LookupEnd(Enum):
    COMPLETE = "complete"  # the k closest peers seen all answered, or enough providers
    EXHAUSTED = "exhausted"  # every candidate failed or none were known
    TIMEOUT = "timeout"
    BUSY = "busy"  # lookups_active_max lookups were already running


@dataclass(frozen=True, slots=True, kw_only=True)
class Send:
    peer: str
    addrs: tuple[bytes, ...]
    request_id: int
    message: Message

    @property
    def expects_reply(self) -> bool:
        # libp2p/specs kad-dht and js-libp2p: ADD_PROVIDER is never answered.
        return self.message.type is not MessageType.ADD_PROVIDER


@dataclass(frozen=True, slots=True, kw_only=True)
class Reply:
    peer: str
    inbound_id: int
    message: Message


@dataclass(frozen=True, slots=True, kw_only=True)
class Refuse:
    peer: str
    inbound_id: int
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class LookupDone:
    lookup_id: int
    kind: MessageType
    key: bytes
    end: LookupEnd
    closest: tuple[PeerInfo, ...]
    providers: tuple[PeerInfo, ...]
    # Sequential requests on the path to the answer: to the first provider found
    # (0 = our own store), or for FIND_NODE to the closest peer. None: no answer.
    hops: int | None
    requests: int
    elapsed_s: float


@dataclass(frozen=True, slots=True, kw_only=True)
class ProvideDone:
    lookup_id: int
    key: bytes
    stored_at: tuple[str, ...]


Effect = Send | Reply | Refuse | LookupDone | ProvideDone


def key_point(key: bytes) -> int:
    """A key's position in the keyspace: libp2p/specs kad-dht "Distance" hashes every key."""
    return int.from_bytes(hashlib.sha256(key).digest(), "big")


def common_prefix_len(a: int, b: int) -> int:
    return KEY_BITS - (a ^ b).bit_length()


def _bounded_addrs(addrs: tuple[bytes, ...], count_max: int, bytes_max: int) -> tuple[bytes, ...]:
    kept: list[bytes] = []
    total = 0
    for addr in addrs[:count_max]:
        total += len(addr)
        if total > bytes_max:
            break
        kept.append(addr)
    return tuple(kept)


def _is_loopback(remote_ip: str) -> bool:
    ip = addresses.parse_ip(remote_ip) if remote_ip else None
    return ip is not None and ip.is_loopback


# -- routing table -----------------------------------------------------------------


@dataclass(slots=True)
class _Entry:
    id: bytes
    peer_id: str
    point: int
    addrs: tuple[bytes, ...]
    last_seen_s: float
    failures: int = 0
    # The IP group its connection came from (`addresses.ip_group`); None: counted in none.
    group: str | None = None


class RoutingTable:
    """k-buckets by common prefix length with our point; a bounded replacement cache each.

    Bucket order is least-recently-seen first (Kademlia §2.2). A peer is added only
    while its bucket has room; otherwise it waits in the bucket's replacement cache
    and takes the place of a peer that is removed.

    Peer diversity: at most `group_per_bucket_max` peers of one IP group in a bucket
    and `group_max` in the table. A newcomer whose group is at either bound is refused
    (not even cached as a replacement) and counted in `refused`; a replacement moves in
    only if its group has room then.
    """

    def __init__(
        self,
        self_point: int,
        *,
        k: int,
        replacements_max: int,
        group_per_bucket_max: int | None = None,
        group_max: int | None = None,
    ) -> None:
        self.self_point = self_point
        self.k = k
        self._replacements_max = replacements_max
        self._group_per_bucket_max = k if group_per_bucket_max is None else group_per_bucket_max
        self._group_max = group_max
        self._buckets: list[OrderedDict[bytes, _Entry]] = [OrderedDict() for _ in range(KEY_BITS)]
        self._replacements: list[OrderedDict[bytes, _Entry]] = [OrderedDict() for _ in range(KEY_BITS)]
        self._where: dict[bytes, int] = {}  # peer -> its bucket
        self._deepest = 0  # no bucket deeper than this has ever held a peer
        self._groups: dict[str, int] = {}  # group -> table peers in it
        self.refused = {"bucket_group": 0, "table_group": 0}

    def __len__(self) -> int:
        return len(self._where)

    def bucket_of(self, point: int) -> int:
        return min(common_prefix_len(point, self.self_point), KEY_BITS - 1)

    def bucket(self, index: int) -> list[_Entry]:
        return list(self._buckets[index].values())

    def replacements(self, index: int) -> list[_Entry]:
        return list(self._replacements[index].values())

    def get(self, peer: bytes) -> _Entry | None:
        index = self._where.get(peer)
        return None if index is None else self._buckets[index][peer]

    def entries(self) -> list[_Entry]:
        return [entry for bucket in self._buckets for entry in bucket.values()]

    def deepest_bucket(self) -> int:
        return max((i for i, b in enumerate(self._buckets) if b), default=0)

    def group_size(self, group: str) -> int:
        return self._groups.get(group, 0)

    def _room_for(self, group: str | None, index: int) -> str | None:
        """None when a peer of `group` may join bucket `index`, else the bound it would pass."""
        if group is None:
            return None
        if self._group_max is not None and self._groups.get(group, 0) >= self._group_max:
            return "table_group"
        in_bucket = sum(1 for e in self._buckets[index].values() if e.group == group)
        if in_bucket >= self._group_per_bucket_max:
            return "bucket_group"
        return None

    def _insert(self, index: int, entry: _Entry) -> None:
        self._buckets[index][entry.id] = entry
        self._where[entry.id] = index
        self._deepest = max(self._deepest, index)
        if entry.group is not None:
            self._groups[entry.group] = self._groups.get(entry.group, 0) + 1

    def offer(self, entry: _Entry) -> _Entry | None:
        """Add or refresh `entry`. Returns the bucket's least-recently-seen peer when the
        bucket is full and `entry` went to the replacement cache instead."""
        index = self.bucket_of(entry.point)
        bucket = self._buckets[index]
        known = bucket.get(entry.id)
        if known is not None:
            # It keeps the group it was admitted with: the counts stay exact.
            known.last_seen_s = max(known.last_seen_s, entry.last_seen_s)
            known.failures = 0
            if entry.addrs:
                known.addrs = entry.addrs
            bucket.move_to_end(entry.id)
            return None
        bound = self._room_for(entry.group, index)
        if bound is not None:
            self.refused[bound] += 1
            self._replacements[index].pop(entry.id, None)
            return None
        if len(bucket) < self.k:
            self._insert(index, entry)
            self._replacements[index].pop(entry.id, None)
            return None
        replacements = self._replacements[index]
        replacements[entry.id] = entry
        replacements.move_to_end(entry.id)
        while len(replacements) > self._replacements_max:
            replacements.popitem(last=False)
        return next(iter(bucket.values()))

    def remove(self, peer: bytes) -> None:
        """Drop `peer`; the most recently seen replacement whose group has room takes its place."""
        index = self._where.pop(peer, None)
        if index is None:
            return
        gone = self._buckets[index].pop(peer)
        if gone.group is not None:
            _decrement(self._groups, gone.group)
        replacements = self._replacements[index]
        for candidate in reversed(list(replacements.values())):
            if self._room_for(candidate.group, index) is None:
                del replacements[candidate.id]
                self._insert(index, candidate)
                return

    def closest(self, point: int, count: int, exclude: frozenset[bytes] = frozenset()) -> list[_Entry]:
        """The `count` peers nearest `point`, nearest first, reading only the buckets needed.

        With c = the bucket `point` falls in: its peers are nearest; every deeper
        bucket's peers come next (their distance to `point` first differs at bit c);
        then buckets c-1, c-2, ... 0, each farther than the one before.
        """
        c = self.bucket_of(point)
        # Buckets past the deepest one ever filled are empty: of 256, a table of n peers
        # fills about log2(n), and this runs for every lookup step and every answer.
        deepest = self._deepest
        groups = itertools.chain(
            ((c,), range(c + 1, deepest + 1)), ((i,) for i in range(min(c - 1, deepest), -1, -1))
        )
        found: list[_Entry] = []
        buckets = self._buckets
        for group in groups:
            batch = [e for i in group if buckets[i] for e in buckets[i].values() if e.id not in exclude]
            if not batch:
                continue
            batch.sort(key=lambda e: e.point ^ point)
            found += batch
            if len(found) >= count:
                break
        return found[:count]


# -- provider store ----------------------------------------------------------------


@dataclass(slots=True)
class _ProviderRecord:
    addrs: tuple[bytes, ...]
    expires_s: float
    group: str | None


class ProviderStore:
    """Who provides which key, until when.

    Bounded in records overall, per key, per providing peer and per IP group of the
    peers that sent them, so neither one peer nor throwaway ids from one address fill
    the store. A record that names a provider already held for that key only renews
    it (and keeps the group it was counted in). Refusals are counted by bound in
    `refused`.
    """

    def __init__(
        self,
        *,
        records_max: int,
        per_key_max: int,
        per_provider_max: int | None = None,
        per_group_max: int | None = None,
    ) -> None:
        self._records: dict[bytes, OrderedDict[bytes, _ProviderRecord]] = {}
        self._records_max = records_max
        self._per_key_max = per_key_max
        self._per_provider_max = per_provider_max
        self._per_group_max = per_group_max
        self._count = 0
        self._by_provider: dict[bytes, int] = {}
        self._by_group: dict[str, int] = {}
        self.refused = {"store_full": 0, "peer_quota": 0, "group_quota": 0}

    def __len__(self) -> int:
        return self._count

    def records_of(self, provider: bytes) -> int:
        return self._by_provider.get(provider, 0)

    def records_of_group(self, group: str) -> int:
        return self._by_group.get(group, 0)

    def add(
        self,
        key: bytes,
        provider: bytes,
        addrs: tuple[bytes, ...],
        expires_s: float,
        group: str | None = None,
    ) -> bool:
        records = self._records.get(key)
        if records is not None and provider in records:
            known = records[provider]
            records[provider] = _ProviderRecord(addrs, expires_s, known.group)
            records.move_to_end(provider)
            return True
        refusal = self._refusal(provider, group)
        if refusal is not None:
            self.refused[refusal] += 1
            return False
        if records is None:
            records = self._records[key] = OrderedDict()
        if len(records) >= self._per_key_max:
            evicted, record = records.popitem(last=False)
            self._forget(evicted, record)
        records[provider] = _ProviderRecord(addrs, expires_s, group)
        self._count += 1
        self._by_provider[provider] = self._by_provider.get(provider, 0) + 1
        if group is not None:
            self._by_group[group] = self._by_group.get(group, 0) + 1
        return True

    def _refusal(self, provider: bytes, group: str | None) -> str | None:
        if self._count >= self._records_max:
            return "store_full"
        if self._per_provider_max is not None and self.records_of(provider) >= self._per_provider_max:
            return "peer_quota"
        if (
            group is not None
            and self._per_group_max is not None
            and self.records_of_group(group) >= self._per_group_max
        ):
            return "group_quota"
        return None

    def _forget(self, provider: bytes, record: _ProviderRecord) -> None:
        self._count -= 1
        _decrement(self._by_provider, provider)
        if record.group is not None:
            _decrement(self._by_group, record.group)

    def get(self, key: bytes, now_s: float, limit: int) -> list[tuple[bytes, tuple[bytes, ...]]]:
        records = self._records.get(key)
        if records is None:
            return []
        live = [(p, r.addrs) for p, r in reversed(records.items()) if r.expires_s > now_s]
        return live[:limit]

    def sweep(self, now_s: float) -> int:
        removed = 0
        for key in list(self._records):
            records = self._records[key]
            for provider in [p for p, r in records.items() if r.expires_s <= now_s]:
                self._forget(provider, records.pop(provider))
                removed += 1
            if not records:
                del self._records[key]
        return removed


def _decrement(counts: dict[T, int], name: T) -> None:
    left = counts[name] - 1
    if left:
        counts[name] = left
    else:
        del counts[name]


# -- inbound rate limit ------------------------------------------------------------


class InboundRateLimit:
    """A token bucket per peer (`rate_per_s`, `burst`); at most `peers_max` buckets held.

    A bucket that would be full again carries no information, so when the map is at
    its bound the least recently used bucket is dropped.
    """

    def __init__(self, *, rate_per_s: float, burst: float, peers_max: int) -> None:
        self._rate = rate_per_s
        self._burst = burst
        self._peers_max = peers_max
        self._buckets: OrderedDict[bytes, tuple[float, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def allow(self, peer: bytes, now_s: float) -> bool:
        tokens, updated_s = self._buckets.pop(peer, (self._burst, now_s))
        tokens = min(self._burst, tokens + max(0.0, now_s - updated_s) * self._rate)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        self._buckets[peer] = (tokens, max(now_s, updated_s))
        while len(self._buckets) > self._peers_max:
            self._buckets.popitem(last=False)
        return allowed


# -- lookups -----------------------------------------------------------------------


class _State(Enum):
    WAITING = 0
    IN_FLIGHT = 1
    SUCCEEDED = 2
    FAILED = 3


@dataclass(slots=True)
class _Candidate:
    id: bytes
    distance: int
    addrs: tuple[bytes, ...]
    hop: int
    state: _State = _State.WAITING


class _Purpose(Enum):
    USER = 0  # find_node / find_providers: ends in LookupDone
    PROVIDE = 1  # ends in ADD_PROVIDER to the closest peers and ProvideDone
    REFRESH = 2  # fills the table; ends silently


@dataclass(slots=True)
class _Lookup:
    lookup_id: int
    kind: MessageType
    purpose: _Purpose
    key: bytes
    target: int
    started_s: float
    deadline_s: float
    providers_wanted: int
    candidates: dict[bytes, _Candidate]
    providers: dict[bytes, tuple[bytes, ...]]
    provider_hops: int | None = None
    requests: int = 0
    in_flight: int = 0


@dataclass(slots=True)
class _Pending:
    peer: bytes
    addrs: tuple[bytes, ...]
    message: Message
    deadline_s: float
    attempt: int
    lookup_id: int | None  # None: an eviction ping
    bucket: int = -1


class Kademlia:
    """One node's Kademlia state; see the module docstring for the input/effect contract."""

    def __init__(
        self,
        *,
        peer_id: str,
        addrs: tuple[bytes, ...],
        rng: Rng,
        now_s: float,
        config: KadConfig | None = None,
    ) -> None:
        self.config = config or KadConfig()
        self.peer_id = peer_id
        self.addrs = addrs
        self._id = dm.peer_id_to_bytes(peer_id)
        self._point = key_point(self._id)
        self._rng = rng
        self._exempt = addresses.parse_networks(self.config.ip_group_exempt)
        self.table = RoutingTable(
            self._point,
            k=self.config.k,
            replacements_max=self.config.replacements_per_bucket_max,
            group_per_bucket_max=self.config.ip_group_peers_per_bucket_max,
            group_max=self.config.ip_group_peers_max,
        )
        self.providers = ProviderStore(
            records_max=self.config.provider_records_max,
            per_key_max=self.config.providers_per_key_max,
            per_provider_max=self.config.provider_records_per_peer_max,
            per_group_max=self.config.provider_records_per_ip_group_max,
        )
        self._addrs_withheld = 0
        self._limit = InboundRateLimit(
            rate_per_s=self.config.inbound_requests_per_s,
            burst=self.config.inbound_burst,
            peers_max=self.config.rate_limited_peers_max,
        )
        self._lookups: dict[int, _Lookup] = {}
        self._pending: dict[int, _Pending] = {}
        self._pinging: dict[int, int] = {}  # bucket -> request id of its eviction ping
        self._provided: dict[bytes, float] = {}  # our keys -> when to republish
        # Until when a provide may skip its lookup (`small_network_s`), and how often it did.
        self._small_network_until_s = 0.0
        self.small_network_provides = 0
        self._republish_heap: list[tuple[float, bytes]] = []
        self._bucket_refreshed_s = [now_s] * KEY_BITS
        self._next_refresh_s = now_s + self.config.refresh_interval_s
        self._next_sweep_s = now_s + self.config.provider_sweep_interval_s
        self._next_request_id = 1
        self._next_lookup_id = 1

    # -- queries -------------------------------------------------------------------

    def peers(self) -> list[PeerInfo]:
        return [PeerInfo(peer_id=e.peer_id, addrs=e.addrs) for e in self.table.entries()]

    def provided_keys(self) -> list[bytes]:
        return list(self._provided)

    @property
    def provided_count(self) -> int:
        return len(self._provided)

    def refusals(self) -> dict[str, int]:
        """Every refusal of the table and the provider store, by name; addresses withheld."""
        table, store = self.table.refused, self.providers.refused
        return {
            "table_bucket_group": table["bucket_group"],
            "table_group": table["table_group"],
            "provider_store_full": store["store_full"],
            "provider_peer_quota": store["peer_quota"],
            "provider_group_quota": store["group_quota"],
            "addrs_withheld": self._addrs_withheld,
        }

    @property
    def active_lookups(self) -> int:
        return len(self._lookups)

    @property
    def pending_requests(self) -> int:
        return len(self._pending)

    def next_deadline_s(self) -> float | None:
        """The latest time by which `tick` must be called."""
        deadlines = [self._next_refresh_s, self._next_sweep_s]
        deadlines += [p.deadline_s for p in self._pending.values()]
        deadlines += [lookup.deadline_s for lookup in self._lookups.values()]
        if self._republish_heap:
            deadlines.append(self._republish_heap[0][0])
        return min(deadlines)

    # -- inputs: peers and lookups ---------------------------------------------------

    def add_peer(
        self, peer: str, addrs: tuple[bytes, ...], now_s: float, *, remote_ip: str = ""
    ) -> list[Effect]:
        """`addrs`: the listen addrs it advertises; `remote_ip`: where its connection comes from."""
        raw = dm.peer_id_to_bytes(peer)
        if raw == self._id:
            return []
        return self._seen(raw, addrs, now_s, peer_id=peer, remote_ip=remote_ip)

    def bootstrap(self, now_s: float) -> list[Effect]:
        """libp2p/specs kad-dht "Bootstrap process": look up our own id."""
        _, effects = self._start(MessageType.FIND_NODE, _Purpose.REFRESH, self._id, now_s, wanted=0)
        return effects

    def find_node(self, key: bytes, now_s: float) -> tuple[int, list[Effect]]:
        return self._start(MessageType.FIND_NODE, _Purpose.USER, key, now_s, wanted=0)

    def find_providers(
        self, key: bytes, now_s: float, *, wanted: int | None = None
    ) -> tuple[int, list[Effect]]:
        wanted = self.config.providers_wanted if wanted is None else wanted
        return self._start(MessageType.GET_PROVIDERS, _Purpose.USER, key, now_s, wanted=max(1, wanted))

    def provide(self, key: bytes, now_s: float) -> tuple[int, list[Effect]]:
        """Announce that we provide `key` now, and again every republish interval."""
        if key not in self._provided and len(self._provided) >= self.config.provided_keys_max:
            raise ValueError(f"already providing {self.config.provided_keys_max} keys")
        self._schedule_republish(key, now_s + self.config.republish_interval_s)
        if self._small_network(now_s):
            return self._provide_to_table(key, now_s)
        return self._start(MessageType.FIND_NODE, _Purpose.PROVIDE, key, now_s, wanted=0)

    def _small_network(self, now_s: float) -> bool:
        return now_s < self._small_network_until_s and 0 < len(self.table) < self.config.k

    def _provide_to_table(self, key: bytes, now_s: float) -> tuple[int, list[Effect]]:
        """ADD_PROVIDER straight to the table's peers: in a network of fewer than k nodes
        that a recent lookup showed we know whole, they are the k closest to any key."""
        lookup_id = self._next_lookup_id
        self._next_lookup_id += 1
        target = key_point(key)
        lookup = _Lookup(
            lookup_id=lookup_id,
            kind=MessageType.FIND_NODE,
            purpose=_Purpose.PROVIDE,
            key=key,
            target=target,
            started_s=now_s,
            deadline_s=now_s,
            providers_wanted=0,
            candidates={},
            providers={},
        )
        answered = [
            _Candidate(id=entry.id, distance=entry.point ^ target, addrs=entry.addrs, hop=1)
            for entry in self.table.closest(target, self.config.k)
        ]
        self.small_network_provides += 1
        return lookup_id, self._announce(lookup, answered)

    def hold(self, key: bytes, now_s: float) -> None:
        """We provide `key` from now on: GET_PROVIDERS answers name us at once, before the
        announcement (`provide`, a lookup that may take a while) has reached anyone."""
        if key not in self._provided and len(self._provided) >= self.config.provided_keys_max:
            raise ValueError(f"already providing {self.config.provided_keys_max} keys")
        if key not in self._provided:
            self._schedule_republish(key, now_s + self.config.republish_interval_s)

    def stop_providing(self, key: bytes) -> None:
        self._provided.pop(key, None)

    # -- inputs: the wire ----------------------------------------------------------

    def request_received(
        self,
        peer: str,
        inbound_id: int,
        message: Message,
        now_s: float,
        addrs: tuple[bytes, ...] = (),
        *,
        remote_ip: str = "",
    ) -> list[Effect]:
        raw = dm.peer_id_to_bytes(peer)
        if not self._limit.allow(raw, now_s):
            return [Refuse(peer=peer, inbound_id=inbound_id, reason="too many requests")]
        effects: list[Effect] = []
        if addrs and raw != self._id:
            effects += self._seen(raw, addrs, now_s, peer_id=peer, remote_ip=remote_ip)
        else:
            entry = self.table.get(raw)
            if entry is not None:
                entry.last_seen_s = max(entry.last_seen_s, now_s)
        answer = self._answer(raw, peer, inbound_id, message, now_s, remote_ip)
        return effects if answer is None else [*effects, answer]

    def response_received(
        self, request_id: int, message: Message, now_s: float, *, remote_ip: str = ""
    ) -> list[Effect]:
        """`remote_ip`: where the connection the reply came on reaches the peer."""
        pending = self._pending.pop(request_id, None)
        if pending is None:
            return []  # late, duplicated, or for a lookup that already ended
        if message.type is not pending.message.type:
            return self._failed(pending, now_s)
        effects = self._seen(pending.peer, pending.addrs, now_s, remote_ip=remote_ip)
        if pending.lookup_id is None:
            self._pinging.pop(pending.bucket, None)
            return effects
        lookup = self._lookups.get(pending.lookup_id)
        if lookup is None:
            return effects
        candidate = lookup.candidates.get(pending.peer)
        if candidate is None or candidate.state is not _State.IN_FLIGHT:
            return effects
        candidate.state = _State.SUCCEEDED
        lookup.in_flight -= 1
        self._merge(lookup, candidate, message, from_loopback=_is_loopback(remote_ip))
        return effects + self._advance(lookup, now_s)

    def request_failed(self, request_id: int, now_s: float) -> list[Effect]:
        pending = self._pending.pop(request_id, None)
        return [] if pending is None else self._failed(pending, now_s)

    def tick(self, now_s: float) -> list[Effect]:
        effects: list[Effect] = []
        for request_id in [r for r, p in self._pending.items() if p.deadline_s <= now_s]:
            pending = self._pending.pop(request_id, None)
            if pending is not None:
                effects += self._failed(pending, now_s)
        for lookup in [lk for lk in self._lookups.values() if lk.deadline_s <= now_s]:
            if lookup.lookup_id in self._lookups:
                effects += self._finish(lookup, LookupEnd.TIMEOUT, now_s)
        if now_s >= self._next_sweep_s:
            self.providers.sweep(now_s)
            self._next_sweep_s = now_s + self.config.provider_sweep_interval_s
        if now_s >= self._next_refresh_s:
            self._next_refresh_s = now_s + self.config.refresh_interval_s
            effects += self._refresh(now_s)
        effects += self._republish(now_s)
        return effects

    # -- persistence ---------------------------------------------------------------

    def snapshot(self) -> dict[str, object]:
        """The routing table as plain data (str, bytes, lists) for the shell to save."""
        return {
            "version": 1,
            "peers": [
                {"id": e.peer_id, "addrs": list(e.addrs), **({"group": e.group} if e.group else {})}
                for e in self.table.entries()
            ],
        }

    def restore(self, snapshot: object, now_s: float) -> int:
        """Put a snapshot's peers back in the table; entries that do not parse are skipped."""
        if not isinstance(snapshot, dict) or snapshot.get("version") != 1:
            return 0
        peers = snapshot.get("peers")
        restored = 0
        for item in peers if isinstance(peers, list) else []:
            if not isinstance(item, dict):
                continue
            peer, addrs = item.get("id"), item.get("addrs")
            if not isinstance(peer, str) or not isinstance(addrs, list):
                continue
            if not all(isinstance(a, bytes) for a in addrs):
                continue
            try:
                raw = dm.peer_id_to_bytes(peer)
            except ProtocolViolation:
                continue
            group = item.get("group")
            if raw != self._id:
                # Saved by this node: the group it was admitted with, else its advertised IP's.
                self._seen(
                    raw, tuple(addrs), now_s, peer_id=peer, group=group if isinstance(group, str) else None
                )
                restored += 1
        return restored

    # -- routing table upkeep ------------------------------------------------------

    def _seen(
        self,
        raw: bytes,
        addrs: tuple[bytes, ...],
        now_s: float,
        peer_id: str = "",
        *,
        remote_ip: str = "",
        group: str | None = None,
    ) -> list[Effect]:
        """`raw` answered us or asked us something: add or refresh it in the table.

        Its diversity group is `group` if given, else that of `remote_ip` (the socket's
        far end); only without either, that of the first IP it advertises.
        """
        if raw == self._id:
            return []
        known = self.table.get(raw)
        point = known.point if known is not None else key_point(raw)
        kept = _bounded_addrs(addrs, self.config.addrs_per_peer_max, self.config.addr_bytes_per_peer_max)
        if known is not None:
            peer_id = known.peer_id
        elif group is None:
            group = self._group(remote_ip, kept)
        entry = _Entry(
            id=raw,
            peer_id=peer_id or dm.peer_id_from_bytes(raw),
            point=point,
            addrs=kept,
            last_seen_s=now_s,
            group=group,
        )
        oldest = self.table.offer(entry)
        if oldest is None:
            return []
        bucket = self.table.bucket_of(point)
        if bucket in self._pinging or now_s - oldest.last_seen_s < self.config.ping_after_idle_s:
            return []
        request_id = self._new_request_id()
        ping = Message(type=MessageType.PING)
        self._pending[request_id] = _Pending(
            peer=oldest.id,
            addrs=oldest.addrs,
            message=ping,
            deadline_s=now_s + self.config.request_timeout_s,
            attempt=1,  # one unanswered ping decides: no retry
            lookup_id=None,
            bucket=bucket,
        )
        self._pinging[bucket] = request_id
        return [Send(peer=oldest.peer_id, addrs=oldest.addrs, request_id=request_id, message=ping)]

    def _peer_failed(self, raw: bytes, now_s: float, *, evict: bool) -> None:
        entry = self.table.get(raw)
        if entry is None:
            return
        entry.failures += 1
        if evict or entry.failures >= self.config.peer_failures_max:
            self.table.remove(raw)

    def _refresh(self, now_s: float) -> list[Effect]:
        """Look ourselves up, and a random key in every bucket no lookup touched lately."""
        effects = self.bootstrap(now_s)
        deepest = min(self.table.deepest_bucket(), self.config.refresh_cpl_max)
        for cpl in range(deepest + 1):
            if now_s - self._bucket_refreshed_s[cpl] < self.config.refresh_interval_s:
                continue
            if len(self._lookups) >= self.config.lookups_active_max:
                break
            key = self._random_key_in_bucket(cpl)
            if key is not None:
                self._bucket_refreshed_s[cpl] = now_s
                effects += self._start(MessageType.FIND_NODE, _Purpose.REFRESH, key, now_s, wanted=0)[1]
        return effects

    def _random_key_in_bucket(self, cpl: int) -> bytes | None:
        # A key lands in bucket `cpl` with probability 2**-(cpl+1); give up after 8x that.
        for _ in range(2 ** (cpl + 4)):
            key = bytes([dm.MULTIHASH_SHA2_256, dm.SHA256_BYTES]) + self._rng.randbytes(dm.SHA256_BYTES)
            if common_prefix_len(key_point(key), self._point) == cpl:
                return key
        return None

    # -- providing -----------------------------------------------------------------

    def _schedule_republish(self, key: bytes, due_s: float) -> None:
        self._provided[key] = due_s
        heapq.heappush(self._republish_heap, (due_s, key))
        if len(self._republish_heap) > 2 * len(self._provided) + 16:
            self._republish_heap = [(due, k) for k, due in self._provided.items()]
            heapq.heapify(self._republish_heap)

    def _republish(self, now_s: float) -> list[Effect]:
        effects: list[Effect] = []
        started = 0
        heap = self._republish_heap
        while heap and heap[0][0] <= now_s and started < self.config.republish_per_tick_max:
            if len(self._lookups) >= self.config.lookups_active_max:
                break
            due_s, key = heapq.heappop(heap)
            if self._provided.get(key) != due_s:
                continue  # stale entry: rescheduled or no longer provided
            self._schedule_republish(key, now_s + self.config.republish_interval_s)
            if self._small_network(now_s):
                effects += self._provide_to_table(key, now_s)[1]
            else:
                effects += self._start(MessageType.FIND_NODE, _Purpose.PROVIDE, key, now_s, wanted=0)[1]
            started += 1
        return effects

    # -- answering -----------------------------------------------------------------

    def _group(self, remote_ip: str, addrs: tuple[bytes, ...]) -> str | None:
        ip = addresses.parse_ip(remote_ip) if remote_ip else addresses.advertised_ip(addrs)
        return addresses.ip_group(ip, self._exempt)

    def _servable(self, addrs: tuple[bytes, ...], to_loopback: bool) -> tuple[bytes, ...]:
        served = addresses.servable(addrs, to_loopback=to_loopback)
        self._addrs_withheld += len(addrs) - len(served)
        return served

    def _answer(
        self, raw: bytes, peer: str, inbound_id: int, message: Message, now_s: float, remote_ip: str
    ) -> Effect | None:
        key = message.key
        to_loopback = _is_loopback(remote_ip)

        def reply(answer: Message) -> Reply:
            return Reply(peer=peer, inbound_id=inbound_id, message=answer)

        def closer() -> tuple[Peer, ...]:
            found = self.table.closest(key_point(key), self.config.k, exclude=frozenset((raw,)))
            return tuple(Peer(id=e.id, addrs=self._servable(e.addrs, to_loopback)) for e in found)

        match message.type:
            case MessageType.PING:
                return reply(Message(type=MessageType.PING))
            case MessageType.FIND_NODE if key:
                return reply(Message(type=MessageType.FIND_NODE, closer_peers=closer()))
            case MessageType.GET_VALUE if key:
                # We hold no values: answer as for a missing record, with closer peers.
                return reply(Message(type=MessageType.GET_VALUE, key=key, closer_peers=closer()))
            case MessageType.GET_PROVIDERS if dm.is_multihash(key):
                return reply(
                    Message(
                        type=MessageType.GET_PROVIDERS,
                        key=key,
                        closer_peers=closer(),
                        provider_peers=self._local_providers(key, now_s, to_loopback),
                    )
                )
            case MessageType.ADD_PROVIDER if dm.is_multihash(key):
                group = self._group(remote_ip, ())
                return self._add_provider(raw, peer, inbound_id, message, now_s, group)
            case MessageType.PUT_VALUE:
                return Refuse(peer=peer, inbound_id=inbound_id, reason="PUT_VALUE is not supported")
        return Refuse(peer=peer, inbound_id=inbound_id, reason=f"{message.type.name} without a valid key")

    def _local_providers(self, key: bytes, now_s: float, to_loopback: bool) -> tuple[Peer, ...]:
        found = [(self._id, self.addrs)] if key in self._provided else []
        limit = self.config.providers_returned_max - len(found)
        found += self.providers.get(key, now_s, limit)
        return tuple(Peer(id=p, addrs=self._servable(a, to_loopback)) for p, a in found)

    def _add_provider(
        self, raw: bytes, peer: str, inbound_id: int, message: Message, now_s: float, group: str | None
    ) -> Effect | None:
        # libp2p/specs kad-dht: only provider records naming the sender are kept; like
        # js-libp2p, a record without an address to reach the provider is useless.
        stored = False
        named = False
        for provider in message.provider_peers:
            if provider.id == raw and provider.addrs:
                named = True
                addrs = _bounded_addrs(
                    provider.addrs, self.config.addrs_per_peer_max, self.config.addr_bytes_per_peer_max
                )
                expires_s = now_s + self.config.provider_ttl_s
                stored |= self.providers.add(message.key, raw, addrs, expires_s, group)
                break  # one record per sender and key: repeats add nothing
        if not named:
            return Refuse(peer=peer, inbound_id=inbound_id, reason="no provider record naming the sender")
        if not stored:
            return Refuse(peer=peer, inbound_id=inbound_id, reason="provider store or quota full")
        return None  # ADD_PROVIDER is never answered

    # -- lookup state machine ------------------------------------------------------

    def _start(
        self, kind: MessageType, purpose: _Purpose, key: bytes, now_s: float, *, wanted: int
    ) -> tuple[int, list[Effect]]:
        lookup_id = self._next_lookup_id
        self._next_lookup_id += 1
        target = key_point(key)
        lookup = _Lookup(
            lookup_id=lookup_id,
            kind=kind,
            purpose=purpose,
            key=key,
            target=target,
            started_s=now_s,
            deadline_s=now_s + self.config.lookup_timeout_s,
            providers_wanted=wanted,
            candidates={},
            providers={},
        )
        if len(self._lookups) >= self.config.lookups_active_max:
            if purpose is _Purpose.PROVIDE:
                self._schedule_republish(key, now_s)  # the next tick with room retries it
                return lookup_id, []
            return lookup_id, self._finish(lookup, LookupEnd.BUSY, now_s)
        self._lookups[lookup_id] = lookup
        if kind is MessageType.GET_PROVIDERS:
            for provider, addrs in self.providers.get(key, now_s, self.config.providers_returned_max):
                lookup.providers[provider] = addrs
                lookup.provider_hops = 0
        for entry in self.table.closest(target, self.config.k):
            lookup.candidates[entry.id] = _Candidate(
                id=entry.id, distance=entry.point ^ target, addrs=entry.addrs, hop=1
            )
        return lookup_id, self._advance(lookup, now_s)

    def _merge(self, lookup: _Lookup, source: _Candidate, message: Message, *, from_loopback: bool) -> None:
        """Fold a reply into the lookup; loopback and link-local addrs count only from loopback."""
        hop = source.hop + 1
        for peer in message.closer_peers[: self.config.k]:
            if peer.id == self._id:
                continue
            known = lookup.candidates.get(peer.id)
            if known is not None:
                if known.state is _State.WAITING:
                    known.hop = min(known.hop, hop)
                    known.addrs = known.addrs or _bounded_addrs(
                        self._servable(peer.addrs, from_loopback),
                        self.config.addrs_per_peer_max,
                        self.config.addr_bytes_per_peer_max,
                    )
                continue
            addrs = _bounded_addrs(
                self._servable(peer.addrs, from_loopback),
                self.config.addrs_per_peer_max,
                self.config.addr_bytes_per_peer_max,
            )
            lookup.candidates[peer.id] = _Candidate(
                id=peer.id, distance=key_point(peer.id) ^ lookup.target, addrs=addrs, hop=hop
            )
        if len(lookup.candidates) > self.config.lookup_candidates_max:
            # Only the k closest matter for termination: drop the farthest untried ones.
            waiting = sorted(
                (c for c in lookup.candidates.values() if c.state is _State.WAITING),
                key=lambda c: c.distance,
                reverse=True,
            )
            for candidate in waiting[: len(lookup.candidates) - self.config.lookup_candidates_max]:
                del lookup.candidates[candidate.id]
        if lookup.kind is MessageType.GET_PROVIDERS and message.key == lookup.key:
            for provider in message.provider_peers:
                if len(lookup.providers) >= self.config.providers_returned_max:
                    break
                if provider.id not in lookup.providers:
                    lookup.providers[provider.id] = _bounded_addrs(
                        self._servable(provider.addrs, from_loopback),
                        self.config.addrs_per_peer_max,
                        self.config.addr_bytes_per_peer_max,
                    )
                    if lookup.provider_hops is None:
                        lookup.provider_hops = source.hop

    def _advance(self, lookup: _Lookup, now_s: float) -> list[Effect]:
        if lookup.kind is MessageType.GET_PROVIDERS and len(lookup.providers) >= lookup.providers_wanted:
            return self._finish(lookup, LookupEnd.COMPLETE, now_s)
        alive = sorted(
            (c for c in lookup.candidates.values() if c.state is not _State.FAILED), key=lambda c: c.distance
        )
        closest = alive[: self.config.k]
        if closest and all(c.state is _State.SUCCEEDED for c in closest):
            return self._finish(lookup, LookupEnd.COMPLETE, now_s)
        effects: list[Effect] = []
        for candidate in closest:
            if lookup.in_flight >= self.config.alpha:
                break
            if candidate.state is _State.WAITING:
                candidate.state = _State.IN_FLIGHT
                lookup.in_flight += 1
                effects.append(self._query(lookup, candidate, now_s, attempt=1))
        if lookup.in_flight == 0:
            return self._finish(lookup, LookupEnd.EXHAUSTED, now_s)
        return effects

    def _query(self, lookup: _Lookup, candidate: _Candidate, now_s: float, *, attempt: int) -> Send:
        request_id = self._new_request_id()
        message = Message(type=lookup.kind, key=lookup.key)
        self._pending[request_id] = _Pending(
            peer=candidate.id,
            addrs=candidate.addrs,
            message=message,
            deadline_s=now_s + self.config.request_timeout_s,
            attempt=attempt,
            lookup_id=lookup.lookup_id,
        )
        lookup.requests += 1
        return Send(
            peer=self._peer_str(candidate.id), addrs=candidate.addrs, request_id=request_id, message=message
        )

    def _failed(self, pending: _Pending, now_s: float) -> list[Effect]:
        if pending.lookup_id is None:
            # The least-recently-seen peer did not answer its ping: its replacement moves in.
            self._pinging.pop(pending.bucket, None)
            self._peer_failed(pending.peer, now_s, evict=True)
            return []
        lookup = self._lookups.get(pending.lookup_id)
        if lookup is None:
            return []
        candidate = lookup.candidates.get(pending.peer)
        if candidate is None or candidate.state is not _State.IN_FLIGHT:
            return []
        if pending.attempt < self.config.request_attempts_max:
            return [self._query(lookup, candidate, now_s, attempt=pending.attempt + 1)]
        self._peer_failed(pending.peer, now_s, evict=False)
        candidate.state = _State.FAILED
        lookup.in_flight -= 1
        return self._advance(lookup, now_s)

    def _finish(self, lookup: _Lookup, end: LookupEnd, now_s: float) -> list[Effect]:
        self._lookups.pop(lookup.lookup_id, None)
        for request_id in [r for r, p in self._pending.items() if p.lookup_id == lookup.lookup_id]:
            del self._pending[request_id]
        answered = sorted(
            (c for c in lookup.candidates.values() if c.state is _State.SUCCEEDED), key=lambda c: c.distance
        )[: self.config.k]
        if answered and end is not LookupEnd.BUSY:
            self._bucket_refreshed_s[self.table.bucket_of(lookup.target)] = now_s
        if end is LookupEnd.COMPLETE:
            whole = len(self.table) < self.config.k and all(
                self.table.get(peer) is not None for peer in lookup.candidates
            )
            self._small_network_until_s = now_s + self.config.small_network_s if whole else 0.0
        if lookup.purpose is _Purpose.REFRESH:
            if len(self.table) < self.config.k:
                retry_s = now_s + self.config.sparse_refresh_interval_s
                self._next_refresh_s = min(self._next_refresh_s, retry_s)
            return []
        if lookup.purpose is _Purpose.PROVIDE:
            return self._announce(lookup, answered)
        if lookup.kind is MessageType.GET_PROVIDERS:
            hops = lookup.provider_hops
        else:
            hops = answered[0].hop if answered else None
        return [
            LookupDone(
                lookup_id=lookup.lookup_id,
                kind=lookup.kind,
                key=lookup.key,
                end=end,
                closest=tuple(PeerInfo(peer_id=self._peer_str(c.id), addrs=c.addrs) for c in answered),
                providers=tuple(
                    PeerInfo(peer_id=self._peer_str(p), addrs=a) for p, a in lookup.providers.items()
                ),
                hops=hops,
                requests=lookup.requests,
                elapsed_s=now_s - lookup.started_s,
            )
        ]

    def _announce(self, lookup: _Lookup, answered: list[_Candidate]) -> list[Effect]:
        if lookup.key not in self._provided:
            return []  # stop_providing ran while the lookup did
        message = Message(
            type=MessageType.ADD_PROVIDER,
            key=lookup.key,
            provider_peers=(Peer(id=self._id, addrs=self.addrs),),
        )
        effects: list[Effect] = []
        for candidate in answered:
            effects.append(
                Send(
                    peer=self._peer_str(candidate.id),
                    addrs=candidate.addrs,
                    request_id=self._new_request_id(),
                    message=message,
                )
            )
        stored_at = tuple(s.peer for s in effects if isinstance(s, Send))
        effects.append(ProvideDone(lookup_id=lookup.lookup_id, key=lookup.key, stored_at=stored_at))
        return effects

    def _peer_str(self, raw: bytes) -> str:
        entry = self.table.get(raw)
        return entry.peer_id if entry is not None else dm.peer_id_from_bytes(raw)

    def _new_request_id(self) -> int:
        request_id = self._next_request_id
        self._next_request_id += 1
        return request_id
