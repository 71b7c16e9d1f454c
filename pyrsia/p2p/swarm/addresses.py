"""Which addresses a node advertises, which it believes it has, and where its peers listen.

Three concerns, each a pure core (time is an input, in seconds; nothing here touches a
socket or the clock):

* **Advertising** (`listen_addresses`, `advertised`): a listener bound to an unspecified
  address (`0.0.0.0`, `::`) is expanded to the machine's interface addresses, handed in
  by the shell (`swarm/interfaces.py`). What goes into identify is then chosen per
  remote peer: loopback is sent only to a peer that is itself on loopback, or when the
  node has nothing else; IPv6 link-local addresses are never sent (without a zone id
  they name no interface on the receiver's side); unspecified addresses never. The
  `announce` setting replaces the discovered set (interface and observed addresses)
  and is taken literally, loopback included: the operator knows the network;
  `no_announce` removes addresses, each entry a multiaddr prefix (`/ip4/10.1.2.3`
  removes every port, `/ip4/10.1.2.3/tcp/44000` one) or a CIDR prefix (`10.0.0.0/8`,
  `fd00::/8`). It applies to announced addresses too. Public addresses come first,
  then private, then the rest: dialers try them in order. Circuit addresses
  (`advertised_circuits`) follow the direct ones, judged by their relay's part by the
  same loopback rule, and are bounded on their own.

* **Observed addresses** (`ObservedAddresses`): identify's `observedAddr` is how one
  peer sees us. One peer may lie, or sit behind its own NAT, so an address becomes
  *observed*, and is advertised, only once `observers_min` distinct observer groups
  report it: an IPv4 observer's group is its /24, an IPv6 observer's its /48 (the
  groups the DHT uses too: one operator usually holds a whole such block, and an IPv6
  site is given a /48, so it counts once). The default is 2,
  not go-libp2p's 4: pyrsia networks are small (a few authorities and their nodes), and
  4 would never be reached in most of them; 2 still means that a single lying observer,
  however many connections or addresses it uses, never gets its address advertised.
  Each group holds one vote, its latest report, so one group can neither back two
  candidates nor outvote the others; a vote expires `ttl_s` after it was last renewed
  (the shell renews the votes of live connections). Groups are bounded (least recently
  heard from evicted first), and so is the number of addresses reported as observed.
  The candidate carries our listen port, not the observed one, when the connection
  was outbound: its source port was ephemeral, and we assume a port-preserving NAT
  (most home and cloud NATs map a listener's port 1:1 when it is forwarded at all;
  when yours does not, set `announce`). On an inbound connection the observed port is
  the one the peer reached us on, so it is kept.

* **The address book** (`AddressBook`): where each peer listens, for dialling. The
  addresses a peer itself sent by identify *replace* its previous list (never merge:
  a peer pushing new addresses cannot grow our state); addresses learned elsewhere
  (DHT records, provider records) are kept apart, each with its own expiry; configured
  bootstrap addresses are permanent and never evicted. Peers are bounded (least
  recently used evicted first), and so are the addresses per peer and per source.
  Only direct TCP addresses to a specified IP or a DNS name are kept. Every refusal is
  counted by name in `refused`.
"""

from __future__ import annotations

import ipaddress
from collections import Counter, OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from pyrsia.errors import ConfigError, ProtocolViolation
from pyrsia.p2p.ipnet import SITE_V6_PREFIX, network_of
from pyrsia.p2p.wire.multiaddr import Multiaddr

ADVERTISED_MAX = 32  # addresses in one identify message (identify accepts 64)
CIRCUITS_ADVERTISED_MAX = 16  # circuit addresses besides them (4 per relay by the relay client)
OBSERVERS_MIN = 2
OBSERVED_TTL_S = 30 * 60.0
OBSERVER_GROUPS_MAX = 256
OBSERVED_ADDRESSES_MAX = 4
BOOK_PEERS_MAX = 4096
BOOK_ADDRESSES_PER_PEER_MAX = 16
BOOK_IDENTIFY_TTL_S = 60 * 60.0
BOOK_OTHER_TTL_S = 30 * 60.0
BOOK_PERMANENT_PEERS_MAX = 256

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Rank of an address kind in what we advertise: lower first.
_RANK = {"public": 0, "private": 1, "link-local": 2, "dns": 0, "loopback": 3}


