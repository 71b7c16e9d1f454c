"""A relay slows a fast sender to its slow receiver's pace instead of resetting the circuit.

Real Hosts on loopback: R relays with no byte limit; B (private) reaches R through a
forwarder whose R-to-B direction the test can stop, as a receiver's link that stalls;
A, connected to R, dials B's circuit address. B runs yamux windows of 2 MiB (as
go-libp2p's yamux grows its windows, up to 16 MiB), so A may have 6 x 2 MiB in flight
on six streams: far beyond R's 8 MiB per-stream backlog bound once B's link stops.
With the link stopped, R must stop crediting A's leg of the circuit (`splices_held`)
rather than queue or reset; once it flows again every stream arrives whole.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import threading
from collections.abc import Iterator

import pytest

from pyrsia.p2p.behaviours.relay.hop import RelayLimits
from pyrsia.p2p.identity import Identity
from pyrsia.p2p.swarm.host import BEHAVIOUR_BACKLOG_BYTES_MAX, Host, HostConfig, Stream
from tests.support.wait import eventually

MIB = 1024 * 1024
SINK = "/test/sink/1.0.0"
RECEIVER_WINDOW_BYTES = 2 * MIB
STREAMS = 6
PAYLOAD_BYTES = RECEIVER_WINDOW_BYTES  # each stream's whole payload fits the receiver's window
PUMP_BYTES = 64 * 1024
POLL_S = 0.2


def _sink(stream: Stream) -> None:
    """Reads the stream to its end and answers the SHA-256 of what arrived."""
    digest = hashlib.sha256()
    while data := stream.read(timeout=60):
        digest.update(data)
    stream.write(digest.hexdigest().encode())


class Link:
    """A TCP forwarder to `target` whose target-to-client direction stops while `flowing`
    is clear: the target's sends fill the socket buffers, the client's credit stops."""

    def __init__(self, target: tuple[str, int]) -> None:
        self._target = target
        self.flowing = threading.Event()
        self.flowing.set()
        self._stop = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(POLL_S)
        self.port: int = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = []
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            upstream = socket.create_connection(self._target)
            self._sockets += [client, upstream]
            for src, dst, gated in ((client, upstream, False), (upstream, client, True)):
                thread = threading.Thread(target=self._pump, args=(src, dst, gated), daemon=True)
                self._threads.append(thread)
                thread.start()

    def _pump(self, src: socket.socket, dst: socket.socket, gated: bool) -> None:
        src.settimeout(POLL_S)
        while not self._stop.is_set():
            if gated and not self.flowing.wait(POLL_S):
                continue
            try:
                data = src.recv(PUMP_BYTES)
            except TimeoutError:
                continue
            except OSError:
                break
            if not data:
                break
            try:
                dst.sendall(data)
            except OSError:
                break
        for sock in (src, dst):
            with contextlib.suppress(OSError):  # the other pump may have shut it already
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._stop.set()
        self.flowing.set()
        self._listener.close()
        for thread in self._threads:
            thread.join(timeout=5)
        for sock in self._sockets:
            sock.close()


def _host(**changes: object) -> Host:
    config = HostConfig(listen_host="127.0.0.1", listen_port=0, **changes)  # type: ignore[arg-type]
    return Host(Identity.from_seed(os.urandom(32)), config)


@pytest.fixture
def circuit() -> Iterator[tuple[Host, Host, Host, Link]]:
    relay = _host(relay_limits=RelayLimits(circuit_bytes_max=0))
    receiver = _host(
        reachability="private",
        relay_service=False,
        hole_punching=False,
        window_bytes=RECEIVER_WINDOW_BYTES,
    )
    sender = _host(relay_service=False, hole_punching=False)
    receiver.set_handler(SINK, _sink)
    for host in (relay, receiver, sender):
        host.start()
    link = Link(("127.0.0.1", relay.listen_port))
    try:
        receiver.connect(f"/ip4/127.0.0.1/tcp/{link.port}/p2p/{relay.peer_id}")
        sender.connect(str(relay.listen_addrs[0].with_peer(relay.peer_id)))
        eventually(lambda: bool(receiver.address_kinds()["relayed"]))
        (address,) = receiver.address_kinds()["relayed"]
        assert sender.connect(address) == receiver.peer_id
        yield relay, receiver, sender, link
    finally:
        link.close()
        for host in (sender, receiver, relay):
            host.stop()


def test_a_stalled_receiver_holds_back_the_sender_and_the_circuit_survives(
    circuit: tuple[Host, Host, Host, Link],
) -> None:
    relay, receiver, sender, link = circuit
    streams = [sender.open_stream(receiver.peer_id, [SINK]) for _ in range(STREAMS)]
    info = sender.peer_info(receiver.peer_id)
    assert info is not None and info.relayed
    payloads = [os.urandom(PAYLOAD_BYTES) for _ in streams]
    assert STREAMS * PAYLOAD_BYTES > BEHAVIOUR_BACKLOG_BYTES_MAX + RECEIVER_WINDOW_BYTES

    link.flowing.clear()  # the receiver's link stalls: the relay can hand it nothing more
    errors: list[BaseException] = []

    def send(stream: Stream, payload: bytes) -> None:
        try:
            stream.write(payload, timeout=60)
            stream.close()
        except BaseException as exc:  # reported by the test, not lost in the thread
            errors.append(exc)

    writers = [threading.Thread(target=send, args=pair) for pair in zip(streams, payloads, strict=True)]
    for writer in writers:
        writer.start()
    # The relay stops crediting the sender's leg rather than queueing its bytes.
    eventually(lambda: relay.stats().relay.get("splices_held", 0) >= 1, lambda: f"{relay.stats()}")
    assert relay.stats().refusals.get("behaviour_backlog", 0) == 0

    link.flowing.set()
    answers = [stream.read_all(64 + 1, timeout=60) for stream in streams]
    for writer in writers:
        writer.join(timeout=60)
    assert not errors, errors
    assert [a.decode() for a in answers] == [hashlib.sha256(p).hexdigest() for p in payloads]
    assert relay.stats().refusals.get("behaviour_backlog", 0) == 0
    assert sender.is_connected(receiver.peer_id)
    assert relay.stats().relay["bytes_relayed"] >= STREAMS * PAYLOAD_BYTES
