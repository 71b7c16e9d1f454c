"""NAT traversal over many seeds: reachability, reservations, the switch to direct connections.

Each seed draws a small internet (`tests/sim/nat.py`): nodes on public IPs and nodes
behind port-preserving or random-port NATs, relays that may vanish without a word,
AutoNAT servers of which up to two lie, SYNs that may be lost, links of random latency.
The real cores run behind a simulated host; the properties are the issue's:

- reachability: behind NAT comes out private, public comes out public, whatever two
  lying servers of five say; never a verdict before three distinct servers answered
  (servers crowded into two /24s never make one);
- reservations: a private node holds reservations on two relays whenever two are
  alive (re-reserving within the keep-alive timeout plus a margin after one vanishes),
  renews them before they expire, never reserves over a relayed connection (even when
  a relay it knows is reachable only through a circuit), and no relay ever holds more
  reservations or circuits than its limits;
- switch to direct: two nodes behind port-preserving NATs (or a public dialler and a
  NATed target) end with a direct connection within three DCUtR attempts and traffic
  moves to it; with a random-port NAT on either side they stay relayed, punches give
  up after three attempts, and traffic keeps flowing, through a new circuit over
  another relay when the relay carrying theirs vanishes mid-circuit.
"""

from __future__ import annotations

import ipaddress
import itertools
import random

import pytest

from pyrsia.p2p.behaviours import dcutr
from pyrsia.p2p.behaviours.relay import hop
from tests.sim.driver import Simulation, replayable, seeds
from tests.sim.nat import DEFAULTS, Internet, Nat, SimHost, public_ips
from tests.sim.network import Faults

KEEPALIVE_S_MAX = DEFAULTS.keepalive_timeout_s + DEFAULTS.keepalive_interval_s
NAT_KINDS = ("port-preserving", "random-port")


def _sim(seed: int) -> Simulation:
    mean_s = random.Random(f"{seed}/latency").choice([0.005, 0.02, 0.06])
    return Simulation(seed, Faults(delay_s_min=0.002, delay_s_mean=mean_s, reorder=False))


def _natted(net: Internet, index: int, kind: str, nat_ip: str, **options: object) -> SimHost:
    rng = net.sim.rng
    nat = Nat(nat_ip, kind == "port-preserving", net.rng)
    inside = f"192.168.{rng.randrange(0, 250)}.{rng.randrange(2, 250)}"
    return SimHost(net, index=index, ip=inside, nat=nat, **options)  # type: ignore[arg-type]


def _group(ip: str) -> str:
    return str(ipaddress.ip_network(f"{ip}/24", strict=False))


# -- reachability ----------------------------------------------------------------------------


def run_reachability(seed: int) -> None:
    sim = _sim(seed)
    net = Internet(sim)
    rng = sim.rng
    kind = rng.choice(("public", *NAT_KINDS))
    crowded = rng.random() < 0.2  # five servers in at most two /24s: one operator, few voices
    ips = public_ips(rng, 6)
    server_ips = public_ips(rng, 5, groups=rng.randint(1, 2)) if crowded else ips[1:]
    liars = rng.sample(range(5), rng.randint(0, 2))
    servers = [
        SimHost(
            net,
            index=i + 1,
            ip=ip,
            reachability="public",
            liar=rng.choice(("deny", "confirm")) if i in liars else "",
        )
        for i, ip in enumerate(server_ips)
    ]
    me = SimHost(net, index=0, ip=ips[0]) if kind == "public" else _natted(net, 0, kind, ips[0])
    me.bootstrap = servers
    for host in (me, *servers):
        net.add(host)
    by_name = {s.name: s for s in servers}
    expected = "public" if kind == "public" else "private"
    decided = sim.run_until(lambda: me.reachability != "unknown", within_s=120.0)
    sim.run_for(60.0)
    # Never a verdict without three distinct servers (their /24s) behind it.
    for at_s, verdict in me.log.reachability:
        answered = {
            _group(by_name[server].ip)
            for when, server, result in me.log.verdicts
            if when <= at_s and result in ("reachable", "unreachable")
        }
        assert len(answered) >= 3, f"{verdict} at {at_s:.1f} s from {len(answered)} server group(s)"
    if crowded and len({_group(ip) for ip in server_ips}) < 3:
        assert not decided and me.reachability == "unknown", me.log.reachability
        return
    assert decided, f"no verdict in 120 s: {me.log.verdicts}"
    assert me.reachability == expected, (kind, liars, me.log.verdicts)
    assert [v for _, v in me.log.reachability] == [expected], "the verdict flipped"
    confirmers = sum(1 for s in servers if s.liar == "confirm")
    assert me.autonat_client.refusals["autonat_dial_back_not_inbound"] == confirmers


