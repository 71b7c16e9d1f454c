"""The peer HTTP data plane: one and four uncapped providers against nginx, same client.

    python benchmarks/http_plane.py [--size-mib 1024] [--runs 3]

Each provider is its own process: a `Host` with an `ExchangeServer` (chunk lists over
the p2p exchange, advertising the HTTP port) and the peer listener (`HttpServer` with
`PeerBlobApp`, sendfile). The nginx figure uses the *same downloader*: a provider
process whose chunk lists advertise nginx's port, nginx serving the same file at
`/peer/v1/blobs/<digest>` with Range (sendfile on, keep-alive). So the only thing that
differs between the rows is the server; the client is pyrsia's `PeerSource`, which
fetches aligned 4 MiB runs by Range on keep-alive connections, verifies every chunk
against the chunk list on a small pool off the socket threads, writes it with pwrite,
and hashes the whole digest over the verified prefix as it grows. The time includes all of that.

Printed side by side in one run (the setups take turns, run by run, so each sees the
machine's load drift alike): MiB/s for nginx → downloader, pyrsia 1 provider,
pyrsia 4 providers, the ratios, and where the receiver's time goes: its CPU seconds
(user + system) per GiB, split by role with `--profile`, against what hashing 1 GiB
and writing 1 GiB cost on one core here.

Where the files live: everything is under one temporary directory, so `TMPDIR` picks
the filesystem. On an ext4 disk that has just deleted the last round's gigabyte, the
receiver's writes alternate round by round between two speeds (its CPU per GiB near
2.0 s, then near 3.4 s, nginx's rounds alike), and the ratios then say which speed each
setup drew. `TMPDIR=/dev/shm` keeps the write path steady, so the servers are what
differs.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.blob_serve import free_port, make_blob
from benchmarks.p2p_download import provider_processes
from pyrsia.artifacts.blobstore import BlobStore
from pyrsia.artifacts.exchange_service import (
    DownloadConfig,
    ExchangeServer,
    ExchangeStats,
    PeerSource,
    ServeConfig,
)
from pyrsia.artifacts.sources import Wanted
from pyrsia.formats.digest import Digest
from pyrsia.http.server import HttpServer, Limits
from pyrsia.p2p.behaviours.exchange import wire
from pyrsia.p2p.behaviours.exchange.scheduler import ExchangeConfig
from pyrsia.p2p.identity import Identity
from pyrsia.p2p.swarm.host import Host, HostConfig
from pyrsia.p2p.wire.multiaddr import Multiaddr
from pyrsia.registry.peer_api import PeerBlobApp
from pyrsia.translog.chunks import CHUNK_BYTES, ChunkHasher

MIB = 1 << 20
LOOPBACK = HostConfig(listen_host="127.0.0.1", listen_port=0)


def serve(blob: Path, digest: str, home: Path, http: str) -> None:
    """Child mode: a provider until stdin closes; `http` is "pyrsia" or nginx's port."""
    store = BlobStore(home / "blobs")
    target = store.path(Digest.parse(digest))
    target.parent.mkdir(parents=True, exist_ok=True)
    os.link(blob, target)
    vouched = lambda d: str(d) == digest  # noqa: E731
    server: HttpServer | None = None
    if http == "pyrsia":
        server = HttpServer(PeerBlobApp(store, vouched), "127.0.0.1", 0, Limits())
        server.start()
        port = server.address[1]
    else:
        port = int(http)
    exchange = ExchangeServer(store, vouched, config=ServeConfig(http_port=port))
    host = Host(Identity.from_seed(os.urandom(32)), LOOPBACK).start()
    exchange.register(host)
    store.stored(Digest.parse(digest))  # hash once before the clock starts
    exchange._listed(Digest.parse(digest))
    print(host.listen_addrs[0].with_peer(host.peer_id), flush=True)
    sys.stdin.read()
    host.stop()
    if server is not None:
        server.shutdown(5.0)


def providers(
    count: int, blob: Path, digest: str, http: str, root: Path
) -> AbstractContextManager[list[str]]:
    return provider_processes(
        count, root, lambda home: [sys.executable, __file__, "--serve", str(blob), digest, str(home), http]
    )


