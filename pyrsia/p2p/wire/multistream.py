"""multistream-select 1.0: agreeing on a protocol for a connection or a stream.

Wire (multiformats/multistream-select): every message is a line, the varint length of
UTF-8 text plus its trailing `\\n`. Both sides open with `/multistream/1.0.0`; the
dialer proposes a protocol, the listener echoes it to accept or answers `na`, and the
dialer may propose the next. Like js-libp2p the dialer sends the header and its first
proposal in one write, and bytes that follow the accepting line already belong to the
agreed protocol (`remainder`). The same two machines negotiate `/noise` and
`/yamux/1.0.0` on a connection and each protocol on a yamux stream.

Bounds: a line is at most `LINE_BYTES_MAX` bytes, a listener hears at most
`PROPOSALS_MAX` proposals; anything else is a `ProtocolViolation`. Pure.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pyrsia.errors import ProtocolViolation
from pyrsia.p2p.wire import varint

PROTOCOL_ID = "/multistream/1.0.0"
NOT_AVAILABLE = "na"
LINE_BYTES_MAX = 1024
PROPOSALS_MAX = 16


def encode_line(text: str) -> bytes:
    raw = text.encode() + b"\n"
    if len(raw) > LINE_BYTES_MAX:
        raise ValueError(f"multistream line of {len(raw)} bytes")
    return varint.encode(len(raw)) + raw


class LineReader:
    """Splits bytes into multistream lines; keeps what follows the lines read so far."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def feed(self, data: bytes) -> None:
        self.buffer += data

    def next_line(self) -> str | None:
        head = varint.decode(self.buffer)
        if head is None:
            return None
        length, start = head
        if not 1 <= length <= LINE_BYTES_MAX:
            raise ProtocolViolation(f"multistream line of {length} bytes")
        if len(self.buffer) - start < length:
            return None
        raw = bytes(self.buffer[start : start + length])
        del self.buffer[: start + length]
        if not raw.endswith(b"\n"):
            raise ProtocolViolation("multistream line without its newline")
        try:
            return raw[:-1].decode()
        except UnicodeDecodeError as exc:
            raise ProtocolViolation("multistream line is not UTF-8") from exc

    def take_rest(self) -> bytes:
        rest = bytes(self.buffer)
        self.buffer.clear()
        return rest


class Dialer:
    """Proposes `protocols` in order until one is accepted or all are refused."""

    def __init__(self, protocols: Sequence[str]) -> None:
        if not protocols:
            raise ValueError("nothing to propose")
        self._protocols = list(protocols)
        self._index = 0
        self._header_seen = False
        self._reader = LineReader()
        self.selected: str | None = None
        self.refused = False
        self.remainder = b""

    @property
    def done(self) -> bool:
        return self.selected is not None or self.refused

    def initial(self) -> bytes:
        return encode_line(PROTOCOL_ID) + encode_line(self._protocols[0])

    def receive_data(self, data: bytes) -> bytes:
        """Bytes to send in answer (the next proposal after an `na`)."""
        if self.done:
            raise ProtocolViolation("multistream data after negotiation ended")
        self._reader.feed(data)
        out = b""
        while not self.done and (line := self._reader.next_line()) is not None:
            if not self._header_seen:
                if line != PROTOCOL_ID:
                    raise ProtocolViolation(f"expected {PROTOCOL_ID}, got {line[:80]!r}")
                self._header_seen = True
            elif line == self._protocols[self._index]:
                self.selected = line
                self.remainder = self._reader.take_rest()
            elif line == NOT_AVAILABLE:
                self._index += 1
                if self._index == len(self._protocols):
                    self.refused = True
                else:
                    out += encode_line(self._protocols[self._index])
            else:
                raise ProtocolViolation(f"unexpected multistream answer {line[:80]!r}")
        return out


class Listener:
    """Answers proposals: echoes the first one `supports` accepts, `na` to the others."""

    def __init__(self, supports: Callable[[str], bool]) -> None:
        self._supports = supports
        self._header_seen = False
        self._proposals = 0
        self._reader = LineReader()
        self.selected: str | None = None
        self.remainder = b""

    @property
    def done(self) -> bool:
        return self.selected is not None

    def receive_data(self, data: bytes) -> bytes:
        if self.done:
            raise ProtocolViolation("multistream data after negotiation ended")
        self._reader.feed(data)
        out = b""
        while not self.done and (line := self._reader.next_line()) is not None:
            if not self._header_seen:
                if line != PROTOCOL_ID:
                    raise ProtocolViolation(f"expected {PROTOCOL_ID}, got {line[:80]!r}")
                self._header_seen = True
                out += encode_line(PROTOCOL_ID)
                continue
            self._proposals += 1
            if self._proposals > PROPOSALS_MAX:
                raise ProtocolViolation(f"more than {PROPOSALS_MAX} multistream proposals")
            if line != NOT_AVAILABLE and line != "ls" and self._supports(line):
                self.selected = line
                self.remainder = self._reader.take_rest()
                out += encode_line(line)
            else:
                out += encode_line(NOT_AVAILABLE)
        return out
