"""Config precedence (defaults < file < environment < flags) and validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyrsia import config
from pyrsia.errors import ConfigError


def test_defaults_without_any_source(tmp_path: Path) -> None:
    cfg = config.load(tmp_path, environ={}, flags={})
    assert (cfg.http_host, cfg.http_port, cfg.docker_upstream) == ("127.0.0.1", 7888, config.DOCKER_HUB)
    assert cfg.home == tmp_path


def test_precedence_file_then_env_then_flags(tmp_path: Path) -> None:
    (tmp_path / "pyrsia.toml").write_text('http_port = 1111\nhttp_host = "0.0.0.0"\nlog_level = "debug"\n')
    env = {"PYRSIA_HTTP_PORT": "2222", "PYRSIA_LOG_LEVEL": "warning"}
    cfg = config.load(tmp_path, environ=env, flags={"http_port": 3333, "log_level": None})
    assert cfg.http_port == 3333
    assert cfg.http_host == "0.0.0.0"
    assert cfg.log_level == "warning"


def test_home_from_environment() -> None:
    assert config.default_home({"PYRSIA_HOME": "/x/y"}) == Path("/x/y")
    assert config.default_home({"XDG_DATA_HOME": "/d"}) == Path("/d/pyrsia")


@pytest.mark.parametrize(
    ("toml", "env", "message"),
    [
        ("http_port = 70000", {}, "http_port must be between"),
        ('http_port = "x"', {}, "http_port must be int"),
        ("nonsense = 1", {}, "unknown key 'nonsense'"),
        ("http_port = [", {}, "pyrsia.toml"),
        ("", {"PYRSIA_HTTP_PORT": "eighty"}, "PYRSIA_HTTP_PORT: http_port must be int"),
        ("", {"PYRSIA_DOCKER_UPSTREAM": "ftp://x"}, "docker_upstream must be an http"),
        ("", {"PYRSIA_LOG_LEVEL": "loud"}, "log_level must be one of"),
        ("", {"PYRSIA_HTTP_HEADER_TIMEOUT_S": "0"}, "http_header_timeout_s must be between"),
    ],
)
def test_bad_values_name_their_source(tmp_path: Path, toml: str, env: dict[str, str], message: str) -> None:
    (tmp_path / "pyrsia.toml").write_text(toml)
    with pytest.raises(ConfigError, match=message):
        config.load(tmp_path, environ=env, flags={})
