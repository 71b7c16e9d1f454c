"""Writes `pyrsia.1` (roff) from the CLI's own `--help` output.

    python packaging/man/generate.py OUT.1

Runs `pyrsia --help`, finds the commands in its Commands panel, and recurses into
each group, so the man page holds exactly what `--help` shows and never drifts from
it. Each command's help goes in as preformatted text under its own section.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from pyrsia import __version__

ENTRY = re.compile(r"^│ ([a-z][a-z-]*)\s{2,}")


def help_text(words: list[str]) -> str:
    env = {**os.environ, "COLUMNS": "80", "NO_COLOR": "1", "TERM": "dumb"}
    return subprocess.run(
        [sys.executable, "-m", "pyrsia", *words, "--help"],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    ).stdout


def subcommands(text: str) -> list[str]:
    """Names listed in the help's Commands panel."""
    names, inside = [], False
    for line in text.splitlines():
        if line.startswith("╭─ Commands"):
            inside = True
        elif line.startswith("╰"):
            inside = False
        elif inside and (match := ENTRY.match(line)):
            names.append(match.group(1))
    return names


def walk(words: list[str]) -> list[tuple[list[str], str]]:
    text = help_text(words)
    found = [(words, text)]
    for name in subcommands(text):
        found += walk([*words, name])
    return found


def roff(text: str) -> str:
    escaped = []
    for line in text.replace("\\", "\\e").splitlines():
        escaped.append("\\&" + line if line.startswith((".", "'")) else line)
    return "\n".join(escaped)


def page() -> str:
    date = datetime.now(UTC).strftime("%Y-%m-%d")
    out = [
        f'.TH PYRSIA 1 "{date}" "pyrsia {__version__}" "User Commands"',
        ".SH NAME",
        "pyrsia \\- decentralized package network for Docker images and Maven artifacts",
        ".SH SYNOPSIS",
        ".B pyrsia",
        "[\\fIOPTIONS\\fR] \\fICOMMAND\\fR [\\fIARGS\\fR]...",
    ]
    for words, text in walk([]):
        title = " ".join(["pyrsia", *words]).upper() if words else "DESCRIPTION"
        out += [f".SH {title}", ".nf", roff(text.rstrip()), ".fi"]
    out += [
        ".SH FILES",
        ".TP",
        "\\fI$PYRSIA_HOME/pyrsia.toml\\fR",
        "Node settings. The home defaults to ~/.local/share/pyrsia; the system service uses /var/lib/pyrsia.",
        ".SH SEE ALSO",
        "docker(1), podman(1), skopeo(1), mvn(1)",
    ]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    Path(sys.argv[1]).write_text(page())