def ip_of(address: Multiaddr) -> IPAddress | None:
    """The IP literal an address starts with, if it starts with one."""
    if not address.components or address.components[0][0] not in ("ip4", "ip6"):
        return None
    return ipaddress.ip_address(address.components[0][1])


def kind_of(address: Multiaddr) -> str:
    """`loopback`, `link-local`, `private`, `public`, `unspecified` or `dns` (a name)."""
    ip = ip_of(address)
    if ip is None:
        return "dns"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_private or ip.is_reserved or ip.is_multicast or not ip.is_global:
        return "private"
    return "public"


def _with_ip(address: Multiaddr, ip: str) -> Multiaddr:
    family = "ip4" if ipaddress.ip_address(ip).version == 4 else "ip6"
    return Multiaddr(((family, ip), *address.components[1:]))


def listen_addresses(
    bound: Multiaddr, interfaces: Iterable[str], *, dual_stack: bool = False
) -> tuple[Multiaddr, ...]:
    """The addresses a listener bound to `bound` is reachable at.

    A specified bind address is itself. `0.0.0.0` becomes one address per IPv4 interface
    address, `::` one per IPv6 address (and per IPv4 address too when the socket is
    `dual_stack`, i.e. accepts IPv4 as well). IPv6 link-local interface addresses are
    skipped (they need a zone id), as are duplicates.
    """
    ip = ip_of(bound)
    if ip is None or not ip.is_unspecified:
        return (bound.without_peer(),)
    versions = {ip.version} | ({4} if dual_stack else set())
    out: list[Multiaddr] = []
    for text in interfaces:
        try:
            found = ipaddress.ip_address(text)
        except ValueError:
            continue
        if found.version not in versions or found.is_unspecified:
            continue
        if found.version == 6 and found.is_link_local:
            continue
        expanded = _with_ip(bound.without_peer(), str(found))
        if expanded not in out:
            out.append(expanded)
    return tuple(out)


# -- announce / no_announce --------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class AddressFilter:
    """One `no_announce` entry: a multiaddr prefix, or a CIDR network."""

    prefix: Multiaddr | None = None
    network: IPNetwork | None = None

    @classmethod
    def parse(cls, text: str) -> AddressFilter:
        if text.startswith("/"):
            try:
                return cls(prefix=Multiaddr.parse(text).without_peer())
            except ProtocolViolation as exc:
                raise ConfigError(f"no_announce: {text[:200]!r} is not a multiaddr: {exc.message}") from exc
        try:
            return cls(network=ipaddress.ip_network(text, strict=False))
        except ValueError as exc:
            raise ConfigError(
                f"no_announce: {text[:200]!r} is neither a multiaddr nor a CIDR prefix such as 10.0.0.0/8"
            ) from exc

    def matches(self, address: Multiaddr) -> bool:
        if self.prefix is not None:
            prefix = self.prefix.components
            return address.without_peer().components[: len(prefix)] == prefix
        ip = ip_of(address)
        if ip is None or self.network is None:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None and self.network.version == 4:
            ip = ip.ipv4_mapped
        return ip.version == self.network.version and ip in self.network


@dataclass(frozen=True, slots=True, kw_only=True)
class AdvertisePolicy:
    """The `announce` and `no_announce` settings, parsed."""

    announce: tuple[Multiaddr, ...] = ()
    no_announce: tuple[AddressFilter, ...] = ()

    @classmethod
    def from_settings(
        cls, *, announce: Sequence[str] = (), no_announce: Sequence[str] = ()
    ) -> AdvertisePolicy:
        parsed = []
        for text in announce:
            try:
                address = Multiaddr.parse(text).without_peer()
            except ProtocolViolation as exc:
                raise ConfigError(f"announce: {text[:200]!r} is not a multiaddr: {exc.message}") from exc
            if address.tcp_endpoint() is None:
                raise ConfigError(f"announce: {text[:200]!r} is not /ip4|ip6|dns*/HOST/tcp/PORT")
            parsed.append(address)
        return cls(announce=tuple(parsed), no_announce=tuple(AddressFilter.parse(t) for t in no_announce))

    def allows(self, address: Multiaddr) -> bool:
        return not any(f.matches(address) for f in self.no_announce)