@pytest.mark.parametrize("seed", seeds(150))
def test_reachability_is_decided_by_honest_majorities(seed: int) -> None:
    with replayable(seed):
        run_reachability(seed)


# -- reservations -----------------------------------------------------------------------------


def run_reservations(seed: int) -> None:
    sim = _sim(seed)
    net = Internet(sim)
    rng = sim.rng
    relay_count = rng.randint(3, 5)
    tight = rng.random() < 0.25
    ttl_s = rng.choice([60, 180, 600])
    limits = hop.RelayLimits(
        reservation_ttl_s=ttl_s,
        reservations_max=rng.randint(1, 2) if tight else 128,
        circuits_max=rng.randint(0, 1) if tight else 256,
    )
    ips = public_ips(rng, relay_count + 4)
    relays = [
        SimHost(net, index=i + 1, ip=ips[i], relay_limits=limits, reachability="public")
        for i in range(relay_count)
    ]
    privates = [
        _natted(
            net,
            10 + i,
            rng.choice(NAT_KINDS),
            ips[relay_count + i],
            reachability=rng.choice(("auto", "private")),
        )
        for i in range(rng.randint(1, 3))
    ]
    # A hop-speaking node behind a random-port NAT: the others reach it only through a circuit,
    # and must never count it (nor reserve on it) as a relay.
    hidden = None
    if rng.random() < 0.5:
        hidden = _natted(net, 20, "random-port", ips[-1], relay_limits=limits, reachability="private")
    for node in [*privates, *([hidden] if hidden else [])]:
        node.bootstrap = relays
        if hidden is not None and node is not hidden:
            node.echo_target = hidden
    for host in (*relays, *privates, *([hidden] if hidden else [])):
        net.add(host)
    vanish_at = sorted(rng.uniform(100.0, 750.0) for _ in range(rng.randint(0, relay_count - 1)))
    doomed = rng.sample(relays, len(vanish_at))
    bound_s = KEEPALIVE_S_MAX + 15.0
    short_since: dict[str, float] = {}
    end_s = 900.0
    while sim.now_s < end_s:
        if vanish_at and sim.now_s >= vanish_at[0]:
            vanish_at.pop(0)
            net.vanish(doomed.pop(0).name)
            short_since.clear()  # the bound runs from the latest vanishing: two close together add up
        sim.run_for(1.0)
        now = sim.now_s
        alive = [r for r in relays if net.alive(r.name)]
        for relay in alive:
            assert relay.relay is not None
            assert relay.relay.reservations(now) <= limits.reservations_max
            assert relay.relay.circuits <= limits.circuits_max
        nodes = (*privates, *([hidden] if hidden else []))
        for node in nodes:  # what a node counts as held, the relay holds (it expires later)
            for relay in alive:
                if relay.name in node.circuit_addrs:
                    assert relay.relay.reserved(node.name, now), "held by the node, expired at the relay"  # type: ignore[union-attr]
        if tight:
            continue
        for node in (*privates, *([hidden] if hidden else [])):
            held = [r for r in alive if r.name in node.circuit_addrs and r.relay.reserved(node.name, now)]  # type: ignore[union-attr]
            if len(held) >= min(2, len(alive)) or now < 90.0:
                short_since.pop(node.name, None)
                continue
            since = short_since.setdefault(node.name, now)
            assert now - since <= bound_s, (
                f"{node.name[-6:]} held {len(held)} of {len(alive)} live relays for {now - since:.0f} s"
            )
    for node in (*privates, *([hidden] if hidden else [])):
        assert node.relay_client.refusals["relay_reserve_over_relayed"] == 0
        assert node.log.reserve_asks_relayed == 0
        # A vanished relay's reservation may run out before the keep-alive notices; a live one's never.
        expired = [x for x in node.log.lost if x[2] == "expired" and net.alive(x[1])]
        assert not expired, "a reservation on a live relay expired unrenewed"
        if hidden is not None and node is not hidden:
            assert hidden.name not in node.circuit_addrs and hidden.name not in node.reserving
        if not tight:
            renewals = len(node.log.reserved)
            assert renewals >= (end_s - 90.0) // ttl_s, f"only {renewals} reservations made or renewed"
    for relay in relays:
        assert relay.relay is not None and relay.relay.refusals["relay_over_relayed"] == 0


