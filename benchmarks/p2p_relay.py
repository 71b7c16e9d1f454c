"""One stream relayed through a circuit relay v2 hop vs the same stream direct.

    python benchmarks/p2p_relay.py [--size-mib 256] [--runs 3]

Four Hosts in one process on loopback, hole punching off: a relay R with no circuit
limits, a private node B that reserves on R, a sender A reaching B only through R
(`/p2p/R/p2p-circuit/p2p/B`: Noise and yamux inside a yamux stream of each leg), and a
sender D connected to B directly. Runs interleave relayed and direct, each moving
`--size-mib` MiB over one stream to a handler that only counts. Every byte of the
relayed stream is decrypted and encrypted again at R (two Noise legs) besides the end
to end Noise inside, so expect the relayed figure well below the direct one; what
matters is that the relay carries a whole artifact and how fast.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from pyrsia.p2p.behaviours.relay.hop import RelayLimits
from pyrsia.p2p.identity import Identity
from pyrsia.p2p.swarm.host import Host, HostConfig, Stream

MIB = 1 << 20
BLOCK = os.urandom(MIB)
PROTOCOL = "/bench/count/1.0.0"


def _count(stream: Stream) -> None:
    got = 0
    while data := stream.read(MIB):
        got += len(data)
    stream.write(got.to_bytes(8, "big"))


def _host(**changes: object) -> Host:
    config = HostConfig(listen_host="127.0.0.1", listen_port=0, hole_punching=False, **changes)  # type: ignore[arg-type]
    return Host(Identity.from_seed(os.urandom(32)), config).start()


def _send(sender: Host, receiver: str, size: int) -> float:
    stream = sender.open_stream(receiver, [PROTOCOL])
    started = time.perf_counter()
    for _ in range(size // MIB):
        stream.write(BLOCK, timeout=60)
    stream.close()
    got = int.from_bytes(stream.read_exactly(8, timeout=600), "big")
    elapsed = time.perf_counter() - started
    if got != size:
        raise SystemExit(f"the receiver counted {got} of {size} bytes")
    return size / MIB / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    size = args.size_mib * MIB
    relay = _host(relay_limits=RelayLimits(circuit_bytes_max=0, circuit_duration_s=0))
    private = _host(reachability="private", relay_service=False)
    relayed_sender, direct_sender = _host(relay_service=False), _host(relay_service=False)
    hosts = [relay, private, relayed_sender, direct_sender]
    try:
        private.set_handler(PROTOCOL, _count)
        for host in (private, relayed_sender):
            host.connect(relay.listen_addrs[0].with_peer(relay.peer_id))
        deadline = time.monotonic() + 30
        while not private.address_kinds()["relayed"]:
            if time.monotonic() > deadline:
                raise SystemExit("the private node got no reservation")
            time.sleep(0.05)
        relayed_sender.connect(private.address_kinds()["relayed"][0])
        direct_sender.connect(private.listen_addrs[0].with_peer(private.peer_id))
        info = relayed_sender.peer_info(private.peer_id)
        if info is None or not info.relayed:
            raise SystemExit("the relayed sender is not on a relayed connection")
        relayed: list[float] = []
        direct: list[float] = []
        for _ in range(args.runs):
            relayed.append(_send(relayed_sender, private.peer_id, size))
            direct.append(_send(direct_sender, private.peer_id, size))
        bytes_relayed = relay.stats().relay.get("bytes_relayed", 0)
    finally:
        for host in reversed(hosts):
            host.stop()
    print(f"{args.size_mib} MiB over one stream, {args.runs} runs each (MiB/s, median)")
    print(f"  direct   {statistics.median(direct):8.1f}   runs {', '.join(f'{r:.1f}' for r in direct)}")
    print(f"  relayed  {statistics.median(relayed):8.1f}   runs {', '.join(f'{r:.1f}' for r in relayed)}")
    print(f"  relayed / direct: {statistics.median(relayed) / statistics.median(direct):.2f}")
    print(f"  bytes the relay carried: {bytes_relayed / MIB:.0f} MiB")


if __name__ == "__main__":
    main()
