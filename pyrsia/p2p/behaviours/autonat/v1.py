"""AutoNAT v1 (libp2p/specs autonat/autonat-v1.md): the protocol js-libp2p's `@libp2p/autonat` speaks.

One stream, `/libp2p/autonat/1.0.0`: the client writes a `Message{type: DIAL, dial:
{peer: {id, addrs}}}` behind a varint length, the server dials and answers
`Message{type: DIAL_RESPONSE, dialResponse: {status, statusText, addr}}`, and the
stream closes. proto2 fields:

    Message       1 type (enum: DIAL 0, DIAL_RESPONSE 1)  2 dial  3 dialResponse
    Dial          1 peer (PeerInfo)
    PeerInfo      1 id (bytes, a multihash peer id)  2 addrs (repeated bytes, multiaddrs)
    DialResponse  1 status (enum)  2 statusText (string)  3 addr (bytes)

    status: OK 0, E_DIAL_ERROR 100, E_DIAL_REFUSED 101, E_BAD_REQUEST 200, E_INTERNAL_ERROR 300

`AutonatV1Server` answers it. The spec's rule against amplification: it dials only
addresses whose IP is the IP the requester connects from (so a request through a
relay, which shows no IP, is refused), TCP to an IP literal, with no `/p2p/` component
other than the requester's own; at most `DIAL_ADDRS_MAX` of them, one after another,
each on a new connection made for that alone, which the server closes at once (v1 has
no dial-back stream: the connection coming up is the proof). The `Dial`'s peer id
must be the requester's (`E_BAD_REQUEST` otherwise, as js-libp2p does). Over a rate or
concurrency bound the answer is `E_DIAL_REFUSED` (v1 has no "rejected" status); a
malformed message resets the stream. Every refusal is counted by name in `refusals`.

`AutonatV1Client` asks one server to dial one address of ours (`probe`). One address
per request, as js-libp2p's client does, because v1's error answer need not say which
address failed: with one, `OK` means that address is reachable and `E_DIAL_ERROR`
that it is not; every other status is no verdict. A server that ends the request
without an answer, closing the stream or the whole connection (js-libp2p's v1 server,
as of `@libp2p/autonat` 3.0.28, closes the requester's connection before it writes its
answer), is not asked again for `UNANSWERED_QUIET_S` (`asks(peer, now_s)` says so; at
most `QUIET_SERVERS_MAX` remembered): asking would only cost us the connection again.
v1 has no nonce, so an `OK` is the
server's word alone; the host asks v1 only of servers that do not speak v2, and a
verdict is one vote in the same tally as v2's (`reachability.py`: 3 agreeing of the
last 5 distinct servers), so a lone liar cannot decide it.

What the seam lacks, asked of the host: the server reports `V1DialRequested(peer,
address, tag)`; the host dials on a new connection and calls `dial_back_connected(tag,
conn, now_s)` or `dial_back_failed(tag, reason, now_s)`. The client reports
`V1ProbeResult`; the host records its verdict. Both want `tick(now_s)` about once a
second. Pure.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

from pyrsia.errors import ProtocolViolation
from pyrsia.formats.peer_id import base58btc_decode
from pyrsia.p2p.behaviours.autonat.admission import RequestAdmission
from pyrsia.p2p.behaviours.autonat.messages import _BYTES, _VARINT, _fields, _repeated_bytes, _uint32
from pyrsia.p2p.behaviours.autonat.reachability import server_key
from pyrsia.p2p.ipnet import unmapped
from pyrsia.p2p.swarm import behaviour as sw
from pyrsia.p2p.swarm.addresses import ip_of
from pyrsia.p2p.wire import varint
from pyrsia.p2p.wire.multiaddr import Multiaddr

PROTOCOL = "/libp2p/autonat/1.0.0"

MESSAGE_BYTES_MAX = 8192  # one Message (js-libp2p's and go-libp2p's bound too)
ADDRS_MAX = 32  # addresses one Dial may list
STATUS_TEXT_CHARS_MAX = 256  # what we keep of a server's statusText
DIAL_ADDRS_MAX = 4  # addresses the server tries for one request
REQUESTS_PER_MINUTE_MAX = 60
REQUESTS_PER_PEER_PER_MINUTE_MAX = 12
REQUESTS_CONCURRENT_MAX = 16
DIALS_CONCURRENT_MAX = 4
REQUEST_TIMEOUT_S = 15.0
DIAL_TIMEOUT_S = 30.0  # all of one request's dials
PROBES_CONCURRENT_MAX = 8
PROBE_TIMEOUT_S = 45.0  # js-libp2p's server may take 30 s
UNANSWERED_QUIET_S = 24 * 3600.0  # a server that dropped our request unanswered is not asked again
QUIET_SERVERS_MAX = 256

DIAL = 0
DIAL_RESPONSE = 1
OK = 0
E_DIAL_ERROR = 100
E_DIAL_REFUSED = 101
E_BAD_REQUEST = 200
E_INTERNAL_ERROR = 300

# V1ProbeResult.result (the same words as v2's ProbeResult)
RESULT_REACHABLE = "reachable"
RESULT_UNREACHABLE = "unreachable"
RESULT_REFUSED = "refused"
RESULT_FAILED = "failed"


@dataclass(frozen=True, slots=True, kw_only=True)
class Dial:
    peer_id: bytes
    addrs: tuple[bytes, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class DialResponse:
    status: int
    status_text: str = ""
    addr: bytes = b""


# -- codec --------------------------------------------------------------------------------


def _key(number: int, wire_type: int) -> bytes:
    return varint.encode(number << 3 | wire_type)


def _bytes_field(number: int, value: bytes) -> bytes:
    return _key(number, _BYTES) + varint.prefixed(value)


def encode(message: Dial | DialResponse) -> bytes:
    """One message as it goes on the stream: varint length, then `Message` (proto2:
    every field set is written, zero included)."""
    match message:
        case Dial(peer_id=peer_id, addrs=addrs):
            info = _bytes_field(1, peer_id) + b"".join(_bytes_field(2, a) for a in addrs)
            body = _key(1, _VARINT) + varint.encode(DIAL) + _bytes_field(2, _bytes_field(1, info))
        case DialResponse(status=status, status_text=text, addr=addr):
            inner = _key(1, _VARINT) + varint.encode(status)
            inner += _bytes_field(2, text.encode()) if text else b""
            inner += _bytes_field(3, addr) if addr else b""
            body = _key(1, _VARINT) + varint.encode(DIAL_RESPONSE) + _bytes_field(3, inner)
    return varint.prefixed(body)


def _message(
    fields: list[tuple[int, int, int | bytes]], number: int
) -> list[tuple[int, int, int | bytes]] | None:
    """The sub-message `number` (the last one, protobuf's rule), None when absent."""
    found = _repeated_bytes(fields, number)
    return _fields(found[-1]) if found else None


def decode(body: bytes) -> Dial | DialResponse:
    """One `Message` without its length prefix; a `ProtocolViolation` when it is not one."""
    fields = _fields(body)
    kind = _uint32(fields, 1)
    if kind == DIAL:
        dial = _message(fields, 2)
        info = _message(dial, 1) if dial is not None else None
        if info is None:
            raise ProtocolViolation("autonat v1: a DIAL without a peer")
        ids = _repeated_bytes(info, 1)
        addrs = _repeated_bytes(info, 2)
        if len(addrs) > ADDRS_MAX:
            raise ProtocolViolation(f"autonat v1: a Dial lists {len(addrs)} addresses, over {ADDRS_MAX}")
        return Dial(peer_id=ids[-1] if ids else b"", addrs=tuple(addrs))
    if kind == DIAL_RESPONSE:
        response = _message(fields, 3)
        if response is None:
            raise ProtocolViolation("autonat v1: a DIAL_RESPONSE without a dialResponse")
        texts = _repeated_bytes(response, 2)
        addrs = _repeated_bytes(response, 3)
        text = texts[-1][:STATUS_TEXT_CHARS_MAX].decode(errors="replace") if texts else ""
        return DialResponse(status=_uint32(response, 1), status_text=text, addr=addrs[-1] if addrs else b"")
    raise ProtocolViolation(f"autonat v1: unknown message type {kind}")


def _peer_bytes(peer: str) -> bytes:
    return base58btc_decode(peer)


# -- server -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class V1DialTag:
    request: int


@dataclass(frozen=True, slots=True, kw_only=True)
class V1DialRequested:
    """For the host: dial `address` (the requester `peer`) on a new connection, then call back."""

    peer: str
    address: Multiaddr
    tag: V1DialTag


@dataclass(frozen=True, slots=True, kw_only=True)
class V1DialServed:
    """A request answered after dialling (for metrics): the status sent."""

    peer: str
    address: Multiaddr
    status: int


@dataclass(slots=True, kw_only=True)
class _Request:
    id: int
    conn: int
    stream: int
    peer: str
    opened_s: float
    reader: varint.LengthPrefixedReader = field(
        default_factory=lambda: varint.LengthPrefixedReader(size_max=MESSAGE_BYTES_MAX)
    )
    state: str = "reading"  # reading | dialing | done
    orphan: bool = False  # the request stream is gone: the dial goes on, nobody hears
    candidates: tuple[Multiaddr, ...] = ()
    attempt: int = 0
    dial_started_s: float = 0.0
    last_error: str = ""


class AutonatV1Server:
    """Answers `/libp2p/autonat/1.0.0`; dials through the host."""

    protocols = (PROTOCOL,)

    def __init__(
        self,
        *,
        requests_per_minute_max: int = REQUESTS_PER_MINUTE_MAX,
        requests_per_peer_per_minute_max: int = REQUESTS_PER_PEER_PER_MINUTE_MAX,
        requests_concurrent_max: int = REQUESTS_CONCURRENT_MAX,
        dials_concurrent_max: int = DIALS_CONCURRENT_MAX,
        request_timeout_s: float = REQUEST_TIMEOUT_S,
        dial_timeout_s: float = DIAL_TIMEOUT_S,
    ) -> None:
        self._admission = RequestAdmission(
            rate_max=requests_per_minute_max,
            peer_rate_max=requests_per_peer_per_minute_max,
            concurrent_max=requests_concurrent_max,
        )
        self._dials_max = dials_concurrent_max
        self._request_timeout_s = request_timeout_s
        self._dial_timeout_s = dial_timeout_s
        self._conns: dict[int, tuple[str, Multiaddr, bool]] = {}
        self._requests: dict[int, _Request] = {}
        self._by_stream: dict[tuple[int, int], int] = {}
        self._next_id = 0
        self.refusals: Counter[str] = Counter()

    @property
    def dials(self) -> int:
        return sum(1 for r in self._requests.values() if r.state == "dialing")

    def on_event(self, event: sw.Event, now_s: float) -> Sequence[sw.Effect]:
        match event:
            case sw.ConnectionUp(conn=conn, peer=peer, remote=remote, relayed=relayed):
                self._conns[conn] = (peer, remote, relayed or remote.is_relayed)
            case sw.ConnectionDown(conn=conn):
                self._conns.pop(conn, None)
                for request in [r for r in self._requests.values() if r.conn == conn]:
                    self._gone(request)
            case sw.InboundStream(conn=conn, stream=stream):
                return self._admit(conn, stream, now_s)
            case sw.StreamData(conn=conn, stream=stream, data=data):
                if (rid := self._by_stream.get((conn, stream))) is not None:
                    return self._data(self._requests[rid], data, now_s)
            case sw.StreamEnded(conn=conn, stream=stream):
                if (rid := self._by_stream.get((conn, stream))) is not None:
                    request = self._requests[rid]
                    if request.state == "reading":
                        self._forget(request)
                        return [sw.CloseStream(conn=conn, stream=stream)]
            case sw.StreamGone(conn=conn, stream=stream):
                if stream is not None and (rid := self._by_stream.get((conn, stream))) is not None:
                    self._gone(self._requests[rid])
        return ()

    def dial_back_connected(self, tag: V1DialTag, conn: int, now_s: float) -> list[sw.Effect]:
        """The host's dial for `tag` reached the requester on the new connection `conn`."""
        close = sw.CloseConnection(conn=conn, reason="autonat v1 dial done")
        request = self._requests.get(tag.request)
        if request is None or request.state != "dialing":
            return [close]
        address = request.candidates[request.attempt]
        return [close, *self._answer(request, DialResponse(status=OK, addr=address.to_bytes()), address)]

    def dial_back_failed(self, tag: V1DialTag, reason: str, now_s: float) -> list[sw.Effect]:
        """The host could not reach the address of `tag`: the next one, or `E_DIAL_ERROR`."""
        request = self._requests.get(tag.request)
        if request is None or request.state != "dialing":
            return []
        request.last_error = reason[:STATUS_TEXT_CHARS_MAX]
        request.attempt += 1
        if request.attempt < len(request.candidates):
            return self._dial(request)
        address = request.candidates[-1]
        response = DialResponse(status=E_DIAL_ERROR, status_text=request.last_error, addr=address.to_bytes())
        return self._answer(request, response, address)

    def tick(self, now_s: float) -> list[sw.Effect]:
        effects: list[sw.Effect] = []
        for request in list(self._requests.values()):
            if request.state == "reading" and now_s - request.opened_s > self._request_timeout_s:
                self.refusals["autonat_v1_request_timeout"] += 1
                self._forget(request)
                effects.append(sw.ResetStream(conn=request.conn, stream=request.stream))
            elif request.state == "dialing" and now_s - request.dial_started_s > self._dial_timeout_s:
                address = request.candidates[request.attempt]
                response = DialResponse(
                    status=E_DIAL_ERROR, status_text="dial timed out", addr=address.to_bytes()
                )
                effects += self._answer(request, response, address)
        return effects

    def _admit(self, conn: int, stream: int, now_s: float) -> list[sw.Effect]:
        known = self._conns.get(conn)
        if known is None:
            return [sw.ResetStream(conn=conn, stream=stream)]
        peer = known[0]
        live = [r.peer for r in self._requests.values() if not r.orphan]
        if (reason := self._admission.refusal(peer, live, now_s)) is not None:
            self.refusals[f"autonat_v1_{reason}"] += 1
            return _reply(conn, stream, DialResponse(status=E_DIAL_REFUSED, status_text="too many requests"))
        self._admission.accept(peer, now_s)
        self._next_id += 1
        request = _Request(id=self._next_id, conn=conn, stream=stream, peer=peer, opened_s=now_s)
        self._requests[request.id] = request
        self._by_stream[(conn, stream)] = request.id
        return []

    def _data(self, request: _Request, data: bytes, now_s: float) -> list[sw.Effect]:
        if request.state != "reading":
            return []  # the request is read; anything after it is ignored
        try:
            request.reader.feed(data)
            body = request.reader.next_message()
            if body is None:
                return []
            message = decode(body)
        except ProtocolViolation:
            self.refusals["autonat_v1_malformed"] += 1
            self._forget(request)
            return [sw.ResetStream(conn=request.conn, stream=request.stream)]
        if not isinstance(message, Dial):
            return self._bad(request, "autonat_v1_not_a_dial", "expected a DIAL")
        if message.peer_id != _peer_bytes(request.peer):
            return self._bad(request, "autonat_v1_peer_mismatch", "peer id mismatch")
        return self._dial_request(request, message, now_s)

    def _bad(self, request: _Request, reason: str, text: str) -> list[sw.Effect]:
        self.refusals[reason] += 1
        self._forget(request)
        return _reply(request.conn, request.stream, DialResponse(status=E_BAD_REQUEST, status_text=text))

    def _dial_request(self, request: _Request, message: Dial, now_s: float) -> list[sw.Effect]:
        peer, remote, relayed = self._conns[request.conn]
        observed = None if relayed else unmapped(ip_of(remote))
        candidates: list[Multiaddr] = []
        for raw in message.addrs:
            try:
                address = Multiaddr.from_bytes(raw)
            except ProtocolViolation:
                continue  # a transport we do not speak
            endpoint = address.tcp_endpoint()
            if address.is_relayed or endpoint is None or endpoint[1] == 0:
                continue
            if address.peer_id not in (None, peer) or unmapped(ip_of(address)) != observed:
                continue
            if (plain := address.without_peer()) not in candidates:
                candidates.append(plain)
        if observed is None or not candidates:
            self.refusals["autonat_v1_no_dialable_address"] += 1
            self._forget(request)
            refused = DialResponse(status=E_DIAL_REFUSED, status_text="no dialable addresses")
            return _reply(request.conn, request.stream, refused)
        if self.dials >= self._dials_max:
            self.refusals["autonat_v1_dials_busy"] += 1
            self._forget(request)
            return _reply(
                request.conn, request.stream, DialResponse(status=E_DIAL_REFUSED, status_text="busy")
            )
        request.candidates = tuple(candidates[:DIAL_ADDRS_MAX])
        request.state = "dialing"
        request.dial_started_s = now_s
        return self._dial(request)

    def _dial(self, request: _Request) -> list[sw.Effect]:
        asked = V1DialRequested(
            peer=request.peer, address=request.candidates[request.attempt], tag=V1DialTag(request=request.id)
        )
        return [sw.Report(conn=request.conn, outcome=asked)]

    def _answer(self, request: _Request, response: DialResponse, address: Multiaddr) -> list[sw.Effect]:
        self._forget(request)
        if request.orphan:
            return []
        served = V1DialServed(peer=request.peer, address=address, status=response.status)
        return [*_reply(request.conn, request.stream, response), sw.Report(conn=request.conn, outcome=served)]

    def _gone(self, request: _Request) -> None:
        if request.state == "dialing":
            request.orphan = True  # the dial under way ends on its own; its answer goes nowhere
            self._by_stream.pop((request.conn, request.stream), None)
        else:
            self._forget(request)

    def _forget(self, request: _Request) -> None:
        request.state = "done"
        self._requests.pop(request.id, None)
        self._by_stream.pop((request.conn, request.stream), None)


def _reply(conn: int, stream: int, response: DialResponse) -> list[sw.Effect]:
    return [
        sw.Write(conn=conn, stream=stream, data=encode(response)),
        sw.CloseStream(conn=conn, stream=stream),
    ]


# -- client -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class V1ProbeTag:
    probe: int


@dataclass(frozen=True, slots=True, kw_only=True)
class V1ProbeResult:
    """How one v1 probe ended; `server_key` is what the tally counts the server as."""

    server: str
    server_key: str
    address: Multiaddr
    result: str
    detail: str = ""

    @property
    def verdict(self) -> bool | None:
        """True: reachable, False: unreachable, None: this answer decides nothing."""
        return {RESULT_REACHABLE: True, RESULT_UNREACHABLE: False}.get(self.result)


@dataclass(slots=True, kw_only=True)
class _Probe:
    id: int
    conn: int
    server: str
    server_key: str
    address: Multiaddr
    started_s: float
    stream: int | None = None
    reader: varint.LengthPrefixedReader = field(
        default_factory=lambda: varint.LengthPrefixedReader(size_max=MESSAGE_BYTES_MAX)
    )


class AutonatV1Client:
    """Asks v1 servers to dial one address of ours; serves no protocol itself."""

    protocols: tuple[str, ...] = ()

    def __init__(
        self,
        peer_id: str,
        *,
        probes_concurrent_max: int = PROBES_CONCURRENT_MAX,
        probe_timeout_s: float = PROBE_TIMEOUT_S,
    ) -> None:
        self._peer_id = _peer_bytes(peer_id)
        self._probes_max = probes_concurrent_max
        self._timeout_s = probe_timeout_s
        self._conns: dict[int, tuple[str, Multiaddr]] = {}
        self._probes: dict[int, _Probe] = {}
        self._next_id = 0
        self.refusals: Counter[str] = Counter()
        self.results: Counter[str] = Counter()  # probes ended, by result
        self._quiet: OrderedDict[str, float] = OrderedDict()  # server -> not asked until

    def asks(self, peer: str, now_s: float) -> bool:
        """Whether `peer` is worth a v1 request (it has not dropped one unanswered lately)."""
        until = self._quiet.get(peer)
        if until is not None and now_s >= until:
            del self._quiet[peer]
            return True
        return until is None

    def _unanswered(self, probe: _Probe, now_s: float) -> None:
        self.refusals["autonat_v1_unanswered"] += 1
        self._quiet.pop(probe.server, None)
        self._quiet[probe.server] = now_s + UNANSWERED_QUIET_S
        while len(self._quiet) > QUIET_SERVERS_MAX:
            self._quiet.popitem(last=False)

    def probe(self, conn: int, address: Multiaddr, now_s: float) -> list[sw.Effect]:
        """Ask the server on `conn` to dial `address`; nothing when that connection is
        unknown, already probing, or `probes_concurrent_max` probes are under way."""
        known = self._conns.get(conn)
        if known is None or len(self._probes) >= self._probes_max or not self.asks(known[0], now_s):
            return []
        if any(p.conn == conn for p in self._probes.values()):
            return []
        self._next_id += 1
        probe = _Probe(
            id=self._next_id,
            conn=conn,
            server=known[0],
            server_key=server_key(known[0], known[1]),
            address=address.without_peer(),
            started_s=now_s,
        )
        self._probes[probe.id] = probe
        return [sw.OpenStream(conn=conn, protocols=(PROTOCOL,), tag=V1ProbeTag(probe=probe.id))]

    def on_event(self, event: sw.Event, now_s: float) -> Sequence[sw.Effect]:
        match event:
            case sw.ConnectionUp(conn=conn, peer=peer, remote=remote):
                self._conns[conn] = (peer, remote)
            case sw.ConnectionDown(conn=conn):
                self._conns.pop(conn, None)
                effects: list[sw.Effect] = []
                for lost in [p for p in self._probes.values() if p.conn == conn]:
                    self._unanswered(lost, now_s)
                    effects += self._end(lost, RESULT_FAILED, "connection closed")
                return effects
            case sw.InboundStream(conn=conn, stream=stream):
                return [sw.ResetStream(conn=conn, stream=stream)]  # we serve nothing
            case sw.StreamOpened(conn=conn, stream=stream, tag=V1ProbeTag() as opened):
                probe = self._probes.get(opened.probe)
                if probe is None or probe.conn != conn:
                    return [sw.ResetStream(conn=conn, stream=stream)]
                probe.stream = stream
                request = Dial(peer_id=self._peer_id, addrs=(probe.address.to_bytes(),))
                return [sw.Write(conn=conn, stream=stream, data=encode(request))]
            case sw.StreamData(conn=conn, stream=stream, data=data):
                if (probe := self._on(conn, stream)) is not None:
                    return self._data(probe, data)
            case sw.StreamEnded(conn=conn, stream=stream):
                if (probe := self._on(conn, stream)) is not None:
                    self._unanswered(probe, now_s)
                    return [
                        sw.CloseStream(conn=conn, stream=stream),
                        *self._end(probe, RESULT_FAILED, "server closed the stream unanswered"),
                    ]
            case sw.StreamGone(conn=conn, stream=stream, tag=tag, reason=reason):
                if isinstance(tag, V1ProbeTag) and (probe := self._probes.get(tag.probe)) is not None:
                    return self._end(probe, RESULT_FAILED, reason)
                if stream is not None and (probe := self._on(conn, stream)) is not None:
                    return self._end(probe, RESULT_FAILED, reason)
        return ()

    def tick(self, now_s: float) -> list[sw.Effect]:
        effects: list[sw.Effect] = []
        for probe in [p for p in self._probes.values() if now_s - p.started_s > self._timeout_s]:
            if probe.stream is not None:
                effects.append(sw.ResetStream(conn=probe.conn, stream=probe.stream))
            effects += self._end(probe, RESULT_FAILED, "timed out")
        return effects

    def _on(self, conn: int, stream: int) -> _Probe | None:
        for probe in self._probes.values():
            if probe.conn == conn and probe.stream == stream:
                return probe
        return None

    def _data(self, probe: _Probe, data: bytes) -> list[sw.Effect]:
        assert probe.stream is not None
        try:
            probe.reader.feed(data)
            body = probe.reader.next_message()
            if body is None:
                return []
            message = decode(body)
            if not isinstance(message, DialResponse):
                raise ProtocolViolation("autonat v1: a server sent a DIAL")
        except ProtocolViolation as exc:
            self.refusals["autonat_v1_malformed"] += 1
            return [
                sw.ResetStream(conn=probe.conn, stream=probe.stream),
                *self._end(probe, RESULT_FAILED, str(exc)),
            ]
        close = sw.CloseStream(conn=probe.conn, stream=probe.stream)
        return [close, *self._answered(probe, message)]

    def _answered(self, probe: _Probe, response: DialResponse) -> list[sw.Effect]:
        text = response.status_text
        if response.status == OK:
            if response.addr and not _same(response.addr, probe.address):
                self.refusals["autonat_v1_wrong_addr"] += 1
                return self._end(probe, RESULT_FAILED, "OK for an address we did not send")
            return self._end(probe, RESULT_REACHABLE, text)
        if response.status == E_DIAL_ERROR:
            return self._end(probe, RESULT_UNREACHABLE, text)
        if response.status == E_DIAL_REFUSED:
            return self._end(probe, RESULT_REFUSED, text)
        if response.status not in (E_BAD_REQUEST, E_INTERNAL_ERROR):
            self.refusals["autonat_v1_unknown_status"] += 1
        return self._end(probe, RESULT_FAILED, f"status {response.status}: {text}")

    def _end(self, probe: _Probe, result: str, detail: str) -> list[sw.Effect]:
        self._probes.pop(probe.id, None)
        self.results[result] += 1
        outcome = V1ProbeResult(
            server=probe.server,
            server_key=probe.server_key,
            address=probe.address,
            result=result,
            detail=detail,
        )
        return [sw.Report(conn=probe.conn, outcome=outcome)]


def _same(raw: bytes, address: Multiaddr) -> bool:
    try:
        return Multiaddr.from_bytes(raw).without_peer() == address
    except ProtocolViolation:
        return False