@contextmanager
def nginx(root: Path, blob: Path, digest: str) -> Iterator[int]:
    """nginx serving `blob` at the peer plane's path, with Range and keep-alive."""
    port = free_port()
    site = root / "site"
    target = site / "peer" / "v1" / "blobs" / digest
    target.parent.mkdir(parents=True)
    os.link(blob, target)
    (root / "tmp").mkdir()
    conf = root / "nginx.conf"
    conf.write_text(
        f"""worker_processes auto;
pid {root}/nginx.pid;
error_log {root}/error.log;
daemon off;
events {{ worker_connections 256; }}
http {{
  access_log off;
  sendfile on;
  keepalive_requests 100000;
  client_body_temp_path {root}/tmp; proxy_temp_path {root}/tmp; fastcgi_temp_path {root}/tmp;
  uwsgi_temp_path {root}/tmp; scgi_temp_path {root}/tmp;
  server {{
    listen 127.0.0.1:{port};
    root {site};
    default_type application/octet-stream;
  }}
}}
"""
    )
    process = subprocess.Popen(["nginx", "-c", str(conf), "-p", str(root)], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                import socket

                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise SystemExit("nginx did not start") from None
                time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)


def download(
    addrs: list[str], wanted: Wanted, root: Path, config: DownloadConfig
) -> tuple[float, float, dict[tuple[str, str], int]]:
    """(seconds, receiver CPU seconds, bytes by (peer, path)) for PeerSource to obtain the blob."""
    home = Path(tempfile.mkdtemp(dir=root, prefix="downloader-"))
    host = Host(Identity.from_seed(os.urandom(32)), LOOPBACK).start()
    try:
        ids = [host.connect(Multiaddr.parse(text)) for text in addrs]
        store = BlobStore(home / "blobs")
        source = PeerSource(host, store, lambda d: ids, config=config, stats=ExchangeStats())
        cpu_before = _cpu_s()
        started = time.perf_counter()
        source.fetch(wanted, store.opener(wanted.digest, "peers"))
        seconds = time.perf_counter() - started
        cpu = _cpu_s() - cpu_before
        if store.stored(wanted.digest) is None:
            raise SystemExit("download did not commit")
        by_path = source.stats.snapshot().received_bytes_by_peer_path
        if {path for _, path in by_path} != {"http"}:
            raise SystemExit(f"not all over http: {by_path}")
        return seconds, cpu, by_path
    finally:
        host.stop()
        shutil.rmtree(home, ignore_errors=True)


def warm_up(addrs: list[str], digest: Digest) -> None:
    """Ask each provider for the chunk list once before the clock runs.

    A provider's first exchange stream costs it a few hundred ms that later ones do
    not; without this the setup that happens to go first pays it.
    """
    host = Host(Identity.from_seed(os.urandom(32)), LOOPBACK).start()
    try:
        for text in addrs:
            stream = host.open_stream(host.connect(Multiaddr.parse(text)), [wire.PROTOCOL_ID], timeout=10)
            stream.write(wire.encode(wire.GetChunkList(digest=digest)))
            reader = wire.ReplyReader()
            while reader.next_event() is None:
                data = stream.read(reader.wanted_bytes, timeout=10)
                if not data:
                    raise SystemExit(f"{text} closed the stream without a chunk list")
                reader.receive_data(data)
            stream.close()
    finally:
        host.stop()


