"""The peer HTTP data plane between real Hosts and real HTTP listeners, in one process.

Providers run the real `ExchangeServer` (which advertises the port of their peer HTTP
listener in its chunk lists) and a real `HttpServer` with `PeerBlobApp`; hostile
providers are real Hosts whose chunk lists are true but whose advertised HTTP port
leads to a small server that lies in one way (wrong bytes, stalls, short body, 503).
The downloader is the real `PeerSource`.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pyrsia.artifacts.blobstore import BlobStore
from pyrsia.artifacts.exchange_service import (
    DownloadConfig,
    ExchangeServer,
    ExchangeStats,
    PeerSource,
    ServeConfig,
)
from pyrsia.artifacts.sources import Sources
from pyrsia.http.server import HttpServer, Limits
from pyrsia.p2p.behaviours.exchange import wire
from pyrsia.p2p.behaviours.exchange.scheduler import ExchangeConfig
from pyrsia.p2p.swarm.host import Host
from pyrsia.registry.peer_api import PeerBlobApp
from pyrsia.translog.chunks import CHUNK_BYTES
from tests.integration.test_exchange import BLOB, DIGEST, HASHES, ROOT, WANTED, _host, _serve

FAST_STALL = DownloadConfig(exchange=ExchangeConfig(stall_timeout_s=3.0), read_timeout_s=20.0)


class HttpNet:
    """Hosts, listeners and hostile servers made for one test; all stopped at its end."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.hosts: list[Host] = []
        self.servers: list[HttpServer] = []
        self.closers: list[Callable[[], None]] = []

    def provider(self, *, http: bool = True) -> tuple[Host, PeerBlobApp | None]:
        host = _host()
        self.hosts.append(host)
        store = BlobStore(self.root / host.peer_id / "blobs")
        store.put(DIGEST, BLOB, "test")
        stats = ExchangeStats()
        app = None
        port = 0
        if http:
            app = PeerBlobApp(store, lambda d: d == DIGEST, stats=stats)
            server = HttpServer(app, "127.0.0.1", 0, Limits())
            server.start()
            self.servers.append(server)
            port = server.address[1]
        ExchangeServer(
            store, lambda d: d == DIGEST, config=ServeConfig(http_port=port), stats=stats
        ).register(host)
        return host, app

    def hostile(self, answer: Callable[[socket.socket, bytes], None]) -> Host:
        """A Host with a true chunk list that points at an HTTP server calling `answer`."""
        listener = socket.create_server(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        stop = threading.Event()
        conns: list[socket.socket] = []

        def serve() -> None:
            while not stop.is_set():
                try:
                    conn, _ = listener.accept()
                except OSError:
                    return
                conns.append(conn)
                threading.Thread(target=self._answer, args=(conn, answer), daemon=True).start()

        threading.Thread(target=serve, daemon=True).start()

        def close() -> None:
            stop.set()
            listener.close()
            for conn in conns:
                conn.close()

        self.closers.append(close)
        host = _host()
        self.hosts.append(host)
        chunk_list = wire.ChunkList(
            digest=DIGEST, size=len(BLOB), chunk_size=CHUNK_BYTES, hashes=tuple(HASHES), http_port=port
        )
        host.set_handler(
            wire.PROTOCOL_ID, lambda s: _serve(s, chunk_list=lambda: chunk_list, chunk=lambda i: b"")
        )
        return host

    @staticmethod
    def _answer(conn: socket.socket, answer: Callable[[socket.socket, bytes], None]) -> None:
        try:
            data = b""
            while True:
                while b"\r\n\r\n" not in data:
                    more = conn.recv(65536)
                    if not more:
                        return
                    data += more
                head, _, data = data.partition(b"\r\n\r\n")
                answer(conn, head)
        except OSError:
            return

    def downloader(
        self, providers: list[Host], config: DownloadConfig = FAST_STALL
    ) -> tuple[BlobStore, PeerSource]:
        host = _host()
        self.hosts.append(host)
        for provider in providers:
            host.add_addresses(provider.peer_id, provider.listen_addrs)
        store = BlobStore(self.root / host.peer_id / "blobs")
        ids = [p.peer_id for p in providers]
        return store, PeerSource(host, store, lambda d: ids, config=config, stats=ExchangeStats())

    def stop(self) -> None:
        for close in self.closers:
            close()
        for server in self.servers:
            server.shutdown(5.0)
        for host in self.hosts:
            host.stop()


@pytest.fixture
def net(tmp_path: Path) -> Iterator[HttpNet]:
    n = HttpNet(tmp_path)
    try:
        yield n
    finally:
        n.stop()


def _obtain(store: BlobStore, source: PeerSource) -> None:
    stored = Sources(store, [source]).obtain(WANTED)
    assert stored.digest == DIGEST and stored.chunk_root == ROOT
    assert hashlib.sha256(stored.path.read_bytes()).hexdigest() == DIGEST.hex


def _range_of(head: bytes) -> tuple[int, int]:
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"range: bytes="):
            start, _, end = line.split(b"=", 1)[1].partition(b"-")
            return int(start), int(end)
    raise AssertionError(head)


