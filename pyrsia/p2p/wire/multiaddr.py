"""Multiaddrs: self-describing network addresses, in text and binary form.

A multiaddr is a path of (protocol, value) components, `/ip4/127.0.0.1/tcp/44000/p2p/12D3KooW…`.
The binary form (multiformats/multiaddr) is, per component, the protocol's varint code,
then its value: fixed width for ip4 (4), ip6 (16), tcp/udp (2, big-endian); a varint
length then bytes for dns*, p2p (the peer id's multihash) and unix; nothing for flags
such as `p2p-circuit` or `quic-v1`. Identify carries listen and observed addresses in
binary and kad carries peers' addresses the same way, so both forms are parsed strictly:
anything malformed or unknown is a `ProtocolViolation` (the caller may skip that one
address). Pure.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from pyrsia.errors import ProtocolViolation
from pyrsia.formats.peer_id import base58btc, base58btc_decode
from pyrsia.p2p.wire import varint

ADDRESS_BYTES_MAX = 1024
DNS_NAME_CHARS_MAX = 255

# name -> (code, value kind). Kinds: "ip4", "ip6", "port", "text" (length-prefixed
# UTF-8), "peer" (length-prefixed multihash, base58btc in text), "" (no value).
# Codes from multiformats/multicodec table.csv.
_PROTOCOLS: dict[str, tuple[int, str]] = {
    "ip4": (0x04, "ip4"),
    "tcp": (0x06, "port"),
    "udp": (0x0111, "port"),
    "ip6": (0x29, "ip6"),
    "dns": (0x35, "text"),
    "dns4": (0x36, "text"),
    "dns6": (0x37, "text"),
    "dnsaddr": (0x38, "text"),
    "p2p-webrtc-direct": (0x0114, ""),
    "webrtc-direct": (0x0118, ""),
    "webrtc": (0x0119, ""),
    "p2p-circuit": (0x0122, ""),
    "p2p": (0x01A5, "peer"),
    "tls": (0x01C0, ""),
    "quic": (0x01CC, ""),
    "quic-v1": (0x01CD, ""),
    "webtransport": (0x01D1, ""),
    "ws": (0x01DD, ""),
    "wss": (0x01DE, ""),
}
_BY_CODE = {code: (name, kind) for name, (code, kind) in _PROTOCOLS.items()}
_ALIASES = {"ipfs": "p2p"}

Component = tuple[str, str]


@dataclass(frozen=True, slots=True)
class Multiaddr:
    """Components in order; a flag protocol's value is the empty string."""

    components: tuple[Component, ...]

    @classmethod
    def parse(cls, text: str) -> Multiaddr:
        if not text.startswith("/") or len(text) > ADDRESS_BYTES_MAX:
            raise ProtocolViolation(f"not a multiaddr: {text[:80]!r}")
        parts = text.split("/")[1:]
        if parts and parts[-1] == "":
            parts.pop()
        components: list[Component] = []
        index = 0
        while index < len(parts):
            name = _ALIASES.get(parts[index], parts[index])
            if name not in _PROTOCOLS:
                raise ProtocolViolation(f"unknown multiaddr protocol {name[:40]!r}")
            kind = _PROTOCOLS[name][1]
            if kind == "":
                components.append((name, ""))
                index += 1
                continue
            if index + 1 >= len(parts):
                raise ProtocolViolation(f"multiaddr protocol {name} needs a value")
            value = parts[index + 1]
            _value_bytes(kind, value)  # validates
            components.append((name, _normalized(kind, value)))
            index += 2
        if not components:
            raise ProtocolViolation("empty multiaddr")
        return cls(tuple(components))

    @classmethod
    def from_bytes(cls, data: bytes) -> Multiaddr:
        if not data or len(data) > ADDRESS_BYTES_MAX:
            raise ProtocolViolation(f"binary multiaddr of {len(data)} bytes")
        components: list[Component] = []
        offset = 0
        while offset < len(data):
            decoded = varint.decode(data, offset)
            if decoded is None:
                raise ProtocolViolation("binary multiaddr ends inside a protocol code")
            code, offset = decoded
            if code not in _BY_CODE:
                raise ProtocolViolation(f"unknown multiaddr protocol code {code:#x}")
            name, kind = _BY_CODE[code]
            if kind in ("ip4", "ip6", "port"):
                width = {"ip4": 4, "ip6": 16, "port": 2}[kind]
                raw = data[offset : offset + width]
                if len(raw) != width:
                    raise ProtocolViolation(f"binary multiaddr ends inside {name}")
                offset += width
            elif kind in ("text", "peer"):
                head = varint.decode(data, offset)
                if head is None:
                    raise ProtocolViolation(f"binary multiaddr ends inside {name}")
                length, offset = head
                raw = data[offset : offset + length]
                if len(raw) != length:
                    raise ProtocolViolation(f"binary multiaddr ends inside {name}")
                offset += length
            else:
                raw = b""
            components.append((name, _value_text(kind, raw)))
        return cls(tuple(components))

    def to_bytes(self) -> bytes:
        out = bytearray()
        for name, value in self.components:
            code, kind = _PROTOCOLS[name]
            out += varint.encode(code)
            raw = _value_bytes(kind, value)
            if kind in ("text", "peer"):
                out += varint.encode(len(raw))
            out += raw
        return bytes(out)

    def __str__(self) -> str:
        return "".join(
            f"/{name}/{value}" if _PROTOCOLS[name][1] else f"/{name}" for name, value in self.components
        )

    def value_of(self, name: str) -> str | None:
        for component, value in self.components:
            if component == name:
                return value
        return None

    @property
    def peer_id(self) -> str | None:
        """The peer this address reaches: a closing `/p2p/` component.

        `…/p2p/RELAY/p2p-circuit` names a relay, not the peer behind it: None.
        """
        if self.components and self.components[-1][0] == "p2p":
            return self.components[-1][1]
        return None

    def with_peer(self, peer_id: str) -> Multiaddr:
        return Multiaddr((*self.without_peer().components, ("p2p", peer_id)))

    def without_peer(self) -> Multiaddr:
        if self.components and self.components[-1][0] == "p2p":
            return Multiaddr(self.components[:-1])
        return self

    def tcp_endpoint(self) -> tuple[str, int] | None:
        """(host, port) when this is a direct TCP address (ip4/ip6/dns*, then tcp)."""
        comps = self.without_peer().components
        if len(comps) != 2 or comps[1][0] != "tcp":
            return None
        if comps[0][0] not in ("ip4", "ip6", "dns", "dns4", "dns6"):
            return None
        return comps[0][1], int(comps[1][1])

    @property
    def is_relayed(self) -> bool:
        return any(name == "p2p-circuit" for name, _ in self.components)


