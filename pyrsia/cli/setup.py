"""`pyrsia setup containerd|docker|podman|maven`: point a tool at a node, with backups and undo.

The text of every file is computed first by the pure modules of `pyrsia.setup`; only when
all of them are acceptable is anything written, so a bad file changes nothing. A file is
written only when its text changes (a second run writes nothing), atomically, keeping
its mode. Before the first change to a file, its original bytes (or the fact that it
did not exist) go into a journal under `--backup-dir`, one per tool; `--undo` puts back
exactly those bytes, and refuses when a file was changed since setup wrote it.
`--dry-run` prints the unified diff and writes nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

from pyrsia.cli import console, options, settings
from pyrsia.durable import write_atomic
from pyrsia.errors import ConfigError, StorageError
from pyrsia.formats.registry_host import DOCKER_IO
from pyrsia.setup import containerd, docker, maven, podman
from pyrsia.setup.plan import FileChange, Plan, diff, node_of, registry_of

setup_app = typer.Typer(
    help="Point containerd, Docker, podman or Maven at a pyrsia node (with backups; --undo restores).",
    no_args_is_help=True,
)
JOURNAL = "journal.json"
SYSTEM_REGISTRIES_CONF = Path("/etc/containers/registries.conf")
FILE_BYTES_MAX = 16 * 1024 * 1024

DRY_RUN = typer.Option(False, "--dry-run", help="Print the changes as a diff; write nothing.")
UNDO = typer.Option(False, "--undo", help="Put back the files as they were before the first setup.")
BACKUP_DIR = typer.Option(
    None,
    "--backup-dir",
    show_default=False,
    help="Where originals are kept for --undo (default: ~/.config/pyrsia/setup-backups).",
)
REGISTRY = typer.Option(
    None,
    "--registry",
    "-r",
    show_default=False,
    help="Registry host to mirror through the node (docker.io, ghcr.io, quay.io, registry.k8s.io, "
    "gcr.io or any other); repeatable (default: docker.io).",
)


# ---- reading, backups and undo ------------------------------------------------------------


def read_text(path: Path) -> str | None:
    """A config file's text; None when it does not exist. Anything else unreadable is one line."""
    try:
        with path.open("rb") as file:
            data = file.read(FILE_BYTES_MAX + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}; nothing changed") from None
    if len(data) > FILE_BYTES_MAX:
        raise ConfigError(f"{path} is larger than {FILE_BYTES_MAX} bytes; nothing changed")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not UTF-8 text (byte {exc.start}); nothing changed") from None


@dataclass(frozen=True, slots=True, kw_only=True)
class Journal:
    """What setup changed for one tool: each file's original (a backup file, or none: absent)."""

    directory: Path

    def entries(self) -> dict[str, dict[str, Any]]:
        path = self.directory / JOURNAL
        text = read_text(path)
        if text is None:
            return {}
        try:
            files = json.loads(text)["files"]
        except (ValueError, KeyError, TypeError):
            files = None
        if not isinstance(files, dict):
            raise ConfigError(f"{path} is damaged; remove it to start over; nothing changed")
        return files

    def save(self, entries: dict[str, dict[str, Any]]) -> None:
        write_atomic(self.directory / JOURNAL, json.dumps({"files": entries}, indent=2).encode(), 0o600)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _missing_dirs(path: Path) -> list[str]:
    missing = []
    parent = path.parent
    while not parent.exists():
        missing.append(str(parent))
        parent = parent.parent
    return missing


def apply(plan: Plan, journal: Journal) -> None:
    entries = journal.entries()
    pending = plan.changed
    # Originals first: a crash after this leaves a journal that still restores them.
    for change in pending:
        if change.path in entries:
            continue
        path = Path(change.path)
        entry: dict[str, Any] = {"original": None, "mode": None, "created_dirs": _missing_dirs(path)}
        if change.before is not None:
            try:
                original = path.read_bytes()
                mode = stat.S_IMODE(path.stat().st_mode)
            except OSError as exc:
                raise ConfigError(f"cannot read {path}: {exc.strerror}; nothing changed") from None
            backup = f"{len(entries) + 1:04d}-{path.name}.orig"
            write_atomic(journal.directory / backup, original, 0o600)
            entry.update(original=backup, mode=mode)
        entries[change.path] = entry
    if pending:
        journal.save(entries)
    for change in pending:
        entry = entries[change.path]
        data = change.after.encode("utf-8")
        write_atomic(Path(change.path), data, entry["mode"] if entry["mode"] is not None else 0o644)
        entry["written"] = _sha256(data)
        backup = entry["original"]
        kept = f"backup: {journal.directory / backup}" if backup else "it did not exist before"
        console.success(f"wrote {change.path} ({kept})")
    for change in plan.changes:
        if not change.changed:
            console.info(f"{change.path} already points at the node; unchanged")
    if pending:
        journal.save(entries)


