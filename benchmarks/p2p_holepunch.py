"""DCUtR hole punching behind home routers in the NAT lab: success rate and time to direct.

    sudo PYTHONPATH=. .venv/bin/python benchmarks/p2p_holepunch.py [--tries 20] [--deadline-s 45]

One lab (`tests/support/lab.py`, needs root): a public host `relay` on the segment and,
per router kind, two home routers with one host each (`preserving`: the router keeps
a connection's source port when it is free; `random`: `--random-fully`, a new port for
every mapping). A try, on one kind's pair of hosts:

1. the relay host starts a Host (relay service on) on a fresh port;
2. host B starts a Host with `reachability="private"`, connects to the relay, waits
   for its reservation and prints its circuit address;
3. host A starts a private Host, connects to the relay (and waits for identify, so it
   knows its observed address), then dials B's circuit address. When that `connect`
   returns, the relayed connection is up, B (which accepted it) starts the punch, and
   the clock starts; A polls `peer_info(B).relayed` every 5 ms until it turns false
   (a direct connection, through both routers), until A's own DCUtR counters show
   every attempt of the punch failed (`dcutr.ATTEMPTS_MAX`; B gives up then too),
   or until `--deadline-s`;
4. all three processes end (B's stdin closes; A exits by itself).

Each party is a small Python process (this script, `--role`) run inside its lab host
by `LabHost.popen`; every try has fresh identities and fresh listen ports, so no NAT
mapping or conntrack entry of a former try is reused. Tries alternate between the
kinds, so a change in the machine's load falls on both alike. Shown per kind: tries,
successes, median and p90 of the time from the relayed connection to the direct one
(successes only), the median time A's dial of the circuit address took (for scale), and
the punch attempts each success needed (B's count). The lab tears down
every namespace and process at the end, also on failure.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

POLL_S = 0.005
READY_S = 60.0  # a child's start-up, connect and reservation
RESERVATION_S = 30.0
END_S = 30.0  # for a child to print its report and exit


# -- the parties: run as `--role ...` inside a lab host ----------------------------------


def _print(report: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(report) + "\n")
    sys.stdout.flush()


def _start(**changes: Any) -> Any:
    from pyrsia.p2p.identity import Identity
    from pyrsia.p2p.swarm.host import Host, HostConfig

    config = HostConfig(listen_host="0.0.0.0", listen_port=0, **changes)
    return Host(Identity.from_seed(os.urandom(32)), config).start()


def _wait(condition: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"not within {seconds} s: {what}")
        time.sleep(0.02)


def role_relay(ip: str) -> None:
    host = _start()
    try:
        _print({"address": f"/ip4/{ip}/tcp/{host.listen_port}/p2p/{host.peer_id}"})
        sys.stdin.read()  # serve until the parent closes our stdin
    finally:
        host.stop()


def role_listener(relay: str) -> None:
    host = _start(reachability="private", relay_service=False)
    try:
        host.connect(relay)
        _wait(lambda: bool(host.address_kinds()["relayed"]), RESERVATION_S, "a reservation on the relay")
        _print({"circuit": host.address_kinds()["relayed"][0], "peer_id": host.peer_id})
        sys.stdin.read()
        _print({"holepunch": host.stats().holepunch})
    finally:
        host.stop()


def role_dialler(relay: str, circuit: str, peer_id: str, deadline_s: float) -> None:
    from pyrsia.p2p.behaviours import dcutr

    host = _start(reachability="private", relay_service=False)
    try:
        relay_id = host.connect(relay)
        host.wait_identified(relay_id)
        dialled = time.monotonic()
        host.connect(circuit)
        up = time.monotonic()
        info = host.peer_info(peer_id)
        relayed_at_first = info is not None and info.relayed
        direct_s: float | None = None
        gave_up: float | None = None
        while time.monotonic() - up < deadline_s:
            info = host.peer_info(peer_id)
            if info is not None and not info.relayed:
                direct_s = time.monotonic() - up
                break
            counters = host.stats().holepunch
            if gave_up is None and counters.get("failures", 0) >= dcutr.ATTEMPTS_MAX:
                gave_up = time.monotonic()
            if gave_up is not None and time.monotonic() - gave_up > 1.0:  # B's last dial had its chance
                break
            time.sleep(POLL_S)
        info = host.peer_info(peer_id)
        _print(
            {
                "relayed_at_first": relayed_at_first,
                "direct_s": direct_s,
                "circuit_dial_s": up - dialled,
                "waited_s": time.monotonic() - up,
                "address": str(info.address) if info is not None else None,
                "holepunch": host.stats().holepunch,
            }
        )
    finally:
        host.stop()


# -- the parent: the lab, the tries, the table ------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Try:
    kind: str
    direct_s: float | None
    circuit_dial_s: float  # A's connect to B's circuit address
    waited_s: float
    attempts: int  # B's punch attempts
    address: str | None  # A's address of B at the end


def _child(host: Any, *args: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-P", str(Path(__file__).resolve()), *args]
    return host.popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)


def _line(process: subprocess.Popen[bytes], seconds: float, what: str) -> dict[str, Any]:
    import selectors

    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(seconds):
            raise SystemExit(f"{what}: no report within {seconds} s")
    line = process.stdout.readline()
    if not line:
        assert process.stderr is not None
        process.wait(timeout=END_S)
        raise SystemExit(f"{what} exited ({process.returncode}):\n{process.stderr.read().decode()}")
    report: dict[str, Any] = json.loads(line)
    return report


def _end(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
    process.wait(timeout=END_S)


def one_try(kind: str, relay_host: Any, b_host: Any, a_host: Any, deadline_s: float) -> Try:
    relay = _child(relay_host, "--role", "relay", "--ip", relay_host.ip)
    started = [relay]
    try:
        relay_addr = _line(relay, READY_S, "the relay")["address"]
        listener = _child(b_host, "--role", "listener", "--relay", relay_addr)
        started.append(listener)
        b = _line(listener, READY_S, "B")
        dialler = _child(
            a_host,
            "--role", "dialler", "--relay", relay_addr, "--circuit", b["circuit"],
            "--peer-id", b["peer_id"], "--deadline-s", str(deadline_s),
        )  # fmt: skip
        started.append(dialler)
        a = _line(dialler, READY_S + deadline_s + END_S, "A")
        if not a["relayed_at_first"]:
            raise SystemExit(f"A's first connection to B was not relayed: {a}")
        assert listener.stdin is not None
        listener.stdin.close()
        b_end = _line(listener, END_S, "B's counters")
        return Try(
            kind=kind,
            direct_s=a["direct_s"],
            circuit_dial_s=a["circuit_dial_s"],
            waited_s=a["waited_s"],
            attempts=b_end["holepunch"].get("attempts", 0),
            address=a["address"],
        )
    finally:
        for process in reversed(started):
            if process.stdin is not None and not process.stdin.closed:
                process.stdin.close()
            _end(process)


def _p90(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)]  # nearest rank


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tries", type=int, default=20, help="per router kind")
    parser.add_argument("--deadline-s", type=float, default=45.0, help="per try, from the relayed connection")
    parser.add_argument("--kinds", nargs="+", default=["preserving", "random"])
    parser.add_argument("--role", help=argparse.SUPPRESS)
    parser.add_argument("--ip", help=argparse.SUPPRESS)
    parser.add_argument("--relay", help=argparse.SUPPRESS)
    parser.add_argument("--circuit", help=argparse.SUPPRESS)
    parser.add_argument("--peer-id", help=argparse.SUPPRESS)
    args = parser.parse_args()
    match args.role:
        case "relay":
            return role_relay(args.ip)
        case "listener":
            return role_listener(args.relay)
        case "dialler":
            return role_dialler(args.relay, args.circuit, args.peer_id, args.deadline_s)

    from tests.support.lab import Lab

    results: dict[str, list[Try]] = {kind: [] for kind in args.kinds}
    with Lab() as lab:
        relay_host = lab.add_host("relay")
        pairs = {}
        for kind in args.kinds:
            routers = [lab.add_router(f"{kind[0]}{n}", kind) for n in (1, 2)]
            pairs[kind] = (routers[0].add_host(f"{kind[0]}b"), routers[1].add_host(f"{kind[0]}a"))
        for number in range(args.tries):
            for kind in args.kinds:
                b_host, a_host = pairs[kind]
                result = one_try(kind, relay_host, b_host, a_host, args.deadline_s)
                results[kind].append(result)
                outcome = (
                    f"direct after {result.direct_s:.3f} s" if result.direct_s is not None else "relayed"
                )
                print(
                    f"  try {number + 1:2d} {kind:10s} {outcome:24s} B's attempts {result.attempts}"
                    f"  (waited {result.waited_s:.1f} s; A reaches B at {result.address})",
                    file=sys.stderr,
                    flush=True,
                )
    print(f"DCUtR in the NAT lab, {args.tries} tries per router kind (deadline {args.deadline_s:.0f} s)")
    print("  relayed connection up -> direct (successes only); the relayed dial itself for scale")
    header = f"  {'router':12s} {'tries':>5s} {'direct':>6s} {'median s':>9s} {'p90 s':>7s} {'dial s':>7s}"
    print(f"{header}  attempts of successes")
    for kind, tries in results.items():
        times = [t.direct_s for t in tries if t.direct_s is not None]
        attempts = sorted(t.attempts for t in tries if t.direct_s is not None)
        median = f"{statistics.median(times):9.3f}" if times else f"{'-':>9s}"
        p90 = f"{_p90(times):7.3f}" if times else f"{'-':>7s}"
        dial = statistics.median(t.circuit_dial_s for t in tries)
        print(f"  {kind:12s} {len(tries):5d} {len(times):6d} {median} {p90} {dial:7.3f}  {attempts or '-'}")


if __name__ == "__main__":
    main()
