"""Maven repository front end: `GET`/`HEAD /maven2/<path>`.

Serves artifact files of any extension and classifier, `maven-metadata.xml`, and
checksum sidecars (`.sha1`, `.md5`, `.sha256`, `.sha512`) for every one of them,
computed from the verified bytes the node holds. Paths are parsed by
`maven_layout.parse_path` before anything else sees them.

A path ending in `/` asks for a directory listing (`maven_layout.parse_directory`):
an HTML page of relative links, one per child, the shape Gradle reads to resolve a
dynamic version when no `maven-metadata.xml` exists (see `formats.maven_listing`).
The slash is required, as Gradle sends it: without it a path is a file, so a bad file
path stays a 400 and is never mistaken for a directory.
"""

from __future__ import annotations

from email.utils import formatdate

from pyrsia.artifacts.maven import MavenArtifacts
from pyrsia.artifacts.maven_listing import MavenListings
from pyrsia.errors import MavenPathInvalid, Unsupported
from pyrsia.formats.maven_layout import MavenPath, parse_directory, parse_path
from pyrsia.formats.maven_listing import render
from pyrsia.http.message import FileBody, Request, Response

PREFIX = "/maven2/"


class MavenRepository:
    def __init__(self, artifacts: MavenArtifacts, listings: MavenListings) -> None:
        self._artifacts = artifacts
        self._listings = listings

    def handle(self, request: Request) -> Response:
        if request.method not in ("GET", "HEAD"):
            raise Unsupported("this node is a read-only Maven repository", detail={"method": request.method})
        raw = request.path[len(PREFIX) :]
        if raw.endswith("/") or raw == "":
            directory = parse_directory(raw)
            page = render(directory, PREFIX, self._listings.entries(directory))
            return Response(headers=(("Content-Type", "text/html; charset=utf-8"),), body=page)
        target = _file(raw)
        found = self._artifacts.file(target)
        headers = [
            ("Content-Type", target.content_type),
            ("Last-Modified", formatdate(found.last_modified, usegmt=True)),
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


def _file(raw: str) -> MavenPath:
    try:
        return parse_path(raw)
    except MavenPathInvalid as exc:
        try:
            parse_directory(raw + "/")
        except MavenPathInvalid:
            raise exc from None
        raise MavenPathInvalid(f"{exc.message} (a directory listing needs a trailing '/')") from None
