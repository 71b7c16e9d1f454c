"""Peer-to-peer blob download: 1 vs 4 capped providers, and one uncapped peer vs nginx.

    python benchmarks/p2p_download.py [--size-mib 1024] [--runs 3] [--rate-mib 0]

Every provider is a separate process (a `Host` and an `ExchangeServer` over a blob
store holding the blob), so the downloader in this process competes with them only
for the two cores, not for one interpreter. The downloader is the real `PeerSource`
writing into a fresh `BlobStore`: every chunk is checked against the chunk list (itself
checked against the chunk root), written at its offset, and the whole digest is
checked at commit; the time includes all of it.

Figures:
- capped: the same blob from 1 provider and from 4 providers, each capped at the same
  `max_upload_rate` (`--rate-mib`; 0 picks a fifth of the measured uncapped rate, so
  four of them still fit in what one connection can carry). Ideal ratio: 4.
- uncapped: one provider with no cap, against nginx serving the same file (the
  configuration of `blob_serve.py`) read by three clients: the in-kernel splice client
  (nginx's own speed), httpx writing the body to a file while hashing it (what a
  downloader that verifies must do at least), and httpx fetching 1 MiB `Range`s one
  after another, hashing each (what an HTTP chunk data path between peers would do).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.blob_serve import make_blob, nginx, splice_get
from pyrsia.artifacts.blobstore import BlobStore
from pyrsia.artifacts.exchange_service import ExchangeServer, ExchangeStats, PeerSource, ServeConfig
from pyrsia.artifacts.sources import Wanted
from pyrsia.formats.digest import Digest
from pyrsia.p2p.identity import Identity
from pyrsia.p2p.swarm.host import Host, HostConfig
from pyrsia.p2p.wire.multiaddr import Multiaddr
from pyrsia.translog.chunks import CHUNK_BYTES, ChunkHasher

MIB = 1 << 20
LOOPBACK = HostConfig(listen_host="127.0.0.1", listen_port=0)


# -- provider processes ------------------------------------------------------------------


def serve(blob: Path, digest: str, rate_bytes_s: int, home: Path) -> None:
    """Child mode: serve `blob` until stdin closes; print the listen address first."""
    store = BlobStore(home / "blobs")
    target = store.path(Digest.parse(digest))
    target.parent.mkdir(parents=True, exist_ok=True)
    os.link(blob, target)
    server = ExchangeServer(
        store, lambda d: str(d) == digest, config=ServeConfig(max_upload_rate=rate_bytes_s)
    )
    host = Host(Identity.from_seed(os.urandom(32)), LOOPBACK).start()
    server.register(host)
    store.stored(Digest.parse(digest))  # hash once before the clock starts
    server._listed(Digest.parse(digest))
    print(host.listen_addrs[0].with_peer(host.peer_id), flush=True)
    sys.stdin.read()
    host.stop()


@contextmanager
def provider_processes(count: int, root: Path, argv: Callable[[Path], list[str]]) -> Iterator[list[str]]:
    """`count` provider processes, each started with `argv(its own home)`; yields the
    address each printed, and stops them (stdin closed) on the way out."""
    processes: list[subprocess.Popen[str]] = []
    addrs: list[str] = []
    try:
        for i in range(count):
            home = root / f"provider-{i}-{time.monotonic_ns()}"
            home.mkdir(parents=True)
            process = subprocess.Popen(argv(home), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            processes.append(process)
        for process in processes:
            assert process.stdout is not None
            line = process.stdout.readline().strip()
            if not line:
                raise SystemExit("a provider did not start")
            addrs.append(line)
        yield addrs
    finally:
        for process in processes:
            if process.stdin is not None:
                process.stdin.close()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def providers(
    count: int, blob: Path, digest: str, rate_bytes_s: int, root: Path
) -> AbstractContextManager[list[str]]:
    return provider_processes(
        count,
        root,
        lambda home: [sys.executable, __file__, "--serve", str(blob), digest, str(rate_bytes_s), str(home)],
    )


# -- the downloader ----------------------------------------------------------------------


def download(addrs: list[str], wanted: Wanted, root: Path) -> tuple[float, dict[str, int]]:
    """Seconds for PeerSource to obtain and commit the blob, and bytes per provider."""
    home = Path(tempfile.mkdtemp(dir=root, prefix="downloader-"))
    host = Host(Identity.from_seed(os.urandom(32)), LOOPBACK).start()
    try:
        ids = []
        for text in addrs:
            address = Multiaddr.parse(text)
            assert address.peer_id is not None
            ids.append(host.connect(address))
        store = BlobStore(home / "blobs")
        source = PeerSource(host, store, lambda d: ids, stats=ExchangeStats())
        started = time.perf_counter()
        source.fetch(wanted, store.opener(wanted.digest, "peers"))
        seconds = time.perf_counter() - started
        if store.stored(wanted.digest) is None:
            raise SystemExit("download did not commit")
        return seconds, source.stats.snapshot().received_bytes_by_peer
    finally:
        host.stop()
        shutil.rmtree(home, ignore_errors=True)


def httpx_to_file(url: str, size: int, root: Path) -> float:
    """GET the whole body into a file while hashing it, as a verifying downloader would."""
    target = root / "httpx-download"
    hasher = hashlib.sha256()
    started = time.perf_counter()
    with httpx.stream("GET", url, timeout=600) as response, target.open("wb") as out:
        for piece in response.iter_raw(CHUNK_BYTES):
            hasher.update(piece)
            out.write(piece)
    seconds = time.perf_counter() - started
    if target.stat().st_size != size:
        raise SystemExit("short HTTP body")
    target.unlink()
    return seconds


def httpx_ranges(url: str, size: int, hashes: list[bytes]) -> float:
    """1 MiB Range requests on one keep-alive connection, each chunk checked as it comes."""
    started = time.perf_counter()
    with httpx.Client(timeout=60) as client:
        for index, expected in enumerate(hashes):
            first = index * CHUNK_BYTES
            last = min(size, first + CHUNK_BYTES) - 1
            body = client.get(url, headers={"Range": f"bytes={first}-{last}"}).content
            if hashlib.sha256(body).digest() != expected:
                raise SystemExit(f"chunk {index} from HTTP does not verify")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--rate-mib", type=float, default=0.0, help="per-provider cap; 0 = a fifth of uncapped"
    )
    parser.add_argument("--serve", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        blob, digest, rate, home = args.serve
        serve(Path(blob), digest, int(rate), Path(home))
        return
    with tempfile.TemporaryDirectory(prefix="p2p-bench-") as tmp:
        root = Path(tmp)
        root.chmod(0o755)  # nginx workers run unprivileged and must read the blob
        blob = root / "blob"
        digest = make_blob(blob, args.size_mib)
        size = blob.stat().st_size
        hasher = ChunkHasher()
        with blob.open("rb") as file:
            while piece := file.read(CHUNK_BYTES):
                hasher.update(piece)
        root_hash = hasher.root()
        hashes = hasher.hashes
        wanted = Wanted(digest=Digest.parse(digest), name="bench", size=size, chunk_root=root_hash)
        os.sync()
        print(f"blob: {args.size_mib} MiB, {len(hashes)} chunks; {os.cpu_count()} cores")

        uncapped: list[float] = []
        with providers(1, blob, digest, 0, root) as addrs:
            for _ in range(args.runs):
                seconds, _ = download(addrs, wanted, root)
                uncapped.append(size / seconds / MIB)
        p2p = statistics.median(uncapped)
        print(f"p2p, 1 provider, uncapped: median {p2p:.0f} MiB/s  runs {[round(x) for x in uncapped]}")

        splice: list[float] = []
        to_file: list[float] = []
        ranges: list[float] = []
        with nginx(root / "nginx", blob) as (url, _):
            for _ in range(args.runs):
                received, seconds = splice_get(url)
                assert received == size
                splice.append(size / seconds / MIB)
                to_file.append(size / httpx_to_file(url, size, root) / MIB)
                ranges.append(size / httpx_ranges(url, size, hashes) / MIB)
        for name, values in (
            ("nginx GET, splice client", splice),
            ("nginx GET, httpx to file + sha256", to_file),
            ("nginx 1 MiB Ranges, httpx + sha256 per chunk", ranges),
        ):
            median = statistics.median(values)
            print(f"{name}: median {median:.0f} MiB/s  (p2p ÷ this = {p2p / median:.2f})")

        rate = int(args.rate_mib * MIB) if args.rate_mib else int(p2p * MIB / 5)
        print(f"capped: each provider at {rate / MIB:.1f} MiB/s")
        results: dict[int, list[float]] = {}
        for count in (1, 4):
            with providers(count, blob, digest, rate, root) as addrs:
                for _ in range(max(1, args.runs - 1) if count == 1 else args.runs):
                    seconds, per_peer = download(addrs, wanted, root)
                    results.setdefault(count, []).append(size / seconds / MIB)
                    shares = sorted((round(v / MIB) for v in per_peer.values()), reverse=True)
                    print(
                        f"  {count} provider(s): {size / seconds / MIB:.1f} MiB/s, MiB per provider {shares}"
                    )
        one, four = statistics.median(results[1]), statistics.median(results[4])
        print(f"capped: 1 provider {one:.1f} MiB/s, 4 providers {four:.1f} MiB/s: {four / one:.2f}x")


if __name__ == "__main__":
    main()
