"""The IP network a peer is counted in, for every per-network limit and diversity rule.

One operator usually holds a whole IPv4 /24 (the smallest block routed between
networks) and, in IPv6, a /64 per LAN and a /48 per site (RFC 6177). Connection and
reservation limits count a LAN (`LAN_V6_PREFIX`); rules that want independent
operators (DHT peer groups, address observers) count a site (`SITE_V6_PREFIX`). An
IPv4-mapped IPv6 address counts as the IPv4 address it carries.
"""

from __future__ import annotations

import ipaddress

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

IPV4_PREFIX = 24
LAN_V6_PREFIX = 64
SITE_V6_PREFIX = 48


def unmapped(ip: IpAddress | None) -> IpAddress | None:
    """The IPv4 address an IPv4-mapped IPv6 address carries; any other address as it is."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def network_of(ip: IpAddress, *, v6_prefix: int) -> str:
    """`ip`'s network in CIDR form: its IPv4 /24, or its IPv6 network of `v6_prefix` bits."""
    ip = unmapped(ip) or ip
    bits = IPV4_PREFIX if ip.version == 4 else v6_prefix
    return str(ipaddress.ip_network((ip, bits), strict=False))
