"""Bash completion, driven for real: bash-completion loaded, completions/pyrsia.bash
sourced, COMP_* set as bash sets them on TAB, the completion function called. The
function runs `pyrsia` from PATH, so the venv's entry point (this checkout) goes first."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BASH_COMPLETION = "/usr/share/bash-completion/bash_completion"
VENV_BIN = Path(sys.executable).parent


def complete(line: str) -> list[str]:
    words = line.split(" ")
    script = f"""
set -e
source {BASH_COMPLETION}
source {shlex.quote(str(ROOT / "completions" / "pyrsia.bash"))}
command -v pyrsia
complete -p pyrsia
COMP_LINE={shlex.quote(line)}
COMP_POINT=${{#COMP_LINE}}
COMP_WORDS=({" ".join(shlex.quote(w) for w in words)})
COMP_CWORD={len(words) - 1}
_pyrsia_completion pyrsia
printf '%s\\n' "${{COMPREPLY[@]}}"
"""
    env = {**os.environ, "PATH": f"{VENV_BIN}:{os.environ['PATH']}"}
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == str(VENV_BIN / "pyrsia")
    assert lines[1] == "complete -o default -F _pyrsia_completion pyrsia"
    return [line.split(":")[0] for line in lines[2:] if line]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("pyrsia pu", {"pull"}),
        ("pyrsia pull ", {"image", "artifact"}),
        ("pyrsia log ", {"search", "show", "verify", "proof"}),
        ("pyrsia log search --au", {"--author"}),
        ("pyrsia build ", {"docker", "maven", "status", "list"}),
        ("pyrsia build status --", {"--wait", "--timeout"}),
        ("pyrsia auth", {"authorize-node", "authorize", "authorities"}),
        ("pyrsia gen", {"genesis"}),
        ("pyrsia devnet up --auth", {"--authorities"}),
    ],
)
def test_bash_completes_commands_and_options(line: str, expected: set[str]) -> None:
    assert expected <= set(complete(line))


def test_nothing_unrelated_is_offered() -> None:
    assert set(complete("pyrsia pu")) == {"pull"}
