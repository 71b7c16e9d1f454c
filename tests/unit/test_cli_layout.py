"""`pyrsia.cli.layout`: tables that fit 80 and 120 columns and keep what a user copies.

Driven directly with rows shaped like `pyrsia log search` and `pyrsia peers` output:
long peer ids, sha256 digests, Maven paths and author names.
"""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyrsia.cli import layout
from pyrsia.cli.log import SEARCH_COLUMNS

PEER = "12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo"


def digest(seed: int) -> str:
    return "sha256:" + hashlib.sha256(str(seed).encode()).hexdigest()


def search_rows(count: int) -> list[list[str]]:
    return [
        [
            str(100 + i),
            "2026-12-06 23:25:55",
            "maven",
            "central",
            f"org.apache.commons:commons-lang3:3.{i}.0",
            f"org/apache/commons/commons-lang3/3.{i}.0/commons-lang3-3.{i}.0-sources.jar",
            digest(i),
            "256 KiB",
            hashlib.sha256(str(-i).encode()).hexdigest(),
            "Ada Lovelace <ada.lovelace@analytical-engine.example.org>",
        ]
        for i in range(count)
    ]


@pytest.mark.parametrize("width", [80, 120])
def test_log_search_fits_and_keeps_a_copyable_digest_prefix(width: int) -> None:
    rows = search_rows(5)
    fitted = layout.fit(SEARCH_COLUMNS, rows, width)
    lines = layout.render(SEARCH_COLUMNS, rows, fitted)
    assert all(len(line) <= width for line in lines), [len(line) for line in lines]
    shown = [SEARCH_COLUMNS[i].header for i in fitted.shown]
    assert {"height", "package_id", "path", "digest"} <= set(shown)
    for row, line in zip(rows, lines[1:], strict=True):
        assert row[6][:18] in line  # sha256: and 11 hex digits, to search by
        assert row[4][:8] in line


def test_at_120_columns_more_is_shown_than_at_80() -> None:
    rows = search_rows(3)
    narrow, wider = layout.fit(SEARCH_COLUMNS, rows, 80), layout.fit(SEARCH_COLUMNS, rows, 120)
    assert len(wider.shown) > len(narrow.shown) or sum(wider.widths) > sum(narrow.widths)


def test_wide_shows_every_column_and_value_whole() -> None:
    rows = search_rows(2)
    fitted = layout.fit(SEARCH_COLUMNS, rows, 80, wide=True)
    lines = layout.render(SEARCH_COLUMNS, rows, fitted)
    assert fitted.hidden == () and len(fitted.shown) == len(SEARCH_COLUMNS)
    for row, line in zip(rows, lines[1:], strict=True):
        assert all(value in line for value in row)
        assert layout.ELLIPSIS not in line


def test_a_table_that_fits_is_left_alone() -> None:
    columns = [layout.id_column("peer id"), layout.fixed("rtt ms")]
    rows = [[PEER, "1.5"]]
    fitted = layout.fit(columns, rows, 120)
    assert layout.render(columns, rows, fitted)[1] == f"{PEER}  1.5"


def test_middle_keeps_the_start_and_a_tail() -> None:
    short = layout.middle(PEER, layout.ID_CHARS_MIN)
    assert len(short) == layout.ID_CHARS_MIN
    head, tail = short.split(layout.ELLIPSIS)
    assert PEER.startswith(head) and PEER.endswith(tail) and len(head) >= 16 and tail
    assert layout.middle("short", 10) == "short"


def test_hidden_columns_are_named_and_never_the_key_ones() -> None:
    rows = search_rows(1)
    fitted = layout.fit(SEARCH_COLUMNS, rows, 80)
    assert fitted.hidden
    undroppable = {c.header for c in SEARCH_COLUMNS if c.drop == 0}
    assert not undroppable & set(fitted.hidden)


@given(
    width=st.integers(min_value=40, max_value=300),
    values=st.lists(
        st.tuples(st.text(min_size=0, max_size=90), st.text(min_size=0, max_size=90)), max_size=6
    ),
)
def test_any_table_fits_once_its_minimums_do(width: int, values: list[tuple[str, str]]) -> None:
    columns = [layout.id_column("id"), layout.Column(header="name", drop=1)]
    rows = [[PEER + a.replace("\n", " "), b.replace("\n", " ")] for a, b in values]
    fitted = layout.fit(columns, rows, width)
    for row, line in zip(rows, layout.render(columns, rows, fitted)[1:], strict=True):
        assert len(line) <= width  # the id's minimum (24) always fits in 40
        assert line.startswith(layout.middle(row[0], fitted.widths[0]).rstrip()[:16])
