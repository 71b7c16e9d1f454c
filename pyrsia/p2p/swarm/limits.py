"""The swarm's resource manager: limits that no single peer or address can exhaust.

Scopes, after go-libp2p's resource manager: the whole node (inbound connections),
connections still in their handshake (not yet identified), each remote IP and each
subnet (IPv4 /24, IPv6 /64), each peer, and each protocol on a peer (streams open at
once). A check either admits and counts, or names the limit that refused; every
refusal is counted by that name, so `/metrics` says which limit turned what away.

Rules:
- No address range is exempt by default, loopback included; `allow` lists CIDR
  prefixes that skip the per-IP and per-subnet limits (an operator's choice).
- Known peers (authorities, configured bootstrap peers) have room reserved: unknown
  peers may hold at most `connections_inbound_max - reserved_known` inbound
  connections, known peers up to the whole cap.
- A full node makes room rather than turning honest newcomers away: the caller asks
  `idle_victim` for the unknown inbound connection that has been idle longest, past
  `idle_trim_s`, and closes it. A throwaway identity that completes the handshake and
  then only answers pings holds its slot only until someone needs it.

Pure: the caller passes addresses and times in and applies the verdicts.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from dataclasses import dataclass, field

from pyrsia.p2p.ipnet import LAN_V6_PREFIX, network_of

# Limit names, as counted and shown on /metrics.
PER_IP = "connections_per_ip"
PER_SUBNET = "connections_per_subnet"
HANDSHAKES = "handshakes_inbound"
INBOUND = "connections_inbound"
STREAMS_PER_PEER = "streams_per_peer"
HANDLERS_BUSY = "handlers_busy"


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    connections_inbound_max: int = 256
    connections_per_ip_max: int = 32
    connections_per_subnet_max: int = 64
    handshakes_inbound_max: int = 64
    reserved_known: int = 32
    idle_trim_s: float = 30.0
    allow: tuple[str, ...] = ()  # CIDR prefixes exempt from the per-IP and per-subnet limits

    def __post_init__(self) -> None:
        if self.reserved_known >= self.connections_inbound_max:
            raise ValueError("the room reserved for known peers must leave some for others")
        for prefix in self.allow:
            ipaddress.ip_network(prefix, strict=False)


def subnet_of(ip: str) -> str:
    """The subnet an address is counted in: /24 for IPv4, /64 (one LAN) for IPv6."""
    return network_of(ipaddress.ip_address(ip), v6_prefix=LAN_V6_PREFIX)


@dataclass(slots=True)
class _Inbound:
    ip: str
    subnet: str
    exempt: bool
    established: bool = False
    known: bool = False
    last_used_s: float = 0.0


@dataclass(slots=True)
class ResourceManager:
    """Counts what is held and says no by name; one per swarm, on its one thread."""

    limits: Limits = field(default_factory=Limits)
    refusals: Counter[str] = field(default_factory=Counter)
    _inbound: dict[int, _Inbound] = field(default_factory=dict)
    _per_ip: Counter[str] = field(default_factory=Counter)
    _per_subnet: Counter[str] = field(default_factory=Counter)
    _streams: Counter[tuple[str, str]] = field(default_factory=Counter)
    _allow: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    def __post_init__(self) -> None:
        self._allow = tuple(ipaddress.ip_network(p, strict=False) for p in self.limits.allow)

    # -- connections ----------------------------------------------------------------

    def admit_inbound(self, conn: int, ip: str, now_s: float) -> str | None:
        """A socket was accepted: None admits it (and counts it), else the refusing limit."""
        subnet = subnet_of(ip)
        exempt = any(ipaddress.ip_address(ip) in net for net in self._allow)
        handshakes = sum(1 for c in self._inbound.values() if not c.established)
        refusal = None
        if handshakes >= self.limits.handshakes_inbound_max:
            refusal = HANDSHAKES
        elif not exempt and self._per_ip[ip] >= self.limits.connections_per_ip_max:
            refusal = PER_IP
        elif not exempt and self._per_subnet[subnet] >= self.limits.connections_per_subnet_max:
            refusal = PER_SUBNET
        if refusal is not None:
            self.refusals[refusal] += 1
            return refusal
        self._inbound[conn] = _Inbound(ip=ip, subnet=subnet, exempt=exempt, last_used_s=now_s)
        self._per_ip[ip] += 1
        self._per_subnet[subnet] += 1
        return None

    def established(self, conn: int, *, known: bool, now_s: float) -> str | None:
        """The handshake finished: None keeps the connection, else the refusing limit.

        Refused when the node's inbound room (less what is reserved for known peers,
        for an unknown one) is full. Not counted here: the caller may make room with
        `idle_victim` and ask again, and counts a refusal that stands with `refuse`.
        """
        entry = self._inbound.get(conn)
        if entry is None:  # outbound: we chose to dial it
            return None
        cap = self.limits.connections_inbound_max - (0 if known else self.limits.reserved_known)
        if self.inbound_established() >= cap:
            return INBOUND
        entry.established, entry.known, entry.last_used_s = True, known, now_s
        return None

    def idle_victim(self, now_s: float) -> int | None:
        """The unknown inbound connection idle longest past `idle_trim_s`, if the node is full."""
        if self.inbound_established() < self.limits.connections_inbound_max - self.limits.reserved_known:
            return None
        idle = [
            (c.last_used_s, conn)
            for conn, c in self._inbound.items()
            if c.established and not c.known and now_s - c.last_used_s >= self.limits.idle_trim_s
        ]
        return min(idle)[1] if idle else None

    def used(self, conn: int, now_s: float) -> None:
        """The connection carried application streams: it is not idle."""
        entry = self._inbound.get(conn)
        if entry is not None:
            entry.last_used_s = now_s

    def closed(self, conn: int) -> None:
        entry = self._inbound.pop(conn, None)
        if entry is None:
            return
        self._per_ip[entry.ip] -= 1
        if not self._per_ip[entry.ip]:
            del self._per_ip[entry.ip]
        self._per_subnet[entry.subnet] -= 1
        if not self._per_subnet[entry.subnet]:
            del self._per_subnet[entry.subnet]

    def inbound_established(self) -> int:
        return sum(1 for c in self._inbound.values() if c.established)

    def inbound_count(self, ip: str) -> int:
        return self._per_ip[ip]

    # -- streams --------------------------------------------------------------------

    def open_stream(self, peer: str, protocol: str, streams_max: int) -> str | None:
        """An inbound stream for `protocol` from `peer`: None admits it, else the limit."""
        if self._streams[(peer, protocol)] >= streams_max:
            self.refuse(STREAMS_PER_PEER, protocol)
            return STREAMS_PER_PEER
        self._streams[(peer, protocol)] += 1
        return None

    def close_stream(self, peer: str, protocol: str) -> None:
        key = (peer, protocol)
        self._streams[key] -= 1
        if self._streams[key] <= 0:
            del self._streams[key]

    def refuse(self, limit: str, protocol: str = "") -> None:
        self.refusals[f"{limit}:{protocol}" if protocol else limit] += 1
