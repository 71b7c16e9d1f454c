"""pyrsia's Kademlia against a real js-libp2p 3.2 kad-dht 16.4 node on `/pyrsia/kad/1.0.0`.

The js node (tests/interop/node.mjs) runs kad-dht as a server that keeps loopback
addresses. Three directions, each with pyrsia's Hosts offering early muxer
negotiation and without it:
  1. js finds a pyrsia node as provider of a blob, by the blob's CID (v1, raw, the
     sha2-256 multihash of its digest), through a pyrsia node that holds the record;
  2. js finds a pyrsia peer's addresses by a DHT query to the only pyrsia node it knows;
  3. pyrsia finds the provider record js put, by the blob's digest.
"""

from __future__ import annotations

import base64
import hashlib
import os
import time
from collections.abc import Callable, Iterator

import pytest

from pyrsia.p2p.behaviours.kad.core import KadConfig
from pyrsia.p2p.behaviours.kad.service import KadService
from pyrsia.p2p.identity import Identity
from pyrsia.p2p.swarm.host import Host, HostConfig
from pyrsia.p2p.wire.multiaddr import Multiaddr
from tests.integration.test_p2p_js_interop import JsNode

TIMEOUT_S = 30.0
MODES = pytest.mark.parametrize("early_muxer", [True, False], ids=["early-muxer", "multistream-muxer"])


def wait_until(condition: Callable[[], object], what: str, timeout: float = TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


class PyNode:
    def __init__(self, early_muxer: bool) -> None:
        identity = Identity.from_seed(os.urandom(32))
        config = HostConfig(listen_host="127.0.0.1", listen_port=0, early_muxer=early_muxer)
        self.host = Host(identity, config).start()
        kad_config = KadConfig(request_timeout_s=5.0, lookup_timeout_s=20.0)
        self.kad = KadService(self.host, identity, config=kad_config).start()
        self.peer_id = identity.peer_id

    @property
    def address(self) -> str:
        return str(self.host.listen_addrs[0].with_peer(self.peer_id))

    def stop(self) -> None:
        self.kad.stop()
        self.host.stop()


@pytest.fixture
def js() -> Iterator[JsNode]:
    node = JsNode()
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture
def make_py() -> Iterator[Callable[[bool], PyNode]]:
    nodes: list[PyNode] = []

    def make(early_muxer: bool) -> PyNode:
        nodes.append(PyNode(early_muxer))
        return nodes[-1]

    try:
        yield make
    finally:
        for node in nodes:
            node.stop()


def blob_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def cid_of(digest_hex: str) -> str:
    """CIDv1, raw codec (0x55), sha2-256 multihash, in multibase base32 ('b')."""
    raw = bytes([0x01, 0x55, 0x12, 0x20]) + bytes.fromhex(digest_hex)
    return "b" + base64.b32encode(raw).decode().lower().rstrip("=")


def js_knows(js: JsNode, py: PyNode) -> None:
    """js dials `py` and puts it in its routing table (after identify and a ping)."""
    assert js.call("dial", addr=py.address)["peer"] == py.peer_id
    wait_until(lambda: js.call("routingTable")["size"] >= 1, "js to add the pyrsia node to its table")
    wait_until(lambda: py.kad.routing_table_size >= 1, "pyrsia to add the js node to its table")


@MODES
def test_js_finds_a_pyrsia_provider_by_cid(
    js: JsNode, make_py: Callable[[bool], PyNode], early_muxer: bool
) -> None:
    holder, provider = make_py(early_muxer), make_py(early_muxer)
    assert provider.kad.bootstrap([holder.address], timeout=TIMEOUT_S) == 1
    digest = blob_digest(b"a layer pyrsia holds")
    assert provider.kad.provide(f"sha256:{digest}", timeout=TIMEOUT_S) == [holder.peer_id]
    wait_until(lambda: holder.kad.stats().provider_records == 1, "the holder to store the record")

    js_knows(js, holder)  # js knows only the holder, never the provider
    found = js.call("findProviders", digest=digest, want=provider.peer_id)
    assert found["cid"] == cid_of(digest)
    addrs = {p["peer"]: p["addrs"] for p in found["providers"]}
    assert provider.peer_id in addrs
    assert str(provider.host.listen_addrs[0]) in [
        str(Multiaddr.parse(a).without_peer()) for a in addrs[provider.peer_id]
    ]


@MODES
def test_js_finds_a_pyrsia_peer_through_the_dht(
    js: JsNode, make_py: Callable[[bool], PyNode], early_muxer: bool
) -> None:
    known, hidden = make_py(early_muxer), make_py(early_muxer)
    assert hidden.host.connect(known.address, timeout=TIMEOUT_S) == known.peer_id
    wait_until(lambda: hidden.peer_id in {p for p, _ in known.kad.peers()}, "A to add B to its table")

    js_knows(js, known)
    assert not hidden.host.is_connected(js.peer_id)
    found = js.call("findPeer", peer=hidden.peer_id)
    assert found["peer"] == hidden.peer_id
    assert str(hidden.host.listen_addrs[0]) in [
        str(Multiaddr.parse(a).without_peer()) for a in found["addrs"]
    ]


@MODES
def test_pyrsia_finds_a_js_provider_record(
    js: JsNode, make_py: Callable[[bool], PyNode], early_muxer: bool
) -> None:
    first, second = make_py(early_muxer), make_py(early_muxer)
    assert second.kad.bootstrap([first.address], timeout=TIMEOUT_S) == 1
    js_knows(js, first)
    digest = blob_digest(b"a blob js announces")
    assert js.call("provide", digest=digest)["cid"] == cid_of(digest)
    wait_until(
        lambda: first.kad.stats().provider_records + second.kad.stats().provider_records >= 1,
        "a pyrsia node to store js's record",
    )

    for node in (first, second):
        found = dict(node.kad.find_providers(f"sha256:{digest}", timeout=TIMEOUT_S))
        assert js.peer_id in found
        assert Multiaddr.parse(js.addrs[0]).without_peer() in found[js.peer_id]
