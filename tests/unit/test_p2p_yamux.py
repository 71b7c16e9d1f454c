"""yamux: frame headers, two sessions in memory, flow control, limits, hostile bytes."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyrsia.errors import ProtocolViolation, StreamClosed
from pyrsia.p2p.wire import yamux


@given(
    st.sampled_from([yamux.DATA, yamux.WINDOW_UPDATE, yamux.PING, yamux.GO_AWAY]),
    st.integers(min_value=0, max_value=15),
    st.integers(min_value=0, max_value=2**32 - 1),
    st.integers(min_value=0, max_value=2**32 - 1),
)
def test_header_round_trip(frame_type: int, flags: int, stream_id: int, length: int) -> None:
    raw = yamux.encode_header(frame_type, flags, stream_id, length)
    assert len(raw) == 12
    assert yamux.decode_header(raw) == (frame_type, flags, stream_id, length)


def test_header_bytes_match_js() -> None:
    # Reference capture: js opens stream 1 with WINDOW_UPDATE+SYN, delta 0.
    assert yamux.encode_header(yamux.WINDOW_UPDATE, yamux.SYN, 1, 0).hex() == "000100010000000100000000"
    with pytest.raises(ProtocolViolation):
        yamux.decode_header(b"\x01" + bytes(11))
    with pytest.raises(ProtocolViolation):
        yamux.decode_header(b"\x00\x07" + bytes(10))


class Pair:
    """A dialer and a listener session exchanging bytes in memory."""

    def __init__(self, **options: int) -> None:
        self.dialer = yamux.Session(initiator=True, **options)
        self.listener = yamux.Session(initiator=False, **options)
        self.events: dict[bool, list[yamux.Event]] = {True: [], False: []}

    def pump(self, *, consume: bool = True, step: int = 1 << 20) -> None:
        for _ in range(10_000):
            moved = False
            for source, target, side in (
                (self.dialer, self.listener, False),
                (self.listener, self.dialer, True),
            ):
                wire = b"".join(source.data_to_send())
                for start in range(0, len(wire), step):
                    moved = True
                    new = target.receive_data(wire[start : start + step])
                    self.events[side] += new
                    if consume:
                        for event in new:
                            if isinstance(event, yamux.StreamData):
                                target.consume(event.stream_id, len(event.data))
            if not moved:
                return

    def data(self, side: bool, stream_id: int) -> bytes:
        return b"".join(
            e.data for e in self.events[side] if isinstance(e, yamux.StreamData) and e.stream_id == stream_id
        )


@given(st.binary(min_size=0, max_size=1_000_000), st.sampled_from([1, 12, 100, 65536, 1 << 20]))
def test_large_transfer_any_chunking_and_half_close(payload: bytes, step: int) -> None:
    pair = Pair()
    stream_id = pair.dialer.open_stream()
    pair.dialer.write(stream_id, payload)
    pair.dialer.close_write(stream_id)
    pair.pump(step=step)
    assert stream_id == 1
    assert pair.data(False, stream_id) == payload
    assert yamux.StreamEnded(stream_id=1) in pair.events[False]
    assert yamux.StreamOpened(stream_id=1) in pair.events[False]
    pair.listener.write(stream_id, b"reply")
    pair.listener.close_write(stream_id)
    pair.pump()
    assert pair.data(True, stream_id) == b"reply"
    assert pair.dialer.stream_count == pair.listener.stream_count == 0


def test_window_stops_the_sender_until_consumed() -> None:
    pair = Pair()
    stream_id = pair.dialer.open_stream()
    pair.dialer.write(stream_id, b"x" * 1_000_000)
    pair.pump(consume=False)
    assert len(pair.data(False, stream_id)) == yamux.INITIAL_WINDOW_BYTES
    assert pair.dialer.pending_bytes(stream_id) == 1_000_000 - yamux.INITIAL_WINDOW_BYTES
    pair.listener.consume(stream_id, yamux.INITIAL_WINDOW_BYTES)
    pair.pump()
    assert len(pair.data(False, stream_id)) == 1_000_000
    assert pair.dialer.pending_bytes(stream_id) == 0


def test_larger_window_is_announced_in_the_open() -> None:
    pair = Pair(window_bytes=1 << 20)
    stream_id = pair.dialer.open_stream()
    pair.dialer.write(stream_id, b"x" * (2 << 20))
    pair.pump(consume=False)
    assert len(pair.data(False, stream_id)) == 1 << 20


def test_peer_overrunning_the_window_is_a_violation_with_go_away() -> None:
    session = yamux.Session(initiator=False)
    session.receive_data(yamux.encode_header(yamux.WINDOW_UPDATE, yamux.SYN, 1, 0))
    session.data_to_send()
    size = yamux.INITIAL_WINDOW_BYTES + 1
    with pytest.raises(ProtocolViolation, match="window"):
        session.receive_data(yamux.encode_header(yamux.DATA, 0, 1, size))  # refused on the header alone
    assert b"".join(session.data_to_send()) == yamux.encode_header(yamux.GO_AWAY, 0, 0, 1)


def test_stream_flood_is_refused_then_a_violation() -> None:
    session = yamux.Session(initiator=False, streams_max=4)
    for stream_id in range(1, 9, 2):
        session.receive_data(yamux.encode_header(yamux.WINDOW_UPDATE, yamux.SYN, stream_id, 0))
    assert session.stream_count == 4
    session.data_to_send()
    session.receive_data(yamux.encode_header(yamux.WINDOW_UPDATE, yamux.SYN, 9, 0))
    assert b"".join(session.data_to_send()) == yamux.encode_header(yamux.WINDOW_UPDATE, yamux.RST, 9, 0)
    with pytest.raises(ProtocolViolation, match="kept opening"):
        for stream_id in range(11, 41, 2):
            session.receive_data(yamux.encode_header(yamux.WINDOW_UPDATE, yamux.SYN, stream_id, 0))


@pytest.mark.parametrize(
    "frame",
    [
        yamux.encode_header(yamux.WINDOW_UPDATE, yamux.SYN, 2, 0),  # listener parity from a dialer
        yamux.encode_header(yamux.DATA, 0, 0, 0),  # stream frame on the session id
        yamux.encode_header(yamux.PING, yamux.SYN, 3, 0),
        yamux.encode_header(yamux.DATA, 0, 1, yamux.WINDOW_BYTES_MAX + 1),
        b"\x01" + bytes(11),
    ],
)
def test_bad_frames(frame: bytes) -> None:
    with pytest.raises(ProtocolViolation):
        yamux.Session(initiator=False).receive_data(frame)


def test_reused_stream_id_is_a_violation() -> None:
    session = yamux.Session(initiator=False)
    session.receive_data(yamux.encode_header(yamux.WINDOW_UPDATE, yamux.SYN, 3, 0))
    with pytest.raises(ProtocolViolation):
        session.receive_data(yamux.encode_header(yamux.WINDOW_UPDATE, yamux.SYN, 1, 0))


def test_reset_ping_and_go_away() -> None:
    pair = Pair()
    stream_id = pair.dialer.open_stream()
    pair.pump()
    pair.listener.reset(stream_id)
    pair.dialer.ping(77)
    pair.pump()
    assert yamux.StreamReset(stream_id=stream_id) in pair.events[True]
    assert yamux.Pong(opaque=77) in pair.events[True]
    with pytest.raises(StreamClosed):
        pair.dialer.write(stream_id, b"late")
    pair.listener.go_away()
    pair.pump()
    assert yamux.GoneAway(code=0) in pair.events[True]
    with pytest.raises(StreamClosed):
        pair.dialer.open_stream()


def test_data_after_fin_is_a_violation() -> None:
    session = yamux.Session(initiator=False)
    session.receive_data(yamux.encode_header(yamux.WINDOW_UPDATE, yamux.SYN | yamux.FIN, 1, 0))
    with pytest.raises(ProtocolViolation):
        session.receive_data(yamux.encode_header(yamux.DATA, 0, 1, 1) + b"x")


@given(st.binary(max_size=300))
def test_fuzz_only_violations(data: bytes) -> None:
    for initiator in (True, False):
        with contextlib.suppress(ProtocolViolation):
            yamux.Session(initiator=initiator).receive_data(data)


def _window_update_deltas(session: yamux.Session, stream_id: int) -> list[int]:
    deltas = []
    for frame in session.frames_to_send():
        frame_type, flags, sid, length = yamux.decode_header(bytes(frame[0]))
        if frame_type == yamux.WINDOW_UPDATE and sid == stream_id and not flags:
            deltas.append(length)
    return deltas


def _bulk(pair: Pair, stream_id: int, size: int, *, grow: bool, unread: int = 0) -> list[int]:
    """`size` bytes dialer -> listener; the listener consumes all but `unread` bytes of
    what it holds each round, returning credit with `grow`. Deltas of the listener's updates."""
    pair.dialer.write(stream_id, bytes(size))
    deltas: list[int] = []
    held = 0
    for _ in range(10_000):
        wire = b"".join(pair.dialer.data_to_send())
        if not wire:
            break
        for event in pair.listener.receive_data(wire):
            if isinstance(event, yamux.StreamData):
                held += len(event.data)
        taken = max(0, held - unread)
        held -= taken
        pair.listener.consume(stream_id, taken, grow=grow)
        updates = pair.listener.frames_to_send()
        for frame in updates:
            frame_type, flags, sid, length = yamux.decode_header(bytes(frame[0]))
            if frame_type == yamux.WINDOW_UPDATE and sid == stream_id and not flags:
                deltas.append(length)
        pair.dialer.receive_data(b"".join(piece for frame in updates for piece in frame))
    assert pair.dialer.pending_bytes(stream_id) == 0
    return deltas


