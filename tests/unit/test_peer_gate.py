"""The peer HTTP data plane's admission core, driven directly (time is an argument)."""

from __future__ import annotations

import pytest

from pyrsia.registry.peer_gate import IN_PROGRESS, PEERS, RATE, Admitted, GateConfig, PeerGate, Refused


def test_a_flooding_address_is_refused_on_its_own_while_others_are_served() -> None:
    gate = PeerGate(GateConfig(request_rate=10.0, requests_per_ip_max=100, peers_max=8))
    decisions = []
    for _ in range(30):
        decisions.append(gate.admit("10.0.0.1", 0.0))
        gate.release("10.0.0.1") if isinstance(decisions[-1], Admitted) else None
    admitted = [d for d in decisions if isinstance(d, Admitted)]
    refused = [d for d in decisions if isinstance(d, Refused)]
    assert len(admitted) == 10  # the burst
    assert refused and all(r.status == 429 and r.reason == RATE and r.retry_after_s >= 1 for r in refused)
    assert isinstance(gate.admit("10.0.0.2", 0.0), Admitted)
    assert gate.refused[RATE] == 20
    # Tokens come back with time.
    assert isinstance(gate.admit("10.0.0.1", 0.5), Admitted)


def test_requests_in_progress_per_address_are_capped_and_freed_on_release() -> None:
    gate = PeerGate(GateConfig(request_rate=1000.0, requests_per_ip_max=2, peers_max=8))
    assert isinstance(gate.admit("a", 0.0), Admitted)
    assert isinstance(gate.admit("a", 0.0), Admitted)
    third = gate.admit("a", 0.0)
    assert isinstance(third, Refused) and third.status == 503 and third.reason == IN_PROGRESS
    assert isinstance(gate.admit("b", 0.0), Admitted)
    gate.release("a")
    assert isinstance(gate.admit("a", 0.0), Admitted)
    assert gate.in_progress("a") == 2


def test_addresses_served_at_once_are_capped_but_one_being_served_may_add() -> None:
    gate = PeerGate(GateConfig(request_rate=1000.0, requests_per_ip_max=4, peers_max=2))
    assert isinstance(gate.admit("a", 0.0), Admitted)
    assert isinstance(gate.admit("b", 0.0), Admitted)
    refused = gate.admit("c", 0.0)
    assert isinstance(refused, Refused) and refused.reason == PEERS and refused.status == 503
    assert isinstance(gate.admit("a", 0.0), Admitted)
    gate.release("b")
    assert gate.serving == 1
    assert isinstance(gate.admit("c", 0.0), Admitted)


def test_forgotten_addresses_are_bounded_and_never_those_in_progress() -> None:
    gate = PeerGate(GateConfig(request_rate=1.0, requests_per_ip_max=4, peers_max=0, addresses_max=3))
    assert isinstance(gate.admit("busy", 0.0), Admitted)
    for i in range(50):
        gate.admit(f"x{i}", 0.0)
        gate.release(f"x{i}")
    assert len(gate._addresses) <= 3
    assert gate.in_progress("busy") == 1
    gate.release("busy")


def test_release_without_admission_is_our_bug() -> None:
    with pytest.raises(ValueError):
        PeerGate().release("nobody")
