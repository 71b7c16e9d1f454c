"""identify: what a peer says about itself (`/ipfs/id/1.0.0`, push `/ipfs/id/push/1.0.0`).

libp2p/specs identify/README.md: the responder writes one varint-length-prefixed
protobuf `Identify` and closes its write side; the reader takes everything until the
stream ends (at most `MESSAGE_BYTES_MAX`, js-libp2p's own bound). A push carries the
same message, unasked, when a peer's protocols or addresses change. Fields:

    1 publicKey (libp2p PublicKey protobuf)   2 listenAddrs (repeated, binary multiaddr)
    3 protocols (repeated string)             4 observedAddr (binary multiaddr)
    5 protocolVersion                         6 agentVersion
    8 signedPeerRecord (kept opaque; not produced)

A message split over several length-prefixed pieces merges like protobuf (fields
concatenate). An address we cannot parse is skipped, not fatal: peers advertise
transports we do not speak. Pure.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyrsia.errors import ProtocolViolation
from pyrsia.formats.peer_id import peer_id_of
from pyrsia.p2p.wire import protobuf, varint
from pyrsia.p2p.wire.multiaddr import Multiaddr
from pyrsia.p2p.wire.noise import ed25519_key_of

PROTOCOL_ID = "/ipfs/id/1.0.0"
PUSH_PROTOCOL_ID = "/ipfs/id/push/1.0.0"
PROTOCOL_VERSION = "ipfs/0.1.0"
MESSAGE_BYTES_MAX = 8192
LISTEN_ADDRS_MAX = 64
PROTOCOLS_MAX = 256
TEXT_BYTES_MAX = 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class IdentifyInfo:
    protocol_version: str = PROTOCOL_VERSION
    agent_version: str = ""
    public_key: bytes = b""  # libp2p PublicKey protobuf
    listen_addrs: tuple[Multiaddr, ...] = ()
    observed_addr: Multiaddr | None = None
    protocols: tuple[str, ...] = ()

    def encode(self) -> bytes:
        fields: list[protobuf.Field] = [(5, self.protocol_version.encode()), (6, self.agent_version.encode())]
        if self.public_key:
            fields.append((1, self.public_key))
        fields += [(2, address.to_bytes()) for address in self.listen_addrs]
        if self.observed_addr is not None:
            fields.append((4, self.observed_addr.to_bytes()))
        fields += [(3, protocol.encode()) for protocol in self.protocols]
        return protobuf.encode(fields)

    @classmethod
    def decode(cls, data: bytes) -> IdentifyInfo:
        fields = protobuf.decode(data)
        public_key = protobuf.first(fields, 1, bytes)
        observed_raw = protobuf.first(fields, 4, bytes)
        listen = [a for raw in protobuf.every(fields, 2) if (a := _address_or_none(raw)) is not None]
        protocols = [_text(raw) for raw in protobuf.every(fields, 3)]
        if len(listen) > LISTEN_ADDRS_MAX or len(protocols) > PROTOCOLS_MAX:
            raise ProtocolViolation("identify lists too many addresses or protocols")
        return cls(
            protocol_version=_text(protobuf.first(fields, 5, bytes) or b""),
            agent_version=_text(protobuf.first(fields, 6, bytes) or b""),
            public_key=public_key if isinstance(public_key, bytes) else b"",
            listen_addrs=tuple(listen),
            observed_addr=_address_or_none(observed_raw) if isinstance(observed_raw, bytes) else None,
            protocols=tuple(protocols),
        )

    @property
    def peer_id(self) -> str | None:
        """The peer id its public key names, or None when the message carries no key."""
        if not self.public_key:
            return None
        return peer_id_of(ed25519_key_of(self.public_key))


def encode_message(info: IdentifyInfo) -> bytes:
    return varint.prefixed(info.encode())


class Reader:
    """Collects an identify stream until it ends; `finish()` gives the merged message."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> None:
        self._buffer += data
        if len(self._buffer) > MESSAGE_BYTES_MAX + varint.VARINT_BYTES_MAX:
            raise ProtocolViolation(f"identify message over {MESSAGE_BYTES_MAX} bytes")

    def finish(self) -> IdentifyInfo:
        reader = varint.LengthPrefixedReader(size_max=MESSAGE_BYTES_MAX)
        reader.feed(bytes(self._buffer))
        pieces = []
        while (piece := reader.next_message()) is not None:
            pieces.append(piece)
        if reader.buffered or not pieces:
            raise ProtocolViolation("identify stream ended inside a message")
        return IdentifyInfo.decode(b"".join(pieces))


def _address_or_none(raw: bytes) -> Multiaddr | None:
    try:
        return Multiaddr.from_bytes(raw)
    except ProtocolViolation:
        return None


def _text(raw: int | bytes) -> str:
    if not isinstance(raw, bytes) or len(raw) > TEXT_BYTES_MAX:
        raise ProtocolViolation("identify text field too long or not bytes")
    try:
        return raw.decode()
    except UnicodeDecodeError as exc:
        raise ProtocolViolation("identify text field is not UTF-8") from exc
