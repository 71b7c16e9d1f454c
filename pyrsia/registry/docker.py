"""Docker Registry v2 pull API (OCI distribution-spec, "pull" conformance category).

Routes, all under `/v2/`:
    GET        /v2/                                 API version check
    GET, HEAD  /v2/<name>/manifests/<tag|digest>    manifest bytes, exact
    GET, HEAD  /v2/<name>/blobs/<digest>            blob bytes, single Range
    GET        /v2/<name>/tags/list?n=&last=        tags, paginated with Link
Push routes answer 405 UNSUPPORTED: a node is pull-only; artifacts enter through
the build and consensus flows. Names, tags and digests are parsed (and so checked
against the spec grammar) before anything reaches the artifact service or the disk.
Query parameters other than `n`/`last` are ignored, which is what lets containerd's
mirror requests (`?ns=docker.io`) through.
"""

from __future__ import annotations

import json
from urllib.parse import urlencode

from pyrsia.artifacts.docker import DockerArtifacts
from pyrsia.errors import PaginationInvalid, PathUnknown, Unsupported
from pyrsia.formats.digest import Digest, looks_like_digest
from pyrsia.formats.reference import parse_name, parse_tag
from pyrsia.http.message import FileBody, Request, Response, json_response

API_VERSION_HEADER = ("Docker-Distribution-API-Version", "registry/2.0")
READ_METHODS = frozenset({"GET", "HEAD"})
TAGS_PAGE_MAX = 10_000


class DockerRegistry:
    def __init__(self, artifacts: DockerArtifacts) -> None:
        self._artifacts = artifacts

    def handle(self, request: Request) -> Response:
        response = self._route(request)
        return response.with_headers(API_VERSION_HEADER)

    def _route(self, request: Request) -> Response:
        rest = request.path[len("/v2/") :] if request.path.startswith("/v2/") else ""
        if request.method not in READ_METHODS or "/blobs/uploads" in rest:
            raise Unsupported(
                "this node is pull-only: push, upload and delete are not supported",
                detail={"method": request.method},
            )
        if rest == "":
            return json_response(200, b"{}")
        if rest.endswith("/tags/list"):
            return self._tags(request, parse_name(rest.removesuffix("/tags/list")))
        for kind in ("/manifests/", "/blobs/"):
            name, sep, reference = rest.rpartition(kind)
            if sep:
                if kind == "/blobs/":
                    return self._blob(parse_name(name), Digest.parse(reference))
                return self._manifest(request, parse_name(name), reference)
        raise PathUnknown("no such registry endpoint", detail=request.path[:300])

    def _manifest(self, request: Request, name: str, reference: str) -> Response:
        ref: str | Digest = Digest.parse(reference) if looks_like_digest(reference) else parse_tag(reference)
        found = self._artifacts.manifest(name, ref, request.header_values("accept"))
        return Response(
            headers=(
                ("Content-Type", found.media_type),
                ("Docker-Content-Digest", str(found.digest)),
                ("ETag", f'"{found.digest}"'),
            ),
            body=found.body,
        )

    def _blob(self, name: str, digest: Digest) -> Response:
        blob = self._artifacts.blob(name, digest)
        return Response(
            headers=(
                ("Content-Type", "application/octet-stream"),
                ("Docker-Content-Digest", str(digest)),
                ("ETag", f'"{digest}"'),
                ("Accept-Ranges", "bytes"),
                ("Cache-Control", "max-age=31536000, immutable"),
            ),
            body=FileBody(blob.path, 0, blob.size),
            ranges=True,
        )

    def _tags(self, request: Request, name: str) -> Response:
        tags = self._artifacts.tags(name)
        if last := request.query.get("last"):
            tags = [t for t in tags if t > last]
        extra: tuple[tuple[str, str], ...] = ()
        raw_n = request.query.get("n")
        if raw_n is not None:
            # isdigit() alone admits "²" and 5,000-digit strings, which int() refuses (a 500).
            if not (raw_n.isascii() and raw_n.isdigit()) or len(raw_n) > 9 or int(raw_n) > TAGS_PAGE_MAX:
                raise PaginationInvalid(f"n must be an integer from 0 to {TAGS_PAGE_MAX}")
            n = int(raw_n)
            if len(tags) > n and n > 0:
                query = urlencode({"n": n, "last": tags[n - 1]})
                extra = (("Link", f'</v2/{name}/tags/list?{query}>; rel="next"'),)
            tags = tags[:n]
        body = json.dumps({"name": name, "tags": tags}).encode()
        return json_response(200, body, *extra)