class Split:
    """CPU seconds of the receiver's threads by role, measured with `time.thread_time`."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seconds: dict[str, float] = {}

    def wrap(self, owner: type, name: str, role: str) -> None:
        original = getattr(owner, name)

        def timed(*args: object, **kwargs: object) -> object:
            started = time.thread_time()
            try:
                return original(*args, **kwargs)
            finally:
                spent = time.thread_time() - started
                with self.lock:
                    self.seconds[role] = self.seconds.get(role, 0.0) + spent

        setattr(owner, name, timed)


def profile_receiver() -> Split:
    """Count the receiver's CPU by role: reading sockets, verifying+writing, the commit pass.

    The prefix hash runs inside `write_chunk` (and the commit), so it is counted there too.
    """
    from pyrsia.artifacts import blobstore, exchange_service

    split = Split()
    split.wrap(exchange_service._Download, "_http_loop", "read sockets (http.client)")
    split.wrap(blobstore.BlobWriter, "write_chunk", "verify (sha256) + pwrite + prefix hash per chunk")
    split.wrap(blobstore.BlobWriter, "_extend_prefix", "of which the prefix hash")
    split.wrap(blobstore.ResumableBlobWriter, "save_progress", "progress file")
    split.wrap(blobstore.ResumableBlobWriter, "commit", "commit: rest of the prefix hash, fsync, rename")
    return split


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def baselines(blob: Path, root: Path) -> tuple[float, float]:
    """Seconds per GiB on one core: sha256 of the bytes, and writing them with pwrite."""
    data = blob.open("rb").read(256 * MIB)
    started = time.perf_counter()
    hashlib.sha256(data).digest()
    hash_s = (time.perf_counter() - started) * (1024 * MIB / len(data))
    out = root / "write-baseline"
    fd = os.open(out, os.O_WRONLY | os.O_CREAT, 0o600)
    started = time.perf_counter()
    for offset in range(0, len(data), CHUNK_BYTES):
        os.pwrite(fd, data[offset : offset + CHUNK_BYTES], offset)
    write_s = (time.perf_counter() - started) * (1024 * MIB / len(data))
    os.close(fd)
    out.unlink()
    return hash_s, write_s


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--connections", type=int, default=DownloadConfig().http_connections_per_peer)
    parser.add_argument("--verify-workers", type=int, default=DownloadConfig().verify_workers)
    parser.add_argument(
        "--window", type=int, default=ExchangeConfig().window_chunks_max, help="chunks in flight per provider"
    )
    parser.add_argument("--profile", action="store_true", help="split the receiver's CPU by role")
    parser.add_argument("--only", default="", help="run only the setups whose name contains this")
    parser.add_argument("--serve", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        blob, digest, home, http = args.serve
        serve(Path(blob), digest, Path(home), http)
        return
    split = profile_receiver() if args.profile else None
    with tempfile.TemporaryDirectory(prefix="http-plane-") as tmp:
        root = Path(tmp)
        root.chmod(0o755)  # nginx workers run unprivileged and must read the blob
        blob = root / "blob"
        digest = make_blob(blob, args.size_mib)
        blob.chmod(0o644)
        size = blob.stat().st_size
        hasher = ChunkHasher()
        with blob.open("rb") as file:
            while piece := file.read(CHUNK_BYTES):
                hasher.update(piece)
        wanted = Wanted(digest=Digest.parse(digest), name="bench", size=size, chunk_root=hasher.root())
        os.sync()
        print(f"blob: {args.size_mib} MiB, {len(hasher.hashes)} chunks; {os.cpu_count()} cores")
        rows: dict[str, list[tuple[float, float]]] = {}
        config = DownloadConfig(
            http_connections_per_peer=args.connections,
            verify_workers=args.verify_workers,
            exchange=ExchangeConfig(window_chunks_max=args.window),
        )
        with contextlib.ExitStack() as stack:
            port = stack.enter_context(nginx(root / "nginx", blob, digest))
            setups = [
                ("nginx -> pyrsia downloader", 1, str(port)),
                ("pyrsia, 1 provider", 1, "pyrsia"),
                ("pyrsia, 4 providers", 4, "pyrsia"),
            ]
            chosen = [
                (name, stack.enter_context(providers(count, blob, digest, http, root)))
                for name, count, http in setups
                if args.only in name or name.startswith("nginx")
            ]
            for _, addrs in chosen:
                warm_up(addrs, wanted.digest)
            # One untimed download first: the receiver's first one pays for imports, its
            # threads and buffers, which would otherwise land on the setup that goes first.
            download(chosen[0][1], wanted, root, config)
            # Run by run, each setup in turn: the machine's load drifts, and each setup
            # should see the same drift.
            for _ in range(args.runs):
                for name, addrs in chosen:
                    if split is not None:
                        split.seconds.clear()
                    seconds, cpu, by_path = download(addrs, wanted, root, config)
                    rows.setdefault(name, []).append((size / seconds / MIB, cpu / (size / (1024 * MIB))))
                    shares = sorted((round(v / MIB) for v in by_path.values()), reverse=True)
                    print(f"  {name}: {size / seconds / MIB:.0f} MiB/s, MiB per provider {shares}")
                    if split is not None:
                        roles = ", ".join(f"{k} {v:.2f} s" for k, v in sorted(split.seconds.items()))
                        print(f"    receiver CPU {cpu:.2f} s: {roles}")
        medians = {name: statistics.median(r for r, _ in runs) for name, runs in rows.items()}
        cpus = {name: statistics.median(c for _, c in runs) for name, runs in rows.items()}
        anchor = medians["nginx -> pyrsia downloader"]
        for name, median in medians.items():
            print(
                f"{name}: median {median:.0f} MiB/s  ({median / anchor:.2f}x nginx)  "
                f"receiver CPU {cpus[name]:.2f} s per GiB"
            )
        if "pyrsia, 1 provider" in medians and "pyrsia, 4 providers" in medians:
            one, four = medians["pyrsia, 1 provider"], medians["pyrsia, 4 providers"]
            print(f"4 providers / 1 provider: {four / one:.2f}x")
        hash_s, write_s = baselines(blob, root)
        print(
            f"receiver floor on one core per GiB: sha256 {hash_s:.2f} s (the receiver does it twice: "
            f"each chunk on arrival, and the whole digest over the verified prefix as it grows), "
            f"pwrite {write_s:.2f} s"
        )


if __name__ == "__main__":
    main()
