"""podman (containers-registries.conf(5), version 2): a mirror through the node per registry.

One block, between `BEGIN` and `END` marker comments, holds a `[[registry]]` table for
each chosen registry with the node as its `[[registry.mirror]]`: containers/image tries
the mirror first and the registry itself after it. A registry other than docker.io is
mirrored under a path naming it (`NODE/ghcr.io`; `NODE/localhost--5000` for a
registry with a port), so the node sees which registry a name belongs to. The block
is replaced where it stands on a later run and appended at the end the first time;
nothing else in the file is touched. A registry the file already configures outside the
block is refused (containers/image rejects one prefix configured twice), and so is the
version 1 format (`[registries.search]`), which cannot be mixed with `[[registry]]`
tables.
"""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from typing import Any

from pyrsia.errors import ConfigError
from pyrsia.formats.registry_host import DOCKER_IO
from pyrsia.setup.plan import Node

BEGIN = "# >>> pyrsia setup podman: mirrors through a pyrsia node (remove with `pyrsia setup podman --undo`)"
END = "# <<< pyrsia setup podman"


def mirror_location(registry: str, node: Node) -> str:
    """containers/image parses `location` + the rest of the name as a reference, whose path
    cannot hold `:`: a registry's port goes after `--` (`NODE/localhost--5000`), which the
    node reads back as `localhost:5000` (`formats.registry_host`)."""
    return node.hostport if registry == DOCKER_IO else f"{node.hostport}/{registry.replace(':', '--')}"


def block(registries: Sequence[str], node: Node) -> str:
    parts = [BEGIN + "\n"]
    for registry in registries:
        parts.append(
            f'[[registry]]\nprefix = "{registry}"\nlocation = "{registry}"\n\n'
            f'[[registry.mirror]]\nlocation = "{mirror_location(registry, node)}"\n'
            + ("insecure = true\n" if node.insecure else "")
            + "\n"
        )
    parts.append(END + "\n")
    return "".join(parts)


def with_mirrors(text: str | None, registries: Sequence[str], node: Node, where: str) -> str:
    current = "" if text is None else text
    before, inside, after = _split(current, where)
    outside = before + after
    doc = _parse(outside, where)
    if "registries" in doc:
        raise ConfigError(
            f"{where} uses the version 1 format ([registries.search]); pyrsia setup writes version 2 "
            "[[registry]] tables, which cannot be mixed with it; nothing changed"
        )
    for entry in doc.get("registry", []) if isinstance(doc.get("registry"), list) else []:
        if not isinstance(entry, dict):
            continue
        taken = {str(entry.get("prefix", "")), str(entry.get("location", ""))}
        for registry in registries:
            if registry in taken:
                raise ConfigError(
                    f"{where} already configures {registry} in a [[registry]] table of its own; "
                    "remove or edit that table by hand; nothing changed"
                )
    new_block = block(registries, node)
    if inside is None:
        sep = "" if not before or before.endswith("\n") else "\n"
        gap = "\n" if before.strip() else ""
        result = f"{before}{sep}{gap}{new_block}"
    else:
        result = f"{before}{new_block}{after}"
    _parse(result, where)
    return result


def _split(text: str, where: str) -> tuple[str, str | None, str]:
    """The text before the block, the block (None: none yet), and the text after it."""
    start = text.find(BEGIN)
    if start < 0:
        if END in text:
            raise ConfigError(f"{where} has the end of a pyrsia block but not its start; nothing changed")
        return text, None, ""
    end = text.find(END, start)
    if end < 0 or text.find(BEGIN, start + 1) >= 0:
        raise ConfigError(
            f"{where} has a damaged pyrsia block (markers missing or repeated); nothing changed"
        )
    end = text.find("\n", end)
    end = len(text) if end < 0 else end + 1
    return text[:start], text[start:end], text[end:]


def _parse(text: str, where: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where} is not valid TOML ({exc}); nothing changed") from None
