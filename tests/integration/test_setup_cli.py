"""`pyrsia setup …` as a user runs it, on copies of this machine's real config files.

For each tool: a dry run prints the diff and writes nothing; apply writes and keeps a
backup; a second apply changes nothing; `--undo` puts back the original bytes (and
removes what did not exist). Bad files — malformed, unreadable, not UTF-8 — fail in
one line and change nothing, backups included.
"""

from __future__ import annotations

import json
import os
import subprocess
import tomllib
from pathlib import Path

import pytest

from tests.support.cli import PYRSIA, ok, one_line_error

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "setup"
NODE = "http://127.0.0.1:7888"


def pyrsia(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "COLUMNS": "250",
        "HOME": str(tmp_path / "home"),
        "XDG_CONFIG_HOME": str(tmp_path / "xdg"),
    }
    env.pop("CONTAINERS_REGISTRIES_CONF", None)
    env.pop("PYRSIA_NODE", None)
    return subprocess.run([*PYRSIA, *args], capture_output=True, text=True, timeout=60, env=env)


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every file and directory under `root`: bytes for files, None for directories."""
    return {
        str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))
    }


def copy(name: str, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes((FIXTURES / name).read_bytes())
    return target


def _containerd(etc: Path) -> list[str]:
    config = copy("containerd-default.toml", etc / "containerd" / "config.toml")
    return [
        "containerd",
        "--containerd-config",
        str(config),
        "--config-path",
        str(etc / "containerd" / "certs.d"),
        "-r",
        "docker.io",
        "-r",
        "ghcr.io",
    ]


def _containerd_debian(etc: Path) -> list[str]:
    config = copy("containerd-debian.toml", etc / "containerd" / "config.toml")
    return ["containerd", "--containerd-config", str(config), "--config-path", str(etc / "certs.d")]


def _docker_absent(etc: Path) -> list[str]:
    (etc / "docker").mkdir(parents=True)
    return ["docker", "--config-path", str(etc / "docker" / "daemon.json")]


def _docker_empty(etc: Path) -> list[str]:
    (etc / "docker").mkdir(parents=True)
    (etc / "docker" / "daemon.json").write_bytes(b"")
    return ["docker", "--config-path", str(etc / "docker" / "daemon.json")]


def _podman(etc: Path) -> list[str]:
    conf = copy("registries.conf", etc / "containers" / "registries.conf")
    return ["podman", "--config-path", str(conf), "-r", "docker.io", "-r", "quay.io"]


def _with_a_port(etc: Path) -> list[str]:
    """Registries named by host:port: containerd's directory is `host:port` (docs/hosts.md)."""
    return [*_containerd_debian(etc), "-r", "localhost:5000", "-r", "registry.example.com:5443"]


def _podman_with_a_port(etc: Path) -> list[str]:
    return [*_podman(etc), "-r", "registry.example.com:5443"]


def _maven(etc: Path) -> list[str]:
    return ["maven", "--config-path", str(copy("settings.xml", etc / "m2" / "settings.xml"))]


def _maven_absent(etc: Path) -> list[str]:
    etc.mkdir(parents=True)
    return ["maven", "--config-path", str(etc / "m2" / "settings.xml")]


TOOLS = {
    "containerd-default": _containerd,
    "containerd-debian": _containerd_debian,
    "docker-absent": _docker_absent,
    "docker-empty": _docker_empty,
    "podman": _podman,
    "containerd-host-port": _with_a_port,
    "podman-host-port": _podman_with_a_port,
    "maven": _maven,
    "maven-absent": _maven_absent,
}


@pytest.mark.parametrize("case", list(TOOLS))
def test_dry_run_apply_reapply_undo(tmp_path: Path, case: str) -> None:
    etc = tmp_path / "etc"
    args = TOOLS[case](etc)
    backups = tmp_path / "backups"
    common = ["--node", NODE, "--backup-dir", str(backups)]
    original = snapshot(etc)

    dry = pyrsia(tmp_path, "setup", *args, *common, "--dry-run")
    out = ok(dry)
    assert "+++ b" in out and NODE.removeprefix("http://") in out, out
    assert "dry run: nothing written" in dry.stderr
    assert snapshot(etc) == original and not backups.exists()

    applied = pyrsia(tmp_path, "setup", *args, *common)
    ok(applied)
    assert "wrote " in applied.stderr and (
        "restart needed" in applied.stderr or "no restart" in applied.stderr
    )
    after = snapshot(etc)
    assert after != original
    changed = {name for name in after if after[name] != original.get(name)}
    assert changed, after
    if case == "containerd-host-port":
        assert {
            "certs.d/localhost:5000/hosts.toml",
            "certs.d/registry.example.com:5443/hosts.toml",
        } <= changed
    if case == "podman-host-port":
        assert f'location = "{NODE.removeprefix("http://")}/registry.example.com--5443"' in str(after)

    again = pyrsia(tmp_path, "setup", *args, *common)
    ok(again)
    assert "wrote " not in again.stderr and "unchanged" in again.stderr
    assert snapshot(etc) == after

    undone = pyrsia(tmp_path, "setup", *args[:1], "--undo", "--backup-dir", str(backups))
    ok(undone)
    assert "restored " in undone.stderr
    assert snapshot(etc) == original  # byte for byte; created files and directories gone
    assert not (backups / args[0]).exists()
    nothing = pyrsia(tmp_path, "setup", args[0], "--undo", "--backup-dir", str(backups))
    assert "nothing to undo" in ok(nothing) + nothing.stderr


