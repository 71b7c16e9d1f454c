"""The circuit relay v2 messages: `HopMessage` and `StopMessage`, varint-length-prefixed.

libp2p/specs relay/circuit-v2.md "Protobuf":

    HopMessage  { 1 type (RESERVE=0 CONNECT=1 STATUS=2), 2 peer, 3 reservation, 4 limit, 5 status }
    StopMessage { 1 type (CONNECT=0 STATUS=1), 2 peer, 3 limit, 4 status }
    Peer        { 1 id (peer id multihash bytes), 2 addrs (repeated binary multiaddr) }
    Reservation { 1 expire (unix seconds), 2 addrs (repeated), 3 voucher (signed envelope) }
    Limit       { 1 duration (seconds, uint32), 2 data (bytes per direction, uint64) }

Each message on a stream is one varint-length-prefixed protobuf of at most
`MESSAGE_BYTES_MAX` bytes (go-libp2p's bound). Decoding is strict where a peer could
mislead us (a missing or unknown type, a peer id that is not an Ed25519 peer id, a
field of the wrong wire type, too many addresses) and lenient where a newer peer may
add things (an address we cannot parse is skipped; unknown fields are ignored; a
status code we do not know is kept as its number, and is not OK). Pure.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from pyrsia.errors import ProtocolViolation
from pyrsia.formats.peer_id import base58btc, base58btc_decode, public_key_of
from pyrsia.p2p.wire import protobuf, varint
from pyrsia.p2p.wire.multiaddr import Multiaddr

HOP_PROTOCOL_ID = "/libp2p/circuit/relay/0.2.0/hop"
STOP_PROTOCOL_ID = "/libp2p/circuit/relay/0.2.0/stop"
MESSAGE_BYTES_MAX = 4096
ADDRS_MAX = 32
VOUCHER_BYTES_MAX = 1024
UINT32_MAX = 2**32 - 1


class HopType(IntEnum):
    RESERVE = 0
    CONNECT = 1
    STATUS = 2


class StopType(IntEnum):
    CONNECT = 0
    STATUS = 1


class Status(IntEnum):
    UNUSED = 0
    OK = 100
    RESERVATION_REFUSED = 200
    RESOURCE_LIMIT_EXCEEDED = 201
    PERMISSION_DENIED = 202
    CONNECTION_FAILED = 203
    NO_RESERVATION = 204
    MALFORMED_MESSAGE = 400
    UNEXPECTED_MESSAGE = 401


@dataclass(frozen=True, slots=True, kw_only=True)
class Peer:
    id: str  # the peer id in its text form
    addrs: tuple[Multiaddr, ...] = ()

    def encode(self) -> bytes:
        return protobuf.encode([(1, base58btc_decode(self.id)), *((2, a.to_bytes()) for a in self.addrs)])

    @classmethod
    def decode(cls, data: bytes) -> Peer:
        fields = protobuf.decode(data)
        raw = protobuf.first(fields, 1, bytes)
        if not isinstance(raw, bytes):
            raise ProtocolViolation("relay peer without an id")
        peer_id = base58btc(raw)
        try:
            public_key_of(peer_id)
        except ValueError as exc:
            raise ProtocolViolation("relay peer id is not an Ed25519 peer id") from exc
        return cls(id=peer_id, addrs=_addresses(protobuf.every(fields, 2)))


@dataclass(frozen=True, slots=True, kw_only=True)
class Limit:
    duration_s: int = 0  # 0: no limit
    data_bytes: int = 0  # per direction; 0: no limit

    def encode(self) -> bytes:
        return protobuf.encode([(1, self.duration_s), (2, self.data_bytes)])

    @classmethod
    def decode(cls, data: bytes) -> Limit:
        fields = protobuf.decode(data)
        duration = _uint(fields, 1)
        if duration > UINT32_MAX:
            raise ProtocolViolation("relay limit duration is not a uint32")
        return cls(duration_s=duration, data_bytes=_uint(fields, 2))


@dataclass(frozen=True, slots=True, kw_only=True)
class Reservation:
    expire: int  # unix seconds, UTC
    addrs: tuple[Multiaddr, ...] = ()
    voucher: bytes = b""

    def encode(self) -> bytes:
        fields: list[protobuf.Field] = [(1, self.expire), *((2, a.to_bytes()) for a in self.addrs)]
        if self.voucher:
            fields.append((3, self.voucher))
        return protobuf.encode(fields)

    @classmethod
    def decode(cls, data: bytes) -> Reservation:
        fields = protobuf.decode(data)
        voucher = protobuf.first(fields, 3, bytes)
        if isinstance(voucher, bytes) and len(voucher) > VOUCHER_BYTES_MAX:
            raise ProtocolViolation("relay voucher too large")
        return cls(
            expire=_uint(fields, 1),
            addrs=_addresses(protobuf.every(fields, 2)),
            voucher=voucher if isinstance(voucher, bytes) else b"",
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class HopMessage:
    type: HopType
    peer: Peer | None = None
    reservation: Reservation | None = None
    limit: Limit | None = None
    status: int | None = None  # a `Status`, or an unknown code a newer peer sent

    def encode(self) -> bytes:
        fields: list[protobuf.Field] = [(1, int(self.type))]
        if self.peer is not None:
            fields.append((2, self.peer.encode()))
        if self.reservation is not None:
            fields.append((3, self.reservation.encode()))
        if self.limit is not None:
            fields.append((4, self.limit.encode()))
        if self.status is not None:
            fields.append((5, int(self.status)))
        return protobuf.encode(fields)

    @classmethod
    def decode(cls, data: bytes) -> HopMessage:
        fields = protobuf.decode(data)
        kind = protobuf.first(fields, 1, int)
        if kind is None or kind not in tuple(HopType):
            raise ProtocolViolation(f"relay hop message of unknown type {kind!r}")
        peer, reservation, limit = (protobuf.first(fields, n, bytes) for n in (2, 3, 4))
        status = protobuf.first(fields, 5, int)
        return cls(
            type=HopType(kind),
            peer=Peer.decode(peer) if isinstance(peer, bytes) else None,
            reservation=Reservation.decode(reservation) if isinstance(reservation, bytes) else None,
            limit=Limit.decode(limit) if isinstance(limit, bytes) else None,
            status=status if isinstance(status, int) else None,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class StopMessage:
    type: StopType
    peer: Peer | None = None
    limit: Limit | None = None
    status: int | None = None

    def encode(self) -> bytes:
        fields: list[protobuf.Field] = [(1, int(self.type))]
        if self.peer is not None:
            fields.append((2, self.peer.encode()))
        if self.limit is not None:
            fields.append((3, self.limit.encode()))
        if self.status is not None:
            fields.append((4, int(self.status)))
        return protobuf.encode(fields)

    @classmethod
    def decode(cls, data: bytes) -> StopMessage:
        fields = protobuf.decode(data)
        kind = protobuf.first(fields, 1, int)
        if kind is None or kind not in tuple(StopType):
            raise ProtocolViolation(f"relay stop message of unknown type {kind!r}")
        peer, limit = (protobuf.first(fields, n, bytes) for n in (2, 3))
        status = protobuf.first(fields, 4, int)
        return cls(
            type=StopType(kind),
            peer=Peer.decode(peer) if isinstance(peer, bytes) else None,
            limit=Limit.decode(limit) if isinstance(limit, bytes) else None,
            status=status if isinstance(status, int) else None,
        )


def frame(message: HopMessage | StopMessage) -> bytes:
    return varint.prefixed(message.encode())


class MessageReader:
    """Reads the one message a relay stream starts with; bytes after it are the circuit's.

    `feed` returns the message body once it is whole (None before); `rest` then holds
    whatever followed it in the same read. A declared length over `MESSAGE_BYTES_MAX`
    is refused before anything more is buffered.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self.rest = b""

    def feed(self, data: bytes) -> bytes | None:
        self._buffer += data
        head = varint.decode(self._buffer)
        if head is None:
            return None
        length, start = head
        if length > MESSAGE_BYTES_MAX:
            raise ProtocolViolation(f"relay message of {length} bytes exceeds {MESSAGE_BYTES_MAX}")
        if len(self._buffer) - start < length:
            return None
        body = bytes(self._buffer[start : start + length])
        self.rest = bytes(self._buffer[start + length :])
        self._buffer.clear()
        return body


def _uint(fields: list[protobuf.Field], number: int) -> int:
    value = protobuf.first(fields, number, int)
    return value if isinstance(value, int) else 0


def _addresses(raws: list[bytes]) -> tuple[Multiaddr, ...]:
    if len(raws) > ADDRS_MAX:
        raise ProtocolViolation(f"relay message lists more than {ADDRS_MAX} addresses")
    out = []
    for raw in raws:
        try:
            out.append(Multiaddr.from_bytes(raw))
        except ProtocolViolation:
            continue  # a transport we do not speak
    return tuple(out)
