"""The real `pyrsia` CLI as a subprocess, and what tests expect of its output."""

from __future__ import annotations

import os
import subprocess
import sys

PYRSIA = [sys.executable, "-m", "pyrsia"]


def run(*args: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    """`pyrsia ARGS…`, with a wide terminal so tables are not wrapped."""
    return subprocess.run(
        [*PYRSIA, *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env={**os.environ, "COLUMNS": "250"},
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"{result.args}\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr
    return result.stdout


def one_line_error(result: subprocess.CompletedProcess[str], code: int, *needles: str) -> str:
    """The command failed with `code` and said why in one line naming every needle."""
    assert result.returncode == code, f"{result.args}\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]
