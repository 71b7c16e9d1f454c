"""Docker Registry v2 pull API (OCI distribution-spec, "pull" conformance category).

Routes, all under `/v2/`:
    GET        /v2/                                 API version check
    GET, HEAD  /v2/<name>/manifests/<tag|digest>    manifest bytes, exact
    GET, HEAD  /v2/<name>/blobs/<digest>            blob bytes, single Range
    GET        /v2/<name>/tags/list?n=&last=        tags, paginated with Link
    GET        /v2/_catalog?n=&last=                repositories the log holds, paginated with Link
Push routes answer 405 UNSUPPORTED: a node is pull-only; artifacts enter through
the build and consensus flows. Names, tags and digests are parsed (and so checked
against the spec grammar) before anything reaches the artifact service or the disk.
The registry a repository belongs to is containerd's `?ns=HOST` when a mirror request
carries one, else a first path component that is a registry host
(`/v2/ghcr.io/org/app/…`), else Docker Hub (`formats.registry_host`); a registry this
node neither pulls through nor its network agreed to is 404 NAME_UNKNOWN with one
line. Other query parameters than `ns`, `n` and `last` are ignored. Both lists page the same way
(distribution-spec "content discovery", Docker's catalog API): sorted, entries after
`last`, at most `n` of them, and a `Link: <…?last=…&n=…>; rel="next"` header while
more remain. `_catalog` cannot be a repository (names start with a letter or digit).
"""

from __future__ import annotations

import json
from urllib.parse import urlencode

from pyrsia.artifacts.blobstore import BlobProgress
from pyrsia.artifacts.docker import DockerArtifacts
from pyrsia.errors import PaginationInvalid, PathUnknown, Unsupported
from pyrsia.formats.digest import Digest, looks_like_digest
from pyrsia.formats.reference import parse_tag
from pyrsia.http.message import Body, FileBody, Request, Response, StreamBody, json_response
from pyrsia.registry.params import whole_number

API_VERSION_HEADER = ("Docker-Distribution-API-Version", "registry/2.0")
READ_METHODS = frozenset({"GET", "HEAD"})
PAGE_MAX = 10_000
CATALOG = "_catalog"


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
        if rest == CATALOG:
            names, link = _page(request, self._artifacts.repositories(), f"/v2/{CATALOG}")
            return json_response(200, json.dumps({"repositories": names}).encode(), *link)
        ns = request.query.get("ns")
        if rest.endswith("/tags/list"):
            path_name = rest.removesuffix("/tags/list")
            key = self._artifacts.resolve(path_name, ns)
            # Named as the client named it: with `ns`, the name in that registry.
            return self._tags(request, key, path_name if ns is not None else key)
        for kind in ("/manifests/", "/blobs/"):
            name, sep, reference = rest.rpartition(kind)
            if sep:
                key = self._artifacts.resolve(name, ns)
                if kind == "/blobs/":
                    return self._blob(request, key, Digest.parse(reference))
                return self._manifest(request, key, reference)
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

    def _blob(self, request: Request, name: str, digest: Digest) -> Response:
        """A whole GET of a blob still arriving from peers streams its verified prefix; a
        Range or HEAD request waits for the whole blob, as does anything from the upstream."""
        body: Body
        if request.method == "GET" and request.header("range") is None:
            found = self._artifacts.blob_or_download(name, digest)
            if isinstance(found, BlobProgress):
                body = StreamBody(found.size, found.pieces)
            else:
                body = FileBody(found.path, 0, found.size)
        else:
            blob = self._artifacts.blob(name, digest)
            body = FileBody(blob.path, 0, blob.size)
        return Response(
            headers=(
                ("Content-Type", "application/octet-stream"),
                ("Docker-Content-Digest", str(digest)),
                ("ETag", f'"{digest}"'),
                ("Accept-Ranges", "bytes"),
                ("Cache-Control", "max-age=31536000, immutable"),
            ),
            body=body,
            ranges=True,
        )

    def _tags(self, request: Request, key: str, path_name: str) -> Response:
        tags, link = _page(request, self._artifacts.tags(key), f"/v2/{path_name}/tags/list")
        return json_response(200, json.dumps({"name": path_name, "tags": tags}).encode(), *link)


def _page(request: Request, items: list[str], path: str) -> tuple[list[str], tuple[tuple[str, str], ...]]:
    """One page of a sorted list, and the `Link` to the next page when one follows."""
    if last := request.query.get("last"):
        items = [i for i in items if i > last]
    raw_n = request.query.get("n")
    if raw_n is None:
        return items, ()
    n = whole_number(raw_n, "n", 0, PAGE_MAX, PaginationInvalid)
    if len(items) > n > 0:
        query = urlencode({"last": items[n - 1], "n": n})
        return items[:n], (("Link", f'<{path}?{query}>; rel="next"'),)
    return items[:n], ()