def _opened_pair(**options: int) -> tuple[Pair, int]:
    pair = Pair(**options)
    stream_id = pair.dialer.open_stream()
    pair.pump()
    return pair, stream_id


def test_a_reader_that_keeps_up_grows_its_window_to_the_stream_max() -> None:
    pair, stream_id = _opened_pair(stream_window_bytes_max=2 * 1024 * 1024)
    deltas = _bulk(pair, stream_id, 16 * 1024 * 1024, grow=True)
    # Doubling from 256 KiB: each update returns the consumed half plus the growth.
    assert max(deltas) > yamux.INITIAL_WINDOW_BYTES
    listener_stream = pair.listener._streams[stream_id]
    assert listener_stream.window == 2 * 1024 * 1024
    # Credit never exceeds the grown window: the peer can have no more in flight.
    assert listener_stream.receive_window <= listener_stream.window


def test_a_slow_reader_or_no_grow_keeps_the_window() -> None:
    pair, stream_id = _opened_pair()
    _bulk(pair, stream_id, 4 * 1024 * 1024, grow=False)
    assert pair.listener._streams[stream_id].window == yamux.INITIAL_WINDOW_BYTES
    pair, stream_id = _opened_pair()
    # A reader that always leaves 100 KiB unread (over a quarter of the window) is slow.
    _bulk(pair, stream_id, 4 * 1024 * 1024, grow=True, unread=100 * 1024)
    assert pair.listener._streams[stream_id].window == yamux.INITIAL_WINDOW_BYTES


