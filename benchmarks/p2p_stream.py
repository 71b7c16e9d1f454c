"""Stream throughput: Noise + yamux between two pyrsia Hosts vs a plain TCP copy.

    python benchmarks/p2p_stream.py [--size-mib 256] [--runs 3] [--window-kib 256]

Both in one process on loopback, interleaved runs: a plain TCP socket (sendall of
1 MiB buffers, recv_into on the other end) sets the ceiling of this machine; then one
p2p stream carries the same bytes through multistream, Noise (ChaCha20-Poly1305 via
pynacl) and yamux flow control between two `Host`s, each with its own selector thread,
and the receiving handler hashes nothing, only counts. Also shown: pynacl's raw
ChaCha20-Poly1305 seal rate on 64 KiB messages, the cost no stream can avoid.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import threading
import time

from nacl import bindings

from pyrsia.p2p.identity import Identity
from pyrsia.p2p.swarm.host import Host, HostConfig, Stream

MIB = 1 << 20
BLOCK = os.urandom(MIB)


def plain_tcp(size: int) -> float:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    done = threading.Event()

    def receive() -> None:
        conn, _ = listener.accept()
        buffer = bytearray(256 * 1024)
        got = 0
        while got < size:
            n = conn.recv_into(buffer)
            if not n:
                break
            got += n
        conn.sendall(b"k")
        conn.close()
        done.set()

    threading.Thread(target=receive, daemon=True).start()
    client = socket.create_connection(("127.0.0.1", port))
    started = time.perf_counter()
    for _ in range(size // MIB):
        client.sendall(BLOCK)
    client.recv(1)
    elapsed = time.perf_counter() - started
    done.wait()
    client.close()
    listener.close()
    return size / MIB / elapsed


def _count(stream: Stream) -> None:
    got = 0
    while data := stream.read(1 << 20):
        got += len(data)
    stream.write(got.to_bytes(8, "big"))


def p2p_stream(sender: Host, receiver: Host, size: int) -> float:
    stream = sender.open_stream(receiver.peer_id, ["/bench/count/1.0.0"])
    started = time.perf_counter()
    for _ in range(size // MIB):
        stream.write(BLOCK)
    stream.close()
    got = int.from_bytes(stream.read_exactly(8, timeout=600), "big")
    elapsed = time.perf_counter() - started
    assert got == size, (got, size)
    return size / MIB / elapsed


def seal_rate() -> float:
    key, message = os.urandom(32), os.urandom(65519)
    count = 2000
    started = time.perf_counter()
    for n in range(count):
        bindings.crypto_aead_chacha20poly1305_ietf_encrypt(message, b"", n.to_bytes(12, "little"), key)
    return count * len(message) / MIB / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--window-kib", type=int, default=256, help="yamux receive window per stream")
    args = parser.parse_args()
    size = args.size_mib * MIB
    config = HostConfig(listen_host="127.0.0.1", listen_port=0, window_bytes=args.window_kib * 1024)
    sender = Host(Identity.from_seed(os.urandom(32)), config).start()
    receiver = Host(Identity.from_seed(os.urandom(32)), config).start()
    receiver.set_handler("/bench/count/1.0.0", _count)
    sender.connect(receiver.listen_addrs[0].with_peer(receiver.peer_id))
    plain: list[float] = []
    p2p: list[float] = []
    try:
        for _ in range(args.runs):
            plain.append(plain_tcp(size))
            p2p.append(p2p_stream(sender, receiver, size))
    finally:
        sender.stop()
        receiver.stop()
    tcp_mibs, p2p_mibs = statistics.median(plain), statistics.median(p2p)
    print(f"transfer: {args.size_mib} MiB x {args.runs} runs, yamux window {args.window_kib} KiB, median")
    print(f"plain TCP copy           {tcp_mibs:9.1f} MiB/s   runs: {', '.join(f'{r:.0f}' for r in plain)}")
    print(f"noise+yamux p2p stream   {p2p_mibs:9.1f} MiB/s   runs: {', '.join(f'{r:.0f}' for r in p2p)}")
    print(f"p2p / plain              {p2p_mibs / tcp_mibs:9.3f}")
    print(f"pynacl ChaCha20-Poly1305 {seal_rate():9.1f} MiB/s   (seal of 64 KiB messages, one core)")


if __name__ == "__main__":
    main()
