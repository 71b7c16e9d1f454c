"""Serves the dashboard's static files: `/` is `index.html`, `/static/NAME` the rest.

Every file under `static/` is read once, when the node starts, into a table keyed by
its name; a request is answered from that table or not at all, so no path a client
sends (`..`, encoded slashes, absolute paths, symlinks) can reach another file. Only
the suffixes in `CONTENT_TYPES` are served, and the set is bounded by
`site_bytes_max`. Every answer carries a strict Content-Security-Policy (no inline
script or style, nothing from another origin, no framing), `nosniff`, no referrer,
and `Cache-Control: no-cache` with a strong ETag, so a browser revalidates cheaply
and never runs a stale page against a newer node.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable

from pyrsia.errors import PathUnknown, StorageError, Unsupported
from pyrsia.http.message import Request, Response

STATIC_PREFIX = "/static/"
INDEX = "index.html"
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}
CSP = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "font-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)
SECURITY_HEADERS = (
    ("Content-Security-Policy", CSP),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("Cross-Origin-Resource-Policy", "same-origin"),
)
log = logging.getLogger("pyrsia.web")
NAME_CHARS_MAX = 100
SITE_BYTES_MAX = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class Asset:
    body: bytes
    content_type: str
    etag: str


def asset_name(path: str) -> str | None:
    """The file a request path names (`/` → index), or None: names are one plain segment."""
    if path == "/":
        return INDEX
    if not path.startswith(STATIC_PREFIX):
        return None
    name = path.removeprefix(STATIC_PREFIX)
    if not name or len(name) > NAME_CHARS_MAX or name.startswith("."):
        return None
    if not all(c.isascii() and (c.isalnum() or c in "-_.") for c in name):
        return None
    return name


def load_assets(root: Traversable, *, site_bytes_max: int = SITE_BYTES_MAX) -> dict[str, Asset]:
    """Every regular file directly under `root` with a known suffix."""
    assets: dict[str, Asset] = {}
    total = 0
    for entry in sorted(root.iterdir(), key=lambda e: e.name):
        suffix = "." + entry.name.rpartition(".")[2]
        served = suffix in CONTENT_TYPES and asset_name(STATIC_PREFIX + entry.name) is not None
        if not served or not entry.is_file():
            continue
        body = entry.read_bytes()
        total += len(body)
        if total > site_bytes_max:
            raise StorageError(f"the dashboard's files exceed {site_bytes_max} bytes")
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        assets[entry.name] = Asset(body=body, content_type=CONTENT_TYPES[suffix], etag=etag)
    return assets


def packaged_static() -> Traversable:
    return resources.files("pyrsia.web").joinpath("static")


def packaged_assets() -> dict[str, Asset]:
    """The files shipped in the package; none (and a warning) when a build left them out,
    so a node without its dashboard still serves registries and the API."""
    root = packaged_static()
    if not root.is_dir():
        log.warning("the dashboard's files are missing from this installation (%s)", root)
        return {}
    return load_assets(root)


class StaticSite:
    def __init__(self, assets: dict[str, Asset] | None = None) -> None:
        self._assets = packaged_assets() if assets is None else assets

    def serves(self, path: str) -> bool:
        return path == "/" or path.startswith(STATIC_PREFIX)

    def handle(self, request: Request) -> Response:
        name = asset_name(request.path)
        asset = self._assets.get(name) if name is not None else None
        if asset is None:
            missing = "the dashboard is not installed" if not self._assets else "no such page"
            raise PathUnknown(missing, detail=request.path[:300])
        if request.method not in ("GET", "HEAD"):
            raise Unsupported(f"{request.method} is not supported on {request.path}")
        return Response(
            headers=(
                ("Content-Type", asset.content_type),
                ("Cache-Control", "no-cache"),
                ("ETag", asset.etag),
                *SECURITY_HEADERS,
            ),
            body=asset.body,
        )
