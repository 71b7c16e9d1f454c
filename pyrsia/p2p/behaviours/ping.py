"""ping: liveness and round-trip time over a stream (`/ipfs/ping/1.0.0`).

libp2p/specs ping/ping.md: the dialer writes 32 random bytes, the responder echoes
them; a stream may carry many pings. The responder echoes each whole 32 bytes as they
arrive (js-libp2p keeps one ping stream open and pings it periodically). The payload
comes from an injected source and time arrives as `now_s`: `Responder` and `Pinger`
only match bytes; `Ping` is the behaviour the swarm drives. Pure.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pyrsia.errors import ProtocolViolation
from pyrsia.p2p.swarm import behaviour as sw

PROTOCOL_ID = "/ipfs/ping/1.0.0"
PAYLOAD_BYTES = 32
RESPONDERS_PER_CONN_MAX = 2
_TAG = "ping"


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


@dataclass(frozen=True, slots=True, kw_only=True)
class PingResult:
    """The outcome of one `Ping.start`: a round trip in seconds, or why there is none."""

    tag: object
    rtt_s: float | None = None
    error: str = ""


@dataclass(slots=True)
class _Outbound:
    stream: int | None = None
    opening: bool = False
    pinger: Pinger = field(default_factory=Pinger)
    waiting: deque[object] = field(default_factory=deque)
    started_s: float = 0.0


class Ping:
    """The ping behaviour: echoes peers' pings, measures ours on one stream per connection.

    At most `responders_per_conn_max` inbound ping streams per connection are echoed at
    once (more are reset and counted), so a peer cannot make us hold many.
    """

    protocols = (PROTOCOL_ID,)

    def __init__(
        self, random_bytes: Callable[[int], bytes], *, responders_per_conn_max: int = RESPONDERS_PER_CONN_MAX
    ) -> None:
        self._random = random_bytes
        self._responders_max = responders_per_conn_max
        self._responders: dict[tuple[int, int], Responder] = {}
        self._outbound: dict[int, _Outbound] = {}
        self.refusals: Counter[str] = Counter()

    def start(self, conn: int, tag: object, now_s: float) -> list[sw.Effect]:
        """Ping the peer on `conn`; a `PingResult` with `tag` is reported."""
        out = self._outbound.setdefault(conn, _Outbound())
        out.waiting.append(tag)
        if out.stream is None:
            if out.opening:
                return []
            out.opening = True
            return [sw.OpenStream(conn=conn, protocols=(PROTOCOL_ID,), tag=_TAG)]
        return self._send_next(conn, out, now_s)

    def tick(self, now_s: float) -> Sequence[sw.Effect]:
        return ()

    def on_event(self, event: sw.Event, now_s: float) -> Sequence[sw.Effect]:
        match event:
            case sw.ConnectionDown(conn=conn):
                for key in [k for k in self._responders if k[0] == conn]:
                    del self._responders[key]
                out = self._outbound.pop(conn, None)
                return self._fail(conn, out, "connection closed")
            case sw.InboundStream(conn=conn, stream=stream):
                if sum(1 for k in self._responders if k[0] == conn) >= self._responders_max:
                    self.refusals["ping_streams"] += 1
                    return [sw.ResetStream(conn=conn, stream=stream)]
                self._responders[(conn, stream)] = Responder()
            case sw.StreamOpened(conn=conn, stream=stream):
                out = self._outbound.setdefault(conn, _Outbound())
                out.stream, out.opening = stream, False
                return self._send_next(conn, out, now_s)
            case sw.StreamData(conn=conn, stream=stream, data=data):
                return self._on_data(conn, stream, data, now_s)
            case sw.StreamEnded(conn=conn, stream=stream):
                if self._responders.pop((conn, stream), None) is not None:
                    return [sw.CloseStream(conn=conn, stream=stream)]
                out = self._outbound.get(conn)
                if out is not None and out.stream == stream:
                    del self._outbound[conn]
                    return [
                        sw.CloseStream(conn=conn, stream=stream),
                        *self._fail(conn, out, "ping stream closed"),
                    ]
            case sw.StreamGone(conn=conn, stream=stream, reason=reason):
                if stream is not None and self._responders.pop((conn, stream), None) is not None:
                    return []
                out = self._outbound.get(conn)
                if out is not None and (stream is None or out.stream == stream):
                    del self._outbound[conn]
                    return self._fail(conn, out, reason)
        return ()

    def _on_data(self, conn: int, stream: int, data: bytes, now_s: float) -> list[sw.Effect]:
        responder = self._responders.get((conn, stream))
        if responder is not None:
            echo = responder.receive_data(data)
            return [sw.Write(conn=conn, stream=stream, data=echo)] if echo else []
        out = self._outbound.get(conn)
        if out is None or out.stream != stream:
            return []
        try:
            done = out.pinger.receive_data(data)
        except ProtocolViolation as exc:
            del self._outbound[conn]
            return [sw.ResetStream(conn=conn, stream=stream), *self._fail(conn, out, str(exc))]
        if not done:
            return []
        tag = out.waiting.popleft()
        result = PingResult(tag=tag, rtt_s=now_s - out.started_s)
        return [sw.Report(conn=conn, outcome=result), *self._send_next(conn, out, now_s)]

    def _send_next(self, conn: int, out: _Outbound, now_s: float) -> list[sw.Effect]:
        if out.stream is None or not out.waiting or out.pinger.outstanding:
            return []
        out.started_s = now_s
        payload = out.pinger.request(self._random(PAYLOAD_BYTES))
        return [sw.Write(conn=conn, stream=out.stream, data=payload)]

    @staticmethod
    def _fail(conn: int, out: _Outbound | None, reason: str) -> list[sw.Effect]:
        if out is None:
            return []
        return [sw.Report(conn=conn, outcome=PingResult(tag=tag, error=reason)) for tag in out.waiting]
