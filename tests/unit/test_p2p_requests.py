"""Publish request messages: round trips and hostile bytes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyrsia.errors import ProtocolViolation
from pyrsia.p2p.behaviours import requests
from pyrsia.p2p.behaviours.requests import PublishReply, PublishRequest
from pyrsia.translog import codec


@given(
    st.builds(
        PublishRequest,
        kind=st.sampled_from(requests.KINDS),
        name=st.text(min_size=1, max_size=100),
        reference=st.text(max_size=100),
    )
    | st.builds(
        PublishReply,
        ok=st.booleans(),
        height=st.integers(min_value=-1, max_value=2**63 - 1),
        status=st.integers(min_value=0, max_value=999),
        error=st.text(max_size=100),
    )
)
def test_round_trip(message: PublishRequest | PublishReply) -> None:
    assert requests.decode(requests.encode(message)) == message


@pytest.mark.parametrize(
    "doc",
    [
        {"type": "publish", "kind": "rm -rf", "name": "x", "reference": ""},
        {"type": "publish", "kind": "maven", "name": "", "reference": ""},
        {"type": "publish", "kind": "maven", "name": "x" * 5000, "reference": ""},
        {"type": "reply", "ok": True, "height": -5, "status": 0, "error": ""},
        {"type": "reply", "ok": 1, "height": 1, "status": 0, "error": ""},
        {"type": "gossip"},
    ],
)
def test_malformed_messages_are_violations(doc: dict[str, object]) -> None:
    with pytest.raises(ProtocolViolation):
        requests.decode(codec.encode(doc))


def test_oversized_message_is_refused_before_decoding() -> None:
    with pytest.raises(ProtocolViolation):
        requests.decode(b"\x00" * (requests.MESSAGE_BYTES_MAX + 1))
