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
instead of growing our memory. A stream whose reader keeps up (`consume(grow=True)`
finds less than a quarter of the window delivered and unread when it returns credit)
has its window doubled with that update, up to `stream_window_bytes_max`, while the
windows grown on the session stay within `session_growth_bytes_max`: a bulk stream
is then limited by the network, not by round trips, and a slow reader never grows.

Copies: written bytes are kept as views of the caller's `bytes` until the window lets
them go, and leave as frames (header + views) that `frames_to_send` hands over whole,
so the Noise layer can seal each frame into one message. Received DATA payloads are
views of the bytes given to `receive_data` (the caller must not change those bytes
afterwards) when they are at least half of those bytes; smaller ones are copied, so
buffered stream data never holds more than twice its size alive. A frame split across
calls is completed from the first bytes of the next call alone and copied once.

Bounds: a peer that overruns a window, reuses or misnumbers an id, sends a bad version
or type, or keeps opening streams past `streams_max` after being refused is a
`ProtocolViolation` (we answer GO_AWAY protocol-error); a stream beyond the limit is
refused with RST. Pure.
"""

from __future__ import annotations

import struct
from collections import deque
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
# A stream's window may grow to this while its reader keeps up; the extra credit of all
# grown streams of one session stays within the session's budget.
STREAM_WINDOW_BYTES_MAX = 8 * 1024 * 1024
SESSION_GROWTH_BYTES_MAX = 16 * 1024 * 1024
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
    data: bytes | memoryview


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


Frame = tuple[bytes | memoryview, ...]  # a header, then the payload's pieces


class _Stream:
    __slots__ = (
        "local_fin",
        "pending",
        "pending_fin",
        "pending_size",
        "receive_window",
        "remote_fin",
        "send_window",
        "unacked",
        "window",
    )

    def __init__(self, receive_window: int) -> None:
        self.send_window = INITIAL_WINDOW_BYTES
        self.window = receive_window  # credit we grant in all, grown for a reader that keeps up
        self.receive_window = receive_window  # of which the peer may still send
        self.unacked = 0  # consumed by the application, not yet granted back
        self.pending: deque[memoryview] = deque()  # written but beyond the send window
        self.pending_size = 0
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
        stream_window_bytes_max: int = STREAM_WINDOW_BYTES_MAX,
        session_growth_bytes_max: int = SESSION_GROWTH_BYTES_MAX,
    ) -> None:
        if not INITIAL_WINDOW_BYTES <= window_bytes <= WINDOW_BYTES_MAX:
            raise ValueError(f"window of {window_bytes} bytes")
        if stream_window_bytes_max > WINDOW_BYTES_MAX or session_growth_bytes_max < 0:
            raise ValueError("stream windows grow to 16 MiB at most, within a budget of 0 or more")
        self.initiator = initiator
        self.window_bytes = window_bytes
        self.stream_window_bytes_max = max(window_bytes, stream_window_bytes_max)
        self.session_growth_bytes_max = session_growth_bytes_max
        self.streams_max = streams_max
        self._next_id = 1 if initiator else 2
        self._last_remote_id = 0
        self._streams: dict[int, _Stream] = {}
        self._refused = 0
        self._buffer = bytearray()
        self._outbox: list[Frame] = []
        self._finished: list[int] = []
        self.local_gone_away = False
        self.remote_gone_away = False

    # -- outgoing -------------------------------------------------------------------

    def data_to_send(self) -> list[bytes | memoryview]:
        """Frames queued so far, in order, as pieces; the caller sends them as one byte stream."""
        return [piece for frame in self.frames_to_send() for piece in frame]

    def frames_to_send(self) -> list[Frame]:
        """Frames queued so far, in order, each a header and its payload's pieces."""
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
            (encode_header(WINDOW_UPDATE, SYN, stream_id, self.window_bytes - INITIAL_WINDOW_BYTES),)
        )
        return stream_id

    def write(self, stream_id: int, data: bytes | bytearray | memoryview) -> None:
        stream = self._writable(stream_id)
        if not data:
            return
        # Kept as a view until sent: only immutable bytes (or a view of them) are safe to keep.
        if isinstance(data, memoryview) and isinstance(data.obj, bytes):
            view = data
        else:
            view = memoryview(data if isinstance(data, bytes) else bytes(data))
        stream.pending.append(view)
        stream.pending_size += len(view)
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
            self._outbox.append((encode_header(WINDOW_UPDATE, RST, stream_id, 0),))

    def consume(self, stream_id: int, size: int, *, grow: bool = False) -> None:
        """The application took `size` bytes of this stream: grant them back in batches.

        With `grow`, a stream whose reader keeps up gets a larger window (module doc)."""
        stream = self._streams.get(stream_id)
        if stream is None or stream.remote_fin:
            return
        stream.unacked += size
        if stream.unacked < stream.window // 2:
            return
        grant = stream.unacked
        if grow and stream.window < self.stream_window_bytes_max:
            unread = stream.window - stream.receive_window - stream.unacked
            if unread * 4 < stream.window:
                grant += self._growth(stream)
        stream.receive_window += grant
        self._outbox.append((encode_header(WINDOW_UPDATE, 0, stream_id, grant),))
        stream.unacked = 0

    def _growth(self, stream: _Stream) -> int:
        grown = sum(other.window - self.window_bytes for other in self._streams.values())
        extra = min(
            stream.window,
            self.stream_window_bytes_max - stream.window,
            self.session_growth_bytes_max - grown,
        )
        if extra <= 0:
            return 0
        stream.window += extra
        return extra

    def ping(self, opaque: int) -> None:
        self._outbox.append((encode_header(PING, SYN, 0, opaque & _U32_MAX),))

    def go_away(self, code: int = GO_AWAY_NORMAL) -> None:
        if not self.local_gone_away:
            self.local_gone_away = True
            self._outbox.append((encode_header(GO_AWAY, 0, 0, code),))

    def pending_bytes(self, stream_id: int) -> int:
        """Bytes written to the stream that wait for the peer's window."""
        stream = self._streams.get(stream_id)
        return stream.pending_size if stream is not None else 0

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
        while stream.pending_size and stream.send_window > 0:
            size = min(stream.pending_size, stream.send_window, DATA_FRAME_BYTES_MAX)
            stream.pending_size -= size
            stream.send_window -= size
            flags = FIN if stream.pending_fin and not stream.pending_size else 0
            frame: list[bytes | memoryview] = [encode_header(DATA, flags, stream_id, size)]
            need = size
            while need:
                head = pending[0]
                if len(head) <= need:
                    frame.append(pending.popleft())
                    need -= len(head)
                else:
                    frame.append(head[:need])
                    pending[0] = head[need:]
                    need = 0
            self._outbox.append(tuple(frame))
            if flags:
                self._sent_fin(stream_id, stream)
                return
        if stream.pending_fin and not stream.pending_size and not stream.local_fin:
            self._outbox.append((encode_header(WINDOW_UPDATE, FIN, stream_id, 0),))
            self._sent_fin(stream_id, stream)

    def _sent_fin(self, stream_id: int, stream: _Stream) -> None:
        stream.local_fin = True
        if stream.remote_fin:
            del self._streams[stream_id]
            self._finished.append(stream_id)

    # -- incoming -------------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview) -> list[Event]:
        """Events of every whole frame; DATA payloads are views of `data` (keep it unchanged)."""
        events: list[Event] = []
        view = memoryview(data)
        offset = 0
        try:
            if self._buffer:
                offset = self._complete_buffered(view, events)
                if offset < 0:
                    return events
            offset = self._parse(view, offset, events)
        except ProtocolViolation:
            self.go_away(GO_AWAY_PROTOCOL_ERROR)
            raise
        if offset < len(view):
            self._buffer += view[offset:]
        return events

    def _complete_buffered(self, view: memoryview, events: list[Event]) -> int:
        """Complete the frame begun in the buffer from the first bytes of `view` (checked on
        its header first, so a frame beyond the window is never buffered) and handle it.
        Returns the bytes of `view` taken, or -1 when all of them were."""
        buffer = self._buffer
        taken = 0
        if len(buffer) < HEADER_BYTES:
            taken = min(HEADER_BYTES - len(buffer), len(view))
            buffer += view[:taken]
            if len(buffer) < HEADER_BYTES:
                return -1
        version, frame_type, flags, stream_id, length = HEADER.unpack_from(buffer)
        _check_header(version, frame_type)
        size = HEADER_BYTES
        if frame_type == DATA:
            self._check_data_length(flags, stream_id, length)
            size += int(length)
        step = min(size - len(buffer), len(view) - taken)
        buffer += view[taken : taken + step]
        if len(buffer) < size:
            return -1
        frame = bytes(buffer)
        buffer.clear()
        self._parse(memoryview(frame), 0, events)
        return taken + step

    def _parse(self, view: memoryview, offset: int, events: list[Event]) -> int:
        """Handle the whole frames of `view` from `offset`; the offset of the first partial one."""
        end = len(view)
        unpack = HEADER.unpack_from
        while end - offset >= HEADER_BYTES:
            version, frame_type, flags, stream_id, length = unpack(view, offset)
            if version != VERSION or frame_type > GO_AWAY:
                _check_header(version, frame_type)
            if frame_type == DATA:
                # Checked on the header, so a frame beyond the window is never buffered.
                self._check_data_length(flags, stream_id, length)
                if end - offset - HEADER_BYTES < length:
                    break
                start = offset + HEADER_BYTES
                payload: bytes | memoryview = view[start : start + length]
                if length * 2 < end:
                    # A view keeps all of `data` alive: small payloads are copied, so
                    # a peer cannot pin a large buffer with a byte of stream data.
                    payload = bytes(payload)
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
        return offset

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
            self._outbox.append((encode_header(PING, ACK, 0, opaque),))
        elif flags & ACK:
            events.append(Pong(opaque=opaque))

    def _on_go_away(self, events: list[Event], stream_id: int, code: int) -> None:
        if stream_id != 0:
            raise ProtocolViolation("yamux go-away on a stream")
        self.remote_gone_away = True
        events.append(GoneAway(code=code))

    def _on_stream_frame(
        self,
        events: list[Event],
        frame_type: int,
        flags: int,
        stream_id: int,
        length: int,
        payload: bytes | memoryview,
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
            if stream.pending_size or stream.pending_fin:
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
            self._outbox.append((encode_header(WINDOW_UPDATE, RST, stream_id, 0),))
            return None
        stream = _Stream(self.window_bytes)
        self._streams[stream_id] = stream
        self._outbox.append(
            (encode_header(WINDOW_UPDATE, ACK, stream_id, self.window_bytes - INITIAL_WINDOW_BYTES),)
        )
        events.append(StreamOpened(stream_id=stream_id))
        return stream
