"""The node's own HTTP API under `/api/v1/`, used by the `pyrsia` client commands.

    GET  /api/v1/status     open: peer id, addresses, version, uptime, storage
    GET  /api/v1/config     admin: the node's effective settings
    PUT  /api/v1/config     admin: {"key": …, "value": …} → validated, written to
                            <home>/pyrsia.toml; takes effect at the next start
    GET  /metrics           open: Prometheus text (bytes per peer and source, transfers)
    GET  /api/v1/peers      open: connected p2p peers (address, direction, RTT, bytes, agent)
    GET  /api/v1/transfers  open: blob downloads in progress: from peers (the `transfers`
                            of `status.exchange`, with bytes verified so far) and from
                            upstreams (bytes written so far, the upstream's host)
    GET  /api/v1/traffic    open: a short history of the byte counters `/metrics` shows
                            (received by source, served to peers), sampled every few seconds
    POST /api/v1/ping?peer= open: RTT to a peer id or a multiaddr (dialled first)
    GET  /api/v1/log/…      open: the transparency log (see `translog_api`)
    POST /api/v1/builds     admin: {"kind": "docker"|"maven", "target": …} → 202, the build;
                            or {"kind": "source", "spec": {canonical spec fields}}: a
                            rebuild from source (`pyrsia build source`), with each
                            authority's state under "authorities"
    GET  /api/v1/builds     open: {"builds": [build, …]}
    GET  /api/v1/builds/ID  open: one build: its transactions and each authority's verdict
    POST /api/v1/authorities  admin: {"peer_id": …, "action": "add"|"remove"}: this node's
                            admin approves the change and the node submits it
    GET  /api/v1/authorities  open: the set in force, its quorum, approvals, pending changes
    POST /api/v1/registries  admin: {"host": …, "action": "add"|"remove"}: this node's admin
                            approves the change to the agreed Docker registries and the
                            node submits it
    GET  /api/v1/registries  open: the registries in force (each with the height that added
                            it), approvals, pending changes

A build (`NodeControl.build`) is `{"id": 16 hex, "kind", "target", "state":
running|committed|refused|failed, "error", "height", "started_at", "finished_at", "via":
"this node"|"authorities", "transactions": [{"tx_id", "path", "digest", "state"}],
"verdicts": [{"authority", "verdict": endorsed|refused|pending, "reason"}]}`. Request
bodies are checked here (shape, kind, target syntax, peer id) so the node only ever
sees well-formed requests; what they mean is the node's to judge.

Admin calls need `Authorization: Bearer <token>`, the token the node wrote to
`<home>/admin.token` on first start. The HTTP port binds 127.0.0.1 by default.
"""

from __future__ import annotations

import hmac
import json
import math
from collections.abc import Mapping
from typing import Any, Protocol

from pyrsia.errors import (
    BuildUnknown,
    ConfigError,
    PathUnknown,
    TxInvalid,
    Unauthorized,
    Unsupported,
    UsageError,
)
from pyrsia.formats.build_target import KINDS as BUILD_KINDS
from pyrsia.formats.build_target import check_target
from pyrsia.formats.peer_id import public_key_of
from pyrsia.http.message import Request, Response, json_response
from pyrsia.registry.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from pyrsia.registry.translog_api import PREFIX as LOG_PREFIX
from pyrsia.registry.translog_api import TranslogApi
from pyrsia.translog.ledger import Ledger
from pyrsia.translog.tx import check_registry_host


class NodeControl(Protocol):
    def status(self) -> Mapping[str, object]: ...

    def settings(self) -> Mapping[str, object]: ...

    def set_setting(self, key: str, value: object) -> Mapping[str, object]: ...

    def peers(self) -> list[dict[str, object]]: ...

    def ping(self, target: str) -> Mapping[str, object]: ...

    def metrics(self) -> str: ...

    def start_build(self, kind: str, target: str) -> Mapping[str, object]: ...

    def source_spec(self, text: str) -> object: ...

    def start_source_build(self, spec: Any) -> Mapping[str, object]: ...

    def build(self, build_id: str) -> Mapping[str, object]: ...

    def builds(self) -> list[Mapping[str, object]]: ...

    def transfers(self) -> list[dict[str, object]]: ...

    def traffic(self) -> Mapping[str, object]: ...

    def authorize(self, peer_id: str, remove: bool) -> Mapping[str, object]: ...

    def authorities(self) -> Mapping[str, object]: ...

    def change_registry(self, host: str, remove: bool) -> Mapping[str, object]: ...

    def registries(self) -> Mapping[str, object]: ...


