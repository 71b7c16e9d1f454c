"""pyrsia's libp2p stack against a real js-libp2p 3.2 node (tests/interop/node.mjs).

Both directions (js dials pyrsia, pyrsia dials js), with pyrsia offering early muxer
negotiation in its Noise payload and without it: identify lists each side's own
protocol to the other, ping works both ways, and a stream echoes both ways. Needs
node and the pinned npm packages (`.ci/install-tools` runs `npm ci`); a missing node
fails the test.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from pyrsia.p2p.identity import Identity
from pyrsia.p2p.swarm.host import Host, HostConfig, Stream

INTEROP = Path(__file__).resolve().parent.parent / "interop"
PY_ECHO = "/interop/py-echo/1.0.0"
JS_ECHO = "/interop/js-echo/1.0.0"
TIMEOUT_S = 30.0


class JsNode:
    """The js-libp2p harness as a child process speaking JSON lines (`flags`: node.mjs's;
    `prefix` runs it elsewhere, e.g. `nsenter --net=…` into a network namespace)."""

    def __init__(self, *flags: str, prefix: Sequence[str] = ()) -> None:
        node = shutil.which("node")
        assert node is not None, "node is not installed: run .ci/install-tools"
        installed = (INTEROP / "node_modules" / "libp2p").is_dir()
        assert installed, "js-libp2p is not installed: run .ci/install-tools"
        self.process = subprocess.Popen(
            [*prefix, node, str(INTEROP / "node.mjs"), *flags],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=INTEROP,
        )
        self._lines: queue.Queue[str] = queue.Queue()
        self._stderr: list[str] = []
        self._readers = [
            threading.Thread(target=self._pump, args=(self.process.stdout, self._lines.put), daemon=True),
            threading.Thread(target=self._pump, args=(self.process.stderr, self._stderr.append), daemon=True),
        ]
        for reader in self._readers:
            reader.start()
        ready = self._next()
        assert ready["op"] == "ready", ready
        self.peer_id: str = ready["peerId"]
        self.addrs: list[str] = ready["addrs"]
        self._id = 0

    @staticmethod
    def _pump(pipe: Any, sink: Any) -> None:
        for line in pipe:
            sink(line)

    def _next(self) -> dict[str, Any]:
        try:
            line = self._lines.get(timeout=TIMEOUT_S)
        except queue.Empty:
            stderr = "".join(self._stderr)
            raise AssertionError(f"js node said nothing in {TIMEOUT_S} s; stderr:\n{stderr}") from None
        return dict(json.loads(line))

    def call(self, op: str, **args: Any) -> dict[str, Any]:
        self._id += 1
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"id": self._id, "op": op, **args}) + "\n")
        self.process.stdin.flush()
        answer = self._next()
        assert answer.get("id") == self._id, answer
        assert answer["ok"], answer.get("error")
        return answer

    def stop(self) -> None:
        if self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for reader in self._readers:
            reader.join(10)
        for pipe in (self.process.stdout, self.process.stderr):
            if pipe is not None:
                pipe.close()


def _echo(stream: Stream) -> None:
    while data := stream.read():
        stream.write(data)


@pytest.fixture
def js() -> Iterator[JsNode]:
    node = JsNode()
    try:
        yield node
    finally:
        node.stop()


def _host(early_muxer: bool) -> Host:
    config = HostConfig(listen_host="127.0.0.1", listen_port=0, early_muxer=early_muxer)
    host = Host(Identity.from_seed(os.urandom(32)), config).start()
    host.set_handler(PY_ECHO, _echo)
    return host


def _exchange(host: Host, js: JsNode, early_muxer: bool) -> None:
    # pyrsia's view of js, from identify
    info = host.wait_identified(js.peer_id, timeout=TIMEOUT_S)
    assert JS_ECHO in info.protocols and "/ipfs/ping/1.0.0" in info.protocols
    assert info.agent_version.startswith("js-libp2p/3.2.0")
    assert info.early_muxer is early_muxer
    # js's view of pyrsia, from identify
    seen = js.call("identify", peer=host.peer_id)
    assert PY_ECHO in seen["protocols"] and "/ipfs/id/1.0.0" in seen["protocols"]
    assert seen["agent"].startswith("pyrsia/")
    assert f"/ip4/127.0.0.1/tcp/{host.listen_port}" in seen["addrs"]
    # ping both ways
    assert js.call("ping", peer=host.peer_id)["rtt_ms"] >= 0
    assert host.ping(js.peer_id, timeout=TIMEOUT_S) > 0
    # a stream each way
    payload = os.urandom(100_000)
    assert js.call("echo", peer=host.peer_id, protocol=PY_ECHO, data=payload.hex())["data"] == payload.hex()
    stream = host.open_stream(js.peer_id, [JS_ECHO], timeout=TIMEOUT_S)
    stream.write(payload)
    stream.close()
    assert stream.read_all(len(payload), timeout=TIMEOUT_S) == payload
    connections = js.call("connections")["connections"]
    assert [c["muxer"] for c in connections if c["peer"] == host.peer_id] == ["/yamux/1.0.0"]


@pytest.mark.parametrize("early_muxer", [True, False], ids=["early-muxer", "multistream-muxer"])
def test_js_dials_pyrsia(js: JsNode, early_muxer: bool) -> None:
    host = _host(early_muxer)
    try:
        dialed = js.call("dial", addr=str(host.listen_addrs[0].with_peer(host.peer_id)))
        assert dialed["peer"] == host.peer_id and dialed["encryption"] == "/noise"
        _exchange(host, js, early_muxer)
        info = host.peer_info(js.peer_id)
        assert info is not None and info.direction == "inbound"
    finally:
        host.stop()


@pytest.mark.parametrize("early_muxer", [True, False], ids=["early-muxer", "multistream-muxer"])
def test_pyrsia_dials_js(js: JsNode, early_muxer: bool) -> None:
    host = _host(early_muxer)
    try:
        assert host.connect(js.addrs[0], timeout=TIMEOUT_S) == js.peer_id
        _exchange(host, js, early_muxer)
        info = host.peer_info(js.peer_id)
        assert info is not None and info.direction == "outbound"
    finally:
        host.stop()
