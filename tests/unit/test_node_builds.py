"""Build targets are parsed before anything runs; approvals survive a restart."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pyrsia.errors import BuildUnknown, RegistryError, StorageError, UsageError
from pyrsia.formats.build_target import check_target, maven_paths
from pyrsia.node.approvals import Approvals
from pyrsia.node.builds import Publications


@pytest.mark.parametrize("target", ["Alpine:1", "alpine:", "alpine@sha256:xyz", "alpine:bad tag", "../x:1"])
def test_bad_targets_are_refused_before_a_build_starts(target: str) -> None:
    with pytest.raises((UsageError, RegistryError)):
        check_target("docker", target)
    with pytest.raises((UsageError, RegistryError)):
        Publications().start("docker", target, "this node", 0.0)


def test_maven_targets_are_coordinates() -> None:
    assert maven_paths("com.example:lib-a:1.0") == [
        "com/example/lib-a/1.0/lib-a-1.0.pom",
        "com/example/lib-a/1.0/lib-a-1.0.jar",
    ]
    for bad in ("com.example:lib-a", "a:b:c:d", "::1", "com.example:../x:1.0"):
        with pytest.raises((UsageError, RegistryError)):
            maven_paths(bad)


def test_a_running_build_of_one_target_is_joined_not_repeated() -> None:
    builds = Publications(kept=2)
    first, new = builds.start("docker", "alpine:3.18", "this node", 1.0)
    again, joined_new = builds.start("docker", "alpine:3.18", "this node", 2.0)
    assert new and not joined_new and again is first
    first.finish("committed", 3.0, height=4)
    assert first.done.is_set() and builds.get(first.id).height == 4
    later, new = builds.start("docker", "alpine:3.18", "this node", 4.0)
    assert new and later.id != first.id
    builds.start("maven", "g:a:1", "this node", 5.0)
    with pytest.raises(BuildUnknown):
        builds.get(first.id)  # only the newest are kept
    with pytest.raises(UsageError):
        builds.start("npm", "left-pad", "this node", 6.0)


def test_approvals_are_kept_across_restarts_and_a_damaged_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "consensus" / "approvals.json"
    approvals = Approvals(path)
    assert not approvals.has("12D3KooWpeer", "add")
    approvals.approve("12D3KooWpeer", "add")
    again = Approvals(path)
    assert again.has("12D3KooWpeer", "add") and not again.has("12D3KooWpeer", "remove")
    assert again.entries() == [{"peer_id": "12D3KooWpeer", "action": "add"}]
    path.write_text("{not json")
    with pytest.raises(StorageError, match="move it aside"):
        Approvals(path)
    path.write_text(json.dumps({"a": 1}))
    with pytest.raises(StorageError):
        Approvals(path)
