"""All terminal output of the CLI goes through here.

Results go to stdout (tables for people, `--json` for scripts); messages about what
happened go to stderr, errors as one red line. Nothing else in pyrsia prints.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    ProgressColumn,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table
from rich.text import Text

from pyrsia.cli import interrupt, layout

REDRAWS_PER_S_MAX = 10  # progress bars redraw on a timer, never per chunk

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def line(text: str) -> None:
    """A plain result line on stdout (no markup, never wrapped), for scripts and tests to read."""
    out.print(text, markup=False, highlight=False)
    sys.stdout.flush()


def info(text: str) -> None:
    err.print(text, markup=False)


def success(text: str) -> None:
    err.print(Text.assemble(("✓ ", "green"), text))


def warning(text: str) -> None:
    err.print(Text.assemble(("warning: ", "yellow"), text))


def error(text: str) -> None:
    """One red line; multi-line messages are folded so an error is always one line."""
    err.print(Text.assemble(("error: ", "bold red"), " ".join(text.split())))


def as_json(doc: object) -> None:
    out.print_json(json.dumps(doc, sort_keys=True, default=str))


class Bar:
    """One progress bar: called with a byte count (and the total, once known) to advance;
    `note(text)` shows `text` after the label (empty for none)."""

    __slots__ = ("_label", "_overall", "_progress", "_task")

    def __init__(self, progress: Progress, task: TaskID, label: str, overall: TaskID | None = None) -> None:
        self._progress, self._task, self._label, self._overall = progress, task, label, overall

    def __call__(self, count: int, total: int | None = None) -> None:
        interrupt.check()  # a download thread stops at its next chunk after Ctrl-C
        self._progress.update(self._task, advance=count, total=total)
        if self._overall is not None:
            self._progress.update(self._overall, advance=count)

    def note(self, text: str) -> None:
        self._progress.update(self._task, description=f"{self._label}  {text}" if text else self._label)


def _transfer_columns() -> tuple[ProgressColumn, ...]:
    return (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )


@contextmanager
def transfer(label: str) -> Iterator[Bar]:
    """A progress bar on stderr (bytes, speed, time left); yields it, `bar(bytes, total)` to advance."""
    columns = _transfer_columns()
    with Progress(
        *columns,
        console=err,
        transient=False,
        refresh_per_second=REDRAWS_PER_S_MAX,
        disable=not err.is_terminal,
    ) as progress:
        yield Bar(progress, progress.add_task(label, total=None), label)


@contextmanager
def transfers(title: str) -> Iterator[Callable[[str, int], Bar]]:
    """One bar per item plus a total line with the overall speed; yields `start(label, total)`."""
    with Progress(
        *_transfer_columns(),
        console=err,
        refresh_per_second=REDRAWS_PER_S_MAX,
        disable=not err.is_terminal,
    ) as progress:
        overall = progress.add_task(title, total=0)

        def start(label: str, total: int) -> Bar:
            task = progress.add_task(f"  {label}", total=total)
            progress.update(overall, total=(progress.tasks[overall].total or 0) + total)
            return Bar(progress, task, f"  {label}", overall)

        yield start


def table(
    title: str,
    columns: Sequence[str | layout.Column],
    rows: Iterable[Sequence[object]],
    *,
    wide: bool = False,
) -> None:
    """A table that fits the terminal (`pyrsia.cli.layout`): long values cut in the middle,
    the least needed columns hidden (said on stderr); `wide` shows all of everything, as
    does output to a pipe, which has no width of its own."""
    specs = [layout.column(c) for c in columns]
    cells = [[_flat(v) for v in row] for row in rows]
    whole = wide or not (out.is_terminal or os.environ.get("COLUMNS"))
    fitted = layout.fit(specs, cells, out.width, wide=whole)
    header, *lines = layout.render(specs, cells, fitted)
    out.print(Text(title, style="italic"), soft_wrap=True)
    out.print(Text(header, style="bold"), soft_wrap=True)
    for text in lines:
        out.print(text, markup=False, highlight=False, soft_wrap=True)
    if fitted.hidden:
        info(f"not shown at this width: {', '.join(fitted.hidden)} (--wide shows every column)")


@contextmanager
def status_spinner(text: str) -> Iterator[None]:
    """A spinner on stderr while something slow runs (nothing when not a terminal)."""
    if not err.is_terminal:
        yield
        return
    with err.status(text):
        yield


def key_values(title: str, rows: Iterable[tuple[str, object]]) -> None:
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for key, value in rows:
        table.add_row(key, _cell(value))
    out.print(table)


def _flat(value: object) -> str:
    """A table cell on one line: lists joined with commas."""
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    if isinstance(value, Mapping):
        return ", ".join(f"{k}: {v}" for k, v in value.items())
    return str(value)


def _cell(value: object) -> str:
    if isinstance(value, list | tuple):
        return "\n".join(str(v) for v in value)
    if isinstance(value, Mapping):
        return "\n".join(f"{k}: {v}" for k, v in value.items())
    return str(value)
