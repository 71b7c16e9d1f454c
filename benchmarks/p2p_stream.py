"""Stream throughput: Noise + yamux between two pyrsia Hosts vs a plain TCP copy and js-libp2p.

    python benchmarks/p2p_stream.py [--size-mib 256] [--runs 3] [--window-kib 256] [--no-js]
                                    [--receiver-process]

Both in one process on loopback, interleaved runs: a plain TCP socket (sendall of
1 MiB buffers, recv_into on the other end) sets the ceiling of this machine; then one
p2p stream carries the same bytes through multistream, Noise (ChaCha20-Poly1305 via
libsodium) and yamux flow control between two `Host`s, each with its own selector thread,
and the receiving handler hashes nothing, only counts. In the same runs, js-libp2p (the
pinned `tests/interop` packages, `node` on PATH) sends the same bytes over one stream
between two js nodes in one Node process (`tests/interop/stream_bench.mjs`), and a js
node sends them to the pyrsia receiver (js -> pyrsia, the same wire from another
implementation). With `--receiver-process` the receiving Host runs in a child process,
as a pyrsia node does (no interpreter lock shared with the sender); its CPU is that
whole process's. `--window-kib` is the window each stream opens with; a stream whose
reader keeps up grows its window by itself. CPU seconds per side are the selector
thread's plus the application thread's (writer or counting handler). Also shown:
libsodium's raw ChaCha20-Poly1305 seal rate on 64 KiB messages, the cost no stream can avoid.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import socket
import statistics
import subprocess
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path

from nacl import bindings

from pyrsia.p2p.identity import Identity
from pyrsia.p2p.swarm.host import Host, HostConfig, Stream

MIB = 1 << 20
BLOCK = os.urandom(MIB)
INTEROP = Path(__file__).resolve().parent.parent / "tests" / "interop"
HANDLER_CPU: list[float] = []  # the counting handler's CPU seconds, one per stream


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
    started = time.thread_time()
    got = 0
    while data := stream.read(1 << 20):
        got += len(data)
    HANDLER_CPU.append(time.thread_time() - started)
    stream.write(got.to_bytes(8, "big"))
    stream.close()


def _selector_cpu(host: Host) -> float:
    thread = host._thread
    assert thread is not None and thread.ident is not None
    return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))


def _receiver_host(window_bytes: int) -> Host:
    config = HostConfig(listen_host="127.0.0.1", listen_port=0, window_bytes=window_bytes)
    receiver = Host(Identity.from_seed(os.urandom(32)), config).start()
    receiver.set_handler("/bench/count/1.0.0", _count)
    return receiver


def _serve(pipe: Connection, window_bytes: int) -> None:
    """The child process: a receiving Host; answers "cpu" with this process's CPU seconds."""
    receiver = _receiver_host(window_bytes)
    pipe.send(str(receiver.listen_addrs[0].with_peer(receiver.peer_id)))
    while pipe.recv() != "stop":
        pipe.send(time.clock_gettime(time.CLOCK_PROCESS_CPUTIME_ID))
    receiver.stop()


class Receiver:
    """The receiving side, in this process or a child: its address and CPU seconds so far."""

    def __init__(self, window_bytes: int, *, process: bool) -> None:
        self.host: Host | None = None
        self.process: multiprocessing.process.BaseProcess | None = None
        if process:
            context = multiprocessing.get_context("spawn")
            self.pipe, child = context.Pipe()
            self.process = context.Process(target=_serve, args=(child, window_bytes), daemon=True)
            self.process.start()
            self.addr = str(self.pipe.recv())
        else:
            self.host = _receiver_host(window_bytes)
            self.addr = str(self.host.listen_addrs[0].with_peer(self.host.peer_id))
        self.peer_id = self.addr.rsplit("/", 1)[1]

    def cpu(self) -> float:
        if self.host is not None:
            return _selector_cpu(self.host) + sum(HANDLER_CPU)
        self.pipe.send("cpu")
        return float(self.pipe.recv())

    def stop(self) -> None:
        if self.host is not None:
            self.host.stop()
        if self.process is not None:
            self.pipe.send("stop")
            self.process.join(30)


