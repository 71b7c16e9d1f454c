"""A whole connection (multistream → Noise → yamux → streams) between two cores in memory."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyrsia.errors import ProtocolViolation, StreamClosed
from pyrsia.p2p.identity import Identity
from pyrsia.p2p.wire import connection as conn
from pyrsia.p2p.wire import multistream, noise, yamux


def _key(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


ALICE = Identity.from_seed(_key("alice"))
BOB = Identity.from_seed(_key("bob"))
DEFAULT = conn.ConnectionConfig()
SUPPORTED = {"/echo/1.0.0", "/sink/1.0.0"}


class ConnectionPair:
    """Dialer (ALICE) and listener (BOB) exchanging bytes in memory, in chunks of `step`."""

    def __init__(
        self,
        *,
        dialer_config: conn.ConnectionConfig = DEFAULT,
        listener_config: conn.ConnectionConfig = DEFAULT,
        expected: str | None = BOB.peer_id,
        supports: Callable[[str], bool] = SUPPORTED.__contains__,
        step: int = 1 << 20,
    ) -> None:
        self.dialer = conn.Connection(
            initiator=True,
            identity=ALICE,
            static_private=_key("a-s"),
            ephemeral_private=_key("a-e"),
            supports=supports,
            expected_peer_id=expected,
            config=dialer_config,
        )
        self.listener = conn.Connection(
            initiator=False,
            identity=BOB,
            static_private=_key("b-s"),
            ephemeral_private=_key("b-e"),
            supports=supports,
            config=listener_config,
        )
        self.step = step
        self.events: dict[bool, list[conn.Event]] = {True: [], False: []}
        self.wire: dict[bool, list[bytes]] = {True: [], False: []}  # bytes each side sent

    def side(self, dialer: bool) -> conn.Connection:
        return self.dialer if dialer else self.listener

    def pump(self, *, consume: bool = True) -> None:
        for _ in range(100_000):
            moved = False
            for sender in (True, False):
                source, target = self.side(sender), self.side(not sender)
                pieces = source.data_to_send()
                assert all(pieces), "an empty output piece would stall a socket writer"
                data = b"".join(pieces)
                if not data:
                    continue
                moved = True
                self.wire[sender].append(data)
                for start in range(0, len(data), self.step):
                    new = target.receive_data(data[start : start + self.step])
                    self.events[not sender] += new
                    if consume:
                        for event in new:
                            if isinstance(event, conn.StreamData):
                                target.consume(event.stream_id, len(event.data))
            if not moved:
                return
        raise AssertionError("pump never settled")

    def data(self, dialer: bool, stream_id: int) -> bytes:
        return b"".join(
            e.data for e in self.events[dialer] if isinstance(e, conn.StreamData) and e.stream_id == stream_id
        )

    def of_type(self, dialer: bool, kind: type) -> list[conn.Event]:
        return [e for e in self.events[dialer] if isinstance(e, kind)]


@pytest.mark.parametrize("dialer_early", [True, False])
@pytest.mark.parametrize("listener_early", [True, False])
def test_upgrade_with_and_without_early_muxer(dialer_early: bool, listener_early: bool) -> None:
    pair = ConnectionPair(
        dialer_config=conn.ConnectionConfig(early_muxer=dialer_early),
        listener_config=conn.ConnectionConfig(early_muxer=listener_early),
    )
    pair.pump()
    early = dialer_early and listener_early
    assert pair.of_type(True, conn.Established) == [
        conn.Established(remote_peer_id=BOB.peer_id, muxer="/yamux/1.0.0", early_muxer=early)
    ]
    assert pair.of_type(False, conn.Established) == [
        conn.Established(remote_peer_id=ALICE.peer_id, muxer="/yamux/1.0.0", early_muxer=early)
    ]
    # The first bytes on the wire are the ones js-libp2p writes: multistream then /noise.
    assert pair.wire[True][0].startswith(multistream.encode_line("/multistream/1.0.0") + b"\x07/noise\n")


@settings(max_examples=30, deadline=None)
@given(step=st.integers(min_value=1, max_value=3000), early=st.booleans())
def test_streams_both_ways_any_chunking(step: int, early: bool) -> None:
    config = conn.ConnectionConfig(early_muxer=early)
    pair = ConnectionPair(step=step, dialer_config=config, listener_config=config)
    pair.pump()
    outbound = pair.dialer.open_stream(["/nope/1.0.0", "/echo/1.0.0"])
    inbound = pair.listener.open_stream(["/sink/1.0.0"])
    pair.pump()
    assert conn.StreamOpened(stream_id=outbound, protocol="/echo/1.0.0", outbound=True) in pair.events[True]
    assert conn.StreamOpened(stream_id=outbound, protocol="/echo/1.0.0", outbound=False) in pair.events[False]
    assert conn.StreamOpened(stream_id=inbound, protocol="/sink/1.0.0", outbound=False) in pair.events[True]
    assert outbound % 2 == 1 and inbound % 2 == 0
    pair.dialer.write(outbound, b"ping me")
    pair.dialer.close_stream(outbound)
    pair.listener.write(inbound, b"from the listener")
    pair.pump()
    assert pair.data(False, outbound) == b"ping me"
    assert conn.StreamEnded(stream_id=outbound) in pair.events[False]
    assert pair.data(True, inbound) == b"from the listener"
    assert pair.listener.protocol_of(outbound) == "/echo/1.0.0"


def test_unsupported_protocol_fails_the_stream_only() -> None:
    pair = ConnectionPair()
    pair.pump()
    stream_id = pair.dialer.open_stream(["/unknown/1.0.0"])
    pair.pump()
    assert pair.of_type(True, conn.StreamFailed) == [
        conn.StreamFailed(stream_id=stream_id, reason="peer speaks none of the proposed protocols")
    ]
    assert pair.of_type(False, conn.StreamOpened) == []
    with pytest.raises(StreamClosed):
        pair.dialer.write(stream_id, b"x")
    assert pair.dialer.established and pair.listener.established


def test_pipelined_data_after_the_proposal_reaches_the_handler() -> None:
    # js-libp2p's ping dialer writes its 32 bytes right behind the protocol line.
    pair = ConnectionPair()
    pair.pump()
    session = pair.dialer._session
    assert session is not None
    stream_id = session.open_stream()
    session.write(stream_id, multistream.Dialer(["/echo/1.0.0"]).initial() + b"\x07" * 32)
    pair.pump()
    assert pair.data(False, stream_id) == b"\x07" * 32


def test_flow_control_across_the_connection() -> None:
    pair = ConnectionPair(
        dialer_config=conn.ConnectionConfig(window_bytes=512 * 1024),
        listener_config=conn.ConnectionConfig(window_bytes=512 * 1024),
    )
    pair.pump()
    stream_id = pair.dialer.open_stream(["/sink/1.0.0"])
    pair.pump()
    pair.dialer.write(stream_id, b"z" * 3_000_000)
    pair.pump(consume=False)
    # The window covered the negotiation lines too (credited, but not yet granted back).
    sent = 512 * 1024 - len(multistream.Dialer(["/sink/1.0.0"]).initial())
    assert len(pair.data(False, stream_id)) == sent
    assert pair.dialer.pending_bytes(stream_id) == 3_000_000 - sent
    for _ in range(20):
        pair.listener.consume(stream_id, 512 * 1024)
        pair.pump(consume=False)
    assert pair.data(False, stream_id) == b"z" * 3_000_000


def test_ping_and_goodbye() -> None:
    pair = ConnectionPair()
    pair.pump()
    pair.dialer.ping(5)
    pair.pump()
    assert pair.of_type(True, conn.Pong) == [conn.Pong(opaque=5)]
    pair.listener.close()
    pair.pump()
    assert pair.of_type(True, conn.ConnectionClosed) == [
        conn.ConnectionClosed(reason="peer sent GO_AWAY code 0")
    ]
    with pytest.raises(StreamClosed):
        pair.listener.open_stream(["/echo/1.0.0"])


def test_wrong_peer_id_fails_the_dialer() -> None:
    pair = ConnectionPair(expected=ALICE.peer_id)
    with pytest.raises(ProtocolViolation, match="reached"):
        pair.pump()
    assert pair.dialer.dead


class _Forger(noise.Handshake):
    def _payload(self) -> bytes:
        impostor = Identity.from_seed(_key("mallory"))
        signature = impostor.signing_key.sign(noise.SIGNATURE_PREFIX + self._s_pub).signature
        return noise.HandshakePayload(
            identity_key=noise.public_key_protobuf(BOB.public_key), identity_sig=signature
        ).encode()


def test_payload_signed_by_the_wrong_key_fails() -> None:
    pair = ConnectionPair(expected=None)
    original = pair.listener._handshake
    pair.listener._handshake = _Forger(
        initiator=False, identity=BOB, static_private=_key("b-s"), ephemeral_private=_key("b-e")
    )
    assert original is not pair.listener._handshake
    with pytest.raises(ProtocolViolation, match="not signed"):
        pair.pump()


def _established_wire() -> tuple[ConnectionPair, list[bytes]]:
    """An open pair and three Noise frames the dialer produced (not yet delivered)."""
    pair = ConnectionPair()
    pair.pump()
    frames = []
    for index in range(3):
        pair.dialer.ping(index)
        frames.append(b"".join(pair.dialer.data_to_send()))
    return pair, frames


def test_replayed_noise_frame_is_a_violation() -> None:
    pair, frames = _established_wire()
    pair.listener.receive_data(frames[0])
    with pytest.raises(ProtocolViolation, match="decrypt"):
        pair.listener.receive_data(frames[0])
    assert pair.listener.dead


def test_reordered_noise_frames_are_a_violation() -> None:
    pair, frames = _established_wire()
    with pytest.raises(ProtocolViolation, match="decrypt"):
        pair.listener.receive_data(frames[1])


def test_yamux_violation_inside_noise_answers_go_away() -> None:
    pair = ConnectionPair()
    pair.pump()
    # Encrypt a hostile yamux frame with the dialer's real keys.
    assert pair.dialer._channel is not None
    frame = yamux.encode_header(yamux.WINDOW_UPDATE, yamux.SYN, 2, 0)  # a listener-parity id
    wire = b"".join(pair.dialer._channel.encrypt(frame))
    with pytest.raises(ProtocolViolation):
        pair.listener.receive_data(wire)
    reply = b"".join(pair.listener.data_to_send())
    assert pair.dialer.receive_data(reply) == [conn.ConnectionClosed(reason="peer sent GO_AWAY code 1")]


def test_stream_flood_is_refused() -> None:
    config = conn.ConnectionConfig(streams_max=8)
    pair = ConnectionPair(dialer_config=config, listener_config=config)
    pair.pump()
    session = pair.dialer._session
    assert session is not None
    session.streams_max = 1000  # a dialer that ignores limits
    with pytest.raises(ProtocolViolation, match="kept opening"):
        for _ in range(40):
            session.open_stream()
            pair.pump()
    assert len(pair.of_type(False, conn.StreamOpened)) == 0


def test_oversized_noise_and_yamux_frames() -> None:
    pair = ConnectionPair()
    pair.pump()
    assert pair.dialer._channel is not None
    too_big = yamux.encode_header(yamux.DATA, 0, 1, yamux.INITIAL_WINDOW_BYTES + 1)
    with pytest.raises(ProtocolViolation, match="window"):
        pair.listener.receive_data(b"".join(pair.dialer._channel.encrypt(too_big)))
    fresh = ConnectionPair()
    with pytest.raises(ProtocolViolation):
        fresh.listener.receive_data(b"\x7f" + b"x" * 200)  # multistream line over the bound


@settings(max_examples=200)
@given(st.binary(max_size=500))
def test_fuzz_listener_only_violations(data: bytes) -> None:
    pair = ConnectionPair()
    with contextlib.suppress(ProtocolViolation):
        pair.listener.receive_data(data)


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=1, max_size=300))
def test_fuzz_after_handshake_only_violations(garbage: bytes) -> None:
    pair = ConnectionPair()
    pair.pump()
    with contextlib.suppress(ProtocolViolation):
        pair.listener.receive_data(garbage)


def test_window_growth_limits_reach_the_session() -> None:
    config = conn.ConnectionConfig(stream_window_bytes_max=1 << 20, session_growth_bytes_max=1 << 19)
    pair = ConnectionPair(dialer_config=config, listener_config=config)
    pair.pump()
    session = pair.listener._session
    assert session is not None
    assert session.stream_window_bytes_max == 1 << 20
    assert session.session_growth_bytes_max == 1 << 19
