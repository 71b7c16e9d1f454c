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
transports we do not speak.

`Identify` is the behaviour: it asks every new connection's peer who it is, answers
the same question, pushes our message when our protocols or addresses change and
reads the peer's pushes. A peer may push at most `pushes_per_minute_max` times per
connection and one push at a time; more is reset and counted, and a peer refused
`PUSH_REFUSALS_PER_MINUTE_MAX` times in a minute loses the connection and is refused
for `PUSH_FLOOD_BAN_S`, so a peer that pushes in a loop costs a few resets, not the
selector thread. A message whose key names
another peer than the one the connection authenticated closes that connection. Pure.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pyrsia.errors import ProtocolViolation
from pyrsia.formats.peer_id import peer_id_of
from pyrsia.p2p.ratelimit import prune_window
from pyrsia.p2p.swarm import behaviour as sw
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
PUSHES_PER_MINUTE_MAX = 10
PUSH_REFUSALS_PER_MINUTE_MAX = 30  # then the peer is pushing in a loop: its connection closes
PUSH_FLOOD_BAN_S = 300.0  # and it may not come back for a while
PUSH_WINDOW_S = 60.0


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


@dataclass(frozen=True, slots=True, kw_only=True)
class Identified:
    """A peer's identify message, checked against the connection's peer id."""

    peer: str
    info: IdentifyInfo


_ASK = "identify"
_PUSH = "identify-push"


class Identify:
    """The identify behaviour; `local(remote)` builds our message for a connection's peer."""

    protocols = (PROTOCOL_ID, PUSH_PROTOCOL_ID)

    def __init__(
        self,
        local: Callable[[Multiaddr], IdentifyInfo],
        *,
        pushes_per_minute_max: int = PUSHES_PER_MINUTE_MAX,
    ) -> None:
        self._local = local
        self._pushes_max = pushes_per_minute_max
        self._conns: dict[int, tuple[str, Multiaddr]] = {}
        self._readers: dict[tuple[int, int], Reader] = {}
        self._pushes: dict[int, deque[float]] = {}
        self._push_readers: set[tuple[int, int]] = set()
        self._push_refusals: dict[int, deque[float]] = {}
        self.refusals: Counter[str] = Counter()

    def tick(self, now_s: float) -> Sequence[sw.Effect]:
        return ()

    def on_event(self, event: sw.Event, now_s: float) -> Sequence[sw.Effect]:
        match event:
            case sw.ConnectionUp(conn=conn, peer=peer, remote=remote):
                self._conns[conn] = (peer, remote)
                return [sw.OpenStream(conn=conn, protocols=(PROTOCOL_ID,), tag=_ASK)]
            case sw.ConnectionDown(conn=conn):
                self._conns.pop(conn, None)
                self._pushes.pop(conn, None)
                self._push_refusals.pop(conn, None)
                for key in [k for k in self._readers if k[0] == conn]:
                    del self._readers[key]
                    self._push_readers.discard(key)
            case sw.InboundStream(conn=conn, stream=stream, protocol=protocol):
                if protocol == PROTOCOL_ID:
                    return self._answer(conn, stream)
                return self._accept_push(conn, stream, now_s)
            case sw.StreamOpened(conn=conn, stream=stream, tag=tag):
                if tag == _PUSH:
                    return self._answer(conn, stream)
                self._readers[(conn, stream)] = Reader()
            case sw.StreamData(conn=conn, stream=stream, data=data):
                reader = self._readers.get((conn, stream))
                if reader is not None:
                    try:
                        reader.feed(data)
                    except ProtocolViolation as exc:
                        return self._violation(conn, stream, exc)
            case sw.StreamEnded(conn=conn, stream=stream):
                return self._finish(conn, stream)
            case sw.StreamGone(conn=conn, stream=stream):
                if stream is not None:
                    self._readers.pop((conn, stream), None)
                    self._push_readers.discard((conn, stream))
        return ()

    def push_all(self) -> list[sw.Effect]:
        """Tell every connected peer our message again (our protocols or addresses changed)."""
        return [sw.OpenStream(conn=conn, protocols=(PUSH_PROTOCOL_ID,), tag=_PUSH) for conn in self._conns]

    def _answer(self, conn: int, stream: int) -> list[sw.Effect]:
        known = self._conns.get(conn)
        if known is None:
            return [sw.ResetStream(conn=conn, stream=stream)]
        message = encode_message(self._local(known[1]))
        return [sw.Write(conn=conn, stream=stream, data=message), sw.CloseStream(conn=conn, stream=stream)]

    def _accept_push(self, conn: int, stream: int, now_s: float) -> list[sw.Effect]:
        recent = prune_window(self._pushes.setdefault(conn, deque()), now_s, PUSH_WINDOW_S)
        busy = any(k[0] == conn for k in self._push_readers)
        if busy or len(recent) >= self._pushes_max:
            self.refusals["identify_push_rate" if not busy else "identify_push_concurrent"] += 1
            refused = prune_window(self._push_refusals.setdefault(conn, deque()), now_s, PUSH_WINDOW_S)
            refused.append(now_s)
            if len(refused) > PUSH_REFUSALS_PER_MINUTE_MAX:
                self.refusals["identify_push_flood"] += 1
                flood = sw.Misbehaved(reason="identify pushes in a loop", ban_s=PUSH_FLOOD_BAN_S)
                return [sw.Report(conn=conn, outcome=flood)]
            return [sw.ResetStream(conn=conn, stream=stream)]
        recent.append(now_s)
        self._readers[(conn, stream)] = Reader()
        self._push_readers.add((conn, stream))
        return []

    def _finish(self, conn: int, stream: int) -> list[sw.Effect]:
        reader = self._readers.pop((conn, stream), None)
        self._push_readers.discard((conn, stream))
        if reader is None:
            return []
        try:
            info = reader.finish()
        except ProtocolViolation as exc:
            return self._violation(conn, stream, exc)
        peer = self._conns[conn][0]
        if info.public_key and info.peer_id != peer:
            self.refusals["identify_wrong_key"] += 1
            return [sw.CloseConnection(conn=conn, reason=f"identify from {peer} carries another peer's key")]
        return [
            sw.CloseStream(conn=conn, stream=stream),
            sw.Report(conn=conn, outcome=Identified(peer=peer, info=info)),
        ]

    def _violation(self, conn: int, stream: int, exc: ProtocolViolation) -> list[sw.Effect]:
        self._readers.pop((conn, stream), None)
        self._push_readers.discard((conn, stream))
        self.refusals["identify_malformed"] += 1
        return [sw.CloseConnection(conn=conn, reason=f"identify: {exc}")]
