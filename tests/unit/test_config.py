"""Config precedence (defaults < file < environment < flags) and validation."""

from __future__ import annotations

import math
from dataclasses import fields
from pathlib import Path

import pytest

from pyrsia import config
from pyrsia.errors import ConfigError
from pyrsia.formats.peer_id import peer_id_of


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


def other_value(setting: config.Setting) -> object:
    """A valid value that differs from the default, for any setting."""
    if setting.choices:
        return next(c for c in setting.choices if c != setting.default)
    if setting.url:
        return "http://127.0.0.1:9/elsewhere"
    if setting.kind is str:
        return "localhost"
    if setting.kind is bool:
        return not setting.default
    if setting.name == "build_requesters":
        return tuple(peer_id_of(bytes([i]) * 32) for i in (1, 2))
    if setting.name == "maven_repositories":
        return ("google=http://127.0.0.1:9/google", "company=http://127.0.0.1:9/company")
    if setting.name == "maven_credentials":  # a one-line file on any Linux: read as a token
        return ("google=/proc/sys/kernel/hostname",)
    if setting.name in ("p2p_limits_allow", "kad_ip_group_exempt"):
        return ("10.0.0.0/8", "fd00::/8")
    if setting.name == "source_build_jdks":
        return ("17", "21")
    if setting.kind is tuple:  # nothing listens there: a node dials, fails, and goes on
        return tuple(f"/ip4/127.0.0.1/tcp/9/p2p/{peer_id_of(bytes([i]) * 32)}" for i in (1, 2))
    step = 1 if setting.kind is int else 0.5
    assert isinstance(setting.default, int | float)
    value = setting.default + step
    return value if setting.maximum is None or value <= setting.maximum else setting.default - step


def test_every_config_field_is_one_declared_setting() -> None:
    names = [f.name for f in fields(config.Config) if f.name not in ("home", config.UPSTREAMS)]
    assert list(config.SETTINGS) == names
    for name, setting in config.SETTINGS.items():
        default = getattr(config.Config(home=Path("/h")), name)
        assert setting.default == default and type(default) is setting.kind
        assert setting.env == "PYRSIA_" + name.upper()
        assert setting.flag.startswith("--") and setting.help.endswith(".")
        if setting.kind in (int, float):
            assert setting.minimum is not None and setting.maximum is not None, name
            assert setting.minimum <= default <= setting.maximum
    flags = [s.flag for s in config.SETTINGS.values()]
    assert len(set(flags)) == len(flags)


def test_flags_kept_from_earlier_releases() -> None:
    by_flag = {s.flag: s.name for s in config.SETTINGS.values()}
    assert by_flag["--http-workers"] == "http_workers_max"
    assert by_flag["--http-header-timeout"] == "http_header_timeout_s"
    assert by_flag["--http-idle-timeout"] == "http_idle_timeout_s"
    for flag in ("--http-host", "--http-port", "--docker-upstream", "--maven-upstream", "--log-level"):
        assert flag in by_flag


def test_settings_other_engineers_read_exist_with_their_defaults() -> None:
    cfg = config.Config(home=Path("/h"))
    assert cfg.upstream_deadline_s == 600.0
    assert cfg.upstream_rate_min_bytes_s == 10240
    assert cfg.http_idle_connections_max == 10_000
    assert cfg.maven_file_bytes_max == 4 * 1024**3


@pytest.mark.parametrize("name", list(config.SETTINGS))
def test_each_setting_takes_effect_from_file_environment_and_flag(tmp_path: Path, name: str) -> None:
    setting = config.SETTINGS[name]
    value = other_value(setting)
    env_value = ",".join(value) if isinstance(value, tuple) else str(value).lower()
    assert getattr(config.load(tmp_path, environ={setting.env: env_value}), name) == value
    assert getattr(config.load(tmp_path, environ={}, flags={name: value}), name) == value
    (tmp_path / "pyrsia.toml").write_text(config.dump_toml({name: value}))
    assert getattr(config.load(tmp_path, environ={}), name) == value


@pytest.mark.parametrize("name", list(config.SETTINGS))
def test_each_setting_refuses_out_of_range_and_wrong_types(tmp_path: Path, name: str) -> None:
    setting = config.SETTINGS[name]
    bad: list[object] = [[1], {"a": 1}] + ([] if setting.kind is bool else [True])
    if setting.kind is bool:
        bad += ["maybe", 2, 1.5, ""]
    elif setting.kind is str:
        bad += [3, "x\ny", "\ud800", "x" * 5000] + ([] if setting.empty_ok else [""])
    elif setting.kind is tuple:
        bad += [3, [3], ["x" * 5000], ["/ip4/127.0.0.1/tcp/1"] * 65]
    else:
        assert setting.minimum is not None and setting.maximum is not None
        bad += [setting.minimum - 1, setting.maximum + 1, math.inf, -math.inf, math.nan, "1e400", "nan", "x"]
        if setting.kind is int:
            bad += [1.5, "1.5", "9" * 5000, 10**400]
    for value in bad:
        with pytest.raises(ConfigError, match=name):
            config.load(tmp_path, environ={}, flags={name: value})
        with pytest.raises(ConfigError, match=name):
            config.set_in_file(tmp_path, name, value)
        assert not (tmp_path / "pyrsia.toml").exists()


