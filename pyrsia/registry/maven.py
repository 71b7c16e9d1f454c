"""Maven repository front end: `GET`/`HEAD /maven2/<path>`.

Serves artifact files of any extension and classifier, `maven-metadata.xml`, and
checksum sidecars (`.sha1`, `.md5`, `.sha256`, `.sha512`) for every one of them,
computed from the verified bytes the node holds. Paths are parsed by
`maven_layout.parse_path` before anything else sees them.
"""

from __future__ import annotations

from email.utils import formatdate

from pyrsia.artifacts.maven import MavenArtifacts
from pyrsia.errors import Unsupported
from pyrsia.formats.maven_layout import parse_path
from pyrsia.http.message import FileBody, Request, Response

PREFIX = "/maven2/"


class MavenRepository:
    def __init__(self, artifacts: MavenArtifacts) -> None:
        self._artifacts = artifacts

    def handle(self, request: Request) -> Response:
        if request.method not in ("GET", "HEAD"):
            raise Unsupported("this node is a read-only Maven repository", detail={"method": request.method})
        target = parse_path(request.path[len(PREFIX) :])
        found = self._artifacts.file(target)
        headers = [
            ("Content-Type", target.content_type),
            ("Last-Modified", formatdate(found.fetched_at, usegmt=True)),
        ]
        if found.stale:
            # RFC 9111 §5.5 (obsolete but still understood): the upstream could not confirm this copy.
            headers.append(("Warning", '110 pyrsia "Response is Stale"'))
        if target.checksum:
            body = found.checksums[target.checksum].encode("ascii")
            return Response(headers=(*headers, ("ETag", f'"{target.checksum}-{body.decode()}"')), body=body)
        return Response(
            headers=(*headers, ("ETag", f'"{found.checksums["sha256"]}"'), ("Accept-Ranges", "bytes")),
            body=FileBody(found.blob, 0, found.size),
            ranges=True,
        )
