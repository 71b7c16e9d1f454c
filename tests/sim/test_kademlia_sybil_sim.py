"""Kademlia with sybils in the mix: one address brings many identities, then goes silent.

An honest network grows (k = 6, as the small networks of `test_kademlia_sim.py`);
then an attacker on one IP brings three times as many identities. Each one pings
every honest node (so each honest node is offered every sybil for its table) and
floods every honest node with ADD_PROVIDER records for keys nobody holds. Then every
sybil goes silent, which is what stalls lookups walking a table full of them.

Held, on every honest node: sybils in the table at most the per-bucket and table
bounds for their group; sybil provider records at most the group quota. Then honest
nodes provide keys and other honest nodes look them up, and look honest peers up by
id: every lookup finds its provider or its peer, whatever the seed. Failures print
`seed=N`; see `tests/sim/__init__.py` for replaying one.
"""

from __future__ import annotations

import hashlib
from collections import Counter

import pytest

from pyrsia.p2p.behaviours.kad import messages as dm
from pyrsia.p2p.behaviours.kad.core import KadConfig, LookupEnd
from pyrsia.p2p.identity import Identity
from pyrsia.p2p.wire.multiaddr import tcp
from tests.sim.driver import Outgoing, Simulation, replayable, seeds
from tests.sim.kad import KadNode, grow
from tests.sim.test_kademlia_sim import find_each, provide_random_keys

SYBIL_IP = "203.0.113.7"
SYBIL_GROUP = "203.0.113.0/24"
HONEST = 32
SYBILS = 96
FLOOD_PER_SYBIL = 8
CONFIG = KadConfig(
    k=6,
    request_timeout_s=1.0,
    lookup_timeout_s=60.0,
    ip_group_peers_per_bucket_max=2,
    ip_group_peers_max=8,
    provider_records_max=400,
    provider_records_per_ip_group_max=100,
    inbound_burst=1000.0,
)


class Sybil:
    """One identity of the attacker: it sends what the test makes it send, answers nothing."""

    def __init__(self, peer_id: str) -> None:
        self.peer_id = peer_id

    def receive(self, src: str, payload: object, now_s: float) -> list[Outgoing]:
        return []

    def tick(self, now_s: float) -> list[Outgoing]:
        return []

    def next_deadline_s(self) -> float | None:
        return None


def request(number: int, message: dm.Message) -> tuple[str, int, bytes]:
    return ("req", number, dm.encode(message))


def attack(sim: Simulation, honest: list[KadNode], remote_ips: dict[str, str]) -> list[Sybil]:
    sybils = [Sybil(Identity.from_seed(sim.rng.randbytes(32)).peer_id) for _ in range(SYBILS)]
    for sybil in sybils:
        sim.add(sybil.peer_id, sybil)
        remote_ips[sybil.peer_id] = SYBIL_IP
        # It advertises an address of its own /24; its connections all come from SYBIL_IP.
        advertised = tcp(f"198.18.{sim.rng.randrange(256)}.1", 4001).to_bytes()
        own = dm.Peer(id=dm.peer_id_to_bytes(sybil.peer_id), addrs=(advertised,))
        out = []
        for number, node in enumerate(honest):
            out.append(Outgoing(node.peer_id, request(number, dm.Message(type=dm.MessageType.PING))))
            for flood in range(FLOOD_PER_SYBIL):
                key = b"\x12\x20" + hashlib.sha256(sim.rng.randbytes(16)).digest()
                message = dm.Message(type=dm.MessageType.ADD_PROVIDER, key=key, provider_peers=(own,))
                out.append(Outgoing(node.peer_id, request(10_000 + flood, message)))
        sim.call(sybil.peer_id, lambda now, o=out: o)
    sim.run_for(5.0)
    return sybils


@pytest.mark.parametrize("seed", seeds(12, first=5001))
def test_sybils_from_one_address_neither_fill_tables_nor_stores_nor_stop_lookups(seed: int) -> None:
    with replayable(seed):
        sim = Simulation(seed)
        remote_ips: dict[str, str] = {}
        honest = grow(sim, HONEST, CONFIG, join_interval_s=0.1, remote_ips=remote_ips)
        sybils = attack(sim, honest, remote_ips)
        offered = 0
        for node in honest:
            per_bucket = Counter(
                node.core.table.bucket_of(e.point)
                for e in node.core.table.entries()
                if e.group == SYBIL_GROUP
            )
            assert node.core.table.group_size(SYBIL_GROUP) <= CONFIG.ip_group_peers_max
            assert max(per_bucket.values(), default=0) <= CONFIG.ip_group_peers_per_bucket_max
            assert (
                node.core.providers.records_of_group(SYBIL_GROUP) <= CONFIG.provider_records_per_ip_group_max
            )
            refused = node.core.refusals()
            offered += refused["table_bucket_group"] + refused["table_group"]
            assert refused["provider_group_quota"] == SYBILS * FLOOD_PER_SYBIL - 100
        assert offered > 0, "the sybils never reached a bound"
        # Every sybil falls silent: lookups that try one wait out its timeout.
        for sybil in sybils:
            sim.crash(sybil.peer_id)

        provided = provide_random_keys(sim, honest, 4)
        find_each(sim, honest, provided, per_key=3)
        for target in sim.rng.sample(honest, 4):
            asker = sim.rng.choice([n for n in honest if n is not target])
            sim.call(
                asker.peer_id, lambda now, a=asker, t=target: a.find_node(dm.peer_id_to_bytes(t.peer_id), now)
            )
            lookup_id = asker.last_started
            assert sim.run_until(lambda a=asker, i=lookup_id: i in a.lookups, within_s=120)
            done = asker.lookups[lookup_id]
            assert done.end is LookupEnd.COMPLETE
            assert target.peer_id in [p.peer_id for p in done.closest]