def test_a_whole_float_is_taken_for_an_int_and_toml_specials_are_refused(tmp_path: Path) -> None:
    assert config.set_in_file(tmp_path, "http_port", 8080.0) == 8080
    assert config.load(tmp_path, environ={}).http_port == 8080
    for text in ("http_idle_timeout_s = inf\n", "http_idle_timeout_s = nan\n", "http_port = 1979-05-27\n"):
        (tmp_path / "pyrsia.toml").write_text(text)
        with pytest.raises(ConfigError):
            config.load(tmp_path, environ={})


def test_what_set_in_file_writes_reads_back(tmp_path: Path) -> None:
    config.set_in_file(tmp_path, "http_host", "h\u00e9te")
    config.set_in_file(tmp_path, "maven_metadata_ttl_s", "1e3")
    cfg = config.load(tmp_path, environ={})
    assert (cfg.http_host, cfg.maven_metadata_ttl_s) == ("h\u00e9te", 1000.0)


def test_http_limits_come_from_settings() -> None:
    from pyrsia.http.server import Limits
    from pyrsia.node.daemon import http_limits

    cfg = config.load(Path("/h"), environ={}, flags={"http_workers_max": 7, "http_idle_timeout_s": 2.5})
    limits = http_limits(cfg)
    for f in fields(Limits):
        assert getattr(limits, f.name) == getattr(cfg, f"http_{f.name}")
    assert (limits.workers_max, limits.idle_timeout_s) == (7, 2.5)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("announce", "1.2.3.4:44000", "announce: '1.2.3.4:44000' is not a multiaddr /ip4|ip6"),
        ("announce", "/ip4/1.2.3/tcp/1", "is not a multiaddr"),
        ("announce", "/ip4/1.2.3.4", "announce: '/ip4/1.2.3.4' is not a multiaddr"),
        ("announce", "/ip4/1.2.3.4/tcp/0", "is not a multiaddr"),
        ("announce", "/ip4/1.2.3.4/tcp/70000", "is not a multiaddr"),
        ("announce", "/ip6/1.2.3.4/tcp/1", "is not a multiaddr"),
        ("announce", "/dns4/bad_name!/tcp/1", "is not a multiaddr"),
        ("announce", "/ip4/1.2.3.4/tcp/1/p2p/0OIl", "is not a multiaddr"),
        ("announce", "/ip4/1.2.3.4/udp/1/quic-v1", "is not a multiaddr"),
        ("no_announce", "10.0.0.0/33", "no_announce: '10.0.0.0/33' is neither a multiaddr"),
        ("no_announce", "/ip4/10.0.0.300", "no_announce: '/ip4/10.0.0.300' is not a multiaddr"),
        ("no_announce", "eth0", "is neither a multiaddr"),
    ],
)
def test_address_settings_refuse_bad_entries_in_one_line(
    tmp_path: Path, name: str, value: str, message: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        config.load(tmp_path, environ={config.env_name(name): value})
    assert message in raised.value.message and "\n" not in raised.value.message


def test_address_settings_accept_their_forms(tmp_path: Path) -> None:
    peer = peer_id_of(b"\x07" * 32)
    announce = (
        "/ip4/198.51.100.7/tcp/4001",
        "/ip6/2001:db8::1/tcp/4001",
        f"/dns4/node.example.org/tcp/1/p2p/{peer}",
    )
    no_announce = ("10.0.0.0/8", "fd00::/8", "192.0.2.7", "/ip4/172.16.0.1", "/ip6/fd00::2/tcp/44000")
    cfg = config.load(tmp_path, environ={}, flags={"announce": announce, "no_announce": no_announce})
    assert (cfg.announce, cfg.no_announce) == (announce, no_announce)
    assert config.Config(home=tmp_path).announce == () and config.Config(home=tmp_path).no_announce == ()


def test_kad_ip_group_exempt_takes_only_cidrs(tmp_path: Path) -> None:
    loaded = config.load(tmp_path, environ={}, flags={"kad_ip_group_exempt": ["10.1.2.3/16"]})
    assert loaded.kad_ip_group_exempt == ("10.1.2.3/16",)
    with pytest.raises(ConfigError, match="kad_ip_group_exempt"):
        config.load(tmp_path, environ={}, flags={"kad_ip_group_exempt": ["10.0.0.0/33"]})
