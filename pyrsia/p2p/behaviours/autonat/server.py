"""The AutoNAT v2 server: dial a client's address back, and say whether it worked.

libp2p/specs autonat/autonat-v2.md: a client opens `/libp2p/autonat/2/dial-request`
and sends a `DialRequest` (addresses in priority order, a nonce). The server picks the
first address it is willing to dial and MUST NOT dial any other; when that address's
IP differs from the one the client connects from, it first asks for 30k to 100k bytes
of dial data (`DialDataRequest`, answered by `DialDataResponse` pieces of at most 4096
bytes each), so the client pays more bandwidth than the handshake the server would
send a third party ("Amplification Attack Prevention"). It then dials the address on a
*new* connection, opens `/libp2p/autonat/2/dial-back`, writes `DialBack{nonce}`, reads
the `DialBackResponse`, closes that connection, and answers `DialResponse{status,
addrIdx, dialStatus}` on the request stream.

Which address is dialable: a direct TCP address to an IP literal (no names: resolving
is I/O, and a name can point anywhere), of a family this server can reach
(`families`), whose `/p2p/` component, if any, is the client's own peer id. A client
connecting from a public IP may only ask for public addresses (the spec: the server
SHOULD NOT dial private addresses); one on a private network may also ask for private
ones (a lab or company network), one on loopback for loopback too. Link-local and
relayed addresses never. No dialable address answers `E_DIAL_REFUSED`.

Bounds, each refusal counted by name in `refusals`: requests per minute in total and
per peer, dial-data requests per minute in total, requests in flight at once in total
and per peer (one), dial-backs at once (`dial_backs_concurrent_max`), message size,
dial-data pieces. A request over a rate or concurrency limit is answered
`E_REQUEST_REJECTED`; a connection refused `REFUSALS_PER_MINUTE_MAX` times in a
minute is closed (a client in a loop). A malformed message resets that stream only.
Requests that do not finish reading within `request_timeout_s`, and dial-backs not
done within `dial_back_timeout_s`, are ended by `tick`.

What the seam lacks, asked of the host:
* the dial: the server reports `DialBackRequested(peer, address, tag)`; the host dials
  `address` on a new connection (not reusing the listen port: the spec warns it could
  punch a hole) and calls `dial_back_connected(tag, conn, now_s)` with that connection,
  or `dial_back_failed(tag, reason, now_s)`. The server closes that connection itself
  when done, so it must be one made for this dial-back alone.
* a timer: the host calls `tick(now_s)` about once a second.
Pure.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pyrsia.errors import ProtocolViolation
from pyrsia.p2p.behaviours.autonat import messages as m
from pyrsia.p2p.behaviours.autonat.admission import RequestAdmission, prune
from pyrsia.p2p.ipnet import unmapped
from pyrsia.p2p.swarm import behaviour as sw
from pyrsia.p2p.swarm.addresses import IPAddress, ip_of, kind_of
from pyrsia.p2p.wire import varint
from pyrsia.p2p.wire.multiaddr import Multiaddr

DIAL_DATA_BYTES_MIN = 30_000  # libp2p/specs autonat-v2.md: servers SHOULD ask for 30k to 100k bytes
DIAL_DATA_BYTES_MAX = 100_000
REQUESTS_PER_MINUTE_MAX = 60
REQUESTS_PER_PEER_PER_MINUTE_MAX = 12
DIAL_DATA_REQUESTS_PER_MINUTE_MAX = 12
REQUESTS_CONCURRENT_MAX = 16
REQUESTS_PER_PEER_CONCURRENT_MAX = 1
DIAL_BACKS_CONCURRENT_MAX = 4
REQUEST_TIMEOUT_S = 15.0
DIAL_BACK_TIMEOUT_S = 15.0
REFUSALS_PER_MINUTE_MAX = 30  # then the client asks in a loop: its connection closes

# What a client may ask us to dial, by where it connects from.
_ALLOWED_KINDS = {
    "public": frozenset({"public"}),
    "private": frozenset({"public", "private"}),
    "loopback": frozenset({"public", "private", "loopback"}),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class DialBackTag:
    """Names one dial-back: the tag of `DialBackRequested` and of the dial-back stream."""

    request: int


@dataclass(frozen=True, slots=True, kw_only=True)
class DialBackRequested:
    """For the host: dial `address` (the client `peer`) on a new connection, then call back."""

    peer: str
    address: Multiaddr
    tag: DialBackTag


@dataclass(frozen=True, slots=True, kw_only=True)
class DialBackServed:
    """A request answered: the address dialled and the dial status sent (for metrics)."""

    peer: str
    address: Multiaddr
    dial_status: int


@dataclass(slots=True, kw_only=True)
class _Request:
    id: int
    conn: int
    stream: int
    peer: str
    opened_s: float
    reader: varint.LengthPrefixedReader = field(
        default_factory=lambda: varint.LengthPrefixedReader(size_max=m.MESSAGE_BYTES_MAX)
    )
    state: str = "reading"  # reading | dial-data | dialing | dialed | done
    orphan: bool = False  # the request stream is gone: dial on, answer nobody
    addr_idx: int = 0
    address: Multiaddr | None = None
    nonce: int = 0
    data_needed: int = 0
    data_received: int = 0
    dial_started_s: float = 0.0
    dial_conn: int | None = None
    dial_stream: int | None = None
    dial_reader: varint.LengthPrefixedReader = field(
        default_factory=lambda: varint.LengthPrefixedReader(size_max=m.DIAL_BACK_BYTES_MAX)
    )


class AutonatServer:
    """Answers `/libp2p/autonat/2/dial-request`; dials back through the host."""

    protocols = (m.DIAL_REQUEST_PROTOCOL,)

    def __init__(
        self,
        random_bytes: Callable[[int], bytes],
        *,
        families: frozenset[int] = frozenset({4, 6}),
        requests_per_minute_max: int = REQUESTS_PER_MINUTE_MAX,
        requests_per_peer_per_minute_max: int = REQUESTS_PER_PEER_PER_MINUTE_MAX,
        dial_data_requests_per_minute_max: int = DIAL_DATA_REQUESTS_PER_MINUTE_MAX,
        requests_concurrent_max: int = REQUESTS_CONCURRENT_MAX,
        dial_backs_concurrent_max: int = DIAL_BACKS_CONCURRENT_MAX,
        request_timeout_s: float = REQUEST_TIMEOUT_S,
        dial_back_timeout_s: float = DIAL_BACK_TIMEOUT_S,
    ) -> None:
        self._random = random_bytes
        self._families = families
        self._admission = RequestAdmission(
            rate_max=requests_per_minute_max,
            peer_rate_max=requests_per_peer_per_minute_max,
            concurrent_max=requests_concurrent_max,
            peer_concurrent_max=REQUESTS_PER_PEER_CONCURRENT_MAX,
        )
        self._data_rate_max = dial_data_requests_per_minute_max
        self._dial_backs_max = dial_backs_concurrent_max
        self._request_timeout_s = request_timeout_s
        self._dial_back_timeout_s = dial_back_timeout_s
        self._conns: dict[int, tuple[str, Multiaddr]] = {}
        self._requests: dict[int, _Request] = {}
        self._by_stream: dict[tuple[int, int], int] = {}
        self._by_dial_stream: dict[tuple[int, int], int] = {}
        self._dial_data_asked: deque[float] = deque()
        self._refused_by_conn: dict[int, deque[float]] = {}
        self._next_id = 0
        self.refusals: Counter[str] = Counter()

    # -- inputs ------------------------------------------------------------------------

    def on_event(self, event: sw.Event, now_s: float) -> Sequence[sw.Effect]:
        match event:
            case sw.ConnectionUp(conn=conn, peer=peer, remote=remote):
                self._conns[conn] = (peer, remote)
            case sw.ConnectionDown(conn=conn):
                return self._connection_down(conn)
            case sw.InboundStream(conn=conn, stream=stream):
                return self._admit(conn, stream, now_s)
            case sw.StreamOpened(conn=conn, stream=stream, tag=DialBackTag() as opened):
                return self._dial_back_opened(opened.request, conn, stream)
            case sw.StreamData(conn=conn, stream=stream, data=data):
                if (rid := self._by_stream.get((conn, stream))) is not None:
                    return self._request_data(self._requests[rid], data, now_s)
                if (rid := self._by_dial_stream.get((conn, stream))) is not None:
                    return self._dial_back_data(self._requests[rid], data)
            case sw.StreamEnded(conn=conn, stream=stream):
                if (rid := self._by_stream.get((conn, stream))) is not None:
                    request = self._requests[rid]
                    if request.state in ("reading", "dial-data"):
                        self._unpaid(request)
                        self._forget(request)
                        return [sw.CloseStream(conn=conn, stream=stream)]
                if (rid := self._by_dial_stream.get((conn, stream))) is not None:
                    return self._finish(self._requests[rid], m.DIAL_BACK_ERROR)
            case sw.StreamGone(conn=conn, stream=stream, tag=tag):
                if isinstance(tag, DialBackTag) and tag.request in self._requests:
                    return self._finish(self._requests[tag.request], m.DIAL_BACK_ERROR)
                if stream is not None and (rid := self._by_stream.get((conn, stream))) is not None:
                    return self._request_gone(self._requests[rid])
                if stream is not None and (rid := self._by_dial_stream.get((conn, stream))) is not None:
                    return self._finish(self._requests[rid], m.DIAL_BACK_ERROR)
        return ()

    def dial_back_connected(self, tag: DialBackTag, conn: int, now_s: float) -> list[sw.Effect]:
        """The host's dial for `tag` succeeded on the new connection `conn`."""
        request = self._requests.get(tag.request)
        if request is None or request.state != "dialing":
            return [sw.CloseConnection(conn=conn, reason="autonat dial-back no longer wanted")]
        request.state = "dialed"
        request.dial_conn = conn
        return [sw.OpenStream(conn=conn, protocols=(m.DIAL_BACK_PROTOCOL,), tag=tag)]

    def dial_back_failed(self, tag: DialBackTag, reason: str, now_s: float) -> list[sw.Effect]:
        """The host could not connect to the address of `tag`: the address is unreachable."""
        request = self._requests.get(tag.request)
        if request is None or request.state != "dialing":
            return []
        return self._finish(request, m.DIAL_ERROR)

    def tick(self, now_s: float) -> list[sw.Effect]:
        effects: list[sw.Effect] = []
        for request in list(self._requests.values()):
            if (
                request.state in ("reading", "dial-data")
                and now_s - request.opened_s > self._request_timeout_s
            ):
                self.refusals["autonat_request_timeout"] += 1
                self._forget(request)
                effects.append(sw.ResetStream(conn=request.conn, stream=request.stream))
            elif (
                request.state in ("dialing", "dialed")
                and now_s - request.dial_started_s > self._dial_back_timeout_s
            ):
                status = m.DIAL_ERROR if request.state == "dialing" else m.DIAL_BACK_ERROR
                effects += self._finish(request, status)
        return effects

    @property
    def dial_backs(self) -> int:
        """Dial-backs under way (dialling, or the dial-back stream open)."""
        return sum(1 for r in self._requests.values() if r.state in ("dialing", "dialed"))

    def _dial_slots_taken(self) -> int:
        # A request paying dial data holds its slot already: it must not pay for nothing.
        return sum(1 for r in self._requests.values() if r.state in ("dial-data", "dialing", "dialed"))

    # -- admission ---------------------------------------------------------------------

    def _admit(self, conn: int, stream: int, now_s: float) -> list[sw.Effect]:
        known = self._conns.get(conn)
        if known is None:
            return [sw.ResetStream(conn=conn, stream=stream)]
        peer = known[0]
        live = [r.peer for r in self._requests.values() if not r.orphan]
        if (reason := self._admission.refusal(peer, live, now_s)) is not None:
            return self._reject(conn, stream, f"autonat_{reason}", now_s)
        self._admission.accept(peer, now_s)
        self._next_id += 1
        request = _Request(id=self._next_id, conn=conn, stream=stream, peer=peer, opened_s=now_s)
        self._requests[request.id] = request
        self._by_stream[(conn, stream)] = request.id
        return []

    def _reject(self, conn: int, stream: int, reason: str, now_s: float) -> list[sw.Effect]:
        self.refusals[reason] += 1
        refused = self._refused_by_conn.setdefault(conn, deque())
        prune(refused, now_s)
        refused.append(now_s)
        if len(refused) > REFUSALS_PER_MINUTE_MAX:
            self.refusals["autonat_flood"] += 1
            return [sw.CloseConnection(conn=conn, reason="autonat requests in a loop")]
        return _answer(conn, stream, m.DialResponse(status=m.E_REQUEST_REJECTED))

    # -- the request stream ------------------------------------------------------------

    def _request_data(self, request: _Request, data: bytes, now_s: float) -> list[sw.Effect]:
        effects: list[sw.Effect] = []
        try:
            request.reader.feed(data)
            while request.state != "done" and (body := request.reader.next_message()) is not None:
                effects += self._request_message(request, m.decode_body(body), now_s)
        except ProtocolViolation:
            self.refusals["autonat_malformed"] += 1
            if request.state in ("dialing", "dialed"):
                self._request_gone(request)  # the dial-back under way ends on its own
            else:
                self._forget(request)
            return [*effects, sw.ResetStream(conn=request.conn, stream=request.stream)]
        return effects

    def _request_message(self, request: _Request, message: m.Message, now_s: float) -> list[sw.Effect]:
        match request.state, message:
            case "reading", m.DialRequest():
                return self._dial_request(request, message, now_s)
            case "dial-data", m.DialDataResponse(data=data):
                request.data_received += len(data)
                if request.data_received >= request.data_needed:
                    return self._dial(request, now_s)
                return []
            case "dialing" | "dialed", m.DialDataResponse():
                return []  # data sent past what was asked: harmless, already paid for
        raise ProtocolViolation(f"autonat: unexpected {type(message).__name__} while {request.state}")

    def _dial_request(self, request: _Request, message: m.DialRequest, now_s: float) -> list[sw.Effect]:
        peer, remote = self._conns[request.conn]
        chosen = self._select(message.addrs, peer, remote)
        if chosen is None:
            self.refusals["autonat_no_dialable_address"] += 1
            self._forget(request)
            return _answer(request.conn, request.stream, m.DialResponse(status=m.E_DIAL_REFUSED))
        request.addr_idx, request.address = chosen
        request.nonce = message.nonce
        if self._dial_slots_taken() >= self._dial_backs_max:
            self._forget(request)
            return self._reject(request.conn, request.stream, "autonat_dial_backs_busy", now_s)
        if _client_ip(remote) == unmapped(ip_of(request.address)):
            return self._dial(request, now_s)
        # libp2p/specs autonat-v2.md "Amplification Attack Prevention": another IP costs dial data.
        prune(self._dial_data_asked, now_s)
        if len(self._dial_data_asked) >= self._data_rate_max:
            self._forget(request)
            return self._reject(request.conn, request.stream, "autonat_dial_data_rate", now_s)
        self._dial_data_asked.append(now_s)
        span = DIAL_DATA_BYTES_MAX - DIAL_DATA_BYTES_MIN + 1
        request.data_needed = DIAL_DATA_BYTES_MIN + int.from_bytes(self._random(4), "big") % span
        request.state = "dial-data"
        ask = m.DialDataRequest(addr_idx=request.addr_idx, num_bytes=request.data_needed)
        return [sw.Write(conn=request.conn, stream=request.stream, data=m.encode(ask))]

    def _select(self, addrs: tuple[bytes, ...], peer: str, remote: Multiaddr) -> tuple[int, Multiaddr] | None:
        client_kind = "public" if remote.is_relayed else kind_of(remote)
        allowed = _ALLOWED_KINDS.get(client_kind, _ALLOWED_KINDS["public"])
        for index, raw in enumerate(addrs):
            try:
                address = Multiaddr.from_bytes(raw)
            except ProtocolViolation:
                continue  # a transport we do not speak
            ip, endpoint = unmapped(ip_of(address)), address.tcp_endpoint()
            if address.is_relayed or endpoint is None or ip is None or endpoint[1] == 0:
                continue
            if address.peer_id not in (None, peer):
                continue
            if ip.version not in self._families or kind_of(address) not in allowed:
                continue
            return index, address.without_peer()
        return None

    def _dial(self, request: _Request, now_s: float) -> list[sw.Effect]:
        assert request.address is not None
        request.state = "dialing"
        request.dial_started_s = now_s
        tag = DialBackTag(request=request.id)
        asked = DialBackRequested(peer=request.peer, address=request.address, tag=tag)
        return [sw.Report(conn=request.conn, outcome=asked)]

    def _unpaid(self, request: _Request) -> None:
        # The client refused the cost (the spec: it resets) or never meant to pay: no dial.
        if request.state == "dial-data":
            self.refusals["autonat_dial_data_unpaid"] += 1

    def _request_gone(self, request: _Request) -> list[sw.Effect]:
        self._unpaid(request)
        if request.state in ("dialing", "dialed"):
            request.orphan = True  # the dial-back goes on; its answer has nowhere to go
            self._by_stream.pop((request.conn, request.stream), None)
        else:
            self._forget(request)
        return []

    # -- the dial-back -----------------------------------------------------------------

    def _dial_back_opened(self, rid: int, conn: int, stream: int) -> list[sw.Effect]:
        request = self._requests.get(rid)
        if request is None or request.dial_conn != conn:
            return [sw.ResetStream(conn=conn, stream=stream)]
        request.dial_stream = stream
        self._by_dial_stream[(conn, stream)] = rid
        return [sw.Write(conn=conn, stream=stream, data=m.encode_dial_back(request.nonce))]

    def _dial_back_data(self, request: _Request, data: bytes) -> list[sw.Effect]:
        try:
            request.dial_reader.feed(data)
            body = request.dial_reader.next_message()
            if body is None:
                return []
            status = m.decode_dial_back_response(body)
        except ProtocolViolation:
            self.refusals["autonat_dial_back_malformed"] += 1
            return self._finish(request, m.DIAL_BACK_ERROR)
        return self._finish(request, m.DIAL_OK if status == 0 else m.DIAL_BACK_ERROR)

    def _finish(self, request: _Request, dial_status: int) -> list[sw.Effect]:
        effects: list[sw.Effect] = []
        if request.dial_conn is not None:
            if request.dial_stream is not None:
                effects.append(sw.CloseStream(conn=request.dial_conn, stream=request.dial_stream))
            effects.append(sw.CloseConnection(conn=request.dial_conn, reason="autonat dial-back done"))
        self._forget(request)
        if request.orphan or request.address is None:
            return effects
        answer = m.DialResponse(status=m.RESPONSE_OK, addr_idx=request.addr_idx, dial_status=dial_status)
        served = DialBackServed(peer=request.peer, address=request.address, dial_status=dial_status)
        return [
            *effects,
            *_answer(request.conn, request.stream, answer),
            sw.Report(conn=request.conn, outcome=served),
        ]

    # -- bookkeeping -------------------------------------------------------------------

    def _connection_down(self, conn: int) -> list[sw.Effect]:
        self._conns.pop(conn, None)
        self._refused_by_conn.pop(conn, None)
        effects: list[sw.Effect] = []
        for request in list(self._requests.values()):
            if request.dial_conn == conn:
                request.dial_conn = None  # already gone: nothing to close
                effects += self._finish(request, m.DIAL_BACK_ERROR)
            elif request.conn == conn:
                effects += self._request_gone(request)
        return effects

    def _forget(self, request: _Request) -> None:
        request.state = "done"
        self._requests.pop(request.id, None)
        self._by_stream.pop((request.conn, request.stream), None)
        if request.dial_conn is not None and request.dial_stream is not None:
            self._by_dial_stream.pop((request.dial_conn, request.dial_stream), None)


def _answer(conn: int, stream: int, response: m.DialResponse) -> list[sw.Effect]:
    # libp2p/specs autonat-v2.md: the server MUST close the stream after sending the response.
    return [
        sw.Write(conn=conn, stream=stream, data=m.encode(response)),
        sw.CloseStream(conn=conn, stream=stream),
    ]


def _client_ip(remote: Multiaddr) -> IPAddress | None:
    """The IP the client connects from; none through a relay (every dial then costs dial data)."""
    return None if remote.is_relayed else unmapped(ip_of(remote))
