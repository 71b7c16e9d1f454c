"""Suite-wide settings: every daemon a test starts picks free p2p ports.

Tests run many nodes side by side (and beside a developer's own node on 44000); a
node started by a test without `--p2p-port` takes a free port instead of the default.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("PYRSIA_P2P_PORT", "0")
# Workers of `pytest -n` inherit COLUMNS=80 and LINES=24 from the test runner, which a
# console reads once at import; the CLI under test should see what a pipe sees.
os.environ.pop("COLUMNS", None)
os.environ.pop("LINES", None)


# The longest modules start first, so that with several workers (`make test` runs
# `pytest -n`, one module per worker at a time) none of them is left running alone
# at the end while the other workers sit idle: the few that take minutes (the run's
# "slowest modules" list), then whole layers, longest first.
_LONGEST = (
    "integration/test_sourcebuild_sandbox.py",
    "integration/test_sourcebuild_network.py",
    "lab/test_lab_dcutr.py",
    "integration/test_sync_crash.py",
)
_FIRST = ("lab", "sim", "e2e", "integration", "interop")


def _rank(item: pytest.Item) -> int:
    relative = item.path.relative_to(Path(__file__).parent)
    if relative.as_posix() in _LONGEST:
        return _LONGEST.index(relative.as_posix()) - len(_LONGEST)
    parts = relative.parts
    return _FIRST.index(parts[0]) if parts and parts[0] in _FIRST else len(_FIRST)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=_rank)


# Time per test module (setup, calls and teardown summed), shown after the run: with
# one module per worker at a time, the longest modules decide how long the suite takes.
_MODULE_SECONDS: dict[str, float] = {}
MODULES_SHOWN = 15


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    module = report.nodeid.split("::", 1)[0]
    _MODULE_SECONDS[module] = _MODULE_SECONDS.get(module, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _MODULE_SECONDS:
        return
    slowest = sorted(_MODULE_SECONDS.items(), key=lambda item: item[1], reverse=True)[:MODULES_SHOWN]
    total = sum(_MODULE_SECONDS.values())
    terminalreporter.write_sep("=", f"slowest {len(slowest)} modules (of {total:.0f} s in all)")
    for module, seconds in slowest:
        terminalreporter.write_line(f"{seconds:8.1f}s  {module}")
