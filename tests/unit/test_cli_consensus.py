"""The build and authority commands' parsing and rendering, without a node: what a
build document and an authorities document look like on a terminal, which final states
fail the command, and which arguments typer refuses before any call is made."""

from __future__ import annotations

from typing import Any

import pytest
from typer.testing import CliRunner

from pyrsia.cli import authorities, build
from pyrsia.cli.app import app
from pyrsia.errors import PyrsiaError, UsageError

ME = "12D3KooWGB8xhz81oyJXnCSH8JmLr7DJMjAcJycAmCqoMnizCpsQ"
OTHER = "12D3KooWDcCpT68LkwzbPHjGgFY857qe9p3RyCHudPw5BXFGU2yj"


def build_doc(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": "0123456789abcdef", "kind": "maven", "target": "com.example:hello:1.0", "state": "running",
        "error": None, "height": None, "started_at": 0.0, "finished_at": None, "via": "authorities",
        "transactions": [{"tx_id": "ab" * 32, "path": "com/example/hello/1.0/hello-1.0.jar",
                          "digest": "sha256:" + "1" * 64, "state": "pending"}],
        "verdicts": [{"authority": ME, "verdict": "pending", "reason": ""},
                     {"authority": OTHER, "verdict": "refused", "reason": "Central sent other bytes"}],
    }  # fmt: skip
    return doc | changes


@pytest.fixture(autouse=True)
def table_output(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("xdg")))
    monkeypatch.setenv("COLUMNS", "250")


def test_a_running_build_renders_every_part(capsys: pytest.CaptureFixture[str]) -> None:
    build.render(build_doc())
    out = capsys.readouterr().out
    for text in (
        "build 0123456789abcdef",
        "maven com.example:hello:1.0",
        "hello-1.0.jar",
        "ab" * 32,
        "pending",
    ):
        assert text in out
    assert "Central sent other bytes" in out and "1970-01-01 00:00:00" in out
    assert out.splitlines()[-1] == "state running"


def test_a_build_without_transactions_or_verdicts_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    build.render(build_doc(state="failed", error="no such tag", transactions=[], verdicts=[]))
    out = capsys.readouterr().out
    assert "no transactions yet" in out and "no verdicts yet" in out and "no such tag" in out


def test_a_running_build_is_not_a_failure_unless_waited_for(capsys: pytest.CaptureFixture[str]) -> None:
    build._finish(build_doc(), False, waited=False)
    with pytest.raises(PyrsiaError, match="still running after 2 s"):
        build._finish(build_doc(), False, waited=True, timeout_s=2.0)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"state": "refused"}, "refused: 12D3KooWDcCpT68L… refused: Central sent other bytes"),
        ({"state": "failed", "error": "upstream unreachable"}, "failed: upstream unreachable"),
        ({"state": "failed", "verdicts": []}, "failed: no reason given"),
    ],
)
def test_refused_and_failed_builds_fail_the_command_with_their_reason(
    capsys: pytest.CaptureFixture[str], changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(PyrsiaError, match=message) as caught:
        build._finish(build_doc(**changes), True, waited=True)
    assert caught.value.exit_code == 1
    assert '"state"' in capsys.readouterr().out  # the document is still printed first


def test_a_committed_build_succeeds(capsys: pytest.CaptureFixture[str]) -> None:
    build._finish(build_doc(state="committed", height=4, finished_at=1.0), False, waited=True)
    captured = capsys.readouterr()
    assert captured.out.splitlines()[-1] == "state committed"
    assert "committed at height 4" in captured.err


def test_the_authorities_render_as_tables(capsys: pytest.CaptureFixture[str]) -> None:
    authorities.render(
        {
            "height": 9,
            "quorum": 2,
            "authorities": [ME, OTHER],
            "me": OTHER,
            "is_authority": True,
            "approvals": [],
            "pending": [
                {
                    "tx_id": "cd" * 32,
                    "action": "remove",
                    "peer_id": ME,
                    "submitter": OTHER,
                    "endorsed_by": [OTHER],
                }
            ],
        }
    )
    out = capsys.readouterr().out
    assert "2 authorities at height 9, quorum 2" in out
    assert "approved by this node's admin (0)" in out and "pending authority changes (1)" in out
    assert "1 of 2 needed" in out and "remove" in out
    assert out.splitlines()[-1] == f"this node {OTHER} is an authority"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["build", "status"], "Missing argument 'ID'"),
        (["build", "docker"], "Missing argument"),
        (["build", "status", "0123456789abcdef", "--timeout", "0"], "--timeout"),
        (["authorize"], "Missing option '--peer'"),
        (["authorize-node"], "Missing argument 'PEER_ID'"),
        (["genesis", "-a", ME], "Missing option '--output'"),
        (["devnet", "up", "--authorities", "0"], "--authorities"),
    ],
)
def test_typer_refuses_incomplete_commands(args: list[str], needle: str) -> None:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert needle in result.output


def test_targets_are_checked_before_any_call() -> None:
    from pyrsia.registry.api import check_target

    check_target("docker", "alpine")
    check_target("maven", "com.example:hello:1.0")
    with pytest.raises(UsageError, match="GROUP:ARTIFACT:VERSION"):
        check_target("maven", "com.example:hello:jar:sources:1.0")
    with pytest.raises(UsageError, match="not an image reference"):
        check_target("docker", "UPPER")
