"""This node's admin's approvals of authority and registry changes (`pyrsia
authorize-node`, `pyrsia registries add|remove`).

An authority endorses an AddAuthorizedNode or RemoveAuthorizedNode transaction only if
its own admin approved that change for that peer, and an AddRegistry or RemoveRegistry
only if its admin approved that change for that registry host: approvals are the
admin's word, kept in `<home>/consensus/approvals.json` (written atomically), so a
restart keeps them. An entry names either a `peer_id` or a `registry`, with its
`action`; entries of neither shape are skipped, so an older file reads as it was.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

from pyrsia.durable import write_atomic
from pyrsia.errors import StorageError

ACTIONS = ("add", "remove")
# What an approval is about: the entry's key naming its subject.
PEER = "peer_id"
REGISTRY = "registry"
_SUBJECTS = (PEER, REGISTRY)


class Approvals:
    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._approved: set[tuple[str, str, str]] = set()  # (subject kind, subject, action)
        try:
            entries = json.loads(path.read_text())
        except FileNotFoundError:
            entries = []
        except (OSError, ValueError) as exc:
            raise StorageError(f"cannot read {path}: {exc}; move it aside and approve again") from exc
        if not isinstance(entries, list):
            raise StorageError(f"{path} is not a list of approvals; move it aside and approve again")
        for entry in entries:
            if not isinstance(entry, dict) or entry.get("action") not in ACTIONS:
                continue
            for kind in _SUBJECTS:
                if isinstance(entry.get(kind), str):
                    self._approved.add((kind, entry[kind], entry["action"]))
                    break

    def approve(self, peer_id: str, action: str) -> None:
        self._approve(PEER, peer_id, action)

    def approve_registry(self, host: str, action: str) -> None:
        self._approve(REGISTRY, host, action)

    def has(self, peer_id: str, action: str) -> bool:
        with self._lock:
            return (PEER, peer_id, action) in self._approved

    def has_registry(self, host: str, action: str) -> bool:
        with self._lock:
            return (REGISTRY, host, action) in self._approved

    def entries(self) -> list[dict[str, str]]:
        """The approvals of authority changes."""
        with self._lock:
            return self._entries(PEER)

    def registry_entries(self) -> list[dict[str, str]]:
        """The approvals of registry changes."""
        with self._lock:
            return self._entries(REGISTRY)

    def _approve(self, kind: str, subject: str, action: str) -> None:
        with self._lock:
            self._approved.add((kind, subject, action))
            self._path.parent.mkdir(parents=True, exist_ok=True)
            every = self._entries(PEER) + self._entries(REGISTRY)
            write_atomic(self._path, json.dumps(every, indent=1).encode())

    def _entries(self, kind: str) -> list[dict[str, str]]:
        return [{kind: s, "action": a} for k, s, a in sorted(self._approved) if k == kind]
