"""DCUtR between a pyrsia Host and a real js-libp2p 3.2 node (`@libp2p/dcutr`), each role.

js-libp2p's DCUtR dials and offers only public addresses (and offers only those its
AutoNAT verified), so this runs on the namespaces of test_p2p_autonat_js_interop.py:
machines on public-looking /24s behind one router, a pyrsia relay on the first. Both
ends could reach each other directly, which would let js skip the protocol (as B it
first tries a plain dial to A's advertised addresses), so one side's machine refuses
every unsolicited inbound connection (iptables REJECT of SYNs to its listen port; its
own dials, from that port too, still work): there is no NAT here, but the direct
connection can then only be the other side's dial, made on the DCUtR exchange.

* pyrsia is B (private, reserved on the relay), js is A and dials pyrsia's circuit
  address; js's machine refuses inbound. pyrsia runs CONNECT / CONNECT / SYNC over the
  relayed connection; js's dial on SYNC is the direct connection (outbound from js).
* js is B (reserved on the relay), pyrsia is A and dials js's circuit address;
  pyrsia's machine refuses inbound, so js's plain dial fails and js runs the exchange;
  pyrsia's dial on SYNC is the direct connection (outbound from pyrsia).

Each asserts the exchange happened (js's log, pyrsia's hole-punch counters), which side
dialled the direct connection, and that the relayed connection is closed after it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from pyrsia.p2p.swarm.host import Host
from tests.integration.test_p2p_autonat_js_interop import VERDICT_S, Machine, Net, _autonat, _js_addr, _listen
from tests.integration.test_p2p_js_interop import TIMEOUT_S, JsNode
from tests.support.wait import eventually

pytestmark = pytest.mark.lab  # namespaces and iptables: needs root, and fails without it

GRACE_S = 1.0
DCUTR_LOG = "DEBUG=libp2p:dcutr*"


@pytest.fixture
def net() -> Iterator[Net]:
    with Net() as lab:
        yield lab


def _js(net: Net, machine: Machine) -> JsNode:
    flags = ("--relay-client", "--dcutr", "--autonat-v2")
    node = JsNode(f"--listen={machine.ip}", *flags, prefix=[*machine.prefix, "env", DCUTR_LOG])
    net.stops.append(node)
    return node


def _logged(js: JsNode, text: str) -> bool:
    return any(text in line for line in list(js._stderr))


def _log(js: JsNode) -> str:
    return "".join(line for line in list(js._stderr) if "dcutr" in line)[-3000:]


def _js_connections(js: JsNode, peer: str) -> list[dict[str, Any]]:
    return [c for c in js.call("connections")["connections"] if c["peer"] == peer]


def _verified(js: JsNode, relay: Host) -> None:
    """js reaches the relay and its AutoNAT v2 has the relay verify its address: js's
    DCUtR offers verified addresses only."""
    assert js.call("dial", addr=_listen(relay))["peer"] == relay.peer_id
    addr = _js_addr(js)
    eventually(lambda: _autonat(js, "v2", addr)[0], lambda: f"js: {js.call('autonat')}", within_s=VERDICT_S)


def test_pyrsia_as_b_punches_to_a_js_a(net: Net) -> None:
    relay = net.host(net.machine(), relay_service=True)
    private = net.host(net.machine(), reachability="private", hole_punching=True, relayed_grace_s=GRACE_S)
    private.connect(_listen(relay), timeout=TIMEOUT_S)
    eventually(lambda: bool(private.address_kinds()["relayed"]), lambda: f"{private.address_kinds()}")
    (circuit,) = private.address_kinds()["relayed"]

    machine = net.machine()
    js = _js(net, machine)
    machine.refuse_inbound(int(_js_addr(js).split("/tcp/")[1]))  # only js's own dials get through
    assert js.call("dial", addr=circuit)["peer"] == private.peer_id

    # js, as A, answered pyrsia's CONNECT and dialled on its SYNC
    eventually(lambda: _logged(js, "A receiving sync"), lambda: _log(js), within_s=VERDICT_S)
    eventually(lambda: any(not c["relayed"] for c in _js_connections(js, private.peer_id)), lambda: _log(js))
    direct = [c for c in _js_connections(js, private.peer_id) if not c["relayed"]]
    assert all(c["direction"] == "outbound" for c in direct), direct  # js's dial: nothing gets in to js
    assert all(c["addr"].startswith(_listen(private).split("/p2p/")[0]) for c in direct), direct
    eventually(
        lambda: (info := private.peer_info(js.peer_id)) is not None and not info.relayed,
        lambda: f"pyrsia sees {private.peer_info(js.peer_id)}; punches {private.stats().holepunch}",
    )
    assert private.stats().holepunch["successes"] >= 1
    # the relayed connection is closed after the grace, on both sides
    eventually(lambda: all(not c["relayed"] for c in _js_connections(js, private.peer_id)), lambda: _log(js))
    assert private.ping(js.peer_id, timeout=TIMEOUT_S) > 0


def test_js_as_b_punches_to_a_pyrsia_a(net: Net) -> None:
    relay = net.host(net.machine(), relay_service=True)
    js_machine = net.machine()
    js = _js(net, js_machine)
    _verified(js, relay)
    addrs = js.call("listen", addr=f"{_listen(relay)}/p2p-circuit")["addrs"]
    (circuit,) = [a for a in addrs if "/p2p-circuit" in a]

    machine = net.machine()
    public = net.host(machine, hole_punching=True, relayed_grace_s=GRACE_S)
    machine.refuse_inbound(public.listen_port)  # js's plain dial to pyrsia fails: js runs DCUtR
    public.connect(_listen(relay), timeout=TIMEOUT_S)
    assert public.connect(circuit, timeout=TIMEOUT_S) == js.peer_id

    eventually(lambda: _logged(js, "B sending connect"), lambda: _log(js), within_s=VERDICT_S)
    # js first tried a plain dial to pyrsia's advertised address, which the machine refused
    assert _logged(js, "attempting unilateral connection upgrade to"), _log(js)
    assert _logged(js, "ECONNREFUSED"), _log(js)
    eventually(
        lambda: (info := public.peer_info(js.peer_id)) is not None and not info.relayed,
        lambda: f"pyrsia sees {public.peer_info(js.peer_id)}; punches {public.stats().holepunch}; {_log(js)}",
        within_s=VERDICT_S,
    )
    assert public.stats().holepunch["attempts"] >= 1 and public.stats().holepunch["successes"] >= 1
    direct = [c for c in _js_connections(js, public.peer_id) if not c["relayed"]]
    assert direct and all(c["direction"] == "inbound" for c in direct), direct  # pyrsia's dial
    eventually(lambda: all(not c["relayed"] for c in _js_connections(js, public.peer_id)), lambda: _log(js))
    assert public.ping(js.peer_id, timeout=TIMEOUT_S) > 0
