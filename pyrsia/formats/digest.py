"""Content digests (`algorithm:hex`) as the OCI image spec defines them.

Only algorithms we can verify are accepted: sha256 (the default everywhere) and sha512.
Parsing is strict (lowercase hex of the exact length) because the digest string ends up
in a file path; nothing that fails `Digest.parse` ever reaches the disk.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from pyrsia.errors import DigestInvalid

_HEX_LENGTHS = {"sha256": 64, "sha512": 128}
# Matched whole (`fullmatch`): `$` would also accept a trailing newline.
_DIGEST = re.compile(r"(sha256|sha512):([0-9a-f]+)")


@dataclass(frozen=True, slots=True)
class Digest:
    algorithm: str
    hex: str

    @classmethod
    def parse(cls, text: str) -> Digest:
        match = _DIGEST.fullmatch(text)
        if match is None or len(match.group(2)) != _HEX_LENGTHS[match.group(1)]:
            raise DigestInvalid(
                "invalid digest: expected sha256:<64 hex> or sha512:<128 hex>", detail=text[:200]
            )
        return cls(match.group(1), match.group(2))

    @classmethod
    def of(cls, data: bytes, algorithm: str = "sha256") -> Digest:
        return cls(algorithm, hashlib.new(algorithm, data).hexdigest())

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"


def looks_like_digest(reference: str) -> bool:
    """A manifest reference is a digest when it has the `alg:` form (tags cannot contain ':')."""
    return ":" in reference
