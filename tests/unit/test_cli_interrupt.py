"""`pyrsia.cli.interrupt`: what a command registers as partial goes when it fails, and stays
when it completes; download threads see Ctrl-C through `check()`. (The signal, the
watchdog and the exit code are tested on a real pull in tests/integration.)"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pyrsia.cli import interrupt


@pytest.fixture(autouse=True)
def not_cancelled() -> Iterator[None]:
    interrupt.cancelled.clear()
    yield
    interrupt.cancelled.clear()


def test_a_completed_block_keeps_its_file_and_forgets_it(tmp_path: Path) -> None:
    target = tmp_path / "done.part"
    with interrupt.partial(target):
        target.write_bytes(b"whole")
    assert target.read_bytes() == b"whole"
    assert target not in interrupt._partials


@pytest.mark.parametrize("error", [ValueError("failed"), interrupt.Interrupted()])
def test_a_failed_or_interrupted_block_removes_its_file_or_directory(
    tmp_path: Path, error: BaseException
) -> None:
    file, directory = tmp_path / "blob.part", tmp_path / "layout"
    with pytest.raises(type(error)), interrupt.partial(file), interrupt.partial(directory):
        file.write_bytes(b"half")
        (directory / "blobs").mkdir(parents=True)
        (directory / "blobs" / "x").write_bytes(b"half")
        raise error
    assert not file.exists() and not directory.exists()
    assert interrupt._partials == []


def test_check_raises_only_after_ctrl_c() -> None:
    interrupt.check()
    interrupt.cancelled.set()
    with pytest.raises(interrupt.Interrupted):
        interrupt.check()


def test_interrupted_is_not_an_exception_handlers_swallow() -> None:
    assert not issubclass(interrupt.Interrupted, Exception)
