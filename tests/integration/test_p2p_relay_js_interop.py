"""Circuit relay v2 between pyrsia Hosts and real js-libp2p 3.2 nodes (tests/interop/node.mjs).

Both roles each way: a private pyrsia node reserves on a js relay (circuitRelayServer) and
is reached through it by a js peer and by a pyrsia peer; a js peer (circuitRelayTransport)
reserves on a pyrsia relay and is reached through it by a js peer and by a pyrsia peer.
Every relayed connection carries identify and ping; the ends never punch a hole (pyrsia's
`hole_punching=False`; the js nodes run no DCUtR), so the connections stay relayed.
Needs node and the pinned npm packages, as test_p2p_js_interop.py does.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from pyrsia.errors import ProtocolViolation
from pyrsia.p2p.behaviours.relay import voucher
from pyrsia.p2p.identity import Identity
from pyrsia.p2p.swarm.host import Host, HostConfig, Stream
from tests.integration.test_p2p_js_interop import TIMEOUT_S, JsNode
from tests.support.wait import eventually

ECHO = "/interop/py-echo/1.0.0"
JS_ECHO = "/interop/js-echo/1.0.0"
HOP = "/libp2p/circuit/relay/0.2.0/hop"
STOP = "/libp2p/circuit/relay/0.2.0/stop"


def _echo(stream: Stream) -> None:
    while data := stream.read():
        stream.write(data)


class Nodes:
    """Every node a test starts, stopped in reverse order whatever happens."""

    def __init__(self) -> None:
        self._stops: list[object] = []

    def js(self, *flags: str) -> JsNode:
        node = JsNode(*flags)
        self._stops.append(node)
        return node

    def host(self, **changes: object) -> Host:
        config = HostConfig(listen_host="127.0.0.1", listen_port=0, **changes)  # type: ignore[arg-type]
        host = Host(Identity.from_seed(os.urandom(32)), config)
        host.set_handler(ECHO, _echo)
        host.start()
        self._stops.append(host)
        return host

    def stop(self) -> None:
        for node in reversed(self._stops):
            node.stop()  # type: ignore[attr-defined]


@pytest.fixture
def nodes() -> Iterator[Nodes]:
    started = Nodes()
    try:
        yield started
    finally:
        started.stop()


def _private_host(nodes: Nodes) -> Host:
    return nodes.host(reachability="private", relay_service=False, hole_punching=False)


def _relayed_address(host: Host, relay_id: str) -> str:
    eventually(lambda: bool(host.address_kinds()["relayed"]), "a reservation on the relay")
    (address,) = host.address_kinds()["relayed"]
    assert address.endswith(f"/p2p/{relay_id}/p2p-circuit/p2p/{host.peer_id}"), address
    return address


def _js_relayed_connection(js: JsNode, peer: str) -> None:
    # `limited`: js read the relay's Limit (both relays apply one by default)
    connections = [c for c in js.call("connections")["connections"] if c["peer"] == peer]
    assert connections, f"{js.peer_id} has no connection to {peer}"
    for c in connections:
        assert c["relayed"] and c["limited"] and "/p2p-circuit" in c["addr"], c


# 1. A private pyrsia node reserves on a js relay.


def test_pyrsia_reserves_on_a_js_relay_and_a_js_peer_reaches_it(nodes: Nodes) -> None:
    relay = nodes.js("--relay-server")
    private = _private_host(nodes)
    private.connect(relay.addrs[0], timeout=TIMEOUT_S)
    assert HOP in private.wait_identified(relay.peer_id, timeout=TIMEOUT_S).protocols
    address = _relayed_address(private, relay.peer_id)
    assert relay.call("reservations")["peers"] == [private.peer_id]

    client = nodes.js("--relay-client")
    assert client.call("dial", addr=address)["peer"] == private.peer_id
    _js_relayed_connection(client, private.peer_id)
    # identify both ways over the circuit
    seen = client.call("identify", peer=private.peer_id)
    assert seen["agent"].startswith("pyrsia/") and ECHO in seen["protocols"] and STOP in seen["protocols"]
    assert address in seen["addrs"]
    info = private.wait_identified(client.peer_id, timeout=TIMEOUT_S)
    assert info.relayed and info.agent_version.startswith("js-libp2p/3.2.0")
    # ping both ways, a stream each way (well within the js relay's 128 KiB circuit limit)
    assert client.call("ping", peer=private.peer_id)["rtt_ms"] >= 0
    assert private.ping(client.peer_id, timeout=TIMEOUT_S) > 0
    payload = os.urandom(8 * 1024)
    echoed = client.call("echo", peer=private.peer_id, protocol=ECHO, data=payload.hex())["data"]
    assert echoed == payload.hex()
    stream = private.open_stream(client.peer_id, [JS_ECHO], timeout=TIMEOUT_S)
    stream.write(payload)
    stream.close()
    assert stream.read_all(len(payload), timeout=TIMEOUT_S) == payload


def test_pyrsia_reserves_on_a_js_relay_and_a_pyrsia_peer_reaches_it(nodes: Nodes) -> None:
    relay = nodes.js("--relay-server")
    private = _private_host(nodes)
    private.connect(relay.addrs[0], timeout=TIMEOUT_S)
    address = _relayed_address(private, relay.peer_id)

    public = nodes.host(relay_service=False, hole_punching=False)
    public.connect(relay.addrs[0], timeout=TIMEOUT_S)
    assert public.connect(address, timeout=TIMEOUT_S) == private.peer_id
    info = public.wait_identified(private.peer_id, timeout=TIMEOUT_S)
    assert info.relayed and ECHO in info.protocols
    assert public.ping(private.peer_id, timeout=TIMEOUT_S) > 0
    assert private.ping(public.peer_id, timeout=TIMEOUT_S) > 0
    stream = public.open_stream(private.peer_id, [ECHO], timeout=TIMEOUT_S)
    payload = os.urandom(8 * 1024)
    stream.write(payload)
    stream.close()
    assert stream.read_all(len(payload), timeout=TIMEOUT_S) == payload


# 2. A js peer reserves on a pyrsia relay.


def _js_reserved_on(nodes: Nodes, relay: Host) -> tuple[JsNode, str]:
    private = nodes.js("--relay-client")
    relay_addr = str(relay.listen_addrs[0].with_peer(relay.peer_id))
    addrs = private.call("listen", addr=f"{relay_addr}/p2p-circuit")["addrs"]
    (address,) = [a for a in addrs if "/p2p-circuit" in a]
    assert address.endswith(f"/p2p/{relay.peer_id}/p2p-circuit/p2p/{private.peer_id}"), address
    assert relay.stats().relay["reservations_granted"] == 1
    return private, address


def test_js_reserves_on_a_pyrsia_relay_and_a_js_peer_reaches_it(nodes: Nodes) -> None:
    relay = nodes.host(hole_punching=False)
    private, address = _js_reserved_on(nodes, relay)
    client = nodes.js("--relay-client")
    assert client.call("dial", addr=address)["peer"] == private.peer_id
    _js_relayed_connection(client, private.peer_id)
    _js_relayed_connection(private, client.peer_id)
    assert client.call("ping", peer=private.peer_id)["rtt_ms"] >= 0
    assert private.call("ping", peer=client.peer_id)["rtt_ms"] >= 0
    assert client.call("identify", peer=private.peer_id)["agent"].startswith("js-libp2p/3.2.0")
    payload = os.urandom(8 * 1024)
    echoed = client.call("echo", peer=private.peer_id, protocol=JS_ECHO, data=payload.hex())["data"]
    assert echoed == payload.hex()
    eventually(lambda: relay.stats().circuits_relayed == 1, lambda: f"circuits {relay.stats()}")


def test_js_reserves_on_a_pyrsia_relay_and_a_pyrsia_peer_reaches_it(nodes: Nodes) -> None:
    relay = nodes.host(hole_punching=False)
    private, address = _js_reserved_on(nodes, relay)
    public = nodes.host(relay_service=False, hole_punching=False)
    public.connect(str(relay.listen_addrs[0].with_peer(relay.peer_id)), timeout=TIMEOUT_S)
    assert public.connect(address, timeout=TIMEOUT_S) == private.peer_id
    info = public.wait_identified(private.peer_id, timeout=TIMEOUT_S)
    assert info.relayed and info.agent_version.startswith("js-libp2p/3.2.0") and JS_ECHO in info.protocols
    assert public.ping(private.peer_id, timeout=TIMEOUT_S) > 0
    _js_relayed_connection(private, public.peer_id)
    assert private.call("ping", peer=public.peer_id)["rtt_ms"] >= 0
    stream = public.open_stream(private.peer_id, [JS_ECHO], timeout=TIMEOUT_S)
    payload = os.urandom(8 * 1024)
    stream.write(payload)
    stream.close()
    assert stream.read_all(len(payload), timeout=TIMEOUT_S) == payload


# 3. Reservation vouchers: js-libp2p's relay does not check the voucher it is given, so the
# reservations above prove only js's vouchers against pyrsia's check; this checks both ways.


def test_a_js_voucher_verifies_in_pyrsia(nodes: Nodes) -> None:
    js = nodes.js()
    peer = Identity.from_seed(os.urandom(32)).peer_id
    sealed = js.call("sealVoucher", peer=peer, expiration=1_900_000_000)
    envelope = bytes.fromhex(sealed["envelope"])
    relay = sealed["relay"]
    assert voucher.verify(envelope, relay=relay, peer=peer, expiration=1_900_000_000) == voucher.Voucher(
        relay=relay, peer=peer, expiration=1_900_000_000
    )
    with pytest.raises(ProtocolViolation):
        voucher.verify(envelope, relay=relay, peer=peer, expiration=1_900_000_001)


def test_a_pyrsia_voucher_opens_in_js(nodes: Nodes) -> None:
    js = nodes.js()
    relay = Identity.from_seed(os.urandom(32))
    peer = Identity.from_seed(os.urandom(32)).peer_id
    envelope = voucher.sign(relay, voucher.Voucher(relay=relay.peer_id, peer=peer, expiration=1_900_000_000))
    opened = js.call("openVoucher", envelope=envelope.hex())
    assert opened == {
        "id": opened["id"],
        "ok": True,
        "signer": relay.peer_id,
        "payloadType": "0302",
        "relay": relay.peer_id,
        "peer": peer,
        "expiration": 1_900_000_000,
    }
    tampered = bytearray(envelope)
    tampered[-1] ^= 1  # the last byte of the signature
    with pytest.raises(AssertionError, match=r"[Ss]ignature"):
        js.call("openVoucher", envelope=bytes(tampered).hex())