BUILDS = "/api/v1/builds"
AUTHORITIES = "/api/v1/authorities"
REGISTRIES = "/api/v1/registries"
BUILD_ID_CHARS = 16
TARGET_CHARS_MAX = 512
PEER_ID_CHARS_MAX = 100
AUTHORITY_ACTIONS = ("add", "remove")


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
            case ("GET" | "HEAD", "/api/v1/transfers"):
                return _json({"transfers": self._node.transfers()})
            case ("GET" | "HEAD", "/api/v1/traffic"):
                return _json(self._node.traffic())
            case ("POST", "/api/v1/ping"):
                target = request.query.get("peer", "")
                if not target or len(target) > 1000:
                    raise UsageError("ping needs ?peer=PEER_ID or ?peer=MULTIADDR")
                return _json(self._node.ping(target))
            case ("POST", "/api/v1/builds") if _is_source_build(request.body):
                self._require_admin(request)
                spec = self._node.source_spec(source_spec_from(request.body))
                return _json(self._node.start_source_build(spec), status=202)
            case ("POST", "/api/v1/builds"):
                self._require_admin(request)
                kind, target = build_request_from(request.body)
                return _json(self._node.start_build(kind, target), status=202)
            case ("GET" | "HEAD", "/api/v1/builds"):
                return _json({"builds": self._node.builds()})
            case ("GET" | "HEAD", path) if path.startswith(BUILDS + "/"):
                return _json(self._node.build(check_build_id(path.removeprefix(BUILDS + "/"))))
            case ("POST", "/api/v1/authorities"):
                self._require_admin(request)
                peer_id, remove = authority_change_from(request.body)
                return _json(self._node.authorize(peer_id, remove))
            case ("GET" | "HEAD", "/api/v1/authorities"):
                return _json(self._node.authorities())
            case ("POST", "/api/v1/registries"):
                self._require_admin(request)
                host, remove = registry_change_from(request.body)
                return _json(self._node.change_registry(host, remove))
            case ("GET" | "HEAD", "/api/v1/registries"):
                return _json(self._node.registries())
            case (_, "/api/v1/status" | "/api/v1/config" | "/api/v1/peers" | "/api/v1/ping"):
                raise Unsupported(f"{request.method} is not supported on {request.path}")
            case (_, "/api/v1/transfers" | "/api/v1/traffic"):
                raise Unsupported(f"{request.method} is not supported on {request.path}")
            case (_, "/api/v1/builds" | "/api/v1/authorities" | "/api/v1/registries"):
                raise Unsupported(f"{request.method} is not supported on {request.path}")
            case (_, path) if path.startswith(BUILDS + "/"):
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


def build_request_from(body: bytes) -> tuple[str, str]:
    """`{"kind": "docker"|"maven", "target": …}` with a target that parses as its kind's
    reference: `NAME[:TAG|@DIGEST]`, or Maven's `GROUP:ARTIFACT:VERSION`."""
    shape = '{"kind": "docker"|"maven", "target": IMAGE or GROUP:ARTIFACT:VERSION}'
    doc = _object_from(body, shape)
    kind, target = doc.get("kind"), doc.get("target")
    if not isinstance(kind, str) or not isinstance(target, str):
        raise UsageError(f"request body must be JSON: {shape}")
    if kind not in BUILD_KINDS:
        raise UsageError(f"kind must be one of {', '.join(BUILD_KINDS)}, not {kind[:40]!r}")
    if not target or len(target) > TARGET_CHARS_MAX:
        raise UsageError(f"target must be 1 to {TARGET_CHARS_MAX} characters")
    check_target(kind, target)
    return kind, target


