"""This node's admin's approvals of authority changes (`pyrsia authorize-node`).

An authority endorses an AddAuthorizedNode or RemoveAuthorizedNode transaction only if
its own admin approved that change for that peer: approvals are the admin's word, kept
in `<home>/consensus/approvals.json` (written atomically), so a restart keeps them.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

from pyrsia.durable import write_atomic
from pyrsia.errors import StorageError

ACTIONS = ("add", "remove")


class Approvals:
    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._approved: set[tuple[str, str]] = set()
        try:
            entries = json.loads(path.read_text())
        except FileNotFoundError:
            entries = []
        except (OSError, ValueError) as exc:
            raise StorageError(f"cannot read {path}: {exc}; move it aside and approve again") from exc
        if not isinstance(entries, list):
            raise StorageError(f"{path} is not a list of approvals; move it aside and approve again")
        for entry in entries:
            if (
                isinstance(entry, dict)
                and entry.get("action") in ACTIONS
                and isinstance(entry.get("peer_id"), str)
            ):
                self._approved.add((entry["peer_id"], entry["action"]))

    def approve(self, peer_id: str, action: str) -> None:
        with self._lock:
            self._approved.add((peer_id, action))
            self._path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(self._path, json.dumps(self._entries(), indent=1).encode())

    def has(self, peer_id: str, action: str) -> bool:
        with self._lock:
            return (peer_id, action) in self._approved

    def entries(self) -> list[dict[str, str]]:
        with self._lock:
            return self._entries()

    def _entries(self) -> list[dict[str, str]]:
        return [{"peer_id": p, "action": a} for p, a in sorted(self._approved)]
