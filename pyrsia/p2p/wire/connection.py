"""One libp2p connection's whole life over a byte stream, with no sockets.

The upgrade (libp2p/specs connections/README.md), for either role:

    multistream-select `/noise`  →  Noise XX (identities checked)
      →  yamux: agreed early in the Noise payloads when both sides offer it,
         else multistream-select `/yamux/1.0.0` inside the encrypted channel
      →  streams, each opened with its own multistream-select of a protocol id

Bytes in (`receive_data`) give events out; calls (`open_stream`, `write`, …) queue
output, and `data_to_send()` hands it over already framed and encrypted. Inbound
streams are offered to `supports(protocol)`; a refused proposal gets `na`. A peer that
breaks any layer raises `ProtocolViolation` from `receive_data`; the connection is then
dead, and `data_to_send()` still yields the GO_AWAY that tells the peer why.

The shell injects the Noise keys (randomness) and drives time (ping opaque values,
deadlines); this module is pure.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pyrsia.errors import ProtocolViolation, StreamClosed
from pyrsia.p2p.identity import Identity
from pyrsia.p2p.wire import multistream, noise, yamux

# Stream data, ends, resets and pongs reach the shell as the muxer reports them.
from pyrsia.p2p.wire.yamux import Pong as Pong
from pyrsia.p2p.wire.yamux import StreamData as StreamData
from pyrsia.p2p.wire.yamux import StreamEnded as StreamEnded
from pyrsia.p2p.wire.yamux import StreamReset as StreamReset

STREAM_PROTOCOLS_MAX = 8


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionConfig:
    early_muxer: bool = True  # offer yamux in the Noise payload
    window_bytes: int = yamux.INITIAL_WINDOW_BYTES
    streams_max: int = yamux.STREAMS_MAX
    stream_window_bytes_max: int = yamux.STREAM_WINDOW_BYTES_MAX
    session_growth_bytes_max: int = yamux.SESSION_GROWTH_BYTES_MAX


@dataclass(frozen=True, slots=True, kw_only=True)
class Established:
    remote_peer_id: str
    muxer: str
    early_muxer: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamOpened:
    stream_id: int
    protocol: str
    outbound: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamFailed:
    """An outbound stream found no protocol the peer speaks, or was reset while negotiating."""

    stream_id: int
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionClosed:
    """The peer sent GO_AWAY: no new streams; the socket will end soon."""

    reason: str


# Stream data, ends, resets and pongs reach the shell as the muxer reported them.
Event = (
    Established
    | StreamOpened
    | StreamFailed
    | StreamData
    | StreamEnded
    | StreamReset
    | Pong
    | ConnectionClosed
)

_SECURITY, _HANDSHAKE, _MUXER, _OPEN, _DEAD = range(5)


class Connection:
    """Dialer (`initiator=True`) or listener side of one connection."""

    def __init__(
        self,
        *,
        initiator: bool,
        identity: Identity,
        static_private: bytes,
        ephemeral_private: bytes,
        supports: Callable[[str], bool],
        expected_peer_id: str | None = None,
        config: ConnectionConfig = ConnectionConfig(),
    ) -> None:
        self.initiator = initiator
        self.config = config
        self._supports = supports
        self._handshake = noise.Handshake(
            initiator=initiator,
            identity=identity,
            static_private=static_private,
            ephemeral_private=ephemeral_private,
            expected_peer_id=expected_peer_id,
            stream_muxers=(yamux.PROTOCOL_ID,) if config.early_muxer else (),
        )
        self._security: multistream.Dialer | multistream.Listener = (
            multistream.Dialer([noise.PROTOCOL_ID])
            if initiator
            else multistream.Listener(lambda p: p == noise.PROTOCOL_ID)
        )
        self._muxer_negotiation: multistream.Dialer | multistream.Listener | None = None
        self._channel: noise.SecureChannel | None = None
        self._session: yamux.Session | None = None
        self._negotiating: dict[int, multistream.Dialer | multistream.Listener] = {}
        self._protocols: dict[int, str] = {}
        # Streams that finished in the last `receive_data`: their protocol is forgotten at
        # the next call, so the caller can still name it for the events that call returned.
        self._finished: list[int] = []
        self._state = _SECURITY
        self._raw_out: list[bytes] = []
        self._plain_out: list[yamux.Frame] = []
        self.remote_peer_id: str | None = None
        if initiator:
            assert isinstance(self._security, multistream.Dialer)
            self._raw_out.append(self._security.initial())

    # -- state ----------------------------------------------------------------------

    @property
    def established(self) -> bool:
        return self._state == _OPEN

    @property
    def dead(self) -> bool:
        return self._state == _DEAD

    def protocol_of(self, stream_id: int) -> str | None:
        return self._protocols.get(stream_id)

    @property
    def stream_count(self) -> int:
        return self._session.stream_count if self._session is not None else 0

    def pending_bytes(self, stream_id: int) -> int:
        return self._session.pending_bytes(stream_id) if self._session is not None else 0

    # -- output ---------------------------------------------------------------------

    def data_to_send(self) -> list[bytes | bytearray]:
        """Bytes for the wire, in order: handshake bytes, then Noise frames (each yamux
        frame sealed whole into one Noise message where it fits)."""
        out: list[bytes | bytearray] = [piece for piece in self._raw_out if piece]
        self._raw_out = []
        if self._session is not None and self._session.has_output:
            self._plain_out += self._session.frames_to_send()
        if self._plain_out and self._channel is not None:
            plain, self._plain_out = self._plain_out, []
            out += self._channel.seal_frames(plain)
        return out

    # -- calls from the application --------------------------------------------------

    def open_stream(self, protocols: Sequence[str]) -> int:
        """A new stream proposing `protocols` in order; StreamOpened or StreamFailed follows."""
        if not protocols or len(protocols) > STREAM_PROTOCOLS_MAX:
            raise ValueError("propose between 1 and 8 protocols")
        session = self._open_session()
        stream_id = session.open_stream()
        dialer = multistream.Dialer(protocols)
        self._negotiating[stream_id] = dialer
        session.write(stream_id, dialer.initial())
        return stream_id

    def write(self, stream_id: int, data: bytes | bytearray | memoryview) -> None:
        session = self._open_session()
        if stream_id not in self._protocols:
            raise StreamClosed(f"stream {stream_id} is not open")
        session.write(stream_id, data)

    def close_stream(self, stream_id: int) -> None:
        """Half-close our side (FIN after pending data)."""
        if self._session is not None and self._state == _OPEN:
            self._session.close_write(stream_id)
            self._prune()

    def reset_stream(self, stream_id: int) -> None:
        self._forget(stream_id)
        if self._session is not None and self._state == _OPEN:
            self._session.reset(stream_id)

    def consume(self, stream_id: int, size: int, *, grow: bool = False) -> None:
        """The application has taken `size` bytes of the stream: the peer may send more
        (with `grow`, a reader that keeps up may be granted a larger window)."""
        if self._session is not None and self._state == _OPEN:
            self._session.consume(stream_id, size, grow=grow)

    def ping(self, opaque: int) -> None:
        self._open_session().ping(opaque)

    def close(self) -> None:
        """Say goodbye (GO_AWAY normal) if the session is up; the shell then closes the socket."""
        if self._session is not None and self._state == _OPEN:
            self._session.go_away(yamux.GO_AWAY_NORMAL)
        self._state = _DEAD

    def _open_session(self) -> yamux.Session:
        if self._state != _OPEN or self._session is None:
            raise StreamClosed("the connection is not established")
        return self._session

    def _forget(self, stream_id: int) -> None:
        self._negotiating.pop(stream_id, None)
        self._protocols.pop(stream_id, None)

    # -- input ----------------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview) -> list[Event]:
        if self._state == _DEAD:
            return []
        for stream_id in self._finished:
            self._protocols.pop(stream_id, None)
        self._finished.clear()
        events: list[Event] = []
        try:
            self._receive(bytes(data) if self._channel is None else data, events)
        except ProtocolViolation:
            if self._session is not None:
                self._session.go_away(yamux.GO_AWAY_PROTOCOL_ERROR)
            self._state = _DEAD
            raise
        return events

    def _receive(self, data: bytes | bytearray | memoryview, events: list[Event]) -> None:
        if self._state == _SECURITY:
            assert isinstance(data, bytes)
            self._raw_out.append(self._security.receive_data(data))
            if isinstance(self._security, multistream.Dialer) and self._security.refused:
                raise ProtocolViolation("peer does not speak /noise")
            if not self._security.done:
                return
            self._state = _HANDSHAKE
            if self.initiator:
                self._raw_out.append(self._handshake.start())
            data = self._security.remainder
        if self._state == _HANDSHAKE:
            assert isinstance(data, bytes)
            if data:
                self._raw_out.append(self._handshake.receive_data(data))
            if not self._handshake.complete:
                return
            self._secured(events)
            data = self._handshake.remainder
        assert self._channel is not None
        if data:
            for plaintext in self._channel.decrypt(data):
                self._on_plaintext(plaintext, events)
                if self._state == _DEAD:
                    return

    def _secured(self, events: list[Event]) -> None:
        handshake = self._handshake
        assert handshake.send_cipher and handshake.receive_cipher and handshake.remote_peer_id
        self.remote_peer_id = handshake.remote_peer_id
        self._channel = noise.SecureChannel(handshake.send_cipher, handshake.receive_cipher)
        ours = self.config.early_muxer
        theirs = handshake.remote_stream_muxers
        if ours and theirs:
            # inlined-muxer-negotiation.md: both lists present and no overlap fails.
            if yamux.PROTOCOL_ID not in theirs:
                raise ProtocolViolation(f"no common stream muxer in {list(theirs)[:4]}")
            self._start_session(events, early=True)
            return
        self._state = _MUXER
        if self.initiator:
            dialer = multistream.Dialer([yamux.PROTOCOL_ID])
            self._muxer_negotiation = dialer
            self._plain_out.append((dialer.initial(),))
        else:
            self._muxer_negotiation = multistream.Listener(lambda p: p == yamux.PROTOCOL_ID)

    def _start_session(self, events: list[Event], *, early: bool) -> None:
        self._session = yamux.Session(
            initiator=self.initiator,
            window_bytes=self.config.window_bytes,
            streams_max=self.config.streams_max,
            stream_window_bytes_max=self.config.stream_window_bytes_max,
            session_growth_bytes_max=self.config.session_growth_bytes_max,
        )
        self._state = _OPEN
        assert self.remote_peer_id is not None
        events.append(
            Established(remote_peer_id=self.remote_peer_id, muxer=yamux.PROTOCOL_ID, early_muxer=early)
        )

    def _on_plaintext(self, plaintext: bytes | bytearray, events: list[Event]) -> None:
        if self._state == _MUXER:
            negotiation = self._muxer_negotiation
            assert negotiation is not None
            reply = negotiation.receive_data(bytes(plaintext))
            if reply:
                self._plain_out.append((reply,))
            if isinstance(negotiation, multistream.Dialer) and negotiation.refused:
                raise ProtocolViolation("peer does not speak /yamux/1.0.0")
            if not negotiation.done:
                return
            self._start_session(events, early=False)
            plaintext = negotiation.remainder
            if not plaintext:
                return
        assert self._session is not None
        for event in self._session.receive_data(plaintext):
            self._on_yamux(event, events)
        self._prune()

    def _prune(self) -> None:
        assert self._session is not None
        self._finished.extend(self._session.take_finished())

    def _on_yamux(self, event: yamux.Event, events: list[Event]) -> None:
        session = self._session
        assert session is not None
        match event:
            case yamux.StreamData(stream_id=stream_id, data=data):
                negotiation = self._negotiating.get(stream_id)
                if negotiation is None:
                    if stream_id in self._protocols:
                        events.append(event)
                    return
                self._negotiate_stream(stream_id, negotiation, bytes(data), events)
            case yamux.StreamOpened(stream_id=stream_id):
                self._negotiating[stream_id] = multistream.Listener(self._supports)
            case yamux.StreamEnded(stream_id=stream_id):
                if stream_id in self._negotiating:
                    self._fail_negotiation(stream_id, "stream ended while negotiating", events)
                elif stream_id in self._protocols:
                    events.append(event)
            case yamux.StreamReset(stream_id=stream_id):
                if stream_id in self._negotiating:
                    self._fail_negotiation(stream_id, "stream reset while negotiating", events, reset=False)
                elif stream_id in self._protocols:
                    self._protocols.pop(stream_id)
                    events.append(event)
            case yamux.Pong():
                events.append(event)
            case yamux.GoneAway(code=code):
                events.append(ConnectionClosed(reason=f"peer sent GO_AWAY code {code}"))

    def _negotiate_stream(
        self,
        stream_id: int,
        negotiation: multistream.Dialer | multistream.Listener,
        data: bytes,
        events: list[Event],
    ) -> None:
        session = self._session
        assert session is not None
        reply = negotiation.receive_data(data)
        session.consume(stream_id, len(data) - len(negotiation.remainder))
        if reply and session.is_open(stream_id):
            session.write(stream_id, reply)
        if isinstance(negotiation, multistream.Dialer) and negotiation.refused:
            self._fail_negotiation(stream_id, "peer speaks none of the proposed protocols", events)
            return
        if negotiation.selected is None:
            return
        del self._negotiating[stream_id]
        self._protocols[stream_id] = negotiation.selected
        outbound = isinstance(negotiation, multistream.Dialer)
        events.append(StreamOpened(stream_id=stream_id, protocol=negotiation.selected, outbound=outbound))
        if negotiation.remainder:
            events.append(StreamData(stream_id=stream_id, data=negotiation.remainder))

    def _fail_negotiation(
        self, stream_id: int, reason: str, events: list[Event], *, reset: bool = True
    ) -> None:
        negotiation = self._negotiating.pop(stream_id)
        if reset and self._session is not None:
            self._session.reset(stream_id)
        if isinstance(negotiation, multistream.Dialer):
            events.append(StreamFailed(stream_id=stream_id, reason=reason))
