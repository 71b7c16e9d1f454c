"""yamux: many flow-controlled streams over one connection (`/yamux/1.0.0`).

Wire (hashicorp/yamux spec.md, libp2p/specs yamux): a 12-byte big-endian header
`version(0) type flags stream_id length`, then `length` payload bytes for DATA only.
WINDOW_UPDATE's length is a window delta, PING's an opaque value echoed with ACK,
GO_AWAY's an error code. Flags SYN/ACK open a stream, FIN half-closes it, RST aborts it.
The dialer's stream ids are odd, the listener's even; id 0 is the session. Like
js-libp2p, a stream opens with WINDOW_UPDATE+SYN and is accepted with WINDOW_UPDATE+ACK.

Flow control: each direction of each stream starts with a 256 KiB window; a sender
never has more unacknowledged bytes in flight than the receiver granted. We grant more
(`window_bytes` may exceed 256 KiB, announced in the SYN/ACK update) and return
credit as the application consumes (`consume`), so a slow reader stops its sender
instead of growing our memory.

Bounds: a peer that overruns a window, reuses or misnumbers an id, sends a bad version
or type, or keeps opening streams past `streams_max` after being refused is a
`ProtocolViolation` (we answer GO_AWAY protocol-error); a stream beyond the limit is
refused with RST. Pure.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from pyrsia.errors import ProtocolViolation, StreamClosed

PROTOCOL_ID = "/yamux/1.0.0"
VERSION = 0
DATA, WINDOW_UPDATE, PING, GO_AWAY = 0, 1, 2, 3
SYN, ACK, FIN, RST = 1, 2, 4, 8
GO_AWAY_NORMAL, GO_AWAY_PROTOCOL_ERROR, GO_AWAY_INTERNAL_ERROR = 0, 1, 2
HEADER = struct.Struct(">BBHII")
HEADER_BYTES = HEADER.size
INITIAL_WINDOW_BYTES = 256 * 1024
WINDOW_BYTES_MAX = 16 * 1024 * 1024
# One DATA frame plus its header fills one Noise message exactly (65,519 plaintext bytes).
DATA_FRAME_BYTES_MAX = 65519 - HEADER_BYTES
STREAMS_MAX = 256
STREAM_ID_MAX = 2**32 - 1
_U32_MAX = 2**32 - 1


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamOpened:
    """The peer opened a stream (SYN)."""

    stream_id: int


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamData:
    stream_id: int
    data: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamEnded:
    """The peer half-closed (FIN): no more data will arrive on this stream."""

    stream_id: int


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamReset:
    """The stream is gone: the peer reset or refused it."""

    stream_id: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Pong:
    opaque: int


@dataclass(frozen=True, slots=True, kw_only=True)
class GoneAway:
    code: int


Event = StreamOpened | StreamData | StreamEnded | StreamReset | Pong | GoneAway


def encode_header(frame_type: int, flags: int, stream_id: int, length: int) -> bytes:
    return HEADER.pack(VERSION, frame_type, flags, stream_id, length)


def decode_header(raw: bytes) -> tuple[int, int, int, int]:
    """(type, flags, stream_id, length) of a 12-byte header; bad version/type is a violation."""
    version, frame_type, flags, stream_id, length = HEADER.unpack(raw)
    _check_header(version, frame_type)
    return frame_type, flags, stream_id, length


def _check_header(version: int, frame_type: int) -> None:
    if version != VERSION:
        raise ProtocolViolation(f"yamux version {version}")
    if frame_type > GO_AWAY:
        raise ProtocolViolation(f"yamux frame type {frame_type}")


class _Stream:
    __slots__ = (
        "local_fin",
        "pending",
        "pending_fin",
        "receive_window",
        "remote_fin",
        "send_window",
        "unacked",
    )

    def __init__(self, receive_window: int) -> None:
        self.send_window = INITIAL_WINDOW_BYTES
        self.receive_window = receive_window
        self.unacked = 0  # consumed by the application, not yet granted back
        self.pending = bytearray()  # written but beyond the send window
        self.pending_fin = False
        self.local_fin = False
        self.remote_fin = False


class Session:
    """One side of a yamux session. Feed `receive_data`; send `data_to_send()`."""

    def __init__(
        self,
        *,
        initiator: bool,
        window_bytes: int = INITIAL_WINDOW_BYTES,
        streams_max: int = STREAMS_MAX,
    ) -> None:
        if not INITIAL_WINDOW_BYTES <= window_bytes <= WINDOW_BYTES_MAX:
            raise ValueError(f"window of {window_bytes} bytes")
        self.initiator = initiator
        self.window_bytes = window_bytes
        self.streams_max = streams_max
        self._next_id = 1 if initiator else 2
        self._last_remote_id = 0
        self._streams: dict[int, _Stream] = {}
        self._refused = 0
        self._buffer = bytearray()
        self._outbox: list[bytes] = []
        self._finished: list[int] = []
        self.local_gone_away = False
        self.remote_gone_away = False

    # -- outgoing -------------------------------------------------------------------

    def data_to_send(self) -> list[bytes]:
        """Frames queued so far, in order; the caller sends them as one byte stream."""
        out, self._outbox = self._outbox, []
        return out

    @property
    def has_output(self) -> bool:
        return bool(self._outbox)

    def open_stream(self) -> int:
        if self.local_gone_away or self.remote_gone_away:
            raise StreamClosed("the yamux session is going away")
        if len(self._streams) >= self.streams_max:
            raise StreamClosed(f"{self.streams_max} streams already open")
        stream_id = self._next_id
        if stream_id > STREAM_ID_MAX:
            raise StreamClosed("yamux stream ids exhausted")
        self._next_id += 2
        self._streams[stream_id] = _Stream(self.window_bytes)
        self._outbox.append(
            encode_header(WINDOW_UPDATE, SYN, stream_id, self.window_bytes - INITIAL_WINDOW_BYTES)
        )
        return stream_id

    def write(self, stream_id: int, data: bytes) -> None:
        stream = self._writable(stream_id)
        if stream.pending:
            stream.pending += data
        elif len(data) <= stream.send_window and len(data) <= DATA_FRAME_BYTES_MAX:
            if data:  # fast path: no copy of the caller's bytes
                stream.send_window -= len(data)
                self._outbox.append(encode_header(DATA, 0, stream_id, len(data)))
                self._outbox.append(data)
        else:
            stream.pending += data
            self._flush(stream_id, stream)

    def close_write(self, stream_id: int) -> None:
        """Half-close: FIN after whatever is still pending."""
        stream = self._streams.get(stream_id)
        if stream is None or stream.local_fin or stream.pending_fin:
            return
        stream.pending_fin = True
        self._flush(stream_id, stream)

    def reset(self, stream_id: int) -> None:
        if self._streams.pop(stream_id, None) is not None:
            self._outbox.append(encode_header(WINDOW_UPDATE, RST, stream_id, 0))

    def consume(self, stream_id: int, size: int) -> None:
        """The application took `size` bytes of this stream: grant them back in batches."""
        stream = self._streams.get(stream_id)
        if stream is None or stream.remote_fin:
            return
        stream.unacked += size
        if stream.unacked >= self.window_bytes // 2:
            stream.receive_window += stream.unacked
            self._outbox.append(encode_header(WINDOW_UPDATE, 0, stream_id, stream.unacked))
            stream.unacked = 0

    def ping(self, opaque: int) -> None:
        self._outbox.append(encode_header(PING, SYN, 0, opaque & _U32_MAX))

    def go_away(self, code: int = GO_AWAY_NORMAL) -> None:
        if not self.local_gone_away:
            self.local_gone_away = True
            self._outbox.append(encode_header(GO_AWAY, 0, 0, code))

    def pending_bytes(self, stream_id: int) -> int:
        """Bytes written to the stream that wait for the peer's window."""
        stream = self._streams.get(stream_id)
        return len(stream.pending) if stream is not None else 0

    def take_finished(self) -> list[int]:
        """Streams closed both ways since the last call (resets are reported as events)."""
        out, self._finished = self._finished, []
        return out

    def is_open(self, stream_id: int) -> bool:
        return stream_id in self._streams

    @property
    def stream_count(self) -> int:
        return len(self._streams)

    def _writable(self, stream_id: int) -> _Stream:
        stream = self._streams.get(stream_id)
        if stream is None:
            raise StreamClosed(f"stream {stream_id} is closed or reset")
        if stream.local_fin or stream.pending_fin:
            raise StreamClosed(f"stream {stream_id} is closed for writing")
        return stream

    def _flush(self, stream_id: int, stream: _Stream) -> None:
        pending = stream.pending
        while pending and stream.send_window > 0:
            size = min(len(pending), stream.send_window, DATA_FRAME_BYTES_MAX)
            chunk = bytes(pending[:size])
            del pending[:size]
            stream.send_window -= size
            flags = FIN if stream.pending_fin and not pending else 0
            self._outbox.append(encode_header(DATA, flags, stream_id, size))
            self._outbox.append(chunk)
            if flags:
                self._sent_fin(stream_id, stream)
                return
        if stream.pending_fin and not pending and not stream.local_fin:
            self._outbox.append(encode_header(WINDOW_UPDATE, FIN, stream_id, 0))
            self._sent_fin(stream_id, stream)

    def _sent_fin(self, stream_id: int, stream: _Stream) -> None:
        stream.local_fin = True
        if stream.remote_fin:
            del self._streams[stream_id]
            self._finished.append(stream_id)

    # -- incoming -------------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview) -> list[Event]:
        buffer = self._buffer
        buffer += data
        events: list[Event] = []
        offset = 0
        end = len(buffer)
        unpack = HEADER.unpack_from
        try:
            while end - offset >= HEADER_BYTES:
                version, frame_type, flags, stream_id, length = unpack(buffer, offset)
                if version != VERSION or frame_type > GO_AWAY:
                    _check_header(version, frame_type)
                if frame_type == DATA:
                    # Checked on the header, so a frame beyond the window is never buffered.
                    self._check_data_length(flags, stream_id, length)
                    if end - offset - HEADER_BYTES < length:
                        break
                    start = offset + HEADER_BYTES
                    payload = bytes(buffer[start : start + length])
                    offset = start + length
                    self._on_stream_frame(events, DATA, flags, stream_id, length, payload)
                else:
                    offset += HEADER_BYTES
                    if frame_type == WINDOW_UPDATE:
                        self._on_stream_frame(events, WINDOW_UPDATE, flags, stream_id, length, b"")
                    elif frame_type == PING:
                        self._on_ping(events, flags, stream_id, length)
                    else:
                        self._on_go_away(events, stream_id, length)
        except ProtocolViolation:
            self.go_away(GO_AWAY_PROTOCOL_ERROR)
            raise
        finally:
            if offset:
                del buffer[:offset]
        return events

    def _check_data_length(self, flags: int, stream_id: int, length: int) -> None:
        stream = self._streams.get(stream_id)
        window = stream.receive_window if stream is not None and not flags & SYN else self.window_bytes
        if length > window:
            raise ProtocolViolation(
                f"yamux stream {stream_id}: {length} bytes exceed the {window}-byte window"
            )

    def _on_ping(self, events: list[Event], flags: int, stream_id: int, opaque: int) -> None:
        if stream_id != 0:
            raise ProtocolViolation("yamux ping on a stream")
        if flags & SYN:
            self._outbox.append(encode_header(PING, ACK, 0, opaque))
        elif flags & ACK:
            events.append(Pong(opaque=opaque))

    def _on_go_away(self, events: list[Event], stream_id: int, code: int) -> None:
        if stream_id != 0:
            raise ProtocolViolation("yamux go-away on a stream")
        self.remote_gone_away = True
        events.append(GoneAway(code=code))

    def _on_stream_frame(
        self, events: list[Event], frame_type: int, flags: int, stream_id: int, length: int, payload: bytes
    ) -> None:
        if stream_id == 0:
            raise ProtocolViolation("yamux stream frame on the session id")
        stream = self._streams.get(stream_id)
        if flags & SYN:
            stream = self._on_syn(events, stream_id, stream)
            if stream is None:
                return
        elif stream is None:
            # A frame for a stream we reset or finished: late, harmless, dropped.
            return
        if flags & ACK and stream_id % 2 != self._next_id % 2:
            raise ProtocolViolation(f"yamux ACK for stream {stream_id} that the peer opened")
        if frame_type == WINDOW_UPDATE:
            if stream.send_window + length > _U32_MAX:
                raise ProtocolViolation("yamux window beyond 2**32")
            stream.send_window += length
            if stream.pending or stream.pending_fin:
                self._flush(stream_id, stream)
        elif length:
            if stream.remote_fin:
                raise ProtocolViolation(f"yamux data on stream {stream_id} after its FIN")
            if length > stream.receive_window:
                raise ProtocolViolation(
                    f"yamux stream {stream_id}: {length} bytes exceed the {stream.receive_window}-byte window"
                )
            stream.receive_window -= length
            events.append(StreamData(stream_id=stream_id, data=payload))
        if flags & RST:
            del self._streams[stream_id]
            events.append(StreamReset(stream_id=stream_id))
        elif flags & FIN and not stream.remote_fin:
            stream.remote_fin = True
            events.append(StreamEnded(stream_id=stream_id))
            if stream.local_fin:
                del self._streams[stream_id]
                self._finished.append(stream_id)

    def _on_syn(self, events: list[Event], stream_id: int, stream: _Stream | None) -> _Stream | None:
        if stream_id % 2 == self._next_id % 2:
            raise ProtocolViolation(f"yamux SYN for stream {stream_id}, an id of ours")
        if stream is not None or stream_id <= self._last_remote_id:
            raise ProtocolViolation(f"yamux stream id {stream_id} reused")
        self._last_remote_id = stream_id
        if self.local_gone_away or len(self._streams) >= self.streams_max:
            self._refused += 1
            if self._refused > self.streams_max:
                raise ProtocolViolation(f"peer kept opening streams past {self.streams_max}")
            self._outbox.append(encode_header(WINDOW_UPDATE, RST, stream_id, 0))
            return None
        stream = _Stream(self.window_bytes)
        self._streams[stream_id] = stream
        self._outbox.append(
            encode_header(WINDOW_UPDATE, ACK, stream_id, self.window_bytes - INITIAL_WINDOW_BYTES)
        )
        events.append(StreamOpened(stream_id=stream_id))
        return stream