def undo(journal: Journal) -> list[str]:
    """Put every file back; returns their paths. Refuses, changing nothing, if one was edited since."""
    entries = journal.entries()
    for name, entry in entries.items():
        current = Path(name)
        try:
            now = current.read_bytes()
        except FileNotFoundError:
            now = None
        except OSError as exc:
            raise ConfigError(f"cannot read {name}: {exc.strerror}; nothing changed") from None
        written = entry.get("written")
        if written is not None and (now is None or _sha256(now) != written):
            original = entry.get("original")
            kept = (
                f"the original is {journal.directory / original}" if original else "it did not exist before"
            )
            raise ConfigError(f"{name} was changed after pyrsia setup wrote it ({kept}); nothing changed")
    restored = []
    for name, entry in entries.items():
        path = Path(name)
        original = entry.get("original")
        try:
            if original is None:
                path.unlink(missing_ok=True)
            else:
                write_atomic(path, (journal.directory / original).read_bytes(), int(entry["mode"]))
        except OSError as exc:
            raise StorageError(f"cannot restore {name}: {exc.strerror}") from exc
        for directory in entry.get("created_dirs", []) if original is None else []:
            try:
                Path(directory).rmdir()
            except OSError:
                break  # not empty: what else was put there stays, and so do its parents
        restored.append(name)
    for leftover in journal.directory.glob("*"):
        leftover.unlink()
    journal.directory.rmdir()
    return restored


def _backup_dir(flag: Path | None, tool: str) -> Journal:
    base = flag if flag is not None else settings.path().parent / "setup-backups"
    return Journal(directory=base / tool)


def run(plan: Plan, journal: Journal, *, dry_run: bool) -> None:
    for note in plan.notes:
        console.warning(note)
    if dry_run:
        for change in plan.changes:
            text = diff(change)
            if text:
                for line in text.splitlines():
                    console.line(line)
            else:
                console.info(f"{change.path}: no change")
        console.info("dry run: nothing written")
    else:
        apply(plan, journal)
    if not plan.changed:
        console.info("nothing to change: no restart needed")
    elif plan.restart:
        console.info(f"restart needed{' after this is applied' if dry_run else ''}: {plan.restart}")
    else:
        console.info(f"no restart needed: {plan.tool} reads its configuration on its next run")


def run_undo(tool: str, journal: Journal, restart: str) -> None:
    if not (journal.directory / JOURNAL).exists():
        console.info(f"nothing to undo: no setup of {tool} recorded in {journal.directory}")
        return
    for name in undo(journal):
        console.success(f"restored {name}")
    console.info(
        f"restart needed: {restart}" if restart else f"no restart needed: {tool} reads it on its next run"
    )


def _registries(given: Sequence[str] | None) -> tuple[str, ...]:
    return tuple(dict.fromkeys(registry_of(r) for r in (given or [DOCKER_IO])))


def _node(flag: str | None) -> str:
    return settings.node_url(flag)


# ---- the commands ----------------------------------------------------------------------------


@setup_app.command(
    "containerd",
    epilog="Example: pyrsia setup containerd --registry docker.io --registry ghcr.io --dry-run",
)
def setup_containerd(
    node: str | None = options.NODE,
    registry: list[str] | None = REGISTRY,
    config_path: Path | None = typer.Option(
        None,
        "--config-path",
        show_default=False,
        help="Directory of hosts.toml files (default: containerd's config_path, else "
        f"{containerd.DEFAULT_CONFIG_PATH}).",
    ),
    containerd_config: Path = typer.Option(
        Path("/etc/containerd/config.toml"),
        "--containerd-config",
        help="containerd's config.toml; its CRI config_path is set when it has none.",
    ),
    dry_run: bool = DRY_RUN,
    undo_: bool = UNDO,
    backup_dir: Path | None = BACKUP_DIR,
) -> None:
    """Write containerd hosts.toml files so pulls of each registry try the node first."""
    journal = _backup_dir(backup_dir, "containerd")
    if undo_:
        run_undo("containerd", journal, containerd.RESTART)
        return
    target = node_of(_node(node))
    registries = _registries(registry)
    where = str(containerd_config)
    config_text = read_text(containerd_config)
    configured = containerd.config_path_of(config_text, where)
    hosts_dir = str(config_path) if config_path is not None else configured or containerd.DEFAULT_CONFIG_PATH
    hosts_dir = os.path.abspath(hosts_dir)
    changes = []
    notes = []
    if configured is None:
        changes.append(
            FileChange(
                path=os.path.abspath(where),
                before=config_text,
                after=containerd.with_config_path(config_text, hosts_dir, where),
            )
        )
    elif os.path.abspath(configured) != hosts_dir:
        notes.append(
            f"{where} reads hosts.toml files from {configured}, not {hosts_dir}: "
            "only ctr --hosts-dir uses them"
        )
    for name in registries:
        path = Path(hosts_dir) / name / "hosts.toml"
        changes.append(
            FileChange(path=str(path), before=read_text(path), after=containerd.hosts_toml(name, target))
        )
    restart = containerd.RESTART if changes[0].path == os.path.abspath(where) and changes[0].changed else ""
    notes.append(f"ctr does not read config_path: pull with `ctr images pull --hosts-dir {hosts_dir} …`")
    run(
        Plan(tool="containerd", changes=tuple(changes), restart=restart, notes=tuple(notes)),
        journal,
        dry_run=dry_run,
    )


