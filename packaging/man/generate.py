"""Writes `pyrsia.1` (roff, man(7) macros) from the CLI's own command tree.

    python packaging/man/generate.py OUT.1

Walks the click command tree typer builds from `pyrsia.cli.app` — every group and
command, in the order `--help` lists them — and renders each one's usage, help,
options and epilog with the same help records `--help` prints (defaults, ranges and
`[env var: …]` included), so the page never drifts from the CLI. Hidden commands
and options stay hidden. The page date is `SOURCE_DATE_EPOCH` when set (reproducible
builds), else today.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer.main

from pyrsia import __version__
from pyrsia.cli.app import app

# The only markup our help strings use is rich's inline styles; `[default: …]` and
# `[env var: …]` in help records must survive, so only these tags are removed.
RICH_STYLE = re.compile(r"\[/?(?:bold|b|italic|i|underline|u|dim|code)\]")
ENV_VAR = re.compile(r"\[env var: ([A-Z0-9_]+)[;\]]")


@dataclass(frozen=True, slots=True, kw_only=True)
class Entry:
    path: str  # "pyrsia log search"
    command: Any  # a typer/click Command
    ctx: Any  # its click Context


def walk(command: Any, ctx: Any) -> list[Entry]:
    """The command and everything under it, depth first, hidden commands left out."""
    found = [Entry(path=ctx.command_path, command=command, ctx=ctx)]
    if hasattr(command, "list_commands"):
        for name in command.list_commands(ctx):
            child = command.get_command(ctx, name)
            if child is None or child.hidden:
                continue
            found += walk(child, child.context_class(child, info_name=name, parent=ctx))
    return found


def text(value: str) -> str:
    """Plain help text as roff body text: no rich tags; backslashes, control
    characters at line start and non-ASCII characters (`\\[u2026]`) escaped."""
    value = RICH_STYLE.sub("", value).replace("\\", "\\e")
    value = "".join(c if c.isascii() else f"\\[u{ord(c):04X}]" for c in value)
    lines = []
    for line in value.splitlines():
        stripped = line.strip()
        lines.append("\\&" + stripped if stripped.startswith((".", "'")) else stripped)
    return "\n".join(lines)


def paragraphs(value: str) -> list[str]:
    out: list[str] = []
    for block in re.split(r"\n\s*\n", value.strip()):
        if block.strip():
            out += [".PP", text(block)]
    return out


def flag(signature: str) -> str:
    """`-o, --output <dir>` → bold option names with real minus signs, italic metavar."""
    words = []
    for word in signature.split(" "):
        name, comma = (word[:-1], ",") if word.endswith(",") else (word, "")
        if name.startswith("-"):
            words.append("\\fB" + name.replace("-", "\\-") + "\\fR" + comma)
        elif name == "/":
            words.append(name)
        else:
            words.append("\\fI" + text(name) + "\\fR" + comma)
    return " ".join(words)


def usage(entry: Entry) -> str:
    pieces = [f"\\fB{entry.path}\\fR"]
    params = [p for p in entry.command.get_params(entry.ctx) if not getattr(p, "hidden", False)]
    if any(p.param_type_name == "option" for p in params):
        pieces.append("[\\fIOPTIONS\\fR]")
    for param in params:
        if param.param_type_name != "argument":
            continue
        name = text(param.metavar or (param.name or "").upper())
        name = f"\\fI{name}\\fR" + ("..." if param.nargs == -1 else "")
        pieces.append(name if param.required else f"[{name}]")
    if hasattr(entry.command, "list_commands"):
        pieces.append("\\fICOMMAND\\fR [\\fIARGS\\fR]...")
    return " ".join(pieces)


def options(entry: Entry, environment: dict[str, set[str]]) -> list[str]:
    """One tagged paragraph per argument and option, as `--help` describes it."""
    out: list[str] = []
    for param in entry.command.get_params(entry.ctx):
        record = param.get_help_record(entry.ctx)
        if record is None:  # hidden
            continue
        signature, help_text = record
        if param.param_type_name == "argument":
            tag = "\\fI" + text(param.metavar or (param.name or "").upper()) + "\\fR"
        else:
            tag = flag(signature)
        out += [".TP", tag, text(help_text) if help_text else ""]
        for variable in ENV_VAR.findall(help_text or ""):
            environment.setdefault(variable, set()).update(o for o in param.opts if o.startswith("--"))
    return out


def page() -> str:
    root = typer.main.get_command(app)
    entries = walk(root, root.context_class(root, info_name="pyrsia"))
    top, commands = entries[0], entries[1:]
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    when = datetime.fromtimestamp(int(epoch), UTC) if epoch else datetime.now(UTC)
    summary = RICH_STYLE.sub("", top.command.help or "").split("\n")[0].removeprefix("pyrsia: ")
    environment: dict[str, set[str]] = {}

    out = [
        f'.TH PYRSIA 1 "{when:%Y-%m-%d}" "pyrsia {__version__}" "User Commands"',
        ".nh",
        ".ad l",
        ".SH NAME",
        f"pyrsia \\- {text(summary.rstrip('.'))}",
        ".SH SYNOPSIS",
        usage(top),
        ".SH DESCRIPTION",
        *paragraphs(top.command.help or ""),
        ".SH OPTIONS",
        *options(top, environment),
        ".SH COMMANDS",
    ]
    for entry in commands:
        out += [f'.SS "{entry.path}"', usage(entry)]
        out += paragraphs(entry.command.help or entry.command.short_help or "")
        if not hasattr(entry.command, "list_commands"):
            out += options(entry, environment)
        if entry.command.epilog:
            out += paragraphs(entry.command.epilog)
    out += [".SH ENVIRONMENT"]
    for variable, names in sorted(environment.items()):
        described = ", ".join(flag(name) for name in sorted(names))
        out += [".TP", f"\\fB{variable}\\fR", f"Default for {described} wherever a command takes it."]
    out += [
        ".SH FILES",
        ".TP",
        "\\fI$PYRSIA_HOME/pyrsia.toml\\fR",
        "Node settings; flags override \\fBPYRSIA_*\\fR variables, which override this file.",
        ".TP",
        "\\fI~/.local/share/pyrsia\\fR",
        "The default node home: identity key, admin token, blobs and the transparency log.",
        ".TP",
        "\\fI/var/lib/pyrsia\\fR",
        "The home of the packaged \\fBpyrsia.service\\fR, which runs as user \\fBpyrsia\\fR.",
        ".SH EXIT STATUS",
        "0 on success, 2 for usage and configuration errors, 1 for any other error.",
        ".SH SEE ALSO",
        ".BR docker (1),",
        ".BR podman (1),",
        ".BR skopeo (1),",
        ".BR mvn (1),",
        ".BR systemctl (1)",
    ]
    return "\n".join(out) + "\n"


def main() -> None:
    Path(sys.argv[1]).write_text(page())


if __name__ == "__main__":
    main()
