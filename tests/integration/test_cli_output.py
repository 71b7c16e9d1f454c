"""What the CLI prints, at the widths users have: tables, help pages, and errors that say
what actually happened.

Real daemons: authority `a` pulls through from a scripted upstream, regular node `b`
joins it. Tables are read at `COLUMNS=80` and `120` (every line fits, and every id or
digest keeps a prefix long enough to copy and search by) and with `--wide` (whole
values). Help pages are read at 80 columns. Each error that used to mislead has a test
of the sentence that replaced it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.integration.test_p2p_network import eventually, pull_manifest
from tests.support import images
from tests.support.cli import one_line_error
from tests.support.node import PYRSIA, NodeProcess
from tests.support.ports import free_port
from tests.support.scripted_upstream import ScriptedUpstream

IMAGE = images.three_layer("library/tables", "1.0")
PREFIX_CHARS = 18  # `sha256:` and 11 hex digits; `12D3KooW` and 10 characters


@dataclass
class Net:
    a: NodeProcess
    b: NodeProcess
    a_id: str
    b_id: str
    upstream: ScriptedUpstream


def peer_id(node: NodeProcess) -> str:
    return str(httpx.get(f"{node.url}/api/v1/status", timeout=30).json()["peer_id"])


def records(node: NodeProcess) -> list[dict[str, object]]:
    response = httpx.get(f"{node.url}/api/v1/log/search", params={"package": IMAGE.name}, timeout=30)
    results: list[dict[str, object]] = response.json()["results"]
    return results


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    root = tmp_path_factory.mktemp("net")
    with ExitStack() as stack:
        upstream = stack.enter_context(ScriptedUpstream())
        upstream.serve_image(IMAGE)
        a = stack.enter_context(NodeProcess(root / "a", "--docker-upstream", upstream.url))
        b = stack.enter_context(NodeProcess(root / "b", "--bootstrap", a.p2p_address))
        pull_manifest(a, IMAGE)
        eventually(lambda: len(records(a)) >= 2, "the image's records committed on a")
        a_id, b_id = peer_id(a), peer_id(b)
        eventually(
            lambda: b_id in {p["peer_id"] for p in httpx.get(f"{a.url}/api/v1/peers").json()["peers"]},
            "b connected to a",
        )
        yield Net(a=a, b=b, a_id=a_id, b_id=b_id, upstream=upstream)


@pytest.fixture(autouse=True)
def isolated_client_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("PYRSIA_NODE", raising=False)


def cli(*args: str, columns: int = 250, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PYRSIA, *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env={**os.environ, "COLUMNS": str(columns)},
    )


def shown(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"{result.args}\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr
    return result.stdout


# --- tables -----------------------------------------------------------------------------


@pytest.mark.parametrize("columns", [80, 120])
def test_log_search_fits_and_keeps_each_digest_copyable(net: Net, columns: int) -> None:
    found = records(net.a)
    out = shown(cli("log", "search", "--package", IMAGE.name, "--node", net.a.url, columns=columns))
    lines = out.splitlines()
    assert all(len(line) <= columns for line in lines), "\n".join(lines)
    for record in found:
        digest = str(record["digest"])
        assert any(digest[:PREFIX_CHARS] in line for line in lines), (digest, out)
        # The prefix a user copies finds the record again.
        again = json.loads(shown(cli("log", "search", "--digest", digest, "--json", "--node", net.a.url)))
        assert [r["digest"] for r in again] == [digest]
    header = lines[1].split()
    assert {"height", "package_id", "path", "digest"} <= set(header)


def test_log_search_wide_shows_every_value_whole(net: Net) -> None:
    out = shown(cli("log", "search", "--package", IMAGE.name, "--wide", "--node", net.a.url, columns=80))
    for record in records(net.a):
        assert str(record["digest"]) in out and str(record["chunk_root"]) in out
    assert "…" not in out


@pytest.mark.parametrize("columns", [80, 120])
def test_peers_fits_and_keeps_the_peer_id_prefix(net: Net, columns: int) -> None:
    result = cli("peers", "--node", net.a.url, columns=columns)
    lines = shown(result).splitlines()
    assert all(len(line) <= columns for line in lines), "\n".join(lines)
    assert any(line.startswith(net.b_id[:PREFIX_CHARS]) for line in lines), lines
    wide = shown(cli("peers", "--wide", "--node", net.a.url, columns=columns))
    assert net.b_id in wide


# --- errors that used to mislead --------------------------------------------------------


def test_node_without_a_scheme_says_which_url_was_meant(net: Net) -> None:
    bare = net.a.url.removeprefix("http://")
    line = one_line_error(cli("status", "--node", bare), 2, f"did you mean http://{bare}?")
    assert "UnsupportedProtocol" not in line


def test_a_port_that_is_not_pyrsia_is_named_not_its_body(net: Net) -> None:
    # The scripted upstream answers 404 with a registry-shaped error body, like many servers.
    line = one_line_error(cli("status", "--node", net.upstream.url), 1, net.upstream.url, "pyrsia node?")
    assert "404" in line and "no such path" not in line and "{" not in line


def test_a_missing_image_names_the_node_not_an_upstream(net: Net, tmp_path: Path) -> None:
    result = cli("pull", "image", "library/missing:1.0", "--node", net.a.url, "-o", str(tmp_path / "out"))
    line = one_line_error(result, 1, f"pyrsia node {net.a.url}", "library/missing:1.0")
    assert f"upstream {net.a.url}" not in line
    assert not (tmp_path / "out").exists()


def test_ping_to_a_wrong_port_fails_even_when_the_peer_is_connected(net: Net) -> None:
    good = net.b.p2p_address
    assert shown(cli("ping", good, "--node", net.a.url)).startswith(net.b_id)
    wrong = f"/ip4/127.0.0.1/tcp/{free_port()}/p2p/{net.b_id}"
    one_line_error(cli("ping", wrong, "--node", net.a.url), 1, f"/tcp/{wrong.split('/')[4]}")


# --- help -------------------------------------------------------------------------------


def _help_pages() -> list[list[str]]:
    import typer.main

    from pyrsia.cli.app import app

    root = typer.main.get_command(app)
    paths: list[list[str]] = []

    def walk(command: object, path: list[str]) -> None:
        paths.append(path)
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, [*path, name])

    walk(root, [])
    return paths


def test_every_help_page_fits_80_columns_with_no_bool_metavar() -> None:
    pages = _help_pages()
    assert len(pages) > 30
    for path in pages:
        text = shown(cli(*path, "--help", columns=80, timeout_s=60))
        assert "<bool>" not in text, path
        long = [line for line in text.splitlines() if len(line) > 80]
        assert long == [], (path, long)
        for digest in re.findall(r"sha256:([0-9a-f]+)", text):
            assert len(digest) == 64, (path, digest)


def test_daemon_help_at_80_columns_names_every_variable_whole() -> None:
    from pyrsia.config import SETTINGS

    words = set(re.split(r"[\s\[\];]+", shown(cli("daemon", "--help", columns=80))))
    missing = [s.env for s in SETTINGS.values() if s.env not in words]
    assert missing == []


def test_log_search_help_keeps_its_colons() -> None:
    text = shown(cli("log", "search", "--help", columns=80))
    assert "com.example:lib:1.0" in text and "🅰" not in text