def advertised(
    *,
    listen: Sequence[Multiaddr],
    observed: Sequence[Multiaddr] = (),
    policy: AdvertisePolicy = AdvertisePolicy(),
    remote: Multiaddr | None = None,
    addresses_max: int = ADVERTISED_MAX,
) -> tuple[Multiaddr, ...]:
    """What to tell `remote` (None: anyone, as `pyrsia status` shows it) about where we listen.

    `listen` is already expanded (`listen_addresses`); `observed` is
    `ObservedAddresses.confirmed`. See the module docstring for the rules.
    """
    if policy.announce:
        chosen = [a for a in policy.announce if policy.allows(a)]
        return tuple(_unique(chosen))[:addresses_max]
    candidates = [
        a.without_peer()
        for a in (*listen, *observed)
        if kind_of(a) != "unspecified" and not _is_ipv6_link_local(a) and policy.allows(a)
    ]
    loopback_first = remote is not None and kind_of(remote) == "loopback"
    routable = [a for a in candidates if kind_of(a) != "loopback"]
    if not loopback_first and routable:
        candidates = routable
    family = _family(remote) if remote is not None else None

    def order(address: Multiaddr) -> tuple[int, int]:
        rank = -1 if loopback_first and kind_of(address) == "loopback" else _RANK[kind_of(address)]
        return rank, 0 if family is None or _family(address) in (family, None) else 1

    ranked = sorted(_unique(candidates), key=order)
    return tuple(ranked[:addresses_max])


def advertised_circuits(
    circuits: Sequence[Multiaddr],
    *,
    remote: Multiaddr | None = None,
    addresses_max: int = CIRCUITS_ADVERTISED_MAX,
) -> tuple[Multiaddr, ...]:
    """Our `/p2p-circuit` addresses as told to `remote`, judged by each relay's part as
    `advertised` judges direct ones: a relay on loopback only to a peer on loopback, or
    when no other relay is there; at most `addresses_max`, so that with the direct ones
    they stay within what identify carries."""
    loopback_ok = remote is not None and kind_of(remote) == "loopback"
    routable = [a for a in circuits if kind_of(a) != "loopback"]
    chosen = circuits if loopback_ok or not routable else routable
    return tuple(_unique(chosen))[:addresses_max]


@dataclass(frozen=True, slots=True, kw_only=True)
class Sighting:
    """How one directly connected peer says it sees us now (identify's `observedAddr`)."""

    candidate: Multiaddr  # the observed IP with the port a dialer should use
    observer: Multiaddr  # the peer's socket address
    relay: bool  # the peer is a relay we hold a reservation on


def punch_sightings(sightings: Iterable[Sighting]) -> tuple[Multiaddr, ...]:
    """What single peers see us at, to offer a peer we hole-punch to (never advertised).

    Behind a NAT only our relay may observe us, so one observer's word is worth a dial
    by the punching peer; but a DCUtR CONNECT carries few addresses, so no one observer
    may fill it. What our relays see comes first; then one candidate per observer group
    (its most reported), those chosen by more groups first: a lying observer, however
    many connections it holds, takes one place."""
    from_relays: list[Multiaddr] = []
    by_group: dict[str, Counter[Multiaddr]] = {}
    for sighting in sightings:
        if sighting.relay:
            from_relays.append(sighting.candidate)
            continue
        group = observer_group(sighting.observer) or str(sighting.observer)
        by_group.setdefault(group, Counter())[sighting.candidate] += 1
    picks = Counter(max(tally, key=lambda a: (tally[a], str(a))) for tally in by_group.values())
    ranked = sorted(picks, key=lambda a: (-picks[a], str(a)))
    return tuple(_unique([*sorted(from_relays, key=str), *ranked]))


