"""A reverse proxy in front of an upstream that records every request's method, path and
headers, so a test can check what reached that upstream (and what did not)."""

from __future__ import annotations

import http.client
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

CHUNK_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class Logged:
    method: str
    path: str
    headers: dict[str, str]  # lowercase names


class LoggingProxy:
    def __init__(self, upstream_url: str) -> None:
        target = urlsplit(upstream_url)
        assert target.hostname is not None and target.port is not None
        self._host, self._port = target.hostname, target.port
        self.requests: list[Logged] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> LoggingProxy:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                proxy._forward(self)

            def do_HEAD(self) -> None:
                proxy._forward(self)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="logging-proxy", daemon=True).start()
        return self

    def _forward(self, handler: BaseHTTPRequestHandler) -> None:
        headers = {k.lower(): v for k, v in handler.headers.items()}
        with self._lock:
            self.requests.append(Logged(method=handler.command, path=handler.path, headers=headers))
        upstream = http.client.HTTPConnection(self._host, self._port, timeout=60)
        try:
            forwarded = {k: v for k, v in handler.headers.items() if k.lower() not in ("host", "connection")}
            upstream.request(handler.command, handler.path, headers=forwarded)
            response = upstream.getresponse()
            handler.send_response(response.status)
            for key, value in response.getheaders():
                if key.lower() not in ("connection", "transfer-encoding"):
                    handler.send_header(key, value)
            body = b"" if handler.command == "HEAD" else response.read()
            if response.getheader("Content-Length") is None:
                handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            handler.wfile.write(body)
        finally:
            upstream.close()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> LoggingProxy:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
