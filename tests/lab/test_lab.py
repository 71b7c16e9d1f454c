"""The lab itself: hosts reach each other over the bridge, and nothing outlives it.

Two labs at once get different subnets and names; a host reaches another by its
bridge address and sees the other's address as the source. Leaving the lab, also by
an exception or a host that failed halfway through its setup, kills what ran in it
and deletes every namespace; the root namespace never gains a link.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.support.lab import NETNS_DIR, Lab, LabError, LabHost, require_tools
from tests.support.wait import eventually

pytestmark = pytest.mark.lab

SERVER = """
import socket, sys
server = socket.create_server(("0.0.0.0", int(sys.argv[1])))
print("listening", flush=True)
conn, (peer, _) = server.accept()
conn.sendall(peer.encode())
"""
CLIENT = """
import socket, sys
with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5) as conn:
    print(conn.recv(100).decode())
"""


def pids_in(namespace: str) -> list[str]:
    listed = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True, timeout=30)
    return listed.stdout.split()


def lab_links_in_root() -> list[str]:
    """Links of the root namespace named like a lab's (switch ports `hN`, the bridge)."""
    shown = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True)
    names = (line.split(":")[1].strip().split("@")[0] for line in shown.stdout.splitlines())
    return sorted(name for name in names if re.fullmatch(r"h\d+|br0", name))


def namespaces_of(lab: Lab) -> dict[str, int]:
    """The lab's namespaces by name, each with the inode that identifies the namespace:
    once a lab is gone another (a test running beside this one) may take the same name."""
    found = NETNS_DIR.glob(f"{lab.switch}*") if NETNS_DIR.exists() else []
    return {p.name: p.stat().st_ino for p in sorted(found)}


def still_there(names: dict[str, int]) -> list[str]:
    """Those of `names` whose very namespace still exists (not a newer one of that name)."""
    left = []
    for name, inode in names.items():
        try:
            if (NETNS_DIR / name).stat().st_ino == inode:
                left.append(name)
        except FileNotFoundError:
            pass
    return left


def exchange(server: LabHost, client: LabHost, port: int) -> str:
    """A TCP server on `server`, a client on `client`: what the server saw as the source."""
    listening = server.popen([sys.executable, "-c", SERVER, str(port)], stdout=subprocess.PIPE)
    assert listening.stdout is not None and listening.stdout.readline() == b"listening\n"
    answer = client.run(sys.executable, "-c", CLIENT, server.ip, str(port), timeout_s=30)
    assert answer.returncode == 0, answer.stderr
    assert listening.wait(timeout=30) == 0
    listening.stdout.close()
    return answer.stdout.strip()


def test_two_labs_at_once_have_their_own_subnets_and_hosts_reach_each_other() -> None:
    with Lab() as first, Lab() as second:
        a, b = first.add_host("a"), first.add_host("b")
        other = second.add_host("a")
        assert first.subnet != second.subnet and a.namespace != other.namespace
        assert a.ip.startswith(first.subnet.rsplit(".", 1)[0] + ".") and a.ip != b.ip
        assert exchange(a, b, 9000) == b.ip
        # Separate segments: the other lab's host cannot reach this one's.
        unreachable = other.run(sys.executable, "-c", CLIENT, a.ip, "9000", timeout_s=30)
        assert unreachable.returncode != 0
        assert not lab_links_in_root()
        names = namespaces_of(first) | namespaces_of(second)
        assert len(names) == 5  # two switches, three hosts
    assert not still_there(names)
    assert not lab_links_in_root()


def test_leaving_by_an_exception_kills_what_ran_and_deletes_everything() -> None:
    with pytest.raises(RuntimeError, match="the test failed"), Lab() as lab:
        host = lab.add_host("a")
        tracked = host.popen([sys.executable, "-c", "import time; time.sleep(600)"])
        untracked = subprocess.Popen([*host.prefix, "sleep", "600"])  # as NodeProcess starts one
        # Running inside, as a started node is: nsenter joins the namespace a moment after it starts.
        eventually(lambda: str(untracked.pid) in pids_in(host.namespace), "sleep inside the namespace")
        names = namespaces_of(lab)
        raise RuntimeError("the test failed")
    assert tracked.wait(timeout=10) != 0
    assert untracked.wait(timeout=10) != 0
    assert not still_there(names)
    assert not lab_links_in_root()


def test_a_host_that_fails_halfway_through_setup_is_deleted_too() -> None:
    with Lab() as lab:
        lab.add_host("a")
        # The switch port the next host would take exists already: its veth cannot be made.
        squat = subprocess.run(["ip", "-n", lab.switch, "link", "add", "h1", "type", "bridge"], check=False)
        assert squat.returncode == 0
        with pytest.raises(LabError, match="veth"):
            lab.add_host("b")
        names = namespaces_of(lab)
        assert f"{lab.switch}-b" in names  # created before the failing step
    assert not still_there(names)


def test_a_missing_tool_fails_and_names_the_installer() -> None:
    with pytest.raises(LabError, match=r"missing pyrsia-no-such-tool: run \.ci/install-tools"):
        require_tools("ip", "pyrsia-no-such-tool")
