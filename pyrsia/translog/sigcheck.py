"""Ed25519 checks of a synced batch in a helper process.

Why a process. A batch of 2,048 synced blocks carries at least 4,096 certificate
signatures, about 60 µs of libsodium each. PyNaCl drops the GIL for each check and
takes it back after, so checks on threads of the node wait for the GIL at every
signature while the node's other threads decode, apply and index blocks in Python.
Measured on a 2-core machine, the hand-overs cost more CPU than the checks. A helper
process checks the batch on a core of its own, with no GIL in common, and answers with
one byte per signature.

The helper is this module run alone (`python -m pyrsia.translog.sigcheck`, or the
single executable with `HELPER_ARG`): it imports PyNaCl and msgpack, nothing of the node.
It reads requests on stdin and answers on stdout, ignores Ctrl-C (the node ends it by
closing stdin) and exits when stdin closes, so a node killed with -9 leaves no helper
behind. The node starts it at the first large batch; if it cannot be started, dies, or
answers late or wrong, the log's writer checks that batch's blocks itself as it applies
them: a helper that fails slows a batch down, never lets it through unchecked.

Wire: each message is a 4-byte big-endian length and that many bytes. A request is a
msgpack array of `[public key, message, signature]` arrays; the answer holds one byte per
item, 1 when the signature verifies.
"""

from __future__ import annotations

import logging
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import BinaryIO

import msgpack
from nacl.bindings import crypto_sign_BYTES, crypto_sign_open, crypto_sign_PUBLICKEYBYTES
from nacl.exceptions import BadSignatureError

log = logging.getLogger("pyrsia.translog")
HELPER_ARG = "--pyrsia-signature-helper"
REQUEST_BYTES_MAX = 64 * 1024 * 1024
ANSWER_S_MIN = 10.0  # a helper that has not answered by then (plus per item) is dropped
ANSWER_S_PER_ITEM = 0.001
FAILURES_MAX = 3  # helpers that failed before the node stops starting new ones
_LENGTH = 4

Item = tuple[bytes, bytes, bytes]  # (public key, message, signature)


def encode_request(items: Sequence[Item]) -> bytes:
    body: bytes = msgpack.packb([list(item) for item in items], use_bin_type=True)
    return len(body).to_bytes(_LENGTH, "big") + body


def decode_request(body: bytes) -> list[Item | None]:
    """The items of a request; None for an item of the wrong shape (it cannot verify).
    ValueError when the request is not an array."""
    try:
        doc = msgpack.unpackb(body, raw=False, use_list=True)
    except Exception as exc:  # msgpack raises several kinds for bad input
        raise ValueError(f"request does not decode: {exc}") from exc
    if not isinstance(doc, list):
        raise ValueError("request is not an array")
    items: list[Item | None] = []
    for entry in doc:
        if (
            isinstance(entry, list)
            and len(entry) == 3
            and all(isinstance(part, bytes) for part in entry)
            and len(entry[0]) == crypto_sign_PUBLICKEYBYTES
            and len(entry[2]) == crypto_sign_BYTES
        ):
            items.append((entry[0], entry[1], entry[2]))
        else:
            items.append(None)
    return items


def verifies(item: Item | None) -> bool:
    if item is None:
        return False
    key, message, signature = item
    try:
        crypto_sign_open(signature + message, key)
    except (BadSignatureError, ValueError):
        return False
    return True


def answer(items: Sequence[Item | None]) -> bytes:
    flags = bytes(verifies(item) for item in items)
    return len(flags).to_bytes(_LENGTH, "big") + flags


def _read_exactly(stream: BinaryIO, n: int) -> bytes | None:
    data = stream.read(n)
    return data if data is not None and len(data) == n else None


