"""GET throughput of one cached blob: pyrsia vs nginx (sendfile) vs docker-registry.

    python benchmarks/blob_serve.py [--size-mib 1024] [--runs 5] [--clients 4]

The same bytes are served by all three, on loopback, to the same client (curl, which
is never the bottleneck): nginx from a plain file with sendfile, docker-registry from
its own storage, pyrsia from its blob store after one pull-through from that registry.
Runs are interleaved round-robin after a warm-up each; the table shows median and best
MiB/s, the ratios to pyrsia, aggregate MiB/s with several clients at once, and the
daemon's peak RSS before and after, to show memory stays flat whatever the size.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.support.node import NodeProcess
from tests.support.registry import RegistryProcess, free_port

REPO = "bench/blob"
CHUNK = 1 << 20


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


@contextmanager
def nginx(root: Path, blob: Path) -> Iterator[str]:
    """nginx serving `blob` at /blob with sendfile, under `root`; no system config touched."""
    port = free_port()
    (root / "tmp").mkdir(parents=True)
    conf = root / "nginx.conf"
    conf.write_text(
        f"""worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log;
daemon off;
events {{ worker_connections 256; }}
http {{
  access_log off;
  sendfile on; tcp_nopush on;
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
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if httpx.head(url, timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def curl_mib_s(url: str, size: int) -> float:
    out = subprocess.run(
        ["curl", "-s", "-o", "/dev/null", "-w", "%{size_download} %{time_total}", url],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    if int(out[0]) != size:
        raise SystemExit(f"{url} sent {out[0]} bytes, expected {size}")
    return size / float(out[1]) / CHUNK


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args()
    console = Console()
    with tempfile.TemporaryDirectory(prefix="pyrsia-bench-") as tmp:
        root = Path(tmp)
        root.chmod(0o755)  # nginx workers run unprivileged and must read the blob
        blob = root / "blob.bin"
        size = args.size_mib * CHUNK
        with console.status(f"writing a {args.size_mib} MiB blob"):
            digest = make_blob(blob, args.size_mib)
        with (
            RegistryProcess(root / "registry") as registry,
            nginx(root / "nginx", blob) as nginx_url,
            NodeProcess(root / "node", "--docker-upstream", registry.url, "--log-level", "warning") as node,
        ):
            with console.status("pushing it to docker-registry"):
                push_file(registry.url, blob, digest)
            path = f"/v2/{REPO}/blobs/{digest}"
            rss_before = peak_rss_mib(node.pid)
            with console.status("caching it in pyrsia (one pull-through)"):
                # The node serves only what its log vouches for: publish a manifest naming the blob.
                seed_manifest(registry.url, digest, size)
                httpx.get(f"{node.url}/v2/{REPO}/manifests/bench", timeout=60).raise_for_status()
                curl_mib_s(node.url + path, size)
            servers = {"nginx": nginx_url, "docker-registry": registry.url + path, "pyrsia": node.url + path}
            samples: dict[str, list[float]] = {name: [] for name in servers}
            for url in servers.values():
                curl_mib_s(url, size)  # warm-up: page cache, connections
            with console.status(f"{args.runs} interleaved runs"):
                for _ in range(args.runs):
                    for name, url in servers.items():
                        samples[name].append(curl_mib_s(url, size))
            parallel: dict[str, float] = {}
            with console.status(f"{args.clients} clients at once"):
                for name, url in servers.items():
                    started = time.perf_counter()
                    with ThreadPoolExecutor(args.clients) as pool:
                        list(pool.map(lambda u: curl_mib_s(u, size), [url] * args.clients))
                    parallel[name] = args.clients * size / (time.perf_counter() - started) / CHUNK
            rss_after = peak_rss_mib(node.pid)

    medians = {name: statistics.median(v) for name, v in samples.items()}
    table = Table(title=f"GET of one {args.size_mib} MiB cached blob on loopback (curl, {args.runs} runs)")
    for column in ("server", "median MiB/s", "best MiB/s", f"{args.clients} clients MiB/s", "pyrsia ÷ this"):
        table.add_column(column, justify="right" if column != "server" else "left")
    for name, values in samples.items():
        ratio = medians["pyrsia"] / medians[name]
        table.add_row(
            name, f"{medians[name]:,.0f}", f"{max(values):,.0f}", f"{parallel[name]:,.0f}", f"{ratio:.2f}"
        )
    console.print(table)
    console.print(
        f"pyrsia daemon peak RSS: {rss_before:.0f} MiB before, {rss_after:.0f} MiB after the transfers"
    )
    for name in servers:
        ratio = medians["pyrsia"] / medians[name]
        print(f"{name}: median {medians[name]:.0f} MiB/s, pyrsia/{name} = {ratio:.2f}")


def seed_manifest(registry_url: str, digest: str, size: int) -> None:
    """An image whose one layer is the blob, tagged `bench`, with an empty config."""
    import json

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


if __name__ == "__main__":
    main()