@setup_app.command("docker", epilog="Example: pyrsia setup docker --node http://10.0.0.5:7888")
def setup_docker(
    node: str | None = options.NODE,
    config_path: Path = typer.Option(
        Path("/etc/docker/daemon.json"), "--config-path", help="dockerd's daemon.json."
    ),
    dry_run: bool = DRY_RUN,
    undo_: bool = UNDO,
    backup_dir: Path | None = BACKUP_DIR,
) -> None:
    """Add the node to Docker's registry-mirrors (Docker mirrors docker.io only)."""
    journal = _backup_dir(backup_dir, "docker")
    if undo_:
        run_undo("docker", journal, docker.RELOAD)
        return
    target = node_of(_node(node))
    where = str(config_path)
    before = read_text(config_path)
    change = FileChange(
        path=os.path.abspath(where), before=before, after=docker.with_mirror(before, target, where)
    )
    note = (
        "Docker's engine mirrors docker.io only: images of other registries (ghcr.io, quay.io, …) "
        "are pulled from those registries directly; use containerd or podman setup for them"
    )
    run(
        Plan(tool="docker", changes=(change,), restart=docker.RELOAD, notes=(note,)), journal, dry_run=dry_run
    )


def _podman_default() -> Path:
    if env := os.environ.get("CONTAINERS_REGISTRIES_CONF"):
        return Path(env)
    if os.geteuid() == 0:
        return SYSTEM_REGISTRIES_CONF
    return Path.home() / ".config" / "containers" / "registries.conf"


@setup_app.command(
    "podman", epilog="Example: pyrsia setup podman -r docker.io -r quay.io --config-path ./registries.conf"
)
def setup_podman(
    node: str | None = options.NODE,
    registry: list[str] | None = REGISTRY,
    config_path: Path | None = typer.Option(
        None,
        "--config-path",
        show_default=False,
        help="registries.conf (default: $CONTAINERS_REGISTRIES_CONF, else /etc/containers/registries.conf "
        "for root, ~/.config/containers/registries.conf otherwise).",
    ),
    dry_run: bool = DRY_RUN,
    undo_: bool = UNDO,
    backup_dir: Path | None = BACKUP_DIR,
) -> None:
    """Add the node as a mirror of each registry in podman's registries.conf."""
    journal = _backup_dir(backup_dir, "podman")
    if undo_:
        run_undo("podman", journal, "")
        return
    target = node_of(_node(node))
    path = config_path or _podman_default()
    where = str(path)
    before = read_text(path)
    base = before
    if before is None and config_path is None and path != SYSTEM_REGISTRIES_CONF:
        # A user's registries.conf replaces the system's: start from the system's, so its
        # search registries and the like still apply.
        base = read_text(SYSTEM_REGISTRIES_CONF)
    after = podman.with_mirrors(base, _registries(registry), target, where)
    change = FileChange(path=os.path.abspath(where), before=before, after=after)
    run(Plan(tool="podman", changes=(change,)), journal, dry_run=dry_run)


@setup_app.command("maven", epilog="Example: pyrsia setup maven --node http://127.0.0.1:7888 --dry-run")
def setup_maven(
    node: str | None = options.NODE,
    config_path: Path | None = typer.Option(
        None,
        "--config-path",
        show_default=False,
        help="settings.xml (default: ~/.m2/settings.xml).",
    ),
    mirror_of: str = typer.Option(
        "*", "--mirror-of", help="Repositories the node mirrors (Maven's <mirrorOf>)."
    ),
    dry_run: bool = DRY_RUN,
    undo_: bool = UNDO,
    backup_dir: Path | None = BACKUP_DIR,
) -> None:
    """Make the node the first mirror in Maven's settings.xml."""
    journal = _backup_dir(backup_dir, "maven")
    if undo_:
        run_undo("maven", journal, "")
        return
    target = node_of(_node(node))
    path = config_path or Path.home() / ".m2" / "settings.xml"
    where = str(path)
    before = read_text(path)
    after = maven.with_mirror(before, target, mirror_of, where)
    change = FileChange(path=os.path.abspath(where), before=before, after=after)
    run(Plan(tool="maven", changes=(change,)), journal, dry_run=dry_run)