def p2p_stream(sender: Host, receiver: Receiver, size: int) -> tuple[float, float, float]:
    """MiB/s, then CPU seconds of the sending and the receiving side."""
    stream = sender.open_stream(receiver.peer_id, ["/bench/count/1.0.0"])
    selectors_before = _selector_cpu(sender), receiver.cpu()
    writer_before = time.thread_time()
    started = time.perf_counter()
    for _ in range(size // MIB):
        stream.write(BLOCK)
    stream.close()
    got = int.from_bytes(stream.read_exactly(8, timeout=600), "big")
    elapsed = time.perf_counter() - started
    writer = time.thread_time() - writer_before
    assert got == size, (got, size)
    send_cpu = writer + _selector_cpu(sender) - selectors_before[0]
    receive_cpu = receiver.cpu() - selectors_before[1]
    return size / MIB / elapsed, send_cpu, receive_cpu


def js_stream(size_mib: int, dial: str | None = None) -> float | None:
    """js-libp2p sending `size_mib` MiB over one stream (to `dial`, or to a js node); None
    when node or the pinned packages are missing."""
    node = shutil.which("node")
    if node is None or not (INTEROP / "node_modules" / "libp2p").is_dir():
        return None
    command = [node, "stream_bench.mjs", "--size-mib", str(size_mib)]
    if dial is not None:
        command += ["--dial", dial]
    # A symlinked node_modules resolves its packages' own imports beside the link.
    env = {**os.environ, "NODE_PRESERVE_SYMLINKS": "1"}
    done = subprocess.run(command, cwd=INTEROP, env=env, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"stream_bench.mjs failed: {done.stderr.strip()[-400:]}")
    return float(json.loads(done.stdout.strip().splitlines()[-1])["mib_s"])


def _runs(values: list[float]) -> str:
    return ", ".join(f"{value:.0f}" for value in values)


def seal_rate() -> float:
    key, message = os.urandom(32), os.urandom(65519)
    count = 2000
    started = time.thread_time()
    for n in range(count):
        bindings.crypto_aead_chacha20poly1305_ietf_encrypt(message, b"", n.to_bytes(12, "little"), key)
    return count * len(message) / MIB / (time.thread_time() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--window-kib", type=int, default=256, help="yamux window a stream opens with")
    parser.add_argument("--no-js", action="store_true", help="skip the js-libp2p runs")
    parser.add_argument(
        "--receiver-process", action="store_true", help="the receiving Host in a child process"
    )
    args = parser.parse_args()
    size = args.size_mib * MIB
    config = HostConfig(listen_host="127.0.0.1", listen_port=0, window_bytes=args.window_kib * 1024)
    sender = Host(Identity.from_seed(os.urandom(32)), config).start()
    receiver = Receiver(config.window_bytes, process=args.receiver_process)
    sender.connect(receiver.addr)
    plain: list[float] = []
    p2p: list[float] = []
    cpu: list[tuple[float, float]] = []
    js: list[float] = []
    js_to_pyrsia: list[float] = []
    try:
        for _ in range(args.runs):
            plain.append(plain_tcp(size))
            rate, send_cpu, receive_cpu = p2p_stream(sender, receiver, size)
            p2p.append(rate)
            cpu.append((send_cpu, receive_cpu))
            if not args.no_js:
                if (js_rate := js_stream(args.size_mib)) is not None:
                    js.append(js_rate)
                if (js_rate := js_stream(args.size_mib, receiver.addr)) is not None:
                    js_to_pyrsia.append(js_rate)
    finally:
        sender.stop()
        receiver.stop()
    tcp_mibs, p2p_mibs = statistics.median(plain), statistics.median(p2p)
    send_cpu = statistics.median(c[0] for c in cpu) / args.size_mib * 1000
    receive_cpu = statistics.median(c[1] for c in cpu) / args.size_mib * 1000
    where = "a child process" if args.receiver_process else "this process"
    window = f"yamux window opens at {args.window_kib} KiB, receiver in {where}"
    print(f"transfer: {args.size_mib} MiB x {args.runs} runs, {window}, median")
    print(f"plain TCP copy           {tcp_mibs:9.1f} MiB/s   runs: {_runs(plain)}")
    print(f"noise+yamux p2p stream   {p2p_mibs:9.1f} MiB/s   runs: {_runs(p2p)}")
    print(f"  CPU per MiB            sender {send_cpu:.2f} ms, receiver {receive_cpu:.2f} ms")
    print(f"p2p / plain              {p2p_mibs / tcp_mibs:9.3f}")
    if js:
        js_mibs = statistics.median(js)
        print(f"js-libp2p js -> js       {js_mibs:9.1f} MiB/s   runs: {_runs(js)}")
        print(f"pyrsia / js-libp2p       {p2p_mibs / js_mibs:9.2f}")
    elif not args.no_js:
        print("js-libp2p                not run: node or tests/interop/node_modules missing (npm ci there)")
    if js_to_pyrsia:
        js_mibs = statistics.median(js_to_pyrsia)
        print(f"js-libp2p js -> pyrsia   {js_mibs:9.1f} MiB/s   runs: {_runs(js_to_pyrsia)}")
    print(f"ChaCha20-Poly1305 seal   {seal_rate():9.1f} MiB/s   (64 KiB messages, per CPU second)")


if __name__ == "__main__":
    main()
