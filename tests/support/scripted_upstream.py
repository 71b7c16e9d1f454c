"""A scripted upstream: a real HTTP server on loopback that answers what the test says.

Tests that need an upstream to misbehave in one exact way (a manifest with a field of
the wrong type, a lying `Content-Length`, a body that drips a byte at a time, a
redirect loop, a token endpoint that answers garbage) set a `Reply` per path; every
other path gets 404. Routes can be swapped while a node is running, so one node can
face many upstream behaviours (hypothesis examples included). Every request is
recorded with its headers, so a test can check what the node sent where (its bearer
token, above all).

`bearer` turns on Docker Hub's anonymous token flow: a `/v2/` request without
`Authorization: Bearer <bearer>` gets a 401 whose challenge names `<url>/token`.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from tests.support import images

DRIP_BYTES_MAX = 64 * 1024 * 1024  # bounds every endless body, in case a client never hangs up


@dataclass(frozen=True, slots=True, kw_only=True)
class Seen:
    method: str
    path: str
    query: str
    headers: dict[str, str]


@dataclass(frozen=True, slots=True, kw_only=True)
class Reply:
    status: int = 200
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    # Content-Length to claim: None sends the body's own, -1 sends none (the body ends at close).
    length: int | None = None
    # Seconds between body bytes; the body is then sent one byte at a time.
    drip_s: float = 0.0
    # Bytes sent after `body`, forever (bounded by DRIP_BYTES_MAX) until the client hangs up.
    endless: bytes = b""


Route = Reply | Callable[[Seen], Reply]


def manifest_reply(body: bytes, media_type: str = images.OCI_MANIFEST, **extra: str) -> Reply:
    """A manifest as a registry serves it: its type and its digest in the headers."""
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    headers = {"Content-Type": media_type, "Docker-Content-Digest": digest, **extra}
    return Reply(body=body, headers=tuple(headers.items()))


@dataclass
class ScriptedUpstream:
    """`with ScriptedUpstream() as upstream:`; `upstream.url` then serves `upstream.routes`."""

    routes: dict[str, Route] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    bearer: str | None = None
    _server: ThreadingHTTPServer | None = None
    _stopping: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def route(self, path: str, reply: Route) -> None:
        with self._lock:
            self.routes[path] = reply

    def serve_image(self, image: images.Image, *, only: Iterable[str] = ()) -> None:
        """Serves an honest image: its tag, every manifest by digest, every blob."""
        skip = set(only)
        media_type, body = image.manifests[image.top]
        self.route(f"/v2/{image.name}/manifests/{image.tag}", manifest_reply(body, media_type))
        for digest, (media_type, body) in image.manifests.items():
            if digest not in skip:
                self.route(f"/v2/{image.name}/manifests/{digest}", manifest_reply(body, media_type))
        for digest, blob in image.blobs.items():
            if digest not in skip:
                self.route(f"/v2/{image.name}/blobs/{digest}", Reply(body=blob))

    def requests_to(self, prefix: str) -> list[Seen]:
        with self._lock:
            return [s for s in self.seen if s.path.startswith(prefix)]

    def _answer(self, seen: Seen) -> Reply:
        with self._lock:
            self.seen.append(seen)
            route = self.routes.get(seen.path)
        wanted = f"Bearer {self.bearer}"
        if self.bearer and seen.path.startswith("/v2/") and seen.headers.get("authorization") != wanted:
            challenge = f'Bearer realm="{self.url}/token",service="scripted"'
            return Reply(status=401, body=b"{}", headers=(("WWW-Authenticate", challenge),))
        if route is None:
            return Reply(status=404, body=b'{"errors":[{"code":"NOT_FOUND","message":"no such path"}]}')
        return route(seen) if callable(route) else route

    def start(self) -> ScriptedUpstream:
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                self._reply()

            def do_HEAD(self) -> None:
                self._reply()

            def _reply(self) -> None:
                parts = urlsplit(self.path)
                headers = {k.lower(): v for k, v in self.headers.items()}
                reply = upstream._answer(
                    Seen(method=self.command, path=parts.path, query=parts.query, headers=headers)
                )
                self.send_response(reply.status)
                length = len(reply.body) if reply.length is None else reply.length
                if length >= 0:
                    self.send_header("Content-Length", str(length))
                for key, value in reply.headers:
                    self.send_header(key, value)
                self.send_header("Connection", "close")
                self.end_headers()
                self.close_connection = True
                if self.command == "HEAD":
                    return
                # The client may hang up mid-body: that is what a drip test wants.
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    upstream._send_body(self.wfile, reply)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def _send_body(self, out: Any, reply: Reply) -> None:
        if reply.drip_s > 0:
            for i in range(len(reply.body)):
                if self._stopping.wait(reply.drip_s):
                    return
                out.write(reply.body[i : i + 1])
                out.flush()
        else:
            out.write(reply.body)
        sent = 0
        while reply.endless and sent < DRIP_BYTES_MAX and not self._stopping.is_set():
            out.write(reply.endless)
            sent += len(reply.endless)

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> ScriptedUpstream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Polls `condition` until it holds; fails naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
