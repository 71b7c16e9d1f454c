"""Records: durable JSON documents, one file each, replaced whole."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyrsia.artifacts.records import RecordStore
from pyrsia.errors import StorageError


def test_a_record_is_written_into_new_directories_and_replaced_whole(tmp_path: Path) -> None:
    records = RecordStore(tmp_path / "refs")
    key = "maven/com/example/hello/1.0/hello-1.0.jar@"
    assert records.get(key) is None
    records.put(key, {"sha256": "aa", "size": 1})
    records.put(key, {"sha256": "bb", "size": 2})
    assert records.get(key) == {"sha256": "bb", "size": 2}
    directory = tmp_path / "refs" / "maven/com/example/hello/1.0"
    assert [p.name for p in directory.iterdir()] == ["hello-1.0.jar@"]  # no temp file left
    assert records.keys("maven/com/example/hello/1.0") == ["hello-1.0.jar@"]


def test_a_record_that_cannot_be_written_is_a_storage_error(tmp_path: Path) -> None:
    (tmp_path / "refs").mkdir()
    (tmp_path / "refs" / "maven").write_text("a file where a directory should be")
    records = RecordStore(tmp_path / "refs")
    with pytest.raises(StorageError, match="cannot write"):
        records.put("maven/x/y@", {"size": 1})
