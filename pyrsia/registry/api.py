"""The node's own HTTP API under `/api/v1/`, used by the `pyrsia` client commands.

Reads are open to anyone who can reach the HTTP port (it binds 127.0.0.1 by default);
calls that reveal or change node settings need `Authorization: Bearer <admin token>`,
the token the node wrote to `<home>/admin.token` on first start.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable, Mapping

from pyrsia.errors import PathUnknown, Unauthorized, Unsupported
from pyrsia.http.message import Request, Response, json_response

StatusSource = Callable[[], Mapping[str, object]]


class NodeApi:
    def __init__(self, status: StatusSource, settings: StatusSource, admin_token: str) -> None:
        self._status = status
        self._settings = settings
        self._admin_token = admin_token

    def handle(self, request: Request) -> Response:
        if request.method not in ("GET", "HEAD"):
            raise Unsupported(f"{request.method} is not supported on {request.path}")
        match request.path.rstrip("/"):
            case "/api/v1/status":
                return _json(self._status())
            case "/api/v1/config":
                self._require_admin(request)
                return _json(self._settings())
        raise PathUnknown("no such API endpoint", detail=request.path[:300])

    def _require_admin(self, request: Request) -> None:
        scheme, _, token = (request.header("authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip(), self._admin_token):
            raise Unauthorized("this call needs the node's admin token")


def _json(doc: Mapping[str, object]) -> Response:
    return json_response(200, json.dumps(doc, sort_keys=True).encode())
