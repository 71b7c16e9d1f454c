"""Two real Hosts on loopback in one process: dial, identify, ping, streams, limits."""

from __future__ import annotations

import contextlib
import hashlib
import os
import resource
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from pyrsia.errors import PeerError, PeerTimeout, PeerUnreachable, StreamClosed
from pyrsia.p2p.identity import Identity
from pyrsia.p2p.swarm.host import Host, HostConfig, PeerConnected, PeerEvent, PeerIdentified, Stream
from pyrsia.p2p.wire import yamux
from pyrsia.p2p.wire.multiaddr import tcp

LOOPBACK = HostConfig(listen_host="127.0.0.1", listen_port=0)


def _host(config: HostConfig = LOOPBACK) -> Host:
    return Host(Identity.from_seed(os.urandom(32)), config).start()


def _echo(stream: Stream) -> None:
    while data := stream.read():
        stream.write(data)


def _digest(stream: Stream) -> None:
    digest = hashlib.sha256()
    while data := stream.read(1 << 20):
        digest.update(data)
    stream.write(digest.digest())


@pytest.fixture
def pair() -> Iterator[tuple[Host, Host]]:
    dialer, listener = _host(), _host()
    listener.set_handler("/test/echo/1.0.0", _echo, workers=16, streams_per_peer_max=64)
    listener.set_handler("/test/digest/1.0.0", _digest)
    dialer.set_handler("/test/dialer-only/1.0.0", _echo)
    try:
        yield dialer, listener
    finally:
        dialer.stop()
        listener.stop()


def _connect(dialer: Host, listener: Host) -> None:
    assert dialer.connect(listener.listen_addrs[0].with_peer(listener.peer_id)) == listener.peer_id


