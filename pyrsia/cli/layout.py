"""Tables for people that fit the terminal: which columns show, how wide, how a value is cut.

Pure: given the columns, the rows (text already) and the width, `fit` decides and
`render` returns the lines; `console.table` prints them. Rules, in order:

1. Everything at its natural width when that fits (and always with `wide`).
2. Too wide: columns that may be dropped go, least important first, until the
   columns left fit with ids at their minimum and text at no less than half (the
   command says which it hid).
3. Then ids shorten to their minimum, and text columns in proportion to their
   length, down to theirs. A value is shortened in the middle (`12D3KooWAbCdEfGh…vwxyz`):
   the start of an id or digest is what a user copies and searches by, so it is
   never cut; the end stays too, as a check. Ids keep `ID_CHARS_MIN` characters.
4. If even the minimums do not fit, lines run past the width rather than lose more.

Columns are separated by `GAP` spaces, with no box characters, so a row copies clean.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

GAP = 2
ELLIPSIS = "…"
ID_CHARS_MIN = 24  # `sha256:` and 11 hex digits, or `12D3KooW` and 10 characters, then the tail
TEXT_CHARS_MIN = 12


@dataclass(frozen=True, slots=True, kw_only=True)
class Column:
    """One column: `width_min` None never shortens it; `drop` > 0 lets a narrow terminal
    hide it, the highest `drop` first."""

    header: str
    width_min: int | None = TEXT_CHARS_MIN
    drop: int = 0


def column(spec: str | Column) -> Column:
    return spec if isinstance(spec, Column) else Column(header=spec)


def id_column(header: str, *, drop: int = 0) -> Column:
    """A peer id, digest or hash: shortened in the middle to no less than `ID_CHARS_MIN`."""
    return Column(header=header, width_min=ID_CHARS_MIN, drop=drop)


def fixed(header: str, *, drop: int = 0) -> Column:
    """A short value (a number, a state) that is never shortened."""
    return Column(header=header, width_min=None, drop=drop)


@dataclass(frozen=True, slots=True, kw_only=True)
class Layout:
    shown: tuple[int, ...]  # indexes of the columns shown, in order
    widths: tuple[int, ...]  # width of each shown column
    hidden: tuple[str, ...]  # headers of the columns left out


def middle(text: str, width: int) -> str:
    """`text` in at most `width` characters, cut in the middle: most of the start, some of the end."""
    if len(text) <= width:
        return text
    if width <= 1:
        return ELLIPSIS[:width]
    tail = min((width - 1) // 4, 8)
    head = width - 1 - tail
    return text[:head] + ELLIPSIS + (text[len(text) - tail :] if tail else "")


def fit(
    columns: Sequence[Column], rows: Sequence[Sequence[str]], width: int, *, wide: bool = False
) -> Layout:
    natural = [max([len(c.header), *(len(row[i]) for row in rows)]) for i, c in enumerate(columns)]
    if wide:
        return Layout(shown=tuple(range(len(columns))), widths=tuple(natural), hidden=())
    least = [
        natural[i] if c.width_min is None else min(natural[i], max(c.width_min, len(c.header)))
        for i, c in enumerate(columns)
    ]
    ids = {i for i, c in enumerate(columns) if c.width_min == ID_CHARS_MIN}
    # Text loses at most half before a less needed column is hidden to make room for it.
    comfortable = [n if i in ids else max(least[i], n // 2) for i, n in enumerate(natural)]
    comfortable = [least[i] if i in ids else w for i, w in enumerate(comfortable)]
    shown = list(range(len(columns)))

    def needed(widths: Sequence[int]) -> int:
        return sum(widths[i] for i in shown) + GAP * (len(shown) - 1)

    for index in sorted((i for i, c in enumerate(columns) if c.drop > 0), key=lambda i: -columns[i].drop):
        if needed(comfortable) <= width:
            break
        shown.remove(index)
    widths = list(natural)
    excess = needed(widths) - width
    # Ids first, down to their minimum (their start is all a user needs); then text, each
    # column cut in proportion to its length, so a long path gives more than a short name.
    for index in (i for i in shown if i in ids):
        cut = min(max(excess, 0), widths[index] - least[index])
        widths[index] -= cut
        excess -= cut
    while excess > 0:
        candidates = [i for i in shown if widths[i] > least[i]]
        if not candidates:
            break  # rule 4: run past the width
        index = max(candidates, key=lambda i: (widths[i] / natural[i], widths[i]))
        widths[index] -= 1
        excess -= 1
    hidden = tuple(columns[i].header for i in range(len(columns)) if i not in shown)
    return Layout(shown=tuple(shown), widths=tuple(widths[i] for i in shown), hidden=hidden)


def render(columns: Sequence[Column], rows: Sequence[Sequence[str]], layout: Layout) -> list[str]:
    """The header line, then one line per row, cells shortened to the layout's widths."""

    def line(cells: Sequence[str]) -> str:
        parts = [middle(cells[i], w).ljust(w) for i, w in zip(layout.shown, layout.widths, strict=True)]
        return (" " * GAP).join(parts).rstrip()

    return [line([c.header for c in columns]), *(line(row) for row in rows)]
