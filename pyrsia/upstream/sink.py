"""Where an upstream download goes: the seam between the upstream clients and storage.

The upstream clients stream bytes and know nothing of the blob store. Each attempt
opens a fresh `Sink` (a retried download starts over), writes what it receives, and
hands it back with `commit()`, which verifies the bytes against what the owner
expected and makes them visible; on any failure the client calls `abort()`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol


class Sink(Protocol):
    @property
    def size(self) -> int:
        """Bytes written so far."""
        ...

    def write(self, data: bytes) -> None: ...

    def hexdigests(self) -> dict[str, str]:
        """Every digest computed over the bytes so far, by algorithm name."""
        ...

    def commit(self) -> object:
        """Verify and publish; raises `DigestMismatch` when the bytes are not what was expected."""
        ...

    def abort(self) -> None: ...


OpenSink = Callable[[], Sink]