def _family(address: Multiaddr) -> int | None:
    ip = ip_of(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return 4
    return None if ip is None else ip.version


def _is_ipv6_link_local(address: Multiaddr) -> bool:
    ip = ip_of(address)
    return isinstance(ip, ipaddress.IPv6Address) and ip.is_link_local


def _unique(addresses: Iterable[Multiaddr]) -> list[Multiaddr]:
    return list(dict.fromkeys(addresses))


# -- observed addresses ------------------------------------------------------------


def observer_group(observer: Multiaddr) -> str | None:
    """The network an observer counts for: its IPv4 /24 or IPv6 /48; None for a name."""
    ip = ip_of(observer)
    if ip is None:
        return None
    return network_of(ip, v6_prefix=SITE_V6_PREFIX)


@dataclass(slots=True, kw_only=True)
class _Vote:
    candidate: Multiaddr
    seen_s: float


@dataclass(slots=True, kw_only=True)
class ObservedAddresses:
    """Candidates from identify's `observedAddr`, confirmed by distinct observer groups."""

    listen_port: int
    observers_min: int = OBSERVERS_MIN
    ttl_s: float = OBSERVED_TTL_S
    groups_max: int = OBSERVER_GROUPS_MAX
    addresses_max: int = OBSERVED_ADDRESSES_MAX
    refused: Counter[str] = field(default_factory=Counter)
    _votes: OrderedDict[str, _Vote] = field(default_factory=OrderedDict)

    def __post_init__(self) -> None:
        assert self.observers_min >= 2, "one observer must never be enough"
        assert self.groups_max >= 1 and self.addresses_max >= 0

    def record(self, *, observed: Multiaddr, observer: Multiaddr, inbound: bool, now_s: float) -> bool:
        """One report: `observer` (the remote socket address) sees us at `observed`.

        Returns whether it was taken as a vote; a refusal is counted in `refused`.
        """
        group = observer_group(observer)
        if group is None or kind_of(observer) in ("loopback", "unspecified"):
            self.refused["observer_not_routable"] += 1
            return False
        endpoint = observed.tcp_endpoint()
        if endpoint is None or ip_of(observed) is None:
            self.refused["observed_not_tcp_ip"] += 1
            return False
        if kind_of(observed) in ("loopback", "unspecified") or _is_ipv6_link_local(observed):
            self.refused["observed_not_routable"] += 1
            return False
        port = endpoint[1] if inbound else self.listen_port
        candidate = Multiaddr((observed.components[0], ("tcp", str(port))))
        self._votes.pop(group, None)
        self._votes[group] = _Vote(candidate=candidate, seen_s=now_s)
        while len(self._votes) > self.groups_max:
            self._votes.popitem(last=False)
            self.refused["observer_groups_full"] += 1
        return True

    def expire(self, now_s: float) -> None:
        for group in [g for g, v in self._votes.items() if now_s - v.seen_s > self.ttl_s]:
            del self._votes[group]

    def confirmed(self, now_s: float) -> tuple[Multiaddr, ...]:
        """Addresses backed by at least `observers_min` live votes, most backed first."""
        self.expire(now_s)
        tally = Counter(v.candidate for v in self._votes.values())
        backed = [(count, str(a), a) for a, count in tally.items() if count >= self.observers_min]
        backed.sort(key=lambda item: (-item[0], item[1]))
        return tuple(a for _, _, a in backed[: self.addresses_max])

    @property
    def groups(self) -> int:
        return len(self._votes)


# -- the address book --------------------------------------------------------------


def dialable(address: Multiaddr) -> bool:
    """A direct TCP address to a specified IP (not IPv6 link-local) or to a DNS name, or a
    circuit through one relay at such an address (`…/p2p/RELAY/p2p-circuit[/p2p/PEER]`)."""
    if address.is_relayed:
        names = [name for name, _ in address.components]
        at = names.index("p2p-circuit")
        relay = Multiaddr(address.components[:at])
        chained = "p2p-circuit" in names[at + 1 :]
        return not chained and relay.peer_id is not None and dialable(relay)
    if address.tcp_endpoint() is None:
        return False
    return kind_of(address) != "unspecified" and not _is_ipv6_link_local(address)


@dataclass(slots=True, kw_only=True)
class _Entry:
    identified: tuple[Multiaddr, ...] = ()
    identified_until_s: float = 0.0
    other: OrderedDict[Multiaddr, float] = field(default_factory=OrderedDict)  # address -> expiry


@dataclass(slots=True, kw_only=True)
class AddressBook:
    """Where peers listen: identify's list (replaced), other sources (merged, each expiring), bootstrap."""

    peers_max: int = BOOK_PEERS_MAX
    addresses_per_peer_max: int = BOOK_ADDRESSES_PER_PEER_MAX
    identify_ttl_s: float = BOOK_IDENTIFY_TTL_S
    other_ttl_s: float = BOOK_OTHER_TTL_S
    permanent_peers_max: int = BOOK_PERMANENT_PEERS_MAX
    refused: Counter[str] = field(default_factory=Counter)
    _entries: OrderedDict[str, _Entry] = field(default_factory=OrderedDict)
    _permanent: dict[str, tuple[Multiaddr, ...]] = field(default_factory=dict)

    def set_identified(self, peer_id: str, addresses: Iterable[Multiaddr], *, now_s: float) -> None:
        """The addresses `peer_id` itself listed: they replace what it listed before."""
        entry = self._entry(peer_id)
        entry.identified = self._take(addresses, peer_id)
        entry.identified_until_s = now_s + self.identify_ttl_s

    def add(self, peer_id: str, addresses: Iterable[Multiaddr], *, now_s: float) -> None:
        """Addresses heard from a third party (DHT, providers): merged, each expiring on its own."""
        fresh = self._take(addresses, peer_id)
        if not fresh:
            return
        entry = self._entry(peer_id)
        for address in fresh:
            entry.other.pop(address, None)
            entry.other[address] = now_s + self.other_ttl_s
        while len(entry.other) > self.addresses_per_peer_max:
            entry.other.popitem(last=False)
            self.refused["addresses_per_peer_full"] += 1

    def add_permanent(self, peer_id: str, addresses: Iterable[Multiaddr]) -> None:
        """Configured bootstrap addresses: never expire, never evicted."""
        if peer_id not in self._permanent and len(self._permanent) >= self.permanent_peers_max:
            self.refused["permanent_peers_full"] += 1
            return
        merged = _unique((*self._permanent.get(peer_id, ()), *self._take(addresses, peer_id)))
        self._permanent[peer_id] = tuple(merged[: self.addresses_per_peer_max])

    def addresses(self, peer_id: str, *, now_s: float) -> tuple[Multiaddr, ...]:
        """Live addresses of `peer_id`: its own list first, then others, then bootstrap."""
        found: list[Multiaddr] = []
        entry = self._entries.get(peer_id)
        if entry is not None:
            self._expire_entry(peer_id, entry, now_s)
            if peer_id in self._entries:
                self._entries.move_to_end(peer_id)
                found += entry.identified
                found += entry.other
        found += self._permanent.get(peer_id, ())
        return tuple(_unique(found))

    def forget(self, peer_id: str) -> None:
        """Drop what was learned of `peer_id` (bootstrap addresses stay)."""
        self._entries.pop(peer_id, None)

    def expire(self, now_s: float) -> None:
        for peer_id, entry in list(self._entries.items()):
            self._expire_entry(peer_id, entry, now_s)

    def __len__(self) -> int:
        return len(self._entries.keys() | self._permanent.keys())

    def _entry(self, peer_id: str) -> _Entry:
        entry = self._entries.pop(peer_id, None) or _Entry()
        self._entries[peer_id] = entry
        while len(self._entries) > self.peers_max:
            self._entries.popitem(last=False)
            self.refused["peers_full"] += 1
        return entry

    def _take(self, addresses: Iterable[Multiaddr], peer_id: str) -> tuple[Multiaddr, ...]:
        """At most `addresses_per_peer_max` distinct dialable addresses, without `/p2p/`.

        Stops reading at the limit, so a huge list costs no more than a full one.
        """
        taken: dict[Multiaddr, None] = {}
        for address in addresses:
            if len(taken) >= self.addresses_per_peer_max:
                self.refused["addresses_per_peer_full"] += 1
                break
            if not dialable(address):
                self.refused["address_not_dialable"] += 1
                continue
            if address.peer_id not in (None, peer_id):
                self.refused["address_of_another_peer"] += 1
                continue
            taken[address.without_peer()] = None
        return tuple(taken)

    def _expire_entry(self, peer_id: str, entry: _Entry, now_s: float) -> None:
        if entry.identified and now_s >= entry.identified_until_s:
            entry.identified = ()
        for address in [a for a, until in entry.other.items() if now_s >= until]:
            del entry.other[address]
        if not entry.identified and not entry.other:
            del self._entries[peer_id]