def _poll(condition: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return
        time.sleep(0.01)
    raise AssertionError("condition not met in time")


def test_dial_identify_and_ping_both_ways(pair: tuple[Host, Host]) -> None:
    dialer, listener = pair
    events: list[PeerEvent] = []
    dialer.subscribe(events.append)
    _connect(dialer, listener)
    theirs = dialer.wait_identified(listener.peer_id)
    ours = listener.wait_identified(dialer.peer_id)
    assert "/test/echo/1.0.0" in theirs.protocols and "/ipfs/ping/1.0.0" in theirs.protocols
    assert "/test/dialer-only/1.0.0" in ours.protocols
    assert theirs.agent_version.startswith("pyrsia/")
    assert theirs.listen_addrs == (tcp("127.0.0.1", listener.listen_port),)
    assert theirs.direction == "outbound" and ours.direction == "inbound"
    assert theirs.early_muxer and ours.early_muxer
    # Each side saw the other's socket address, as the other observed it.
    assert ours.observed_addr == theirs.address
    assert theirs.observed_addr == ours.address
    assert dialer.ping(listener.peer_id) > 0
    assert listener.ping(dialer.peer_id) > 0
    info = dialer.peer_info(listener.peer_id)
    assert info is not None and info.rtt_s is not None and info.bytes_in > 0 and info.bytes_out > 0
    # The counts keep growing with the traffic, in every snapshot handed out.
    assert dialer.ping(listener.peer_id) > 0
    grown = dialer.peers()[listener.peer_id]
    assert grown.bytes_in > info.bytes_in and grown.bytes_out > info.bytes_out
    _poll(lambda: any(isinstance(e, PeerIdentified) for e in events))
    assert PeerConnected(peer_id=listener.peer_id) in events


def test_handlers_registered_later_are_pushed(pair: tuple[Host, Host]) -> None:
    dialer, listener = pair
    _connect(dialer, listener)
    dialer.wait_identified(listener.peer_id)
    listener.set_handler("/test/late/1.0.0", _echo)

    def pushed() -> bool:
        info = dialer.peer_info(listener.peer_id)
        return info is not None and "/test/late/1.0.0" in info.protocols

    _poll(pushed)


def test_without_early_muxer_and_with_multistream_yamux() -> None:
    dialer = _host(HostConfig(listen_host="127.0.0.1", listen_port=0, early_muxer=False))
    listener = _host()
    listener.set_handler("/test/echo/1.0.0", _echo)
    try:
        _connect(dialer, listener)
        info = dialer.wait_identified(listener.peer_id)
        assert not info.early_muxer
        stream = dialer.open_stream(listener.peer_id, ["/test/echo/1.0.0"])
        stream.write(b"over multistream-negotiated yamux")
        stream.close()
        assert stream.read_all(1024) == b"over multistream-negotiated yamux"
    finally:
        dialer.stop()
        listener.stop()


def test_many_concurrent_streams(pair: tuple[Host, Host]) -> None:
    dialer, listener = pair
    _connect(dialer, listener)
    errors: list[BaseException] = []

    def one(index: int) -> None:
        try:
            stream = dialer.open_stream(listener.peer_id, ["/test/missing/1.0.0", "/test/echo/1.0.0"])
            assert stream.protocol == "/test/echo/1.0.0"
            payload = f"stream {index} ".encode() * 1000
            stream.write(payload)
            stream.close()
            assert stream.read_all(len(payload)) == payload
        except BaseException as exc:  # collected and re-raised in the test thread
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []


def test_stream_payload_bytes_are_counted_per_protocol_both_ways(pair: tuple[Host, Host]) -> None:
    dialer, listener = pair
    _connect(dialer, listener)
    stream = dialer.open_stream(listener.peer_id, ["/test/digest/1.0.0"])
    stream.write(b"x" * 100_000)
    stream.close()
    assert len(stream.read_exactly(32)) == 32
    echo = dialer.open_stream(listener.peer_id, ["/test/echo/1.0.0"])
    echo.write(b"y" * 1000)
    assert echo.read_exactly(1000) == b"y" * 1000
    echo.close()
    _poll(lambda: listener.stats().protocol_bytes_out.get("/test/echo/1.0.0") == 1000)
    sent, received = dialer.stats(), listener.stats()
    assert sent.protocol_bytes_out["/test/digest/1.0.0"] == 100_000
    assert received.protocol_bytes_in["/test/digest/1.0.0"] == 100_000
    assert received.protocol_bytes_out["/test/digest/1.0.0"] == 32
    assert sent.protocol_bytes_in["/test/digest/1.0.0"] == 32
    assert sent.protocol_bytes_out["/test/echo/1.0.0"] == 1000
    assert sent.protocol_bytes_in["/test/echo/1.0.0"] == 1000
    # Built-in behaviours (identify answers) are counted under their own ids too.
    assert any("/ipfs/id/" in protocol for protocol in received.protocol_bytes_out)
    assert "/test/missing/1.0.0" not in sent.protocol_bytes_out


def test_unknown_protocol_fails_only_that_stream(pair: tuple[Host, Host]) -> None:
    dialer, listener = pair
    _connect(dialer, listener)
    with pytest.raises(StreamClosed, match="none of the proposed"):
        dialer.open_stream(listener.peer_id, ["/test/missing/1.0.0"])
    assert dialer.ping(listener.peer_id) > 0


def test_large_transfer_is_intact_with_bounded_memory(pair: tuple[Host, Host]) -> None:
    dialer, listener = pair
    _connect(dialer, listener)
    stream = dialer.open_stream(listener.peer_id, ["/test/digest/1.0.0"])
    block = os.urandom(1 << 20)
    expected = hashlib.sha256()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for index in range(64):
        chunk = index.to_bytes(4, "big") + block[4:]
        expected.update(chunk)
        stream.write(chunk)
    stream.close()
    assert stream.read_exactly(32, timeout=120) == expected.digest()
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before
    assert grown_kib < 48 * 1024, f"peak RSS grew by {grown_kib} KiB moving 64 MiB"


def test_slow_reader_stops_the_writer(pair: tuple[Host, Host]) -> None:
    dialer, listener = pair
    release = threading.Event()
    received: list[Stream] = []

    def slow(stream: Stream) -> None:
        received.append(stream)
        release.wait(30)
        while stream.read(1 << 20):
            pass

    listener.set_handler("/test/slow/1.0.0", slow)
    _connect(dialer, listener)
    stream = dialer.open_stream(listener.peer_id, ["/test/slow/1.0.0"])
    with pytest.raises(PeerTimeout):
        stream.write(b"x" * (8 << 20), timeout=1.0)
    _poll(lambda: bool(received))
    # The receiver holds at most one window; the sender at most its backlog.
    buffered = sum(len(chunk) for chunk in received[0]._chunks)
    assert buffered <= listener.config.window_bytes
    release.set()


def test_a_window_grown_by_a_fast_reader_still_bounds_it_when_it_stalls(pair: tuple[Host, Host]) -> None:
    dialer, listener = pair
    stalled = threading.Event()
    release = threading.Event()
    received: list[Stream] = []
    total: list[int] = []

    def fast_then_stalled(stream: Stream) -> None:
        received.append(stream)
        got = 0
        while got < 16 << 20 and (data := stream.read(1 << 20)):
            got += len(data)
        stalled.set()
        release.wait(60)
        while data := stream.read(1 << 20):
            got += len(data)
        total.append(got)

    listener.set_handler("/test/stall/1.0.0", fast_then_stalled)
    _connect(dialer, listener)
    stream = dialer.open_stream(listener.peer_id, ["/test/stall/1.0.0"])
    block = os.urandom(1 << 20)
    for _ in range(16):
        stream.write(block, timeout=60.0)
    written = 16 << 20
    _poll(stalled.is_set, timeout=60)
    with pytest.raises(PeerTimeout):
        for _ in range(112):
            stream.write(block, timeout=3.0)
            written += len(block)
    # Whatever the window grew to, the stalled reader holds at most the stream's maximum.
    buffered = sum(len(chunk) for chunk in received[0]._chunks)
    assert buffered <= yamux.STREAM_WINDOW_BYTES_MAX
    release.set()
    stream.close()
    _poll(lambda: bool(total), timeout=60)
    assert written <= total[0] <= written + (1 << 20)


@pytest.mark.parametrize(
    "garbage",
    [
        b"\xff" * 16,  # not even a varint
        b"\x13/multistream/1.0.0\n\x07/noise\n\x00\x05hello",  # a Noise message 1 without a key
        # a valid message 1, then a message 3 that fails to decrypt
        b"\x13/multistream/1.0.0\n\x07/noise\n\x00\x20\x09" + bytes(31) + b"\x00\x40" + bytes(64),
    ],
)
def test_garbage_closes_only_its_own_connection(pair: tuple[Host, Host], garbage: bytes) -> None:
    dialer, listener = pair
    _connect(dialer, listener)
    with socket.create_connection(("127.0.0.1", listener.listen_port), timeout=10) as raw:
        raw.sendall(garbage)
        with contextlib.suppress(ConnectionResetError):
            while raw.recv(4096):
                pass  # whatever the listener answered; then it closes on the violation
    assert dialer.ping(listener.peer_id) > 0
    assert listener.is_connected(dialer.peer_id)


def test_wrong_peer_id_and_unreachable_address(pair: tuple[Host, Host]) -> None:
    dialer, listener = pair
    impostor = Identity.from_seed(os.urandom(32)).peer_id
    with pytest.raises(PeerUnreachable, match="reached"):
        dialer.connect(listener.listen_addrs[0].with_peer(impostor))
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    with pytest.raises(PeerUnreachable, match="refused"):
        dialer.connect(tcp("127.0.0.1", port))
    with pytest.raises(PeerUnreachable, match="no address"):
        dialer.open_stream(impostor, ["/test/echo/1.0.0"])


def test_handler_failure_resets_only_its_stream(pair: tuple[Host, Host]) -> None:
    dialer, listener = pair

    def broken(stream: Stream) -> None:
        raise PeerError("handler gave up")

    listener.set_handler("/test/broken/1.0.0", broken)
    _connect(dialer, listener)
    stream = dialer.open_stream(listener.peer_id, ["/test/broken/1.0.0"])
    with pytest.raises(StreamClosed, match="reset"):
        stream.read(timeout=10)
    echo = dialer.open_stream(listener.peer_id, ["/test/echo/1.0.0"])
    echo.write(b"still here")
    assert echo.read(timeout=10) == b"still here"


def test_open_stream_dials_known_addresses(pair: tuple[Host, Host]) -> None:
    dialer, listener = pair
    dialer.add_addresses(listener.peer_id, listener.listen_addrs)
    stream = dialer.open_stream(listener.peer_id, ["/test/echo/1.0.0"])
    stream.write(b"dialed on demand")
    assert stream.read(timeout=10) == b"dialed on demand"
    dialer.disconnect(listener.peer_id)
    _poll(lambda: not dialer.is_connected(listener.peer_id))
    with pytest.raises(PeerUnreachable, match="disconnected by us"):
        stream.read(timeout=10)
