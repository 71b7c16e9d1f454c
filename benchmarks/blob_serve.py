"""GET throughput of one cached blob: pyrsia vs nginx (sendfile) vs docker-registry.

    python benchmarks/blob_serve.py [--size-mib 1024] [--runs 9] [--clients 4]

The same bytes are served by all three on loopback: nginx from a plain file,
docker-registry from its own storage, pyrsia from its blob store after one
pull-through from that registry. Each peer runs in the configuration it is fastest in
here (measured side by side; see benchmarks/README.md):

    nginx            a worker per core, `sendfile on`, no `tcp_nopush`, no access log. With
                     `tcp_nopush` (TCP_CORK) nginx sends about a third slower on
                     loopback; worker count, `sendfile_max_chunk`, `open_file_cache`,
                     `output_buffers` and the access log made no measurable difference.
    docker-registry  access log off, in-memory blob descriptor cache.
    pyrsia           `--log-level warning` (no per-request access log line).

Two clients read every body, one after the other:

    splice  this process, in-kernel: socket -> pipe -> /dev/null with splice(2), so it
            costs next to nothing and the server's own speed is what is measured.
    curl    a real client that copies every byte into user space. On a 2-core machine
            it is the slower party: every server's figure converges on curl's, which
            hides the servers' differences. Shown for reference, not for ratios.

Each server's bytes are hashed once and must match the digest. Before the runs the
disk is synced, so every copy is clean in the page cache. Runs are interleaved and the
order rotates each round, so drift (other work on the machine) hits all alike; the
table shows medians and bests, the ratio pyrsia ÷ server of the per-round splice
figures, the server's CPU seconds per GiB sent (robust to contention, unlike MiB/s),
aggregate MiB/s with several splice clients at once, and the daemon's peak RSS.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.support.node import NodeProcess
from tests.support.ports import free_port

REPO = "bench/blob"
CHUNK = 1 << 20
GIB = 1 << 30
READY_TIMEOUT_S = 20.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Server:
    name: str
    url: str
    pid: int  # whose process tree's CPU time is the server's


def make_blob(path: Path, size_mib: int) -> str:
    """Pseudo-random bytes (incompressible, so no layer can cheat) and their digest."""
    hasher = hashlib.sha256()
    seed = os.urandom(CHUNK)
    with path.open("wb") as out:
        for i in range(size_mib):
            chunk = hashlib.sha256(i.to_bytes(8, "big")).digest() + seed[32:]
            hasher.update(chunk)
            out.write(chunk)
    return "sha256:" + hasher.hexdigest()


def push_file(registry_url: str, path: Path, digest: str) -> None:
    """A monolithic upload streamed from the file: the blob never sits in memory."""

    def body() -> Iterator[bytes]:
        with path.open("rb") as file:
            while chunk := file.read(CHUNK):
                yield chunk

    with httpx.Client(base_url=registry_url, timeout=600) as client:
        started = client.post(f"/v2/{REPO}/blobs/uploads/")
        started.raise_for_status()
        location = httpx.URL(started.headers["Location"]).copy_add_param("digest", digest)
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(path.stat().st_size)}
        done = client.put(location, content=body(), headers=headers)
        if done.status_code != 201:
            raise SystemExit(f"push failed: {done.status_code} {done.text}")


def seed_manifest(registry_url: str, digest: str, size: int) -> None:
    """An image whose one layer is the blob, tagged `bench`, with an empty config."""
    config = b"{}"
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    with httpx.Client(base_url=registry_url, timeout=60) as client:
        started = client.post(f"/v2/{REPO}/blobs/uploads/")
        location = httpx.URL(started.headers["Location"]).copy_add_param("digest", config_digest)
        client.put(
            location, content=config, headers={"Content-Type": "application/octet-stream"}
        ).raise_for_status()
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": 2,
            },
            "layers": [
                {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest, "size": size}
            ],
        }
        client.put(
            f"/v2/{REPO}/manifests/bench",
            content=json.dumps(manifest).encode(),
            headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
        ).raise_for_status()


def wait_until_ok(url: str, process: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.05)
    raise SystemExit(f"{what} did not start")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextmanager
def registry(root: Path) -> Iterator[tuple[str, int]]:
    """docker-registry at its best here: no access log, blob descriptors cached in memory."""
    port = free_port()
    root.mkdir(parents=True)
    conf = root / "config.yml"
    conf.write_text(
        "version: 0.1\n"
        "log:\n  level: warn\n  accesslog:\n    disabled: true\n"
        f"storage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n"
        "  cache:\n    blobdescriptor: inmemory\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    with (root / "registry.log").open("ab") as log:
        process = subprocess.Popen(["docker-registry", "serve", str(conf)], stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ok(f"{url}/v2/", process, "docker-registry")
        yield url, process.pid
    finally:
        stop(process)


@contextmanager
def nginx(root: Path, blob: Path) -> Iterator[tuple[str, int]]:
    """nginx serving `blob` at /blob, at its best here; no system config touched.

    `sendfile on` hands the file to the kernel. No `tcp_nopush`: with it (TCP_CORK
    around each sendfile) the same transfer measured ~2.1 GiB/s against ~3.0 without,
    interleaved on this machine. `worker_processes auto` (one per core, nginx's own
    advice) so several clients at once can use both cores; for one client one worker
    measured the same. `sendfile_max_chunk` (default 2m, 512k and unlimited tried),
    `open_file_cache` and the access log made no difference; it stays off as
    pyrsia's does.
    """
    port = free_port()
    (root / "tmp").mkdir(parents=True)
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
  client_body_temp_path {root}/tmp; proxy_temp_path {root}/tmp; fastcgi_temp_path {root}/tmp;
  uwsgi_temp_path {root}/tmp; scgi_temp_path {root}/tmp;
  server {{
    listen 127.0.0.1:{port};
    location = /blob {{ alias {blob}; default_type application/octet-stream; }}
  }}
}}
"""
    )
    process = subprocess.Popen(["nginx", "-c", str(conf)], stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/blob"
    try:
        wait_until_ok(url, process, "nginx")
        yield url, process.pid
    finally:
        stop(process)


# --- clients -------------------------------------------------------------------------


def splice_get(url: str) -> tuple[int, float]:
    """GET `url`, the body discarded in the kernel; returns (body bytes, seconds)."""
    parts = urlsplit(url)
    started = time.perf_counter()
    with socket.create_connection((parts.hostname, parts.port)) as sock:
        request = f"GET {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nConnection: close\r\n\r\n"
        sock.sendall(request.encode())
        head = b""
        while b"\r\n\r\n" not in head:  # peek, then take exactly the head
            peeked = sock.recv(65536, socket.MSG_PEEK)
            if not peeked:
                raise SystemExit(f"{url}: closed before the response head")
            end = peeked.find(b"\r\n\r\n")
            head += sock.recv(end + 4 if end >= 0 else len(peeked))
        status, *lines = head.decode("latin-1").split("\r\n")
        if " 200 " not in status:
            raise SystemExit(f"{url}: {status}")
        fields = dict(line.lower().split(": ", 1) for line in lines if ": " in line)
        left = length = int(fields["content-length"])
        read_end, write_end = os.pipe()
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, CHUNK)  # 16 pages by default
            while left:
                moved = os.splice(sock.fileno(), write_end, min(left, CHUNK))
                if moved == 0:
                    break
                left -= moved
                while moved:
                    moved -= os.splice(read_end, devnull, moved)
        finally:
            for fd in (read_end, write_end, devnull):
                os.close(fd)
    return length - left, time.perf_counter() - started