@pytest.mark.parametrize("seed", seeds(24, first=20_001))
def test_private_nodes_keep_two_reservations(seed: int) -> None:
    with replayable(seed):
        run_reservations(seed)


# -- the switch to direct ---------------------------------------------------------------------


def run_direct(seed: int) -> None:
    sim = _sim(seed)
    rng = sim.rng
    net = Internet(sim, punch_syn_loss=rng.choice([0.0, 0.2, 0.5, 0.75, 0.9]))
    relay_count = rng.randint(2, 3)
    ips = public_ips(rng, relay_count + 2)
    relays = [
        SimHost(net, index=i + 1, ip=ips[i], relay_limits=hop.RelayLimits(), reachability="public")
        for i in range(relay_count)
    ]
    a_kind = rng.choice(("public", *NAT_KINDS))
    b_kind = rng.choice(NAT_KINDS)
    if a_kind == "public":
        a = SimHost(net, index=10, ip=ips[-2], reachability="public")
    else:
        a = _natted(net, 10, a_kind, ips[-2], reachability="private")
    b = _natted(net, 11, b_kind, ips[-1], reachability="private")
    a.bootstrap = b.bootstrap = relays
    a.echo_target = b
    for host in (*relays, a, b):
        net.add(host)
    # B dials out to a public A whatever its NAT; two NATs meet only if both keep the port.
    punchable = a_kind == "public" or a_kind == b_kind == "port-preserving"
    assert sim.run_until(lambda: len(a.echo.replies) > 0, within_s=60.0), "no traffic at all"
    vanish_s = rng.uniform(20.0, 200.0) if not punchable and rng.random() < 0.6 else None
    vanished = None
    circuits_before = 0
    end_s = 400.0
    while sim.now_s < end_s:
        if vanish_s is not None and vanished is None and sim.now_s >= vanish_s:
            carrier = next((c for c in a.conns.values() if c.peer == b.name and c.relayed), None)
            if carrier is not None and carrier.carrier is not None:
                vanished = a.conns[carrier.carrier[0]].peer
                net.vanish(vanished)
                circuits_before = a.log.circuits_opened
                vanish_s = sim.now_s
        sim.run_for(1.0)
    replies = a.echo.replies
    gaps = [later[1] - earlier[1] for earlier, later in itertools.pairwise(replies)]
    if punchable and not b.log.direct and net.punch_syn_loss > 0.5:
        # Three attempts may all lose every SYN at this loss: then B gave up after the
        # third, and traffic went on over the relay.
        assert [f for f in b.log.punch_failed if f[3] and f[2] == dcutr.ATTEMPTS_MAX], b.log.punch_failed
        assert replies[-1][1] > end_s - 10.0, "traffic stopped"
    elif punchable:
        assert b.log.direct, f"no direct connection; punches failed: {b.log.punch_failed}"
        at_s, peer, attempts = b.log.direct[0]
        assert peer == a.name and 1 <= attempts <= dcutr.ATTEMPTS_MAX
        direct = a.live_conn(b.name)
        assert direct is not None and not direct.relayed
        assert not [c for c in a.conns.values() if c.peer == b.name and c.relayed], (
            "the relayed connection stayed"
        )
        moved_s = at_s + DEFAULTS.relayed_grace_s + 1.0
        late = [r for r in replies if r[1] > moved_s]
        assert late and not [r for r in late if r[2]], "traffic did not move to the direct connection"
    else:
        assert not b.log.direct and not a.log.direct, "a direct connection through a random-port NAT"
        assert [f for f in b.log.punch_failed if f[3] and f[2] == dcutr.ATTEMPTS_MAX], b.log.punch_failed
        assert replies[-1][1] > end_s - 10.0, "traffic stopped"
        bound_s = KEEPALIVE_S_MAX + 15.0 if vanished else 15.0
        assert max(gaps) <= bound_s, (
            f"traffic stalled {max(gaps):.0f} s (relay vanished: {vanished is not None})"
        )
        if vanished is not None:
            assert a.log.circuits_opened > circuits_before
            after = [r for r in replies if r[1] > vanish_s + KEEPALIVE_S_MAX + 15.0]
            assert after and all(r[2] for r in after)
    for relay in relays:
        assert relay.relay is not None and relay.relay.circuits <= relay.relay.limits.circuits_max


@pytest.mark.parametrize("seed", seeds(80, first=40_001))
def test_hole_punching_goes_direct_or_stays_relayed(seed: int) -> None:
    with replayable(seed):
        run_direct(seed)
