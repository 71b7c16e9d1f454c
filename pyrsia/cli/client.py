"""HTTP client for the node API, as the CLI commands use it.

Maps every failure to a `PyrsiaError` with a sentence a user can act on: a node that
is not running, a token that is missing, or the node's own error message.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from pyrsia.cli import settings
from pyrsia.config import default_home
from pyrsia.errors import NodeUnreachable, PyrsiaError, Unauthorized, UsageError
from pyrsia.node.home import read_admin_token

TIMEOUT_S = 30.0
CHUNK_BYTES = 1024 * 1024


class NodeClient:
    def __init__(
        self, node_url: str | None, *, admin_token: str | None = None, home: Path | None = None
    ) -> None:
        self.node_url = settings.node_url(node_url).rstrip("/")
        self._token = admin_token or read_admin_token(home or default_home())
        self._http = httpx.Client(base_url=self.node_url, timeout=TIMEOUT_S)

    def get_json(self, path: str, *, admin: bool = False) -> Any:
        response = self._get(path, admin=admin)
        try:
            return response.json()
        except ValueError as exc:
            raise PyrsiaError(f"{self.node_url}{path} did not answer JSON; is this a pyrsia node?") from exc

    def put_json(self, path: str, doc: object, *, admin: bool = False) -> Any:
        response = self._request("PUT", path, admin=admin, body=json.dumps(doc).encode())
        return response.json()

    def post_json(self, path: str, doc: object = None, *, admin: bool = False) -> Any:
        body = None if doc is None else json.dumps(doc).encode()
        response = self._request("POST", path, admin=admin, body=body)
        try:
            return response.json()
        except ValueError as exc:
            raise PyrsiaError(f"{self.node_url}{path} did not answer JSON; is this a pyrsia node?") from exc

    def get_text(self, path: str) -> str:
        return self._get(path).text

    def stream(self, path: str) -> Iterator[tuple[bytes, int | None]]:
        """Body chunks of a GET, each with the total size when the node announced it."""
        try:
            with self._http.stream("GET", path) as response:
                if response.status_code != 200:
                    response.read()
                    raise _failure(response)
                length = response.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
                for chunk in response.iter_bytes(CHUNK_BYTES):
                    yield chunk, total
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from exc

    def _get(self, path: str, *, admin: bool = False) -> httpx.Response:
        return self._request("GET", path, admin=admin)

    def _request(
        self, method: str, path: str, *, admin: bool = False, body: bytes | None = None
    ) -> httpx.Response:
        headers = {}
        if admin:
            if not self._token:
                raise Unauthorized("no admin token: pass --home of the node or set PYRSIA_ADMIN_TOKEN")
            headers["Authorization"] = f"Bearer {self._token}"
        try:
            response = self._http.request(method, path, headers=headers, content=body)
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from exc
        if not 200 <= response.status_code < 300:  # 202: a build was accepted and runs on
            raise _failure(response)
        return response

    def _unreachable(self, exc: Exception) -> NodeUnreachable:
        return NodeUnreachable(
            f"cannot reach the pyrsia node at {self.node_url} ({type(exc).__name__}); "
            "is `pyrsia daemon` running? (--node / PYRSIA_NODE)"
        )


def _failure(response: httpx.Response) -> PyrsiaError:
    """The node's own message; a 400 means the request was wrong, so it counts as a usage error.

    An answer without pyrsia's `Server` header or error document comes from something
    that is not a pyrsia node (another server on that port, a proxy): its body is not
    shown, but what answered and what to check."""
    message = _error_message(response)
    if message is None or not response.headers.get("Server", "").startswith("pyrsia/"):
        where = f"{response.url.scheme}://{response.url.netloc.decode()}"
        return NodeUnreachable(
            f"{where} answered {response.status_code} {response.reason_phrase} to {response.url.path}, "
            "which a pyrsia node would not: is it a pyrsia node? (--node / PYRSIA_NODE)"
        )
    kind = UsageError if response.status_code == 400 else PyrsiaError
    return kind(f"node answered {response.status_code}: {message}")


def _error_message(response: httpx.Response) -> str | None:
    """The message of a pyrsia error document (`{"errors": [{"message": …}]}`), else None."""
    try:
        message = response.json()["errors"][0]["message"]
    except (ValueError, KeyError, IndexError, TypeError, json.JSONDecodeError):
        return None
    return message if isinstance(message, str) else None
