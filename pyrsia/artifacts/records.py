"""Small JSON records on disk, one file each, written atomically.

A record says what a name means locally: which digest a Docker tag points at, which
blob (and checksums) a Maven path is. Keys are relative paths built only from names
already validated by the registry grammar; `@` never occurs in those names, so
record directories may use it for their own structure.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pyrsia.durable import write_atomic
from pyrsia.errors import StorageError


class RecordStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def get(self, key: str) -> dict[str, Any] | None:
        path = self.root / key
        try:
            doc = json.loads(path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise StorageError(f"cannot read record {path}: {exc}") from exc
        if not isinstance(doc, dict):
            raise StorageError(f"record {path} is not a JSON object")
        return doc

    def put(self, key: str, doc: dict[str, Any]) -> None:
        write_atomic(self.root / key, json.dumps(doc, sort_keys=True).encode())

    def keys(self, directory: str) -> list[str]:
        """Names of the records directly inside a directory, sorted."""
        try:
            entries = (self.root / directory).iterdir()
            return sorted(p.name for p in entries if p.is_file() and not p.name.startswith("."))
        except FileNotFoundError:
            return []
