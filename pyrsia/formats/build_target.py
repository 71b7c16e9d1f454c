"""What `pyrsia build` may be asked to publish: an image, or one Maven version.

    docker  NAME[:TAG|@DIGEST]   as docker writes it (`alpine:3.18`)
    maven   GROUP:ARTIFACT:VERSION   its POM and jar

Checked by the CLI before it asks, by the node API before the node sees it, and by the
node itself; every refusal is one `UsageError` line. Pure.
"""

from __future__ import annotations

import dataclasses

from pyrsia.errors import PyrsiaError, UsageError
from pyrsia.formats.maven_layout import Coordinates
from pyrsia.formats.reference import parse_image_reference

KINDS = ("docker", "maven")


def maven_paths(target: str) -> list[str]:
    """`G:A:V` → the repository paths of its POM and jar."""
    if len(target.split(":")) != 3:
        raise UsageError(f"{target[:200]!r} is not GROUP:ARTIFACT:VERSION")
    jar = Coordinates.parse(target)
    return [dataclasses.replace(jar, extension="pom").path, jar.path]


def check_target(kind: str, target: str) -> None:
    """`UsageError` unless `target` names one artifact of `kind`."""
    if kind not in KINDS:
        raise UsageError(f"build kind must be one of {', '.join(KINDS)}, not {kind[:40]!r}")
    try:
        if kind == "docker":
            parse_image_reference(target)
        else:
            maven_paths(target)
    except UsageError:
        raise
    except PyrsiaError as exc:
        what = "an image reference" if kind == "docker" else "Maven coordinates"
        raise UsageError(f"{target[:200]!r} is not {what}: {exc.message}") from exc
