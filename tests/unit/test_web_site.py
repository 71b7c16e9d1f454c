"""The dashboard's static files: only files of the table are served, with strict headers.

Driven through `StaticSite.handle` and `NodeApp` with no socket. The packaged files are
checked too: every file the pages load exists, and nothing inline needs the CSP relaxed.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pyrsia.errors import PathUnknown, StorageError, Unsupported
from pyrsia.http.message import Request, Response
from pyrsia.web.site import CSP, INDEX, StaticSite, asset_name, load_assets, packaged_static

STATIC = Path(str(packaged_static()))


def get(site: StaticSite, path: str, method: str = "GET") -> Response:
    return site.handle(Request(method=method, target=path, path=path))


def header(response: Response, name: str) -> str:
    return next(v for k, v in response.headers if k.lower() == name.lower())


@pytest.fixture(scope="module")
def site() -> StaticSite:
    return StaticSite()


def test_the_root_is_the_index_page_with_strict_headers(site: StaticSite) -> None:
    response = get(site, "/")
    assert response.status == 200
    assert response.body == (STATIC / INDEX).read_bytes()
    assert header(response, "Content-Type") == "text/html; charset=utf-8"
    assert header(response, "Cache-Control") == "no-cache"
    assert re.fullmatch(r'"[0-9a-f]{32}"', header(response, "ETag"))
    csp = header(response, "Content-Security-Policy")
    assert csp == CSP
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert header(response, "X-Content-Type-Options") == "nosniff"
    assert header(response, "Referrer-Policy") == "no-referrer"


@pytest.mark.parametrize(
    ("name", "content_type"),
    [
        ("app.js", "text/javascript; charset=utf-8"),
        ("merkle.js", "text/javascript; charset=utf-8"),
        ("style.css", "text/css; charset=utf-8"),
        ("favicon.svg", "image/svg+xml"),
    ],
)
def test_each_file_has_its_content_type(site: StaticSite, name: str, content_type: str) -> None:
    response = get(site, f"/static/{name}")
    assert header(response, "Content-Type") == content_type
    assert response.body == (STATIC / name).read_bytes()


def test_head_is_answered_like_get(site: StaticSite) -> None:
    assert get(site, "/static/app.js", "HEAD").headers == get(site, "/static/app.js").headers


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_other_methods_are_refused(site: StaticSite, method: str) -> None:
    with pytest.raises(Unsupported):
        get(site, "/", method)


@pytest.mark.parametrize(
    "path",
    [
        "/static/../config.py",
        "/static/../../pyproject.toml",
        "/static/..",
        "/static/.",
        "/static/",
        "/static/..%2fsite.py",
        "/static/%2e%2e/site.py",
        "/static//etc/passwd",
        "/static/sub/app.js",
        "/static/app.js/",
        "/static/.hidden",
        "/static/app.js%00.png",
        "/static/app.js\x00",
        "/static/\u0430pp.js",  # a Cyrillic a
        "/static/__init__.py",
        "/static/site.py",
        "/static/" + "a" * 200 + ".js",
        "/index.html",
        "/static",
        "//",
    ],
)
def test_nothing_outside_the_table_is_served(site: StaticSite, path: str) -> None:
    with pytest.raises(PathUnknown):
        get(site, path)


def test_asset_names_are_one_plain_segment() -> None:
    assert asset_name("/") == INDEX
    assert asset_name("/static/app.js") == "app.js"
    assert asset_name("/static/a-b_c.1.css") == "a-b_c.1.css"
    for path in ("/static/../x.js", "/static/a/b.js", "/static/.x", "/static/a b.js", "/x.js", "/static/"):
        assert asset_name(path) is None, path


def test_only_known_suffixes_are_loaded_and_the_total_is_bounded(tmp_path: Path) -> None:
    (tmp_path / "page.html").write_text("<p>hi</p>")
    (tmp_path / "notes.txt").write_text("not served")
    (tmp_path / "secret.py").write_text("not served")
    (tmp_path / ".hidden.js").write_text("not served")
    (tmp_path / "dir.js").mkdir()
    assert set(load_assets(tmp_path)) == {"page.html"}
    with pytest.raises(StorageError):
        load_assets(tmp_path, site_bytes_max=4)


def test_the_packaged_pages_load_only_packaged_files() -> None:
    assets = load_assets(packaged_static())
    assert INDEX in assets and "app.js" in assets and "merkle.js" in assets
    for name, asset in assets.items():
        text = asset.body.decode()
        for target in re.findall(r'(?:src|href)="(/[^"]*)"', text):
            assert asset_name(target) in assets, (name, target)
        for target in re.findall(r'from "\./([^"]+)"|import\("/static/([^"]+)"\)', text):
            assert any(t in assets for t in target if t), (name, target)


def test_the_index_needs_no_inline_script_or_style() -> None:
    index = (STATIC / INDEX).read_text()
    assert re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", index) == []
    assert "<style" not in index and " style=" not in index
    assert re.search(r"\son[a-z]+=", index) is None
    assert "http://" not in index and "https://" not in index  # nothing from another origin


def test_no_page_script_writes_html_from_data() -> None:
    """Peers' strings reach the page as text only: no innerHTML, outerHTML, insertAdjacentHTML, eval."""
    for path in STATIC.glob("*.js"):
        text = path.read_text()
        for sink in (
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
            "new Function",
        ):
            assert sink not in text, (path.name, sink)


def test_a_site_without_files_says_the_dashboard_is_missing() -> None:
    with pytest.raises(PathUnknown, match="not installed"):
        get(StaticSite({}), "/")
