"""libp2p kad-dht wire messages (`dht.proto`), as pyrsia speaks them on `/pyrsia/kad/1.0.0`.

libp2p/specs kad-dht "RPC messages": every request and reply is one protobuf `Message`
behind an unsigned-varint length, on its own stream. We keep the spec's field numbers
(type 1, key 2, record 3, closerPeers 8, providerPeers 9; Peer: id 1, addrs 2,
connection 3; Record: key 1, value 2, timeReceived 5) so a js-libp2p or go-libp2p
kad-dht node configured with our protocol id reads us and we read it. The unused
`clusterLevelRaw` (10) and unknown fields are skipped on decode and never written.

Everything a peer sends is bounded here, before the Kademlia core sees it: the whole
message, the key, the number of peers per field, addresses per peer and their size.
A peer id on the wire must be a multihash libp2p uses for peer ids (identity for
inlined keys, sha2-256 for hashed ones); multiaddrs stay opaque bytes. Anything else
is a `ProtocolViolation` and nothing else: decode never raises another error.

Provider keys are multihashes (`0x12 0x20` + the SHA-256 bytes of the blob), as
js-libp2p puts them on the wire, so a CID built from a blob's digest finds it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from enum import IntEnum

from pyrsia.errors import ProtocolViolation
from pyrsia.formats.peer_id import base58btc, base58btc_decode
from pyrsia.p2p.wire import protobuf, varint

PROTOCOL_ID = "/pyrsia/kad/1.0.0"

MESSAGE_BYTES_MAX = 64 * 1024
KEY_BYTES_MAX = 256
PEERS_PER_FIELD_MAX = 64
ADDRS_PER_PEER_MAX = 32
ADDR_BYTES_MAX = 512
PEER_ID_BYTES_MAX = 64

# multicodec table: identity = 0x00, sha2-256 = 0x12
MULTIHASH_IDENTITY = 0x00
MULTIHASH_SHA2_256 = 0x12
SHA256_BYTES = 32
_SHA256_PREFIX = bytes([MULTIHASH_SHA2_256, SHA256_BYTES])


class MessageType(IntEnum):
    PUT_VALUE = 0
    GET_VALUE = 1
    ADD_PROVIDER = 2
    GET_PROVIDERS = 3
    FIND_NODE = 4
    PING = 5


class ConnectionType(IntEnum):
    NOT_CONNECTED = 0
    CONNECTED = 1
    CAN_CONNECT = 2
    CANNOT_CONNECT = 3


@dataclass(frozen=True, slots=True, kw_only=True)
class Peer:
    """`Message.Peer`: a peer id as multihash bytes and its multiaddrs as opaque bytes."""

    id: bytes
    addrs: tuple[bytes, ...] = ()
    connection: ConnectionType = ConnectionType.NOT_CONNECTED


@dataclass(frozen=True, slots=True, kw_only=True)
class Record:
    key: bytes = b""
    value: bytes = b""
    time_received: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Message:
    type: MessageType
    key: bytes = b""
    record: Record | None = None
    closer_peers: tuple[Peer, ...] = ()
    provider_peers: tuple[Peer, ...] = ()


# -- keys and peer ids -------------------------------------------------------------


def provider_key(digest: str) -> bytes:
    """The DHT key of a blob: the sha2-256 multihash of `sha256:<64 hex>`."""
    algorithm, _, hex_digest = digest.partition(":")
    if algorithm != "sha256" or len(hex_digest) != 2 * SHA256_BYTES or hex_digest != hex_digest.lower():
        raise ValueError(f"not a sha256 digest: {digest[:80]!r}")
    try:
        return _SHA256_PREFIX + bytes.fromhex(hex_digest)
    except ValueError:
        raise ValueError(f"not a sha256 digest: {digest[:80]!r}") from None


def digest_of_provider_key(key: bytes) -> str:
    """`sha256:<hex>` for a provider key; ProtocolViolation for any other key."""
    if len(key) != len(_SHA256_PREFIX) + SHA256_BYTES or not key.startswith(_SHA256_PREFIX):
        raise ProtocolViolation("provider key is not a sha2-256 multihash")
    return "sha256:" + key[len(_SHA256_PREFIX) :].hex()


def is_multihash(data: bytes) -> bool:
    """True when `data` is one whole multihash: varint code, varint length, that many bytes."""
    try:
        code = varint.decode(data)
        if code is None:
            return False
        length = varint.decode(data, code[1])
    except ProtocolViolation:
        return False
    return length is not None and length[1] + length[0] == len(data)


def check_peer_id_bytes(raw: bytes) -> bytes:
    """`raw` if it is a peer id libp2p could have made (identity or sha2-256 multihash)."""
    # Both codes and every length up to PEER_ID_BYTES_MAX are one-byte varints.
    if not 2 < len(raw) <= PEER_ID_BYTES_MAX or len(raw) != raw[1] + 2:
        raise ProtocolViolation("peer id is not a multihash")
    if raw[0] == MULTIHASH_SHA2_256:
        if raw[1] != SHA256_BYTES:
            raise ProtocolViolation("sha2-256 peer id of the wrong length")
    elif raw[0] != MULTIHASH_IDENTITY:
        raise ProtocolViolation(f"peer id multihash code {raw[0]:#x} is neither identity nor sha2-256")
    return raw


# Peer ids are converted on every message; the same few thousand recur, so remember them.
@functools.lru_cache(maxsize=8192)
def peer_id_to_bytes(peer_id: str) -> bytes:
    """The multihash bytes of a base58btc peer id (`12D3KooW…` or `Qm…`)."""
    try:
        raw = base58btc_decode(peer_id)
    except ValueError:
        raise ProtocolViolation(f"peer id {peer_id[:60]!r} is not base58btc") from None
    return check_peer_id_bytes(raw)


@functools.lru_cache(maxsize=8192)
def peer_id_from_bytes(raw: bytes) -> str:
    return base58btc(check_peer_id_bytes(raw))


# -- encode ------------------------------------------------------------------------


def _encode_peer(peer: Peer) -> bytes:
    fields: list[protobuf.Field] = [(1, peer.id)]
    fields += [(2, addr) for addr in peer.addrs]
    if peer.connection:
        fields.append((3, int(peer.connection)))
    return protobuf.encode(fields)


def _encode_record(record: Record) -> bytes:
    fields: list[protobuf.Field] = []
    if record.key:
        fields.append((1, record.key))
    if record.value:
        fields.append((2, record.value))
    if record.time_received:
        fields.append((5, record.time_received.encode()))
    return protobuf.encode(fields)


def encode(message: Message) -> bytes:
    """The protobuf bytes of `message` (no length prefix); empty fields are left out."""
    fields: list[protobuf.Field] = [(1, int(message.type))]
    if message.key:
        fields.append((2, message.key))
    if message.record is not None:
        fields.append((3, _encode_record(message.record)))
    fields += [(8, _encode_peer(p)) for p in message.closer_peers]
    fields += [(9, _encode_peer(p)) for p in message.provider_peers]
    return protobuf.encode(fields)


def encode_framed(message: Message) -> bytes:
    """`message` behind its varint length, as it goes on a stream."""
    return varint.prefixed(encode(message))


def reader() -> varint.LengthPrefixedReader:
    """A stream splitter that refuses any message longer than MESSAGE_BYTES_MAX."""
    return varint.LengthPrefixedReader(MESSAGE_BYTES_MAX)


# -- decode ------------------------------------------------------------------------


def _decode_peer(data: bytes) -> Peer:
    peer_id = b""
    addrs: list[bytes] = []
    connection = ConnectionType.NOT_CONNECTED
    for number, value in protobuf.decode(data):
        if number == 1:
            peer_id = _bytes(value, "Peer.id")
        elif number == 2:
            addr = _bytes(value, "Peer.addrs")
            if len(addr) > ADDR_BYTES_MAX:
                raise ProtocolViolation(f"multiaddr of {len(addr)} bytes exceeds {ADDR_BYTES_MAX}")
            if len(addrs) == ADDRS_PER_PEER_MAX:
                raise ProtocolViolation(f"peer carries more than {ADDRS_PER_PEER_MAX} addresses")
            addrs.append(addr)
        elif number == 3:
            raw = _int(value, "Peer.connection")
            # proto3 enums are open: a value we do not know says nothing we can use.
            connection = ConnectionType(raw) if raw in ConnectionType._value2member_map_ else connection
    return Peer(id=check_peer_id_bytes(peer_id), addrs=tuple(addrs), connection=connection)


def _decode_record(data: bytes) -> Record:
    key = value = b""
    time_received = ""
    for number, field in protobuf.decode(data):
        if number == 1:
            key = _bytes(field, "Record.key")
        elif number == 2:
            value = _bytes(field, "Record.value")
        elif number == 5:
            try:
                time_received = _bytes(field, "Record.timeReceived").decode()
            except UnicodeDecodeError:
                raise ProtocolViolation("Record.timeReceived is not UTF-8") from None
    if len(key) > KEY_BYTES_MAX:
        raise ProtocolViolation(f"record key of {len(key)} bytes exceeds {KEY_BYTES_MAX}")
    return Record(key=key, value=value, time_received=time_received)


def decode(data: bytes) -> Message:
    """One `Message` from its protobuf bytes; ProtocolViolation for anything malformed."""
    if len(data) > MESSAGE_BYTES_MAX:
        raise ProtocolViolation(f"kad message of {len(data)} bytes exceeds {MESSAGE_BYTES_MAX}")
    # proto3: a field left out holds its default, and the last occurrence of a scalar wins.
    type_raw = 0
    key = b""
    record: Record | None = None
    closer: list[Peer] = []
    providers: list[Peer] = []
    for number, value in protobuf.decode(data):
        if number == 1:
            type_raw = _int(value, "Message.type")
        elif number == 2:
            key = _bytes(value, "Message.key")
        elif number == 3:
            record = _decode_record(_bytes(value, "Message.record"))
        elif number in (8, 9):
            target = closer if number == 8 else providers
            if len(target) == PEERS_PER_FIELD_MAX:
                raise ProtocolViolation(f"more than {PEERS_PER_FIELD_MAX} peers in one field")
            target.append(_decode_peer(_bytes(value, "Message.Peer")))
    if type_raw not in MessageType._value2member_map_:
        raise ProtocolViolation(f"unknown kad message type {type_raw}")
    if len(key) > KEY_BYTES_MAX:
        raise ProtocolViolation(f"kad key of {len(key)} bytes exceeds {KEY_BYTES_MAX}")
    return Message(
        type=MessageType(type_raw),
        key=key,
        record=record,
        closer_peers=tuple(closer),
        provider_peers=tuple(providers),
    )


def _bytes(value: int | bytes, name: str) -> bytes:
    if not isinstance(value, bytes):
        raise ProtocolViolation(f"{name} has the wrong wire type")
    return value


def _int(value: int | bytes, name: str) -> int:
    if not isinstance(value, int):
        raise ProtocolViolation(f"{name} has the wrong wire type")
    return value
