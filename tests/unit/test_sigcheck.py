"""The signature helper process (`pyrsia.translog.sigcheck`): its wire, its loop, and the
node's side driving a real helper, one that fails, one that stalls, and one whose node
is killed with -9."""

from __future__ import annotations

import io
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import msgpack
import pytest
from nacl.signing import SigningKey

from pyrsia.translog import sigcheck
from pyrsia.translog.sigcheck import Item, SignatureHelper

KEY = SigningKey(bytes(range(32)))
OTHER = SigningKey(bytes(range(1, 33)))
DEADLINE_S = 30.0


def item(message: bytes, key: SigningKey = KEY, signer: SigningKey = KEY) -> Item:
    """`key`'s public key, `message`, and `signer`'s signature over it."""
    return bytes(key.verify_key), message, signer.sign(message).signature


# Reads a whole request, answers two flags whatever it held.
WRONG_SIZE = """
import sys
n = int.from_bytes(sys.stdin.buffer.read(4), "big")
sys.stdin.buffer.read(n)
sys.stdout.buffer.write(bytes([0, 0, 0, 2, 1, 1]))
sys.stdout.buffer.flush()
sys.stdin.buffer.read()
"""


def good_and_bad() -> tuple[list[Item], list[bool]]:
    good = item(b"block hash")
    items = [
        good,
        item(b"checkpoint\n1\nroot\n"),
        item(b"signed by another key", signer=OTHER),
        (good[0], b"another message", good[2]),
        (good[0], good[1], bytes(64)),
        item(b""),
    ]
    return items, [True, True, False, False, False, True]


def framed(body: bytes) -> bytes:
    return len(body).to_bytes(4, "big") + body


def test_answer_flags_each_signature() -> None:
    items, expected = good_and_bad()
    data = sigcheck.answer(sigcheck.decode_request(sigcheck.encode_request(items)[4:]))
    assert data == framed(bytes(expected))


def test_items_of_the_wrong_shape_do_not_verify() -> None:
    key, message, signature = item(b"m")
    body = msgpack.packb(
        [
            [key, message, signature],
            [key[:31], message, signature],  # short key
            [key, message, signature[:63]],  # short signature
            [key, message],  # two parts
            [key, "text", signature],  # not bytes
            7,
        ],
        use_bin_type=True,
    )
    items = sigcheck.decode_request(body)
    assert items[0] == (key, message, signature) and items[1:] == [None] * 5
    assert sigcheck.answer(items) == framed(bytes([1, 0, 0, 0, 0, 0]))


@pytest.mark.parametrize("body", [b"\xc1", msgpack.packb({"not": "an array"}), b""])
def test_a_request_that_is_not_an_array_is_refused(body: bytes) -> None:
    with pytest.raises(ValueError):
        sigcheck.decode_request(body)


def test_serve_answers_each_request_until_its_input_ends() -> None:
    items, expected = good_and_bad()
    requests = io.BytesIO(sigcheck.encode_request(items) + sigcheck.encode_request(items[:1]))
    answers = io.BytesIO()
    sigcheck.serve(requests, answers)
    assert answers.getvalue() == framed(bytes(expected)) + framed(b"\x01")


@pytest.mark.parametrize(
    "tail",
    [
        (sigcheck.REQUEST_BYTES_MAX + 1).to_bytes(4, "big"),  # too large: never read
        (100).to_bytes(4, "big") + b"short",  # ends inside a request
        framed(b"\xc1"),  # does not decode
        b"\x00\x00",  # ends inside a length
    ],
    ids=["oversized", "torn", "garbage", "torn length"],
)
def test_serve_stops_at_a_bad_request_after_answering_the_good_ones(tail: bytes) -> None:
    request = sigcheck.encode_request([item(b"m")])
    requests = io.BytesIO(request + tail + request)
    answers = io.BytesIO()
    sigcheck.serve(requests, answers)
    assert answers.getvalue() == framed(b"\x01")


def test_the_helper_process_checks_batches_and_ends_when_closed() -> None:
    helper = SignatureHelper()
    try:
        items, expected = good_and_bad()
        assert helper.check(items) == expected
        pid = helper.pid
        assert pid is not None
        many = [item(n.to_bytes(4, "big")) for n in range(3000)]  # larger than a pipe's buffer
        many[2999] = (many[2999][0], many[2999][1], bytes(64))
        assert helper.check(many) == [True] * 2999 + [False]
        assert helper.pid == pid  # one process for every batch
        assert helper.check([]) == []
    finally:
        helper.close()
    assert helper.pid is None and exited(pid)
    assert helper.check(items) is None  # closed: the caller checks


