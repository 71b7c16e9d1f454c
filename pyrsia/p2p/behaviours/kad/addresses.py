"""Which addresses the DHT may hand out, and which IP group a peer belongs to — pure.

What it owns: two small judgements the Kademlia core makes about addresses.

- **IP groups** for peer diversity (the idea of go-libp2p-kbucket's peer diversity
  filter): a peer's group is the network its connection comes from, an IPv4 /24 or an
  IPv6 /48. A /24 is the smallest IPv4 block routed between networks (longer prefixes
  are filtered in BGP), so one host, one home or one cloud tenant rarely holds more
  than one; a /48 is the block one IPv6 site is given (RFC 6177), so an IPv6 host
  cannot mint groups from the 2**80 addresses of its own site. IPv4-mapped IPv6
  addresses count as IPv4. The group comes from the socket's remote address, which a
  peer cannot choose freely (TCP completes a handshake with it), never from the listen
  addresses it advertises, which it can. Networks on an allow-list (CIDRs) belong to
  no group: the filter does not count them.
- **Servable addresses**: the DHT hands out a peer's own advertised listen addresses,
  and only those another peer could dial: never an unspecified address (`0.0.0.0`,
  `::`) or port 0, never one that does not parse as a multiaddr, and loopback and
  link-local addresses only to a peer that itself reaches us over loopback (RFC 6890:
  they mean "this host" and "this link", which differ at the asker's end).

Parsing, groups and servable address lists are cached (bounded, `CACHE_ENTRIES_MAX`
each), since the core judges the same few addresses and remote IPs on every message.
"""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass
from enum import Enum

from pyrsia.errors import ProtocolViolation
from pyrsia.p2p.ipnet import SITE_V6_PREFIX, IpAddress, network_of
from pyrsia.p2p.wire.multiaddr import Multiaddr

CACHE_ENTRIES_MAX = 4096
CACHED_LIST_ADDRS_MAX = 4

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class Scope(Enum):
    GLOBAL = "global"  # anything another host could reach: public, private, CGNAT
    LOCAL = "local"  # loopback or link-local: meaningful only at this host or link
    UNUSABLE = "unusable"  # unspecified address, port 0, or not a multiaddr at all


@dataclass(frozen=True, slots=True, kw_only=True)
class AddressInfo:
    scope: Scope
    ip: IpAddress | None  # the first ip4/ip6 component; None for dns names and the like


@functools.lru_cache(maxsize=CACHE_ENTRIES_MAX)
def parse_ip(text: str) -> IpAddress | None:
    """An IP literal (IPv4-mapped IPv6 as IPv4); None when `text` is not one."""
    try:
        ip = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def parse_networks(cidrs: tuple[str, ...] | list[str]) -> tuple[IpNetwork, ...]:
    """CIDRs as networks; ValueError names the first that is not one."""
    out: list[IpNetwork] = []
    for cidr in cidrs:
        try:
            out.append(ipaddress.ip_network(cidr.strip(), strict=False))
        except ValueError as exc:
            raise ValueError(f"{cidr!r} is not a CIDR network: {exc}") from None
    return tuple(out)


def is_local_ip(ip: IpAddress) -> bool:
    return ip.is_loopback or ip.is_link_local


@functools.lru_cache(maxsize=CACHE_ENTRIES_MAX)
def ip_group(ip: IpAddress | None, exempt: tuple[IpNetwork, ...] = ()) -> str | None:
    """The diversity group of a peer whose connection comes from `ip`.

    None (counted in no group) when the address is unknown or on the allow-list.
    """
    if ip is None or any(ip.version == net.version and ip in net for net in exempt):
        return None
    return network_of(ip, v6_prefix=SITE_V6_PREFIX)


@functools.lru_cache(maxsize=CACHE_ENTRIES_MAX)
def address_info(addr: bytes) -> AddressInfo:
    """How far `addr` (a binary multiaddr from a peer) may travel, and its IP."""
    try:
        parsed = Multiaddr.from_bytes(addr)
    except ProtocolViolation:
        return AddressInfo(scope=Scope.UNUSABLE, ip=None)
    if not parsed.components:
        return AddressInfo(scope=Scope.UNUSABLE, ip=None)
    name, value = parsed.components[0]
    if parsed.value_of("tcp") == "0" or parsed.value_of("udp") == "0":
        return AddressInfo(scope=Scope.UNUSABLE, ip=None)
    if name in ("ip4", "ip6"):
        ip = parse_ip(value)
        if ip is None or ip.is_unspecified:
            return AddressInfo(scope=Scope.UNUSABLE, ip=None)
        return AddressInfo(scope=Scope.LOCAL if is_local_ip(ip) else Scope.GLOBAL, ip=ip)
    if name in ("dns", "dns4", "dns6", "dnsaddr") and value.rstrip(".").lower() in ("localhost",):
        return AddressInfo(scope=Scope.LOCAL, ip=None)
    return AddressInfo(scope=Scope.GLOBAL, ip=None)


def servable(addrs: tuple[bytes, ...], *, to_loopback: bool) -> tuple[bytes, ...]:
    """The addresses of `addrs` that may be handed to a peer; `to_loopback`: it is on loopback."""
    if len(addrs) <= CACHED_LIST_ADDRS_MAX:
        return _servable_cached(addrs, to_loopback)
    return _servable(addrs, to_loopback)


def _servable(addrs: tuple[bytes, ...], to_loopback: bool) -> tuple[bytes, ...]:
    allowed = (Scope.GLOBAL, Scope.LOCAL) if to_loopback else (Scope.GLOBAL,)
    return tuple(a for a in addrs if address_info(a).scope in allowed)


# Only short lists (what honest peers advertise) are cached, so a peer sending long
# lists of made-up addresses cannot make the cache hold more than a few per entry.
_servable_cached = functools.lru_cache(maxsize=CACHE_ENTRIES_MAX)(_servable)


def advertised_ip(addrs: tuple[bytes, ...]) -> IpAddress | None:
    """The first IP among a peer's advertised addresses (for entries saved without a group)."""
    for addr in addrs:
        ip = address_info(addr).ip
        if ip is not None:
            return ip
    return None
