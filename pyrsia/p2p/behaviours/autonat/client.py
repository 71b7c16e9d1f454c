"""The AutoNAT v2 client: ask servers to dial our addresses back, and tally their answers.

libp2p/specs autonat/autonat-v2.md: `probe(conn, addresses)` opens
`/libp2p/autonat/2/dial-request` to the server on `conn` and sends a `DialRequest`
with the addresses (priority order) and a fresh random 64-bit nonce. The server may
ask for dial data first (`DialDataRequest`): we pay up to `dial_data_bytes_max`
(the spec's servers ask 30k to 100k), in `DialDataResponse` pieces of 4096 bytes, and
refuse more by resetting the stream, as the spec says. Meanwhile the server's dial-back
arrives on a new connection as an inbound `/libp2p/autonat/2/dial-back` stream carrying
the nonce: a known nonce is answered `DialBackResponse{OK}` and the stream closed (the
client MUST close it); an unknown nonce is ignored (the stream reset, counted). A
dial-back stream on a connection we dialled, or on a relayed one, is reset and counted
(`autonat_dial_back_not_inbound`): a lying server could otherwise send the nonce over
the request's own connection and claim an address reachable that it never dialled. The
`DialResponse` then says which address was dialled and how it went:

* `OK` + `OK`: reachable, but only if our nonce came back on a dial-back first (the spec:
  the client MUST check the nonce; a server claiming success it did not deliver is
  discarded and counted as `autonat_unverified_dial_ok`);
* `OK` + `E_DIAL_ERROR`: unreachable; `OK` + `E_DIAL_BACK_ERROR`: no verdict;
* `E_REQUEST_REJECTED`, `E_DIAL_REFUSED`, `E_INTERNAL_ERROR`: no verdict; a status we
  do not know is discarded (the spec: MUST discard).

Each verdict is one server's answer in `Reachability` (reachability.py: 3 agreeing of
the last 5 distinct servers); every probe ends in one `ProbeResult` report, and a
change of the node's reachability or of the confirmed addresses in a
`ReachabilityChanged` report. `reachability` ("auto" | "public" | "private") is the
setting: forced values override the answers.

Bounds: one probe per server connection at a time, `probes_concurrent_max` in all,
dial-back streams at once (`dial_back_streams_max`), message sizes; a probe not
answered within `probe_timeout_s` is ended by `tick(now_s)`, which the host calls
about once a second (the seam has no timer).
Pure.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pyrsia.errors import ProtocolViolation
from pyrsia.p2p.behaviours.autonat import messages as m
from pyrsia.p2p.behaviours.autonat.reachability import (
    CONFIRMATIONS_MIN,
    REACHABLE,
    UNREACHABLE,
    WINDOW,
    Reachability,
    server_key,
)
from pyrsia.p2p.swarm import behaviour as sw
from pyrsia.p2p.wire import varint
from pyrsia.p2p.wire.multiaddr import Multiaddr

DIAL_DATA_BYTES_MAX = 100_000
PROBES_CONCURRENT_MAX = 8
DIAL_BACK_STREAMS_MAX = 8
PROBE_TIMEOUT_S = 30.0
NONCE_TRIES_MAX = 4
NO_CONN = -1  # a Report about no one connection (reachability changed as answers expired)

# ProbeResult.result
RESULT_REACHABLE = "reachable"
RESULT_UNREACHABLE = "unreachable"
RESULT_NO_VERDICT = "no-verdict"  # the server dialled but could not deliver the nonce
RESULT_REFUSED = "refused"  # E_DIAL_REFUSED: the server would dial none of the addresses
RESULT_REJECTED = "rejected"  # E_REQUEST_REJECTED: rate or resource limits
RESULT_FAILED = "failed"  # anything else: internal error, violation, timeout, gone


@dataclass(frozen=True, slots=True, kw_only=True)
class ProbeTag:
    probe: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ProbeResult:
    """How one probe ended; `address` is the one the server chose, when it chose one."""

    server: str
    result: str
    address: Multiaddr | None = None
    detail: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class ReachabilityChanged:
    reachability: str  # "public" | "private" | "unknown"
    reachable: tuple[Multiaddr, ...]
    unreachable: tuple[Multiaddr, ...]


@dataclass(slots=True, kw_only=True)
class _Probe:
    id: int
    conn: int
    server: str
    server_key: str
    addrs: tuple[Multiaddr, ...]
    nonce: int
    started_s: float
    stream: int | None = None
    reader: varint.LengthPrefixedReader = field(
        default_factory=lambda: varint.LengthPrefixedReader(size_max=m.MESSAGE_BYTES_MAX)
    )
    dial_data_idx: int | None = None
    dial_back_seen: bool = False


class AutonatClient:
    """Probes our addresses through AutoNAT v2 servers; answers their dial-backs."""

    protocols = (m.DIAL_BACK_PROTOCOL,)

    def __init__(
        self,
        random_bytes: Callable[[int], bytes],
        *,
        reachability: str = "auto",
        dial_data_bytes_max: int = DIAL_DATA_BYTES_MAX,
        probes_concurrent_max: int = PROBES_CONCURRENT_MAX,
        dial_back_streams_max: int = DIAL_BACK_STREAMS_MAX,
        probe_timeout_s: float = PROBE_TIMEOUT_S,
        window: int = WINDOW,
        confirmations_min: int = CONFIRMATIONS_MIN,
    ) -> None:
        self._random = random_bytes
        self._tally = Reachability(forced=reachability, window=window, confirmations_min=confirmations_min)
        self._dial_data_max = dial_data_bytes_max
        self._probes_max = probes_concurrent_max
        self._dial_backs_max = dial_back_streams_max
        self._timeout_s = probe_timeout_s
        self._conns: dict[int, tuple[str, Multiaddr]] = {}
        self._not_dial_back: set[int] = set()  # outbound or relayed: a dial-back cannot come on them
        self._probes: dict[int, _Probe] = {}
        self._by_nonce: dict[int, int] = {}
        self._dial_backs: dict[tuple[int, int], varint.LengthPrefixedReader] = {}
        self._next_id = 0
        self._last = self._snapshot()
        self.refusals: Counter[str] = Counter()

    @property
    def reachability(self) -> str:
        return self._tally.reachability

    def status(self, address: Multiaddr) -> str:
        """`reachable`, `unreachable` or `unknown` for one of our addresses."""
        return self._tally.status(address)

    def record(
        self, address: Multiaddr, server: str, *, reachable: bool, conn: int, now_s: float
    ) -> list[sw.Effect]:
        """Another version's verdict (AutoNAT v1, `v1.py`) as one server's vote in the tally;
        `server` is its `server_key`, so a server speaking both versions counts once."""
        self._tally.record(address.without_peer(), server, reachable=reachable, now_s=now_s)
        return self._changed(conn)

    # -- inputs ------------------------------------------------------------------------

    def probe(self, conn: int, addresses: Sequence[Multiaddr], now_s: float) -> list[sw.Effect]:
        """Ask the server on `conn` to dial one of `addresses` (first = most wanted).

        Nothing happens (no effects) when that connection is unknown, already has a probe
        under way, `probes_concurrent_max` are under way, or no address is given.
        """
        known = self._conns.get(conn)
        addrs = tuple(a.without_peer() for a in addresses[: m.ADDRS_MAX])
        if known is None or not addrs or len(self._probes) >= self._probes_max:
            return []
        if any(p.conn == conn for p in self._probes.values()):
            return []
        nonce = 0
        for _ in range(NONCE_TRIES_MAX):
            nonce = int.from_bytes(self._random(8), "big")
            if nonce and nonce not in self._by_nonce:
                break
        else:
            return []
        self._next_id += 1
        probe = _Probe(
            id=self._next_id,
            conn=conn,
            server=known[0],
            server_key=server_key(known[0], known[1]),
            addrs=addrs,
            nonce=nonce,
            started_s=now_s,
        )
        self._probes[probe.id] = probe
        self._by_nonce[nonce] = probe.id
        return [sw.OpenStream(conn=conn, protocols=(m.DIAL_REQUEST_PROTOCOL,), tag=ProbeTag(probe=probe.id))]

    def on_event(self, event: sw.Event, now_s: float) -> Sequence[sw.Effect]:
        match event:
            case sw.ConnectionUp(conn=conn, peer=peer, remote=remote, direction=direction, relayed=relayed):
                self._conns[conn] = (peer, remote)
                if direction != "inbound" or relayed or remote.is_relayed:
                    self._not_dial_back.add(conn)
            case sw.ConnectionDown(conn=conn):
                self._conns.pop(conn, None)
                self._not_dial_back.discard(conn)
                for key in [k for k in self._dial_backs if k[0] == conn]:
                    del self._dial_backs[key]
                effects: list[sw.Effect] = []
                for lost in [p for p in self._probes.values() if p.conn == conn]:
                    effects += self._end(lost, RESULT_FAILED, detail="connection closed")
                return effects
            case sw.InboundStream(conn=conn, stream=stream):
                if conn in self._not_dial_back:
                    # A dial-back proves an address only on a connection the server made to
                    # it; a nonce on one we dialled (or one through a relay) proves nothing.
                    self.refusals["autonat_dial_back_not_inbound"] += 1
                    return [sw.ResetStream(conn=conn, stream=stream)]
                if len(self._dial_backs) >= self._dial_backs_max:
                    self.refusals["autonat_dial_back_streams"] += 1
                    return [sw.ResetStream(conn=conn, stream=stream)]
                self._dial_backs[(conn, stream)] = varint.LengthPrefixedReader(size_max=m.DIAL_BACK_BYTES_MAX)
            case sw.StreamOpened(conn=conn, stream=stream, tag=ProbeTag() as opened):
                return self._opened(opened.probe, conn, stream)
            case sw.StreamData(conn=conn, stream=stream, data=data):
                if (conn, stream) in self._dial_backs:
                    return self._dial_back_data(conn, stream, data)
                if (probe := self._probe_on(conn, stream)) is not None:
                    return self._probe_data(probe, data, now_s)
            case sw.StreamEnded(conn=conn, stream=stream):
                if self._dial_backs.pop((conn, stream), None) is not None:
                    self.refusals["autonat_dial_back_malformed"] += 1
                    return [sw.ResetStream(conn=conn, stream=stream)]
                if (probe := self._probe_on(conn, stream)) is not None:
                    return [
                        sw.CloseStream(conn=conn, stream=stream),
                        *self._end(probe, RESULT_FAILED, detail="server closed the stream unanswered"),
                    ]
            case sw.StreamGone(conn=conn, stream=stream, tag=tag, reason=reason):
                if stream is not None and self._dial_backs.pop((conn, stream), None) is not None:
                    return []
                if isinstance(tag, ProbeTag) and (probe := self._probes.get(tag.probe)) is not None:
                    return self._end(probe, RESULT_FAILED, detail=reason)
                if stream is not None and (probe := self._probe_on(conn, stream)) is not None:
                    return self._end(probe, RESULT_FAILED, detail=reason)
        return ()

    def tick(self, now_s: float) -> list[sw.Effect]:
        effects: list[sw.Effect] = []
        for probe in [p for p in self._probes.values() if now_s - p.started_s > self._timeout_s]:
            if probe.stream is not None:
                effects.append(sw.ResetStream(conn=probe.conn, stream=probe.stream))
            effects += self._end(probe, RESULT_FAILED, detail="timed out")
        self._tally.expire(now_s)
        return effects + self._changed(None)

    # -- the dial-request stream -------------------------------------------------------

    def _opened(self, pid: int, conn: int, stream: int) -> list[sw.Effect]:
        probe = self._probes.get(pid)
        if probe is None or probe.conn != conn:
            return [sw.ResetStream(conn=conn, stream=stream)]
        probe.stream = stream
        request = m.DialRequest(addrs=tuple(a.to_bytes() for a in probe.addrs), nonce=probe.nonce)
        return [sw.Write(conn=conn, stream=stream, data=m.encode(request))]

    def _probe_on(self, conn: int, stream: int) -> _Probe | None:
        for probe in self._probes.values():
            if probe.conn == conn and probe.stream == stream:
                return probe
        return None

    def _probe_data(self, probe: _Probe, data: bytes, now_s: float) -> list[sw.Effect]:
        assert probe.stream is not None
        effects: list[sw.Effect] = []
        try:
            probe.reader.feed(data)
            while (body := probe.reader.next_message()) is not None:
                match m.decode_body(body):
                    case m.DialDataRequest() as ask:
                        effects += self._pay(probe, ask)
                        if probe.id not in self._probes:
                            return effects  # the cost was refused
                    case m.DialResponse() as response:
                        # libp2p/specs autonat-v2.md: the client MUST close the stream after the response.
                        return [
                            *effects,
                            sw.CloseStream(conn=probe.conn, stream=probe.stream),
                            *self._answered(probe, response, now_s),
                        ]
                    case other:
                        raise ProtocolViolation(f"autonat: a server sent a {type(other).__name__}")
        except ProtocolViolation as exc:
            self.refusals["autonat_malformed"] += 1
            return [
                sw.ResetStream(conn=probe.conn, stream=probe.stream),
                *self._end(probe, RESULT_FAILED, detail=str(exc)),
            ]
        return effects

    def _pay(self, probe: _Probe, ask: m.DialDataRequest) -> list[sw.Effect]:
        """Send the dial data asked for; or refuse the cost by resetting (the spec's way)."""
        assert probe.stream is not None
        if probe.dial_data_idx is not None or ask.addr_idx >= len(probe.addrs):
            raise ProtocolViolation("autonat: a second or misaddressed DialDataRequest")
        if ask.num_bytes > self._dial_data_max:
            self.refusals["autonat_dial_data_too_much"] += 1
            return [
                sw.ResetStream(conn=probe.conn, stream=probe.stream),
                *self._end(
                    probe, RESULT_FAILED, detail=f"server asked for {ask.num_bytes} bytes of dial data"
                ),
            ]
        probe.dial_data_idx = ask.addr_idx
        chunk = m.encode(m.DialDataResponse(data=bytes(m.DIAL_DATA_CHUNK_BYTES_MAX)))
        whole, rest = divmod(ask.num_bytes, m.DIAL_DATA_CHUNK_BYTES_MAX)
        data = chunk * whole + (m.encode(m.DialDataResponse(data=bytes(rest))) if rest else b"")
        return [sw.Write(conn=probe.conn, stream=probe.stream, data=data)] if data else []

    def _answered(self, probe: _Probe, response: m.DialResponse, now_s: float) -> list[sw.Effect]:
        if (
            response.status not in m.KNOWN_RESPONSE_STATUSES
            or response.dial_status not in m.KNOWN_DIAL_STATUSES
        ):
            self.refusals["autonat_unknown_status"] += 1  # the spec: MUST discard
            return self._end(probe, RESULT_FAILED, detail=f"unknown status {response.status}")
        if response.status == m.E_REQUEST_REJECTED:
            return self._end(probe, RESULT_REJECTED)
        if response.status == m.E_DIAL_REFUSED:
            return self._end(probe, RESULT_REFUSED)
        if response.status != m.RESPONSE_OK:
            return self._end(probe, RESULT_FAILED, detail="server internal error")
        if response.addr_idx >= len(probe.addrs) or probe.dial_data_idx not in (None, response.addr_idx):
            self.refusals["autonat_wrong_addr_idx"] += 1
            return self._end(probe, RESULT_FAILED, detail="server answered for an address it did not choose")
        address = probe.addrs[response.addr_idx]
        if response.dial_status == m.DIAL_OK:
            if not probe.dial_back_seen:
                self.refusals["autonat_unverified_dial_ok"] += 1
                return self._end(
                    probe, RESULT_FAILED, address=address, detail="no dial-back carried our nonce"
                )
            return self._end(probe, RESULT_REACHABLE, address=address, now_s=now_s, verdict=True)
        if response.dial_status == m.DIAL_ERROR:
            return self._end(probe, RESULT_UNREACHABLE, address=address, now_s=now_s, verdict=False)
        if response.dial_status == m.DIAL_BACK_ERROR:
            return self._end(probe, RESULT_NO_VERDICT, address=address)
        self.refusals["autonat_unknown_status"] += 1  # OK with dial status UNUSED
        return self._end(probe, RESULT_FAILED, address=address, detail="no dial status")

    # -- the dial-back stream ----------------------------------------------------------

    def _dial_back_data(self, conn: int, stream: int, data: bytes) -> list[sw.Effect]:
        reader = self._dial_backs[(conn, stream)]
        try:
            reader.feed(data)
            body = reader.next_message()
            if body is None:
                return []
            nonce = m.decode_dial_back(body).nonce
        except ProtocolViolation:
            del self._dial_backs[(conn, stream)]
            self.refusals["autonat_dial_back_malformed"] += 1
            return [sw.ResetStream(conn=conn, stream=stream)]
        del self._dial_backs[(conn, stream)]
        pid = self._by_nonce.get(nonce)
        if pid is None:
            # libp2p/specs autonat-v2.md: a nonce other than ours MUST be discarded.
            self.refusals["autonat_dial_back_unknown_nonce"] += 1
            return [sw.ResetStream(conn=conn, stream=stream)]
        self._probes[pid].dial_back_seen = True
        # The client MUST close the stream after sending the response.
        return [
            sw.Write(conn=conn, stream=stream, data=m.encode_dial_back_response()),
            sw.CloseStream(conn=conn, stream=stream),
        ]

    # -- outcomes ----------------------------------------------------------------------

    def _end(
        self,
        probe: _Probe,
        result: str,
        *,
        address: Multiaddr | None = None,
        detail: str = "",
        now_s: float = 0.0,
        verdict: bool | None = None,
    ) -> list[sw.Effect]:
        self._probes.pop(probe.id, None)
        self._by_nonce.pop(probe.nonce, None)
        effects: list[sw.Effect] = [
            sw.Report(
                conn=probe.conn,
                outcome=ProbeResult(server=probe.server, result=result, address=address, detail=detail),
            )
        ]
        if verdict is not None and address is not None:
            self._tally.record(address, probe.server_key, reachable=verdict, now_s=now_s)
            effects += self._changed(probe.conn)
        return effects

    def _snapshot(self) -> ReachabilityChanged:
        return ReachabilityChanged(
            reachability=self._tally.reachability,
            reachable=self._tally.addresses(REACHABLE),
            unreachable=self._tally.addresses(UNREACHABLE),
        )

    def _changed(self, conn: int | None) -> list[sw.Effect]:
        now = self._snapshot()
        if now == self._last:
            return []
        self._last = now
        return [sw.Report(conn=conn if conn is not None else NO_CONN, outcome=now)]