def _reply(conn: socket.socket, status: str, body: bytes, *headers: str) -> None:
    head = "".join(f"{h}\r\n" for h in (f"HTTP/1.1 {status}", f"Content-Length: {len(body)}", *headers))
    conn.sendall(head.encode() + b"\r\n" + body)


def flipped(conn: socket.socket, head: bytes) -> None:
    start, end = _range_of(head)
    body = bytearray(BLOB[start : end + 1])
    for offset in range(0, len(body), CHUNK_BYTES):  # every chunk of the run is wrong
        body[offset] ^= 0xFF
    _reply(conn, "206 Partial Content", bytes(body), f"Content-Range: bytes {start}-{end}/{len(BLOB)}")


def stalls(conn: socket.socket, head: bytes) -> None:
    del head
    threading.Event().wait(60)  # never answers; the downloader must give up first


def short(conn: socket.socket, head: bytes) -> None:
    start, end = _range_of(head)
    body = BLOB[start : end + 1]
    head_out = f"HTTP/1.1 206 Partial Content\r\nContent-Length: {len(body)}\r\n"
    head_out += f"Content-Range: bytes {start}-{end}/{len(BLOB)}\r\n\r\n"
    conn.sendall(head_out.encode() + body[: len(body) // 3])
    conn.close()


def busy(conn: socket.socket, head: bytes) -> None:
    del head
    _reply(conn, "503 Service Unavailable", b"busy", "Retry-After: 5")


def test_one_provider_over_http(net: HttpNet) -> None:
    provider, app = net.provider()
    store, source = net.downloader([provider])
    _obtain(store, source)
    snapshot = source.stats.snapshot()
    assert snapshot.received_bytes_by_peer_path == {(provider.peer_id, "http"): len(BLOB)}
    assert app is not None and sum(app.stats.snapshot().served_bytes_by_peer_path.values()) >= len(BLOB)


def test_three_providers_over_http_share_the_blob(net: HttpNet) -> None:
    providers = [net.provider()[0] for _ in range(3)]
    # Capped, so that no one provider can deliver it all before the others are open.
    config = DownloadConfig(exchange=FAST_STALL.exchange, max_download_rate=16 * CHUNK_BYTES)
    store, source = net.downloader(providers, config)
    _obtain(store, source)
    by_path = source.stats.snapshot().received_bytes_by_peer_path
    assert {path for _, path in by_path} == {"http"}
    assert sum(by_path.values()) == len(BLOB)
    assert len([peer for (peer, _), size in by_path.items() if size > 0]) >= 2, by_path


def test_a_provider_without_http_is_served_over_p2p_beside_one_with(net: HttpNet) -> None:
    with_http, _ = net.provider()
    without, _ = net.provider(http=False)
    store, source = net.downloader([with_http, without])
    _obtain(store, source)
    by_path = source.stats.snapshot().received_bytes_by_peer_path
    assert set(by_path) <= {(with_http.peer_id, "http"), (without.peer_id, "p2p")}
    assert sum(by_path.values()) == len(BLOB)


def test_http_off_on_the_downloader_uses_the_p2p_exchange(net: HttpNet) -> None:
    provider, _ = net.provider()
    store, source = net.downloader([provider], DownloadConfig(http=False))
    _obtain(store, source)
    assert source.stats.snapshot().received_bytes_by_peer_path == {(provider.peer_id, "p2p"): len(BLOB)}


@pytest.mark.parametrize("answer", [flipped, stalls, short, busy], ids=lambda f: f.__name__)
def test_a_lying_or_stalling_http_provider_is_evicted_and_the_download_completes(
    net: HttpNet, answer: Callable[[socket.socket, bytes], None]
) -> None:
    honest, _ = net.provider()
    liar = net.hostile(answer)
    # Capped to take longer than the stall deadline: the liar must be found out, not outrun.
    config = DownloadConfig(exchange=FAST_STALL.exchange, max_download_rate=6 * CHUNK_BYTES)
    store, source = net.downloader([liar, honest], config)
    _obtain(store, source)
    snapshot = source.stats.snapshot()
    assert snapshot.evictions >= 1
    assert snapshot.received_bytes_by_peer_path.get((liar.peer_id, "http"), 0) == 0
    assert snapshot.received_bytes_by_peer_path[(honest.peer_id, "http")] == len(BLOB)


def test_a_provider_reached_only_through_a_relay_serves_over_the_p2p_exchange(tmp_path: Path) -> None:
    """A NATed provider advertises its HTTP port, but the downloader's only connection to it
    rides a relay's circuit: that address is the relay's, so the p2p exchange carries it all."""
    from pyrsia.p2p.behaviours.relay.hop import RelayLimits
    from pyrsia.p2p.identity import Identity
    from pyrsia.p2p.swarm.host import HostConfig
    from tests.support.wait import eventually

    def host(**changes: object) -> Host:
        config = HostConfig(listen_host="127.0.0.1", listen_port=0, **changes)  # type: ignore[arg-type]
        return Host(Identity.from_seed(os.urandom(32)), config).start()

    relay = host(relay_limits=RelayLimits(circuit_bytes_max=4 * len(BLOB)))
    # No hole punching: on loopback it would succeed, and this is about the relayed path.
    private = host(reachability="private", relay_service=False, hole_punching=False)
    downloader = host(relay_service=False, hole_punching=False)
    server: HttpServer | None = None
    try:
        store = BlobStore(tmp_path / "private")
        store.put(DIGEST, BLOB, "test")
        app = PeerBlobApp(store, lambda d: d == DIGEST)
        server = HttpServer(app, "127.0.0.1", 0, Limits())
        server.start()
        config = ServeConfig(http_port=server.address[1])
        ExchangeServer(store, lambda d: d == DIGEST, config=config).register(private)
        for end in (private, downloader):
            end.connect(str(relay.listen_addrs[0].with_peer(relay.peer_id)))
        eventually(lambda: bool(private.address_kinds()["relayed"]))
        (circuit,) = private.address_kinds()["relayed"]
        assert downloader.connect(circuit) == private.peer_id
        info = downloader.wait_identified(private.peer_id)
        assert info.relayed
        local = BlobStore(tmp_path / "downloader")
        source = PeerSource(downloader, local, lambda d: [private.peer_id], config=FAST_STALL)
        _obtain(local, source)
        assert source.stats.snapshot().received_bytes_by_peer_path == {(private.peer_id, "p2p"): len(BLOB)}
        assert app.stats.snapshot().served_bytes_by_peer_path == {}
        assert relay.stats().circuits_relayed >= 1
    finally:
        if server is not None:
            server.shutdown(5.0)
        for end in (downloader, private, relay):
            end.stop()


def test_an_http_port_that_cannot_be_reached_leaves_the_provider_on_the_p2p_exchange(
    net: HttpNet,
) -> None:
    """A provider behind a NAT that forwards only its p2p port (it dialled us): no eviction."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # bound, never listening: connections are refused
        host = _host()
        net.hosts.append(host)
        store = BlobStore(net.root / "unreachable")
        store.put(DIGEST, BLOB, "test")
        ExchangeServer(store, lambda d: d == DIGEST, config=ServeConfig(http_port=port)).register(host)
        local, source = net.downloader([host])
        _obtain(local, source)
    snapshot = source.stats.snapshot()
    assert snapshot.received_bytes_by_peer_path == {(host.peer_id, "p2p"): len(BLOB)}
    assert snapshot.evictions == 0
