"""Small JSON records on disk, one file each, written atomically.

A record says what a name means locally: which digest a Docker tag points at, which
blob (and checksums) a Maven path is. Keys are relative paths built only from names
already validated by the registry grammar; `@` never occurs in those names, so
record directories may use it for their own structure.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

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
        path = self.root / key
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".part")
        except OSError as exc:
            raise StorageError(f"cannot write record {path}: {exc.strerror}") from exc
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(json.dumps(doc, sort_keys=True).encode())
                file.flush()
                os.fsync(file.fileno())
            os.replace(tmp, path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise StorageError(f"cannot write record {path}: {exc.strerror}") from exc

    def keys(self, directory: str) -> list[str]:
        """Names of the records directly inside a directory, sorted."""
        try:
            entries = (self.root / directory).iterdir()
            return sorted(p.name for p in entries if p.is_file() and not p.name.startswith("."))
        except FileNotFoundError:
            return []
