"""Upstream connections are kept for reuse: a burst of fetches as wide as the node's
workers opens its connections once, and the next burst rides the same ones."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from pyrsia.artifacts.blobstore import BlobStore
from pyrsia.formats.maven_layout import CHECKSUMS
from pyrsia.upstream.maven import MavenClient

WIDTH = 40  # fetches in flight at once: more than httpx keeps idle by default (20)
BODY = b"PK\x03\x04 a jar" * 64


class _Upstream(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.connections = 0
        self.lock = threading.Lock()
        self.barrier = threading.Barrier(WIDTH)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    server: _Upstream

    def setup(self) -> None:
        super().setup()
        with self.server.lock:
            self.server.connections += 1

    def do_GET(self) -> None:
        # Every fetch of a burst is in flight at once: each needs a connection of its own.
        self.server.barrier.wait(timeout=30)
        self.send_response(200)
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def upstream() -> Iterator[_Upstream]:
    server = _Upstream()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_a_second_burst_reuses_every_connection_of_the_first(upstream: _Upstream, tmp_path: Path) -> None:
    host, port = upstream.server_address[:2]
    client = MavenClient(f"http://{host!s}:{port}/maven2")
    store = BlobStore(tmp_path)
    try:

        def fetch(i: int) -> int:
            opener = store.opener(None, "test", CHECKSUMS)
            return client.fetch(f"g/a/{i}/a-{i}.jar", opener, sidecar=False).size

        with ThreadPoolExecutor(WIDTH) as pool:
            assert list(pool.map(fetch, range(WIDTH))) == [len(BODY)] * WIDTH
            assert upstream.connections == WIDTH
            assert list(pool.map(fetch, range(WIDTH, 2 * WIDTH))) == [len(BODY)] * WIDTH
        assert upstream.connections == WIDTH  # none closed and opened again
    finally:
        client.close()
