"""Reading a node's status for the peers each blob comes from, and the note on a bar."""

from __future__ import annotations

import io

from rich.console import Console
from rich.progress import Progress, TextColumn

from pyrsia.cli.console import Bar
from pyrsia.cli.pull import peers_by_digest, peers_note


def test_peer_transfers_are_read_from_the_status_document() -> None:
    status = {
        "exchange": {
            "transfers": [
                {"digest": "sha256:aa", "providers": ["p1", "p2"], "verified_chunks": 3},
                {"digest": "sha256:bb", "providers": ["p1"]},
                {"digest": "sha256:cc", "providers": []},
                {"digest": 7, "providers": ["p1"]},
                "not a transfer",
            ]
        }
    }
    assert peers_by_digest(status) == {"sha256:aa": 2, "sha256:bb": 1}


def test_a_status_without_transfers_names_no_peers() -> None:
    for status in ({}, {"exchange": None}, {"exchange": {"transfers": "x"}}, [], "down"):
        assert peers_by_digest(status) == {}


def test_the_note_follows_the_label_and_can_be_cleared() -> None:
    progress = Progress(TextColumn("{task.description}"), console=Console(file=io.StringIO()))
    task = progress.add_task("  abc", total=10)
    bar = Bar(progress, task, "  abc")
    bar(4)
    bar.note(peers_note(2))
    assert progress.tasks[0].description == "  abc  from 2 peers"
    assert progress.tasks[0].completed == 4
    bar.note(peers_note(1))
    assert progress.tasks[0].description == "  abc  from 1 peer"
    bar.note("")
    assert progress.tasks[0].description == "  abc"
