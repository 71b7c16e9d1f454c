"""Which ports a devnet takes: never from the kernel's ephemeral range, where any outgoing
connection may take one between the pick and the node's bind."""

from __future__ import annotations

import socket

import pytest

from pyrsia.cli import devnet


@pytest.mark.parametrize(
    ("ephemeral", "expected"),
    [
        ((32768, 60999), range(10_000, 32768)),  # Linux's default: below it
        ((10500, 40000), range(40001, 65536)),  # little room below: above it
        ((1024, 65535), None),  # the whole space is ephemeral: the kernel's pick
        (None, None),  # not known (not Linux)
    ],
)
def test_quiet_ports_lie_outside_the_ephemeral_range(
    ephemeral: tuple[int, int] | None, expected: range | None
) -> None:
    assert devnet.quiet_ports(ephemeral) == expected


def test_picked_ports_are_distinct_free_and_outside_the_ephemeral_range() -> None:
    low, high = (int(part) for part in devnet.EPHEMERAL_RANGE_FILE.read_text().split())
    ports = devnet.free_ports(8)
    assert len(set(ports)) == 8
    assert all(not low <= port <= high for port in ports), (ports, low, high)
    for port in ports:  # free once picked: the node can bind it
        with socket.socket() as sock:
            sock.bind((devnet.LOOPBACK, port))
