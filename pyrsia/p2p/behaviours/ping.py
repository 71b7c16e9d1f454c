"""ping: liveness and round-trip time over a stream (`/ipfs/ping/1.0.0`).

libp2p/specs ping/ping.md: the dialer writes 32 random bytes, the responder echoes
them; a stream may carry many pings. The responder echoes each whole 32 bytes as they
arrive (js-libp2p keeps one ping stream open and pings it periodically). The payload
comes from the caller and the clock stays in the shell: this module only matches
bytes. Pure.
"""

from __future__ import annotations

from pyrsia.errors import ProtocolViolation

PROTOCOL_ID = "/ipfs/ping/1.0.0"
PAYLOAD_BYTES = 32


class Responder:
    """Echoes every complete 32-byte block; keeps a partial one for the next call."""

    def __init__(self) -> None:
        self._partial = b""

    def receive_data(self, data: bytes) -> bytes:
        buffered = self._partial + data
        whole = len(buffered) - len(buffered) % PAYLOAD_BYTES
        self._partial = buffered[whole:]
        return buffered[:whole]


class Pinger:
    """One outstanding ping: `request(payload)` to send, then `receive_data` until it matches."""

    def __init__(self) -> None:
        self._expected = b""
        self._received = b""

    def request(self, payload: bytes) -> bytes:
        if len(payload) != PAYLOAD_BYTES:
            raise ValueError("a ping payload is 32 bytes")
        if self._expected:
            raise RuntimeError("a ping is already outstanding")
        self._expected = payload
        self._received = b""
        return payload

    @property
    def outstanding(self) -> bool:
        return bool(self._expected)

    def receive_data(self, data: bytes) -> bool:
        """True once the whole echo arrived; a wrong echo is a violation."""
        if not self._expected:
            raise ProtocolViolation("ping echo nobody asked for")
        self._received += data
        if len(self._received) > PAYLOAD_BYTES or not self._expected.startswith(self._received):
            raise ProtocolViolation("ping echo does not match")
        if len(self._received) == PAYLOAD_BYTES:
            self._expected = b""
            self._received = b""
            return True
        return False