@pytest.mark.parametrize(
    ("script", "why"),
    [("", "it exited"), (WRONG_SIZE, "it answered 6 bytes for 1 signatures")],
    ids=["exits", "answers wrong"],
)
def test_a_helper_that_fails_leaves_the_check_to_the_caller(
    script: str, why: str, caplog: pytest.LogCaptureFixture
) -> None:
    helper = SignatureHelper([sys.executable, "-c", script])
    try:
        for _ in range(sigcheck.FAILURES_MAX + 2):
            assert helper.check([item(b"m")]) is None
        assert helper.pid is None
    finally:
        helper.close()
    failures = [r.getMessage() for r in caplog.records if "signature helper failed" in r.getMessage()]
    assert len(failures) == sigcheck.FAILURES_MAX  # then no more helpers are started
    assert all(why in message for message in failures)
    assert failures[-1].endswith("and so are all from now on")


def test_a_helper_that_stalls_is_dropped_at_its_deadline() -> None:
    helper = SignatureHelper([sys.executable, "-c", "import time; time.sleep(60)"], answer_s_min=0.5)
    try:
        started = time.monotonic()
        assert helper.check([item(b"m")] * 1500) is None  # more than a pipe holds: the write stalls too
        assert time.monotonic() - started < DEADLINE_S
        assert helper.pid is None
    finally:
        helper.close()


def test_a_request_too_large_for_the_helper_is_left_to_the_caller(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sigcheck, "REQUEST_BYTES_MAX", 1000)
    helper = SignatureHelper()
    try:
        assert helper.check([item(bytes(1000))]) is None
        assert helper.pid is None  # not even started: no failure counted
        assert helper.check([item(bytes(100))]) == [True]
    finally:
        helper.close()


def test_a_missing_helper_leaves_the_check_to_the_caller(tmp_path: Path) -> None:
    helper = SignatureHelper([str(tmp_path / "missing")])
    assert helper.check([item(b"m")]) is None
    helper.close()


def test_the_helper_ends_when_its_node_is_killed() -> None:
    """Its input closes with the node: a node killed with -9 leaves no helper behind."""
    node = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                """
                import sys, time
                from pyrsia.translog.sigcheck import SignatureHelper
                helper = SignatureHelper()
                assert helper.check([]) == []
                print(helper.pid, flush=True)
                time.sleep(600)
                """
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert node.stdout is not None
    try:
        pid = int(node.stdout.readline())
        assert not exited(pid, wait_s=0)
    finally:
        node.send_signal(signal.SIGKILL)
        node.wait()
        node.stdout.close()
    assert exited(pid)


def test_the_helper_ignores_ctrl_c() -> None:
    """Ctrl-C in a terminal reaches every process of the foreground group: the node ends
    the helper, not the key, and the helper prints no traceback."""
    helper = subprocess.Popen(
        [sys.executable, "-m", "pyrsia.translog.sigcheck"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert helper.stdin is not None and helper.stdout is not None
    helper.stdin.write(sigcheck.encode_request([item(b"m")]))
    helper.stdin.flush()
    assert helper.stdout.read(5) == framed(b"\x01")  # running, SIGINT ignored by now
    helper.send_signal(signal.SIGINT)
    helper.stdin.write(sigcheck.encode_request([item(b"m", signer=OTHER)]))
    helper.stdin.flush()
    assert helper.stdout.read(5) == framed(b"\x00")
    _out, err = helper.communicate(timeout=DEADLINE_S)
    assert helper.returncode == 0 and err == b""


def exited(pid: int, wait_s: float = DEADLINE_S) -> bool:
    """Whether process `pid` is gone (or a zombie) within `wait_s`."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return True
        if state in ("Z", "X"):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def test_the_helper_command_runs_this_module_unless_frozen(monkeypatch: pytest.MonkeyPatch) -> None:
    assert sigcheck.helper_command() == [sys.executable, "-m", "pyrsia.translog.sigcheck"]
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    assert sigcheck.helper_command() == [sys.executable, sigcheck.HELPER_ARG]