def tcp(host: str, port: int, peer_id: str | None = None) -> Multiaddr:
    """The multiaddr of a TCP endpoint (an IP literal or a DNS name)."""
    try:
        family = "ip4" if ipaddress.ip_address(host).version == 4 else "ip6"
    except ValueError:
        family = "dns"
    address = Multiaddr.parse(f"/{family}/{host}/tcp/{port}")
    return address.with_peer(peer_id) if peer_id else address


def _normalized(kind: str, value: str) -> str:
    if kind in ("ip4", "ip6"):
        return str(ipaddress.ip_address(value))
    if kind == "port":
        return str(int(value))
    return value


def _value_bytes(kind: str, value: str) -> bytes:
    try:
        if kind == "ip4":
            return ipaddress.IPv4Address(value).packed
        if kind == "ip6":
            return ipaddress.IPv6Address(value).packed
        if kind == "port":
            if not value.isdigit() or not 0 <= int(value) <= 0xFFFF:
                raise ValueError(value)
            return int(value).to_bytes(2, "big")
        if kind == "text":
            raw = value.encode()
            if not raw or len(raw) > DNS_NAME_CHARS_MAX:
                raise ValueError(value)
            return raw
        if kind == "peer":
            raw = base58btc_decode(value)
            _check_multihash(raw)
            return raw
    except ValueError as exc:
        raise ProtocolViolation(f"bad multiaddr value {value[:80]!r}") from exc
    return b""


def _value_text(kind: str, raw: bytes) -> str:
    if kind == "ip4":
        return str(ipaddress.IPv4Address(raw))
    if kind == "ip6":
        return str(ipaddress.IPv6Address(raw))
    if kind == "port":
        return str(int.from_bytes(raw, "big"))
    if kind == "text":
        try:
            text = raw.decode()
        except UnicodeDecodeError as exc:
            raise ProtocolViolation("multiaddr name is not UTF-8") from exc
        if not text or len(raw) > DNS_NAME_CHARS_MAX or "/" in text:
            raise ProtocolViolation(f"bad multiaddr name {text[:80]!r}")
        return text
    if kind == "peer":
        _check_multihash(raw)
        return base58btc(raw)
    return ""


def _check_multihash(raw: bytes) -> None:
    """A peer id is a multihash: code, length, digest of exactly that length."""
    code = varint.decode(raw)
    if code is None:
        raise ProtocolViolation("peer id is not a multihash")
    length = varint.decode(raw, code[1])
    if length is None or len(raw) - length[1] != length[0] or length[0] == 0:
        raise ProtocolViolation("peer id is not a multihash")
