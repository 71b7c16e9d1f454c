"""The CLI as a user meets it: exit codes, one-line errors, `--json` shapes.

Every command runs as a subprocess of the installed entry point, exactly as typed in
a shell; none of these may print a traceback.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path

import httpx
import pytest

from tests.support.ports import free_port

PYRSIA = [sys.executable, "-m", "pyrsia"]


@pytest.fixture(autouse=True)
def isolated_client_settings(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Commands must not read the developer's own ~/.config/pyrsia/client.toml."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("xdg")))
    monkeypatch.delenv("PYRSIA_NODE", raising=False)


def run(
    *args: str, env: dict[str, str] | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PYRSIA, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], code: int, *needles: str) -> None:
    assert result.returncode == code, result
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0]


def test_version() -> None:
    from pyrsia import __version__

    for flag in ("--version", "-V"):
        result = run(flag)
        assert result.returncode == 0 and result.stdout.strip() == f"pyrsia {__version__}"


def test_help_lists_commands_with_examples() -> None:
    result = run("--help")
    assert result.returncode == 0
    assert "daemon" in result.stdout and "status" in result.stdout
    assert "Example: pyrsia status --json" in run("status", "--help").stdout


def test_unknown_command_is_a_usage_error() -> None:
    result = run("frobnicate")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "No such command" in result.stderr


def test_status_without_a_node() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    assert_one_line_error(run("status", "--node", url), 1, "cannot reach the pyrsia node", url)
    assert_one_line_error(run("status", env={"PYRSIA_NODE": url}), 1, url)


@pytest.mark.parametrize(
    ("env", "toml", "needle"),
    [
        ({"PYRSIA_HTTP_PORT": "eighty"}, "", "PYRSIA_HTTP_PORT"),
        ({"PYRSIA_DOCKER_UPSTREAM": "ftp://nowhere"}, "", "docker_upstream must be an http"),
        ({}, "http_port = 99999\n", "http_port must be between"),
        ({}, "surprise = true\n", "unknown key 'surprise'"),
    ],
)
def test_bad_config_is_one_line_and_exit_2(
    tmp_path: Path, env: dict[str, str], toml: str, needle: str
) -> None:
    (tmp_path / "pyrsia.toml").write_text(toml)
    result = run("daemon", "--home", str(tmp_path), env=env)
    assert result.returncode == 2, result
    assert needle in result.stderr and "Traceback" not in result.stderr


def test_port_in_use_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # No default p2p or peer HTTP port: another node on this machine may hold those.
        flags = ("--http-port", str(port), "--p2p-port", "0", "--peer-http-port", "0")
        result = run("daemon", "--home", str(tmp_path), *flags)
    assert_one_line_error(result, 1, f"cannot listen on 127.0.0.1:{port}")


def test_first_start_creates_private_identity_and_token(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        run("daemon", "--home", str(tmp_path), "--http-port", str(taken.getsockname()[1]))
    for name in ("identity.key", "admin.token"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o600
    assert len((tmp_path / "identity.key").read_bytes()) == 32


@pytest.fixture(scope="module")
def node_url_and_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A real daemon; no upstream is needed for status and settings."""
    home = tmp_path_factory.mktemp("node")
    process = subprocess.Popen(
        [
            *PYRSIA,
            "daemon",
            "--home",
            str(home),
            "--http-port",
            "0",
            "--docker-upstream",
            "http://127.0.0.1:9",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None
    url = None
    for line in process.stdout:  # the daemon prints its ready line once it serves
        if line.startswith("ready "):
            url = line.split()[1]
            break
    assert url, "daemon exited before it was ready"
    yield url, home
    process.terminate()
    assert process.wait(timeout=30) == 0
    process.stdout.close()


def test_status_json_shape(node_url_and_home: tuple[str, Path]) -> None:
    url, _home = node_url_and_home
    result = run("status", "--node", url, "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["peer_id"].startswith("12D3KooW") and doc["http_url"] == url
    assert {"addresses", "version", "uptime_seconds", "blobs_stored", "blob_bytes", "translog"} <= set(doc)
    assert doc["translog"]["height"] == 0 and doc["translog"]["size"] == 1  # genesis only
    table = run("status", "--node", url)
    assert table.returncode == 0 and doc["peer_id"] in table.stdout


def test_settings_need_the_admin_token(node_url_and_home: tuple[str, Path], tmp_path: Path) -> None:
    url, home = node_url_and_home
    ok = run("status", "--node", url, "--settings", "--home", str(home), "--json")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["settings"]["http_host"] == "127.0.0.1"
    via_env = run(
        "status",
        "--node",
        url,
        "--settings",
        "--json",
        env={"PYRSIA_ADMIN_TOKEN": (home / "admin.token").read_text().strip()},
    )
    assert via_env.returncode == 0, via_env.stderr
    wrong = run("status", "--node", url, "--settings", env={"PYRSIA_ADMIN_TOKEN": "wrong"})
    assert_one_line_error(wrong, 1, "401", "admin token")
    none = run("status", "--node", url, "--settings", "--home", str(tmp_path))
    assert_one_line_error(none, 1, "no admin token")


def test_client_settings_round_trip_and_validation() -> None:
    assert run("config", "set", "output", "json").returncode == 0
    shown = run("config", "show")
    assert shown.returncode == 0 and json.loads(shown.stdout)["output"] == "json"
    assert run("config", "get", "output").stdout.strip() == "json"
    assert_one_line_error(run("config", "set", "output", "yaml"), 2, "output must be one of")
    assert_one_line_error(run("config", "set", "nonsense", "1"), 2, "unknown client setting")
    assert_one_line_error(run("config", "set", "node", "ftp://x"), 2, "node must be an http")


def test_client_setting_picks_the_node(node_url_and_home: tuple[str, Path]) -> None:
    url, _home = node_url_and_home
    assert run("config", "set", "node", url).returncode == 0
    result = run("status", "--json")
    assert result.returncode == 0 and json.loads(result.stdout)["http_url"] == url


def test_node_settings_are_validated_and_written(node_url_and_home: tuple[str, Path]) -> None:
    url, home = node_url_and_home
    admin = ("--node", url, "--home", str(home))
    assert_one_line_error(run("config", "set", "http_port", "99999", *admin), 2, "http_port must be between")
    assert not (home / "pyrsia.toml").exists()
    assert run("config", "set", "log_level", "debug", *admin).returncode == 0
    try:
        assert 'log_level = "debug"' in (home / "pyrsia.toml").read_text()
        assert run("config", "get", "http_host", *admin).stdout.strip() == "127.0.0.1"
    finally:
        (home / "pyrsia.toml").unlink()


def test_pull_artifact_with_bad_coordinates_is_a_usage_error() -> None:
    assert_one_line_error(run("pull", "artifact", "not-coordinates"), 2, "GROUP:ARTIFACT")


def test_pull_image_with_a_bad_name_is_a_usage_error() -> None:
    result = run("pull", "image", "Bad/NAME:1", "--node", "http://127.0.0.1:9")
    assert_one_line_error(result, 2, "'Bad/NAME:1' is not an image reference")


def test_every_command_help_shows_an_example() -> None:
    """Walks the command tree the way the man page generator does; each command's
    epilog is what its `--help` ends with."""
    import importlib.util

    import typer.main

    from pyrsia.cli.app import app

    spec = importlib.util.spec_from_file_location(
        "man_generate", Path(__file__).resolve().parents[2] / "packaging" / "man" / "generate.py"
    )
    assert spec is not None and spec.loader is not None
    generate = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = generate  # its dataclasses look their module up by name
    spec.loader.exec_module(generate)
    root = typer.main.get_command(app)
    entries = generate.walk(root, root.context_class(root, info_name="pyrsia"))
    leaves = [e for e in entries if not hasattr(e.command, "list_commands")]
    assert len(leaves) >= 15  # daemon, status, pull 2, bench 2, config 4, log 4, inspect-log 2
    missing = [e.path for e in leaves if "Example" not in (e.command.epilog or "")]
    assert missing == []
    shown = run("log", "search", "--help")
    assert "Example" in shown.stdout


def test_every_setting_is_a_daemon_flag_with_its_variable_and_default() -> None:
    from pyrsia.config import SETTINGS, Config

    shown = run("daemon", "--help", env={"COLUMNS": "250"})
    assert shown.returncode == 0, shown.stderr
    text = " ".join(shown.stdout.replace("│", " ").split())
    for f in fields(Config):
        if f.name not in SETTINGS:  # home; the upstreams tables (file only)
            continue
        setting = SETTINGS[f.name]
        assert f" {setting.flag} " in text, setting.flag
        # Plain help puts a numeric setting's bounds after its variable: [env var: X; 1<=x<=9].
        assert re.search(rf"\[env var: {setting.env}[;\]]", text), setting.env
        assert f"(default: {setting.default_text})" in text, setting.name


def _effective_settings(home: Path, *flags: str, env: dict[str, str] | None = None) -> dict[str, object]:
    from tests.support.node import NodeProcess

    with NodeProcess(home, *flags, env=env) as node:
        token = (home / "admin.token").read_text().strip()
        response = httpx.get(
            f"{node.url}/api/v1/config", headers={"Authorization": f"Bearer {token}"}, timeout=30
        )
        assert response.status_code == 200, response.text
        return dict(response.json())


def _values_to_try() -> dict[str, object]:
    from pyrsia.config import SETTINGS
    from tests.unit.test_config import other_value

    # Ports stay 0 (free ones): the daemon must start, and it prints where. A genesis file
    # and bootstrap peers make a fresh node join a network before it serves: they are
    # tried where networks are started (tests/integration/test_p2p_network.py).
    fixed = {"http_port": 0, "p2p_port": 0, "peer_http_port": 0}
    joining = ("genesis", "bootstrap")
    return {name: fixed.get(name, other_value(s)) for name, s in SETTINGS.items() if name not in joining}


def _text(value: object) -> str:
    """A setting as a variable or a flag's value spells it."""
    if isinstance(value, tuple):
        return ",".join(value)
    return str(value).lower() if isinstance(value, bool) else str(value)


def _shown(value: object) -> object:
    """A setting as the node API shows it: lists for repeatable ones."""
    return list(value) if isinstance(value, tuple) else value


def test_every_setting_takes_effect_from_its_environment_variable(tmp_path: Path) -> None:
    from pyrsia.config import SETTINGS

    values = _values_to_try()
    env = {SETTINGS[name].env: _text(v) for name, v in values.items()}
    effective = _effective_settings(tmp_path, env=env)
    assert {name: effective[name] for name in values} == {k: _shown(v) for k, v in values.items()}


def test_every_setting_takes_effect_from_its_flag(tmp_path: Path) -> None:
    from pyrsia.config import SETTINGS

    values = _values_to_try()
    flags = [
        part
        for name, value in values.items()
        for item in (value if isinstance(value, tuple) else (value,))
        for part in (SETTINGS[name].flag, _text(item))
    ]
    effective = _effective_settings(tmp_path, *flags)
    assert {name: effective[name] for name in values} == {k: _shown(v) for k, v in values.items()}
