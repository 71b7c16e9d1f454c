"""multistream-select: the reference bytes, negotiation over any chunking, bounds."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyrsia.errors import ProtocolViolation
from pyrsia.p2p.wire import multistream, varint


def test_dialer_bytes_match_js_libp2p() -> None:
    # /work reference capture: the first bytes a js-libp2p dialer writes.
    dialer = multistream.Dialer(["/noise"])
    assert dialer.initial().hex() == "132f6d756c746973747265616d2f312e302e300a072f6e6f6973650a"


def _run(
    proposals: list[str], supported: set[str], step: int, trailing: bytes = b""
) -> tuple[multistream.Dialer, multistream.Listener]:
    dialer = multistream.Dialer(proposals)
    listener = multistream.Listener(lambda p: p in supported)
    to_listener = dialer.initial()
    to_dialer = b""
    for _ in range(40):
        while to_listener and not listener.done:
            chunk, to_listener = to_listener[:step], to_listener[step:]
            to_dialer += listener.receive_data(chunk)
        if listener.done:
            to_dialer += trailing
            trailing = b""
        while to_dialer and not dialer.done:
            chunk, to_dialer = to_dialer[:step], to_dialer[step:]
            to_listener += dialer.receive_data(chunk)
        if dialer.done:
            dialer.remainder += to_dialer
            break
    return dialer, listener


@given(st.integers(min_value=1, max_value=50), st.integers(min_value=0, max_value=3))
def test_negotiates_after_refusals(step: int, refused: int) -> None:
    proposals = [f"/nope/{i}" for i in range(refused)] + ["/yes/1.0.0"]
    dialer, listener = _run(proposals, {"/yes/1.0.0"}, step, trailing=b"payload")
    assert dialer.selected == listener.selected == "/yes/1.0.0"
    assert dialer.remainder == b"payload"


def test_all_refused() -> None:
    dialer, listener = _run(["/a", "/b"], set(), 100)
    assert dialer.refused and dialer.selected is None and listener.selected is None


def test_listener_keeps_bytes_after_the_proposal() -> None:
    listener = multistream.Listener(lambda p: p == "/ipfs/ping/1.0.0")
    data = multistream.Dialer(["/ipfs/ping/1.0.0"]).initial() + b"\x01" * 32
    reply = listener.receive_data(data)
    assert reply == multistream.encode_line(multistream.PROTOCOL_ID) + multistream.encode_line(
        "/ipfs/ping/1.0.0"
    )
    assert listener.remainder == b"\x01" * 32


@pytest.mark.parametrize(
    "data",
    [
        multistream.encode_line("/multistream/2.0.0"),
        varint.encode(2000) + b"x" * 2000,
        varint.encode(0),
        varint.encode(3) + b"abc",  # no newline
        varint.encode(3) + b"\xff\xfe\n",
    ],
)
def test_listener_violations(data: bytes) -> None:
    with pytest.raises(ProtocolViolation):
        multistream.Listener(lambda p: True).receive_data(data)


def test_listener_bounds_proposals() -> None:
    listener = multistream.Listener(lambda p: False)
    listener.receive_data(multistream.encode_line(multistream.PROTOCOL_ID))
    with pytest.raises(ProtocolViolation):
        for i in range(multistream.PROPOSALS_MAX + 1):
            listener.receive_data(multistream.encode_line(f"/p/{i}"))


def test_dialer_refuses_an_unasked_answer() -> None:
    dialer = multistream.Dialer(["/a"])
    with pytest.raises(ProtocolViolation):
        dialer.receive_data(multistream.encode_line(multistream.PROTOCOL_ID) + multistream.encode_line("/b"))


@given(st.binary(max_size=200))
def test_fuzz_only_violations(data: bytes) -> None:
    for machine in (multistream.Listener(lambda p: True), multistream.Dialer(["/a"])):
        with contextlib.suppress(ProtocolViolation):
            machine.receive_data(data)
