"""Tag → manifest digest records for Docker repositories.

Layout: `<home>/refs/docker/<repository name>/@tags/<tag>`. A tag, once recorded, is
what this node serves for it; the transparency log will take this role over and make
it shared by the network.
"""

from __future__ import annotations

from pathlib import Path

from pyrsia.artifacts.digest import Digest
from pyrsia.artifacts.records import RecordStore


class TagStore:
    def __init__(self, root: Path) -> None:
        self._records = RecordStore(root)

    def get(self, name: str, tag: str) -> Digest | None:
        record = self._records.get(f"{name}/@tags/{tag}")
        return Digest.parse(str(record["digest"])) if record else None

    def set(self, name: str, tag: str, digest: Digest) -> None:
        self._records.put(f"{name}/@tags/{tag}", {"digest": str(digest)})

    def tags(self, name: str) -> list[str]:
        return self._records.keys(f"{name}/@tags")
