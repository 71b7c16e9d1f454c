"""The node's HTTP application: routes by prefix and renders every error one way.

Errors become the OCI distribution-spec error body, `{"errors": [{"code", "message",
"detail"}]}`, with the status that `pyrsia.errors` assigns; registry clients parse it
and the pyrsia CLI prints its message. This is the only place errors turn into HTTP.
"""

from __future__ import annotations

import json

from pyrsia.errors import PathUnknown, PyrsiaError, RangeNotSatisfiable, Unauthorized, Unsupported
from pyrsia.http.message import Request, Response, json_response
from pyrsia.registry.api import NodeApi
from pyrsia.registry.docker import API_VERSION_HEADER, DockerRegistry
from pyrsia.registry.maven import PREFIX as MAVEN_PREFIX
from pyrsia.registry.maven import MavenRepository
from pyrsia.web.site import StaticSite


class NodeApp:
    def __init__(
        self, docker: DockerRegistry, maven: MavenRepository, api: NodeApi, site: StaticSite | None = None
    ) -> None:
        self._docker = docker
        self._maven = maven
        self._api = api
        self._site = site

    def handle(self, request: Request) -> Response:
        path = request.path
        if path == "/v2" or path.startswith("/v2/"):
            return self._docker.handle(request)
        if path.startswith(MAVEN_PREFIX):
            return self._maven.handle(request)
        if path.startswith("/api/v1/") or path == "/metrics":
            return self._api.handle(request)
        if self._site is not None and self._site.serves(path):
            return self._site.handle(request)
        raise PathUnknown("no such endpoint", detail=path[:300])

    def render_error(self, request: Request | None, error: PyrsiaError) -> Response:
        # distribution-spec: every error carries code, message and detail (empty when none).
        detail = error.detail if error.detail is not None else {}
        entry: dict[str, object] = {"code": error.code, "message": error.message, "detail": detail}
        extra: list[tuple[str, str]] = []
        if isinstance(error, RangeNotSatisfiable):
            extra.append(("Content-Range", f"bytes */{error.size}"))
        if isinstance(error, Unsupported):
            extra.append(("Allow", "GET, HEAD"))
        if isinstance(error, Unauthorized):
            extra.append(("WWW-Authenticate", 'Bearer realm="pyrsia"'))
        if request is not None and request.path.startswith("/v2"):
            extra.append(API_VERSION_HEADER)
        body = json.dumps({"errors": [entry]}, default=str).encode()
        return json_response(error.http_status, body, *extra)