def test_what_each_tool_reads_after_setup(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    backups = ["--backup-dir", str(tmp_path / "b"), "--node", NODE]
    result = pyrsia(tmp_path, "setup", *_containerd(etc), *backups)
    ok(result)
    assert "restart needed: systemctl restart containerd" in result.stderr
    assert "--hosts-dir" in result.stderr
    config = tomllib.loads((etc / "containerd" / "config.toml").read_text())
    hosts_dir = etc / "containerd" / "certs.d"
    assert config["plugins"]["io.containerd.grpc.v1.cri"]["registry"]["config_path"] == str(hosts_dir)
    ghcr = tomllib.loads((hosts_dir / "ghcr.io" / "hosts.toml").read_text())
    assert ghcr["server"] == "https://ghcr.io" and ghcr["host"][NODE]["capabilities"] == ["pull", "resolve"]

    result = pyrsia(tmp_path, "setup", *_docker_absent(etc), *backups)
    ok(result)
    assert json.loads((etc / "docker" / "daemon.json").read_text()) == {"registry-mirrors": [NODE]}
    assert "mirrors docker.io only" in result.stderr and "systemctl reload docker" in result.stderr


def test_maven_default_path_is_the_users_home(tmp_path: Path) -> None:
    result = pyrsia(tmp_path, "setup", "maven", "--node", NODE)
    ok(result)
    written = (tmp_path / "home" / ".m2" / "settings.xml").read_text()
    assert f"<url>{NODE}/maven2/</url>" in written
    assert (tmp_path / "xdg" / "pyrsia" / "setup-backups" / "maven" / "journal.json").is_file()
    ok(pyrsia(tmp_path, "setup", "maven", "--undo"))
    assert not (tmp_path / "home" / ".m2").exists()


BAD = {
    "containerd": ("config.toml", b'version = 2\n[plugins."io.containerd.grpc.v1.cri"\n', "not valid TOML"),
    "docker": ("daemon.json", b'{"registry-mirrors": [', "not valid JSON"),
    "podman": ("registries.conf", b'[[registry]]\nprefix = "docker.io\n', "not valid TOML"),
    "maven": ("settings.xml", b"<settings><mirrors></settings>\n", "not well-formed XML"),
}


def _args(tool: str, path: Path, tmp_path: Path) -> list[str]:
    if tool == "containerd":
        return [tool, "--containerd-config", str(path), "--config-path", str(tmp_path / "etc" / "certs.d")]
    return [tool, "--config-path", str(path)]


@pytest.mark.parametrize("tool", list(BAD))
@pytest.mark.parametrize("trouble", ["malformed", "unreadable", "not-utf8"])
def test_bad_files_fail_in_one_line_and_change_nothing(tmp_path: Path, tool: str, trouble: str) -> None:
    name, malformed, message = BAD[tool]
    path = tmp_path / "etc" / name
    path.parent.mkdir(parents=True)
    if trouble == "malformed":
        path.write_bytes(malformed)
    elif trouble == "unreadable":  # root reads any mode: a directory where the file should be
        path.mkdir()
        message = "cannot read"
    else:
        path.write_bytes(b"\xff\xfe" + malformed)
        message = "not UTF-8 text"
    before = snapshot(tmp_path / "etc")
    backups = tmp_path / "backups"
    result = pyrsia(
        tmp_path, "setup", *_args(tool, path, tmp_path), "--node", NODE, "--backup-dir", str(backups)
    )
    line = one_line_error(result, 2, message, "nothing changed")
    assert str(path) in line
    assert snapshot(tmp_path / "etc") == before and not backups.exists()


def test_undo_refuses_a_file_changed_since_setup(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    args = _podman(etc)
    backups = ["--backup-dir", str(tmp_path / "b")]
    ok(pyrsia(tmp_path, "setup", *args, "--node", NODE, *backups))
    conf = etc / "containers" / "registries.conf"
    conf.write_text(conf.read_text() + "# edited by hand\n")
    edited = conf.read_bytes()
    result = pyrsia(tmp_path, "setup", "podman", "--undo", *backups)
    one_line_error(result, 2, "was changed after pyrsia setup wrote it", "nothing changed")
    assert conf.read_bytes() == edited


def test_bad_node_and_registry_are_one_line(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    one_line_error(pyrsia(tmp_path, "setup", *_podman(etc), "--node", "127.0.0.1:7888"), 2, "--node")
    one_line_error(pyrsia(tmp_path, "setup", "podman", "-r", "library", "--node", NODE), 2, "'library'")


def test_a_new_podman_file_starts_from_the_systems(tmp_path: Path) -> None:
    """A registries.conf of one's own replaces the system's: it starts as a copy of it."""
    conf = tmp_path / "user" / "registries.conf"
    env = {**os.environ, "CONTAINERS_REGISTRIES_CONF": str(conf), "XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    result = subprocess.run(
        [*PYRSIA, "setup", "podman", "--node", NODE], capture_output=True, text=True, timeout=60, env=env
    )
    ok(result)
    system = Path("/etc/containers/registries.conf").read_text()
    assert conf.read_text().startswith(system) and "127.0.0.1:7888" in conf.read_text()
    undo = subprocess.run(
        [*PYRSIA, "setup", "podman", "--undo"], capture_output=True, text=True, timeout=60, env=env
    )
    ok(undo)
    assert not conf.parent.exists()
