"""Ports for test listeners that take a port number rather than 0 (docker-registry, git
daemon, a node's peer HTTP port): picked as `pyrsia devnet` picks them, outside the
kernel's ephemeral range, so no outgoing connection of a parallel test takes one between
the pick and the listener's bind."""

from __future__ import annotations

from pyrsia.cli.devnet import free_ports


def free_port(host: str = "127.0.0.1") -> int:
    return free_ports(1, host)[0]
