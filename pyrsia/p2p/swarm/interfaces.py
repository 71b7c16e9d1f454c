"""The machine's own IP addresses, read from the kernel without extra dependencies (Linux).

IPv4: `socket.if_nameindex()` names the interfaces, and per interface the ioctls
`SIOCGIFFLAGS` (is it up?) and `SIOCGIFADDR` (its primary IPv4 address; secondary
addresses without a label are not reported, a limit of that ioctl). IPv6:
`/proc/net/if_inet6`, one line per address (address in hex, ifindex, prefix length,
scope, flags, name). Interfaces that are down are left out. On a system without these
(not Linux), the answer is empty and the caller falls back to what it bound. Shell:
`swarm/addresses.py` decides what to do with them.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import socket
import struct
from dataclasses import dataclass
from pathlib import Path

SIOCGIFFLAGS = 0x8913
SIOCGIFADDR = 0x8915
IFF_UP = 0x1
IF_INET6 = Path("/proc/net/if_inet6")
IF_INET6_BYTES_MAX = 1024 * 1024
_IFREQ_BYTES = 40


@dataclass(frozen=True, slots=True, kw_only=True)
class InterfaceAddress:
    interface: str
    ip: str  # normalized text, as `ipaddress` writes it
    version: int


def interface_addresses(if_inet6: Path = IF_INET6) -> tuple[InterfaceAddress, ...]:
    """IPv4 then IPv6 addresses of every interface that is up, in interface order."""
    try:
        names = [name for _, name in socket.if_nameindex()]
    except OSError:
        return ()
    up = {name for name in names if _is_up(name)}
    found = [
        InterfaceAddress(interface=name, ip=ip, version=4)
        for name in names
        if name in up
        if (ip := _ipv4(name))
    ]
    found += [a for a in ipv6_addresses(if_inet6) if a.interface in up]
    return tuple(found)


def _ioctl(name: str, request: int) -> bytes | None:
    encoded = name.encode()[:15]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            return fcntl.ioctl(sock.fileno(), request, struct.pack("16s24s", encoded, b""))
        except OSError:  # no such address on it (EADDRNOTAVAIL), or it went away
            return None


def _is_up(name: str) -> bool:
    reply = _ioctl(name, SIOCGIFFLAGS)
    return reply is not None and bool(struct.unpack_from("H", reply, 16)[0] & IFF_UP)


def _ipv4(name: str) -> str | None:
    reply = _ioctl(name, SIOCGIFADDR)
    if reply is None or len(reply) < _IFREQ_BYTES:
        return None
    # struct ifreq: 16-byte name, then struct sockaddr_in (family, port, 4-byte address).
    return socket.inet_ntoa(reply[20:24])


def ipv6_addresses(if_inet6: Path = IF_INET6) -> list[InterfaceAddress]:
    """Every line of `/proc/net/if_inet6` (any state), parsed; malformed lines are skipped."""
    text = ""
    with contextlib.suppress(OSError), if_inet6.open("rb") as stream:
        text = stream.read(IF_INET6_BYTES_MAX).decode("ascii", "replace")
    found = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 6 or len(parts[0]) != 32:
            continue
        try:
            ip = ipaddress.IPv6Address(bytes.fromhex(parts[0]))
        except ValueError:
            continue
        found.append(InterfaceAddress(interface=parts[5], ip=str(ip), version=6))
    return found
