"""Tag → manifest digest records for Docker repositories, one small file per tag.

Layout: `<home>/refs/docker/<repository name>/@tags/<tag>`, holding the digest. `@`
cannot occur in a repository name, so a tag directory never collides with a nested
repository. Names and tags are validated before they get here. A tag, once recorded,
is what this node serves for it; the transparency log will take this role over and
make it shared by the network.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from pyrsia.artifacts.digest import Digest
from pyrsia.errors import StorageError


class TagStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def _dir(self, name: str) -> Path:
        return self.root / name / "@tags"

    def get(self, name: str, tag: str) -> Digest | None:
        try:
            text = (self._dir(name) / tag).read_text("ascii").strip()
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise StorageError(f"cannot read tag {name}:{tag}: {exc}") from exc
        return Digest.parse(text)

    def set(self, name: str, tag: str, digest: Digest) -> None:
        directory = self._dir(name)
        try:
            directory.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=directory, prefix=".", suffix=".part")
        except OSError as exc:
            raise StorageError(f"cannot record tag {name}:{tag}: {exc.strerror}") from exc
        try:
            with os.fdopen(fd, "w", encoding="ascii") as file:
                file.write(f"{digest}\n")
                file.flush()
                os.fsync(file.fileno())
            os.replace(tmp, directory / tag)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise StorageError(f"cannot record tag {name}:{tag}: {exc.strerror}") from exc

    def tags(self, name: str) -> list[str]:
        try:
            return sorted(p.name for p in self._dir(name).iterdir() if not p.name.startswith("."))
        except FileNotFoundError:
            return []