def test_grown_windows_stay_within_the_session_budget() -> None:
    budget = 1024 * 1024
    pair = Pair(stream_window_bytes_max=4 * 1024 * 1024, session_growth_bytes_max=budget)
    streams = [pair.dialer.open_stream() for _ in range(3)]
    pair.pump()
    for stream_id in streams:
        _bulk(pair, stream_id, 8 * 1024 * 1024, grow=True)
    grown = sum(pair.listener._streams[s].window - yamux.INITIAL_WINDOW_BYTES for s in streams)
    assert 0 < grown <= budget


def test_received_payloads_are_views_and_split_frames_are_joined() -> None:
    pair, stream_id = _opened_pair()
    pair.dialer.write(stream_id, b"x" * 1000)
    wire = b"".join(pair.dialer.data_to_send())
    events = pair.listener.receive_data(wire)
    assert [type(e.data) for e in events if isinstance(e, yamux.StreamData)] == [memoryview]
    # A byte of data among other frames is copied: it must not pin the whole buffer.
    pair.dialer.write(stream_id, b"z")
    for opaque in range(100):
        pair.dialer.ping(opaque)
    events = pair.listener.receive_data(b"".join(pair.dialer.data_to_send()))
    (small,) = [e for e in events if isinstance(e, yamux.StreamData)]
    assert isinstance(small.data, bytes) and small.data == b"z"
    pair.dialer.write(stream_id, b"y" * 1000)
    wire = b"".join(pair.dialer.data_to_send())
    assert pair.listener.receive_data(wire[:500]) == []
    (event,) = pair.listener.receive_data(wire[500:])
    assert isinstance(event, yamux.StreamData) and bytes(event.data) == b"y" * 1000


def test_a_frame_beyond_the_window_is_refused_on_its_header_when_split() -> None:
    pair, stream_id = _opened_pair()
    header = yamux.encode_header(yamux.DATA, 0, stream_id, yamux.INITIAL_WINDOW_BYTES + 1)
    pair.listener.receive_data(b"\x00")  # a partial header is buffered first
    with pytest.raises(ProtocolViolation, match="window"):
        pair.listener.receive_data(header[1:] + b"z" * 10)


def test_written_bytes_leave_as_whole_frames_without_copies() -> None:
    pair, stream_id = _opened_pair()
    payload = bytes(range(256)) * 1024  # 256 KiB: the whole initial window
    pair.dialer.write(stream_id, payload)
    frames = pair.dialer.frames_to_send()
    assert all(len(b"".join(frame)) <= 65519 for frame in frames)
    pieces = [piece for frame in frames for piece in frame[1:]]
    assert all(isinstance(piece, memoryview) and piece.obj is payload for piece in pieces)
    assert b"".join(pieces) == payload