def serve(requests: BinaryIO, answers: BinaryIO) -> None:
    """The helper's loop: answer each request until `requests` ends (or is malformed)."""
    while True:
        head = _read_exactly(requests, _LENGTH)
        if head is None:
            return
        length = int.from_bytes(head, "big")
        if length > REQUEST_BYTES_MAX:
            return
        body = _read_exactly(requests, length)
        if body is None:
            return
        try:
            items = decode_request(body)
        except ValueError:
            return
        answers.write(answer(items))
        answers.flush()


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the node ends the helper, not the terminal
    serve(sys.stdin.buffer, sys.stdout.buffer)


def helper_command() -> list[str]:
    if getattr(sys, "frozen", False):  # the single executable: its entry point runs `main`
        return [sys.executable, HELPER_ARG]
    return [sys.executable, "-m", "pyrsia.translog.sigcheck"]


class HelperFailed(Exception):
    """The helper could not answer: the caller checks the batch itself."""


class SignatureHelper:
    """The node's side: one helper process, started on first use, one request at a time."""

    def __init__(self, command: Sequence[str] | None = None, answer_s_min: float = ANSWER_S_MIN) -> None:
        self._command = list(command) if command is not None else helper_command()
        self._answer_s_min = answer_s_min
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._failures = 0
        self._closed = False

    def check(self, items: Sequence[Item]) -> list[bool] | None:
        """Whether each signature verifies; None when the helper cannot say (check them
        some other way)."""
        request = encode_request(items)
        if len(request) > _LENGTH + REQUEST_BYTES_MAX:  # the helper would refuse it: not its failure
            return None
        with self._lock:
            if self._closed or self._failures >= FAILURES_MAX:
                return None
            try:
                process = self._started()
                data = _exchange(process, request, self._answer_s_min + ANSWER_S_PER_ITEM * len(items))
                if len(data) != _LENGTH + len(items) or int.from_bytes(data[:_LENGTH], "big") != len(items):
                    raise HelperFailed(f"it answered {len(data)} bytes for {len(items)} signatures")
            except (OSError, HelperFailed) as exc:
                self._failures += 1
                log.warning(
                    "signature helper failed (%s); this batch is checked in the node%s",
                    exc,
                    "" if self._failures < FAILURES_MAX else ", and so are all from now on",
                )
                self._stop()
                return None
            return [flag == 1 for flag in data[_LENGTH:]]

    @property
    def pid(self) -> int | None:
        """The helper's process id while it runs."""
        process = self._process
        return process.pid if process is not None else None

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._stop()

    def _started(self) -> subprocess.Popen[bytes]:
        if self._process is None:
            self._process = subprocess.Popen(
                self._command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                close_fds=True,
            )
        return self._process

    def _stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        for pipe in (process.stdin, process.stdout):
            if pipe is not None:
                pipe.close()
        try:
            process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _exchange(process: subprocess.Popen[bytes], request: bytes, timeout_s: float) -> bytes:
    """Send `request`, read the whole answer; `HelperFailed` past the deadline or at EOF."""
    assert process.stdin is not None and process.stdout is not None
    deadline = time.monotonic() + timeout_s
    out, inp = process.stdin.fileno(), process.stdout.fileno()
    os.set_blocking(out, False)
    os.set_blocking(inp, False)
    pending = memoryview(request)
    received = bytearray()
    expected: int | None = None
    with selectors.DefaultSelector() as selector:
        selector.register(out, selectors.EVENT_WRITE)
        selector.register(inp, selectors.EVENT_READ)
        while expected is None or len(received) < expected:
            left = deadline - time.monotonic()
            if left <= 0:
                raise HelperFailed(f"no answer within {timeout_s:.0f} s")
            for key, _events in selector.select(left):
                if key.fd == out:
                    try:
                        pending = pending[os.write(out, pending) :]
                    except BlockingIOError:
                        continue
                    if not pending:
                        selector.unregister(out)
                else:
                    try:
                        chunk = os.read(inp, 1 << 20)
                    except BlockingIOError:
                        continue
                    if not chunk:
                        raise HelperFailed("it exited")
                    received += chunk
                    if expected is None and len(received) >= _LENGTH:
                        expected = _LENGTH + int.from_bytes(received[:_LENGTH], "big")
    return bytes(received)


if __name__ == "__main__":
    main()
