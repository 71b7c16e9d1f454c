"""The node's own HTTP API under `/api/v1/`, used by the `pyrsia` client commands.

    GET  /api/v1/status     open: peer id, addresses, version, uptime, storage
    GET  /api/v1/config     admin: the node's effective settings
    PUT  /api/v1/config     admin: {"key": …, "value": …} → validated, written to
                            <home>/pyrsia.toml; takes effect at the next start
    GET  /metrics           open: Prometheus text (bytes per peer and source, transfers)
    GET  /api/v1/peers      open: connected p2p peers (address, direction, RTT, bytes, agent)
    POST /api/v1/ping?peer= open: RTT to a peer id or a multiaddr (dialled first)
    GET  /api/v1/log/…      open: the transparency log (see `translog_api`)

Admin calls need `Authorization: Bearer <token>`, the token the node wrote to
`<home>/admin.token` on first start. The HTTP port binds 127.0.0.1 by default.
"""

from __future__ import annotations

import hmac
import json
import math
from collections.abc import Mapping
from typing import Protocol

from pyrsia.errors import ConfigError, PathUnknown, Unauthorized, Unsupported, UsageError
from pyrsia.http.message import Request, Response, json_response
from pyrsia.registry.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from pyrsia.registry.translog_api import PREFIX as LOG_PREFIX
from pyrsia.registry.translog_api import TranslogApi
from pyrsia.translog.ledger import Ledger


class NodeControl(Protocol):
    def status(self) -> Mapping[str, object]: ...

    def settings(self) -> Mapping[str, object]: ...

    def set_setting(self, key: str, value: object) -> Mapping[str, object]: ...

    def peers(self) -> list[dict[str, object]]: ...

    def ping(self, target: str) -> Mapping[str, object]: ...

    def metrics(self) -> str: ...


class NodeApi:
    def __init__(self, node: NodeControl, admin_token: str, ledger: Ledger) -> None:
        self._node = node
        self._admin_token_bytes = admin_token.encode()
        self._translog = TranslogApi(ledger)

    def handle(self, request: Request) -> Response:
        if request.path == LOG_PREFIX or request.path.startswith(LOG_PREFIX + "/"):
            if request.method not in ("GET", "HEAD"):
                raise Unsupported(f"{request.method} is not supported on {request.path}")
            return self._translog.handle(request)
        match (request.method, request.path.rstrip("/")):
            case ("GET" | "HEAD", "/api/v1/status"):
                return _json(self._node.status())
            case ("GET" | "HEAD", "/api/v1/config"):
                self._require_admin(request)
                return _json(self._node.settings())
            case ("PUT", "/api/v1/config"):
                self._require_admin(request)
                key, value = _setting_from(request.body)
                return _json(self._node.set_setting(key, value))
            case ("GET" | "HEAD", "/metrics"):
                body = self._node.metrics().encode()
                return Response(headers=(("Content-Type", METRICS_CONTENT_TYPE),), body=body)
            case ("GET" | "HEAD", "/api/v1/peers"):
                return _json({"peers": self._node.peers()})
            case ("POST", "/api/v1/ping"):
                target = request.query.get("peer", "")
                if not target or len(target) > 1000:
                    raise UsageError("ping needs ?peer=PEER_ID or ?peer=MULTIADDR")
                return _json(self._node.ping(target))
            case (_, "/api/v1/status" | "/api/v1/config" | "/api/v1/peers" | "/api/v1/ping"):
                raise Unsupported(f"{request.method} is not supported on {request.path}")
        raise PathUnknown("no such API endpoint", detail=request.path[:300])

    def _require_admin(self, request: Request) -> None:
        scheme, _, token = (request.header("authorization") or "").partition(" ")
        # Header values arrive as latin-1 text: compare their bytes, so a token with any
        # characters at all is simply wrong (hmac refuses non-ASCII str).
        given = token.strip().encode("latin-1", "replace")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given, self._admin_token_bytes):
            raise Unauthorized("this call needs the node's admin token")


def _setting_from(body: bytes) -> tuple[str, object]:
    """`{"key": …, "value": …}`; the value is checked by `config.set_in_file`.

    JSON's non-finite numbers (`NaN`, `Infinity`, and `1e400`, which parses as
    infinity) are refused here: no setting takes them and TOML could not hold them.
    A body nested deeper than Python's recursion limit is refused, not a crash.
    """
    try:
        doc = json.loads(body, parse_constant=_refuse_constant, parse_float=_finite_float)
    except ConfigError:
        raise
    except RecursionError as exc:
        raise ConfigError("request body is nested too deeply to be a setting") from exc
    except ValueError as exc:
        raise UsageError('request body must be JSON: {"key": …, "value": …}') from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("key"), str) or "value" not in doc:
        raise UsageError('request body must be JSON: {"key": …, "value": …}')
    return doc["key"], doc["value"]


def _refuse_constant(name: str) -> float:
    raise ConfigError(f"a setting cannot be {name}")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ConfigError(f"a setting cannot be {text[:40]} (not a finite number)")
    return value


def _json(doc: Mapping[str, object]) -> Response:
    return json_response(200, json.dumps(doc, sort_keys=True).encode())