def curl_get(url: str) -> tuple[int, float]:
    out = subprocess.run(
        ["curl", "-s", "-o", "/dev/null", "-w", "%{size_download} %{time_total}", url],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    return int(out[0]), float(out[1])


def mib_s(url: str, size: int, get: Callable[[str], tuple[int, float]]) -> float:
    received, seconds = get(url)
    if received != size:
        raise SystemExit(f"{url} sent {received} bytes, expected {size}")
    return float(size / seconds / CHUNK)


def check_bytes(url: str, digest: str) -> None:
    """Reads the whole body once and hashes it: every server sends the same bytes."""
    hasher = hashlib.sha256()
    with httpx.stream("GET", url, timeout=600) as response:
        response.raise_for_status()
        for chunk in response.iter_bytes(CHUNK):
            hasher.update(chunk)
    if "sha256:" + hasher.hexdigest() != digest:
        raise SystemExit(f"{url} sent other bytes than {digest}")


# --- server accounting ---------------------------------------------------------------


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants (nginx's worker is the master's child)."""
    pids = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    for child in children:
        pids += process_tree(int(child))
    return pids


def cpu_s(pids: list[int]) -> float:
    """CPU seconds these processes' threads have run, in nanoseconds' resolution (schedstat)."""
    total_ns = 0
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):  # a thread may end meanwhile
                total_ns += int((task / "schedstat").read_text().split()[0])
    return total_ns / 1e9


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# --- the benchmark -------------------------------------------------------------------


@dataclass(kw_only=True)
class Samples:
    splice: list[float]
    curl: list[float]
    cpu_s_per_gib: list[float]


def measure(servers: list[Server], size: int, runs: int, console: Console) -> dict[str, Samples]:
    samples = {s.name: Samples(splice=[], curl=[], cpu_s_per_gib=[]) for s in servers}
    with console.status(f"{runs} interleaved rounds"):
        for round_no in range(runs):
            shift = round_no % len(servers)
            for server in servers[shift:] + servers[:shift]:
                pids = process_tree(server.pid)
                before = cpu_s(pids)
                samples[server.name].splice.append(mib_s(server.url, size, splice_get))
                samples[server.name].cpu_s_per_gib.append((cpu_s(pids) - before) * GIB / size)
                samples[server.name].curl.append(mib_s(server.url, size, curl_get))
    return samples


def parallel_mib_s(servers: list[Server], size: int, clients: int) -> dict[str, float]:
    aggregate = {}
    for server in servers:
        started = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:  # splice releases the GIL
            list(pool.map(lambda url: mib_s(url, size, splice_get), [server.url] * clients))
        aggregate[server.name] = clients * size / (time.perf_counter() - started) / CHUNK
    return aggregate


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args()
    console = Console()
    size = args.size_mib * CHUNK
    with tempfile.TemporaryDirectory(prefix="pyrsia-bench-") as tmp:
        root = Path(tmp)
        root.chmod(0o755)  # nginx workers run unprivileged and must read the blob
        blob = root / "blob.bin"
        with console.status(f"writing a {args.size_mib} MiB blob"):
            digest = make_blob(blob, args.size_mib)
        with (
            registry(root / "registry") as (registry_url, registry_pid),
            nginx(root / "nginx", blob) as (nginx_url, nginx_pid),
            NodeProcess(root / "node", "--docker-upstream", registry_url, "--log-level", "warning") as node,
        ):
            with console.status("pushing it to docker-registry"):
                push_file(registry_url, blob, digest)
            path = f"/v2/{REPO}/blobs/{digest}"
            rss_before = peak_rss_mib(node.pid)
            with console.status("caching it in pyrsia (one pull-through)"):
                # The node serves only what its log vouches for: publish a manifest naming the blob.
                seed_manifest(registry_url, digest, size)
                httpx.get(f"{node.url}/v2/{REPO}/manifests/bench", timeout=60).raise_for_status()
                mib_s(node.url + path, size, splice_get)
            servers = [
                Server(name="nginx", url=nginx_url, pid=nginx_pid),
                Server(name="docker-registry", url=registry_url + path, pid=registry_pid),
                Server(name="pyrsia", url=node.url + path, pid=node.pid),
            ]
            os.sync()  # every copy clean in the page cache, none being written back
            with console.status("checking every server's bytes (also the warm-up)"):
                for server in servers:
                    check_bytes(server.url, digest)
            samples = measure(servers, size, args.runs, console)
            with console.status(f"{args.clients} clients at once"):
                parallel = parallel_mib_s(servers, size, args.clients)
            rss_after = peak_rss_mib(node.pid)
    report(console, samples, parallel, args)
    console.print(
        f"pyrsia daemon peak RSS: {rss_before:.0f} MiB before, {rss_after:.0f} MiB after the transfers"
    )


def report(
    console: Console, samples: dict[str, Samples], parallel: dict[str, float], args: argparse.Namespace
) -> None:
    pyrsia = samples["pyrsia"].splice
    table = Table(
        title=f"GET of one {args.size_mib} MiB cached blob on loopback ({args.runs} interleaved rounds)"
    )
    columns = (
        "server",
        "splice median MiB/s",
        "splice best MiB/s",
        "pyrsia ÷ this",
        "server CPU s/GiB",
        f"{args.clients} clients MiB/s",
        "curl median MiB/s",
    )
    for column in columns:
        table.add_column(column, justify="left" if column == "server" else "right")
    ratios = {}
    for name, s in samples.items():
        # Ratio of the same round's figures, then the median: drift cancels within a round.
        ratios[name] = statistics.median(p / v for p, v in zip(pyrsia, s.splice, strict=True))
        table.add_row(
            name,
            f"{statistics.median(s.splice):,.0f}",
            f"{max(s.splice):,.0f}",
            f"{ratios[name]:.2f}",
            f"{statistics.median(s.cpu_s_per_gib):.2f}",
            f"{parallel[name]:,.0f}",
            f"{statistics.median(s.curl):,.0f}",
        )
    console.print(table)
    for name, s in samples.items():
        print(
            f"{name}: splice median {statistics.median(s.splice):.0f} MiB/s, "
            f"curl median {statistics.median(s.curl):.0f} MiB/s, "
            f"server CPU {statistics.median(s.cpu_s_per_gib):.2f} s/GiB, pyrsia/{name} = {ratios[name]:.2f}"
        )


if __name__ == "__main__":
    main()
