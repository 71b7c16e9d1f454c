"""The machine's interface addresses, checked against what `ip -j addr` reports."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pyrsia.p2p.swarm.interfaces import InterfaceAddress, interface_addresses, ipv6_addresses

ROOT = Path(__file__).resolve().parents[2]
needs_ip = pytest.mark.skipif(shutil.which("ip") is None, reason="needs iproute2")


def expected_from_ip(ip_json: str) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
    """(interface, primary IPv4) and (interface, IPv6) of interfaces that are up, per iproute2."""
    v4: set[tuple[str, str]] = set()
    v6: set[tuple[str, str]] = set()
    for link in json.loads(ip_json):
        if "UP" not in link.get("flags", []):
            continue
        inet = [a["local"] for a in link.get("addr_info", []) if a.get("family") == "inet"]
        if inet:
            v4.add((link["ifname"], inet[0]))
        v6 |= {(link["ifname"], a["local"]) for a in link.get("addr_info", []) if a.get("family") == "inet6"}
    return v4, v6


def split(found: tuple[InterfaceAddress, ...]) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
    return (
        {(a.interface, a.ip) for a in found if a.version == 4},
        {(a.interface, a.ip) for a in found if a.version == 6},
    )


@needs_ip
def test_matches_ip_addr_on_this_machine() -> None:
    ip_json = subprocess.run(["ip", "-j", "addr"], capture_output=True, text=True, check=True).stdout
    assert split(interface_addresses()) == expected_from_ip(ip_json)


@needs_ip
@pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")
def test_matches_ip_addr_in_a_namespace_with_known_addresses() -> None:
    name = f"pyrsia-ifaces-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        run = ["nsenter", f"--net=/run/netns/{name}"]
        for argv in (
            ["ip", "link", "set", "lo", "up"],
            ["ip", "link", "add", "d0", "type", "veth", "peer", "name", "d1"],
            ["ip", "addr", "add", "10.9.8.7/24", "dev", "d0"],
            ["ip", "addr", "add", "10.9.8.8/24", "dev", "d0"],  # secondary: not reported
            ["ip", "addr", "add", "fd12::5/64", "dev", "d0", "nodad"],
            ["ip", "link", "set", "d0", "up"],
            ["ip", "addr", "add", "10.1.1.1/24", "dev", "d1"],  # d1 is down: left out
        ):
            subprocess.run(run + argv, check=True)
        code = (
            "import json; from pyrsia.p2p.swarm.interfaces import interface_addresses as f; "
            "print(json.dumps([[a.interface, a.ip, a.version] for a in f()]))"
        )
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        out = subprocess.run(
            [*run, sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
        )
        found = tuple(
            InterfaceAddress(interface=name, ip=ip, version=version)
            for name, ip, version in json.loads(out.stdout)
        )
        ip_json = subprocess.run(
            [*run, "ip", "-j", "addr"], capture_output=True, text=True, check=True
        ).stdout
        assert split(found) == expected_from_ip(ip_json)
        v4, v6 = split(found)
        assert v4 == {("lo", "127.0.0.1"), ("d0", "10.9.8.7")}
        assert {("lo", "::1"), ("d0", "fd12::5")} <= v6
        assert all(interface != "d1" for interface, _ in v4 | v6)
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def test_if_inet6_parsing_skips_garbage(tmp_path: Path) -> None:
    table = tmp_path / "if_inet6"
    table.write_text(
        "00000000000000000000000000000001 01 80 10 80       lo\n"
        "fd000000000000000000000000000002 04 40 00 82     eth0\n"
        "zz000000000000000000000000000002 04 40 00 82     eth0\n"
        "fd00 04 40 00 82 eth0\n"
        "\n" + "x" * 10_000 + "\n"
    )
    assert ipv6_addresses(table) == [
        InterfaceAddress(interface="lo", ip="::1", version=6),
        InterfaceAddress(interface="eth0", ip="fd00::2", version=6),
    ]
    assert ipv6_addresses(tmp_path / "missing") == []
