"""Batches of new files made durable with one sync of their filesystem (`durable.Watch`)."""

from __future__ import annotations

import os
import stat
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from pyrsia.durable import Watch, commit_staged, stage_file
from pyrsia.errors import StorageError


def test_a_watched_batch_lands_under_its_names_with_no_temp_left(tmp_path: Path) -> None:
    watch = Watch(tmp_path)
    try:
        staged = [(stage_file(tmp_path, f"file {i}".encode()), f"{i:03d}.dat") for i in range(20)]
        commit_staged(tmp_path, staged, watch)
    finally:
        watch.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{i:03d}.dat" for i in range(20)]
    assert (tmp_path / "007.dat").read_bytes() == b"file 7"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="syncfs(2) is Linux's")
def test_linux_syncs_the_filesystem_once_instead_of_each_file(tmp_path: Path) -> None:
    watch = Watch(tmp_path)
    assert watch.sync()
    watch.close()
    assert not watch.sync()  # closed: the caller fsyncs each file instead


def test_a_closed_watch_falls_back_to_fsyncs(tmp_path: Path) -> None:
    watch = Watch(tmp_path)
    watch.close()
    staged = [(stage_file(tmp_path, b"x"), name) for name in ("a", "b")]
    commit_staged(tmp_path, staged, watch)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]


def test_a_failed_rename_leaves_none_of_the_batch(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()  # renaming the second file into place fails
    watch = Watch(tmp_path)
    staged = [(stage_file(tmp_path, b"x"), name) for name in ("a", "b", "c")]
    with pytest.raises(StorageError, match="cannot write 3 file"):
        commit_staged(tmp_path, staged, watch)
    watch.close()
    assert [p.name for p in tmp_path.iterdir()] == ["b"]


def test_staged_files_from_many_threads_get_distinct_leftover_names(tmp_path: Path) -> None:
    with ThreadPoolExecutor(4) as pool:
        temps = list(pool.map(lambda i: stage_file(tmp_path, bytes([i % 256])), range(400)))
    assert len(set(temps)) == 400
    # What a restart's cleanup removes (`BlockFiles.remove_leftovers`): nothing else is there.
    assert sorted(str(p) for p in tmp_path.glob(".*.part")) == sorted(temps)
    assert Path(temps[7]).read_bytes() == bytes([7])


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o027, 0o640)])
def test_staged_files_take_their_mode_less_the_umask(tmp_path: Path, umask: int, mode: int) -> None:
    """As block files written in place do: a node run under umask 027 keeps its log from
    other users."""
    old = os.umask(umask)
    try:
        staged = stage_file(tmp_path, b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(staged).st_mode) == mode
