"""DCUtR between real Hosts on loopback: a relayed connection becomes a direct one.

R relays; B is private and reserves on R; A, connected only to R, dials B's circuit
address. B, which accepted the relayed connection, starts the hole punch at once: both
exchange their addresses over `/libp2p/dcutr` and dial each other from their listen
ports. Loopback has no NAT to show (tests/lab/test_lab_dcutr.py has one), but it runs
the host's whole path: the dials at the punch's time, the Noise roles, the direct
connection preferred, and the relayed connection closed after the grace.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator

import pytest

from pyrsia.p2p.identity import Identity
from pyrsia.p2p.swarm.host import Host, HostConfig, Stream

ECHO = "/test/echo/1.0.0"
GRACE_S = 1.0


def _echo(stream: Stream) -> None:
    while data := stream.read():
        stream.write(data)


def _poll(condition: Callable[[], bool], what: Callable[[], str], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError(f"not met in {timeout} s: {what()}")


def _host(**changes: object) -> Host:
    config = HostConfig(listen_host="127.0.0.1", listen_port=0, relayed_grace_s=GRACE_S, **changes)  # type: ignore[arg-type]
    return Host(Identity.from_seed(os.urandom(32)), config)


@pytest.fixture
def network() -> Iterator[tuple[Host, Host, Host]]:
    relay = _host()
    private = _host(reachability="private", relay_service=False)
    public = _host(relay_service=False)
    private.set_handler(ECHO, _echo)
    for host in (relay, private, public):
        host.start()
    try:
        for host in (private, public):
            host.connect(str(relay.listen_addrs[0].with_peer(relay.peer_id)))
        yield relay, private, public
    finally:
        for host in (public, private, relay):
            host.stop()


def _circuit_address(private: Host) -> str:
    _poll(lambda: bool(private.address_kinds()["relayed"]), lambda: str(private.address_kinds()))
    (address,) = private.address_kinds()["relayed"]
    return address


def _connections(host: Host, peer: str) -> list[tuple[bool, str]]:
    """(relayed, direction) of each live connection to `peer` (read on the selector's data)."""
    return [(c.carrier is not None, c.direction) for c in list(host._by_peer.get(peer, [])) if not c.closed]


def test_a_relayed_connection_is_punched_through_and_the_relayed_one_closes(
    network: tuple[Host, Host, Host],
) -> None:
    relay, private, public = network
    assert public.connect(_circuit_address(private)) == private.peer_id

    # B (the private node, which accepted the relayed connection) punches; on loopback
    # nothing stops the dials, so a direct connection joins and is preferred.
    _poll(
        lambda: (info := public.peer_info(private.peer_id)) is not None and not info.relayed,
        lambda: f"public sees {public.peer_info(private.peer_id)}; punches {public.stats().holepunch}",
    )
    _poll(
        lambda: (info := private.peer_info(public.peer_id)) is not None and not info.relayed,
        lambda: f"private sees {private.peer_info(public.peer_id)}",
    )
    assert private.stats().holepunch["successes"] >= 1
    assert private.stats().holepunch["attempts"] >= 1
    assert public.stats().holepunch["attempts"] >= 1

    # After the grace, only the direct connection is left, on both sides.
    _poll(
        lambda: (
            _connections(public, private.peer_id) == [(False, _connections(public, private.peer_id)[0][1])]
            and _connections(private, public.peer_id)
            == [(False, _connections(private, public.peer_id)[0][1])]
        ),
        lambda: (
            f"public {_connections(public, private.peer_id)}, private {_connections(private, public.peer_id)}"
        ),
        timeout=GRACE_S + 10,
    )
    # The punch's roles held: one side ran Noise as initiator, the other as responder
    # (else the handshake would never have finished), and the peers stayed connected.
    assert public.is_connected(private.peer_id) and private.is_connected(public.peer_id)

    # Streams now go direct: the relay carries none of their bytes.
    relayed_before = relay.stats().relay.get("bytes_relayed", 0)
    stream = public.open_stream(private.peer_id, [ECHO])
    payload = os.urandom(512 * 1024)  # more than the relay's circuit limit would carry
    stream.write(payload)
    stream.close()
    assert stream.read_exactly(len(payload), timeout=20) == payload
    assert relay.stats().relay.get("bytes_relayed", 0) - relayed_before < 4096
    assert private.stats().holepunch["failures"] == 0


def test_without_hole_punching_the_connection_stays_relayed(network: tuple[Host, Host, Host]) -> None:
    relay, _, _ = network
    private = _host(reachability="private", relay_service=False, hole_punching=False)
    public = _host(relay_service=False)
    with private, public:
        for host in (private, public):
            host.connect(str(relay.listen_addrs[0].with_peer(relay.peer_id)))
        assert public.connect(_circuit_address(private)) == private.peer_id
        public.wait_identified(private.peer_id)
        # B does not start a punch, and A never starts one (it answers B's).
        deadline = time.monotonic() + 3 * GRACE_S
        while time.monotonic() < deadline:
            info = public.peer_info(private.peer_id)
            assert info is not None and info.relayed, info
            time.sleep(0.05)
        assert private.stats().holepunch["attempts"] == 0
        assert public.stats().holepunch["attempts"] == 0
