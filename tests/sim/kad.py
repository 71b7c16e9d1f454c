"""The Kademlia core as a simulation node, every message through the real wire codec.

Payloads on the fake network are what a stream would carry: `("req", id, bytes)` on a
stream the sender opened, `("resp", id, bytes)` back on it, `("reset", id, b"")` when
the answering side refuses. Each node has an IP of its own (`node_ip`, from its peer
id: its own /24 but by rare chance) and advertises `/ip4/IP/tcp/4001`; every node
serves kad, so it passes the sender's address with each inbound request, and the
sender's IP as the connection's remote IP. `remote_ips` overrides that IP for some
peers: sybils that all come from one address.
"""

from __future__ import annotations

import functools
import hashlib
import random

from pyrsia.p2p.behaviours.kad import messages as dm
from pyrsia.p2p.behaviours.kad.core import (
    Effect,
    KadConfig,
    Kademlia,
    LookupDone,
    ProvideDone,
    Refuse,
    Reply,
    Send,
)
from pyrsia.p2p.identity import Identity
from pyrsia.p2p.wire.multiaddr import tcp
from tests.sim.driver import Outgoing, Simulation


@functools.cache
def node_ip(peer_id: str) -> str:
    digest = hashlib.sha256(peer_id.encode()).digest()
    return f"10.{digest[0]}.{digest[1]}.{digest[2] % 254 + 1}"


@functools.cache
def sim_addr(peer_id: str) -> bytes:
    return tcp(node_ip(peer_id), 4001).to_bytes()


class KadNode:
    """`wire=False` hands the (immutable) messages over as they are: the same run, faster."""

    def __init__(
        self, core: Kademlia, *, wire: bool = True, remote_ips: dict[str, str] | None = None
    ) -> None:
        self.core = core
        self.wire = wire
        self.remote_ips = {} if remote_ips is None else remote_ips
        self.lookups: dict[int, LookupDone] = {}
        self.provides: dict[int, ProvideDone] = {}
        self.last_started = 0
        self.refused = 0

    @property
    def peer_id(self) -> str:
        return self.core.peer_id

    def receive(self, src: str, payload: object, now_s: float) -> list[Outgoing]:
        assert isinstance(payload, tuple)
        kind, number, body = payload
        remote_ip = self.remote_ips.get(src) or node_ip(src)
        if kind == "req":
            effects = self.core.request_received(
                src, number, self._decode(body), now_s, addrs=(sim_addr(src),), remote_ip=remote_ip
            )
        elif kind == "resp":
            effects = self.core.response_received(number, self._decode(body), now_s, remote_ip=remote_ip)
        else:
            effects = self.core.request_failed(number, now_s)
        return self.execute(effects)

    def tick(self, now_s: float) -> list[Outgoing]:
        return self.execute(self.core.tick(now_s))

    def next_deadline_s(self) -> float | None:
        return self.core.next_deadline_s()

    def find_providers(self, key: bytes, now_s: float, wanted: int = 1) -> list[Outgoing]:
        self.last_started, effects = self.core.find_providers(key, now_s, wanted=wanted)
        return self.execute(effects)

    def find_node(self, key: bytes, now_s: float) -> list[Outgoing]:
        self.last_started, effects = self.core.find_node(key, now_s)
        return self.execute(effects)

    def provide(self, key: bytes, now_s: float) -> list[Outgoing]:
        self.last_started, effects = self.core.provide(key, now_s)
        return self.execute(effects)

    def _encode(self, message: dm.Message) -> object:
        return dm.encode(message) if self.wire else message

    def _decode(self, body: object) -> dm.Message:
        if isinstance(body, dm.Message):
            return body
        assert isinstance(body, bytes)
        return dm.decode(body)

    def execute(self, effects: list[Effect]) -> list[Outgoing]:
        out: list[Outgoing] = []
        for effect in effects:
            match effect:
                case Send(peer=peer, request_id=request_id, message=message):
                    out.append(Outgoing(peer, ("req", request_id, self._encode(message))))
                case Reply(peer=peer, inbound_id=inbound_id, message=message):
                    out.append(Outgoing(peer, ("resp", inbound_id, self._encode(message))))
                case Refuse(peer=peer, inbound_id=inbound_id):
                    self.refused += 1
                    out.append(Outgoing(peer, ("reset", inbound_id, b"")))
                case LookupDone(lookup_id=lookup_id):
                    self.lookups[lookup_id] = effect
                case ProvideDone(lookup_id=lookup_id):
                    self.provides[lookup_id] = effect
        return out


def new_node(
    sim: Simulation, config: KadConfig, *, wire: bool = True, remote_ips: dict[str, str] | None = None
) -> KadNode:
    peer_id = Identity.from_seed(sim.rng.randbytes(32)).peer_id
    core = Kademlia(
        peer_id=peer_id,
        addrs=(sim_addr(peer_id),),
        rng=random.Random(sim.rng.getrandbits(64)),
        now_s=sim.now_s,
        config=config,
    )
    return KadNode(core, wire=wire, remote_ips=remote_ips)


def join(sim: Simulation, node: KadNode, known: list[KadNode]) -> None:
    """`node` starts knowing `known` (its bootstrap list) and looks itself up."""
    sim.add(node.peer_id, node)
    for other in known:
        sim.call(
            node.peer_id,
            lambda now, o=other: node.execute(
                node.core.add_peer(
                    o.peer_id,
                    (sim_addr(o.peer_id),),
                    now,
                    remote_ip=node.remote_ips.get(o.peer_id) or node_ip(o.peer_id),
                )
            ),
        )
    sim.call(node.peer_id, lambda now: node.execute(node.core.bootstrap(now)))


def grow(
    sim: Simulation,
    count: int,
    config: KadConfig,
    *,
    join_interval_s: float = 0.5,
    wire: bool = True,
    remote_ips: dict[str, str] | None = None,
) -> list[KadNode]:
    """`count` nodes join one after another, each knowing one to three random earlier ones."""
    nodes: list[KadNode] = []
    for index in range(count):
        node = new_node(sim, config, wire=wire, remote_ips=remote_ips)
        known = sim.rng.sample(nodes, min(index, sim.rng.randint(1, 3)))
        join(sim, node, known)
        nodes.append(node)
        sim.run_for(join_interval_s)
    sim.run_until(lambda: all(n.core.active_lookups == 0 for n in nodes), within_s=600)
    return nodes