SOURCE_SHAPE = '{"kind": "source", "spec": {groupId, artifactId, version, gitRepo, gitTag, …}}'


def _is_source_build(body: bytes) -> bool:
    return b'"source"' in body and b'"spec"' in body


def source_spec_from(body: bytes) -> str:
    """The canonical spec fields of a source build request, as JSON for the node to check."""
    doc = _object_from(body, SOURCE_SHAPE)
    spec = doc.get("spec")
    if doc.get("kind") != "source" or not isinstance(spec, dict):
        raise UsageError(f"request body must be JSON: {SOURCE_SHAPE}")
    return json.dumps(spec)


def check_build_id(text: str) -> str:
    """A build id is 16 lowercase hex characters; anything else names no build."""
    if len(text) != BUILD_ID_CHARS or text.strip("0123456789abcdef"):
        raise BuildUnknown(f"no build {text[:40]!r}: a build id is {BUILD_ID_CHARS} hex characters")
    return text


def _change_from(body: bytes, key: str, placeholder: str) -> tuple[str, bool]:
    """`{KEY: …, "action": "add"|"remove"}` → (what changes, unchecked; whether it is a removal)."""
    shape = f'{{"{key}": {placeholder}, "action": "add"|"remove"}}'
    doc = _object_from(body, shape)
    subject, action = doc.get(key), doc.get("action")
    if not isinstance(subject, str) or not isinstance(action, str):
        raise UsageError(f"request body must be JSON: {shape}")
    if action not in AUTHORITY_ACTIONS:
        raise UsageError(f"action must be add or remove, not {action[:40]!r}")
    return subject, action == "remove"


def authority_change_from(body: bytes) -> tuple[str, bool]:
    """`{"peer_id": …, "action": "add"|"remove"}` → (peer id, whether it is a removal)."""
    peer_id, remove = _change_from(body, "peer_id", "PEER_ID")
    return check_peer_id(peer_id), remove


def registry_change_from(body: bytes) -> tuple[str, bool]:
    """`{"host": …, "action": "add"|"remove"}` → (registry host, whether it is a removal)."""
    host, remove = _change_from(body, "host", "REGISTRY_HOST")
    return check_registry(host), remove


def check_registry(text: str) -> str:
    """Raises `UsageError` unless `text` is a registry host as the log writes it
    (`ghcr.io`, `localhost:5000`: lowercase, no scheme, path or whitespace)."""
    try:
        return check_registry_host("registry host", text)
    except TxInvalid as exc:
        raise UsageError(exc.message) from exc


def check_peer_id(text: str) -> str:
    """Raises `UsageError` unless `text` is an Ed25519 peer id (`12D3KooW…`)."""
    try:
        if len(text) > PEER_ID_CHARS_MAX:
            raise ValueError("too long")
        public_key_of(text)
    except ValueError as exc:
        raise UsageError(f"{text[:60]!r} is not a peer id (12D3KooW…)") from exc
    return text


def _object_from(body: bytes, shape: str) -> dict[str, object]:
    """A JSON object; non-finite numbers and bodies nested past the recursion limit are
    refused like any other malformed body."""
    try:
        doc = json.loads(body, parse_constant=_refuse_json_constant)
    except RecursionError as exc:
        raise UsageError("request body is nested too deeply") from exc
    except ValueError as exc:  # also UnicodeDecodeError: the body is not UTF-8
        raise UsageError(f"request body must be JSON: {shape}") from exc
    if not isinstance(doc, dict):
        raise UsageError(f"request body must be JSON: {shape}")
    return doc


def _refuse_json_constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


def _refuse_constant(name: str) -> float:
    raise ConfigError(f"a setting cannot be {name}")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ConfigError(f"a setting cannot be {text[:40]} (not a finite number)")
    return value


def _json(doc: Mapping[str, object], *, status: int = 200) -> Response:
    return json_response(status, json.dumps(doc, sort_keys=True).encode())
