"""The artifact exchange between real Hosts on loopback, in one process.

Providers run the real `ExchangeServer`; misbehaving ones are Hosts with a handler
built from the project's own codec that lies in one specific way. The downloader is
the real `PeerSource` behind `Sources`, writing into a real `BlobStore`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
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
from pyrsia.artifacts.sources import Sources, Wanted
from pyrsia.errors import ExchangeFailed, PeerError
from pyrsia.formats.digest import Digest
from pyrsia.p2p.behaviours.exchange import wire
from pyrsia.p2p.behaviours.exchange.scheduler import ExchangeConfig
from pyrsia.p2p.identity import Identity
from pyrsia.p2p.swarm.host import Host, HostConfig, Stream
from pyrsia.translog.chunks import CHUNK_BYTES, chunk_hashes, chunk_root

MIB = 1 << 20
BLOB = random.Random(11).randbytes(24 * MIB + 4321)
DIGEST = Digest.of(BLOB)
HASHES = chunk_hashes(BLOB)
ROOT = chunk_root(HASHES)
CHUNKS = len(HASHES)
OTHER = random.Random(12).randbytes(len(BLOB))
WANTED = Wanted(digest=DIGEST, name="library/test", size=len(BLOB), chunk_root=ROOT)
FAST_STALL = DownloadConfig(exchange=ExchangeConfig(stall_timeout_s=3.0), read_timeout_s=20.0)


LOOPBACK = HostConfig(listen_host="127.0.0.1", listen_port=0)
SERVE = ServeConfig()


def _host() -> Host:
    return Host(Identity.from_seed(os.urandom(32)), LOOPBACK).start()


@dataclass
class Provider:
    host: Host
    store: BlobStore
    server: ExchangeServer | None


class Net:
    """Hosts made for one test; all stopped at its end."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.hosts: list[Host] = []

    def provider(self, config: ServeConfig = SERVE, *, blob: bytes = BLOB) -> Provider:
        host = _host()
        self.hosts.append(host)
        store = BlobStore(self.root / host.peer_id / "blobs")
        store.put(Digest.of(blob), blob, "test")
        server = ExchangeServer(store, lambda d: d == Digest.of(blob), config=config)
        server.register(host)
        return Provider(host, store, server)

    def rogue(self, handler: Callable[[Stream], None]) -> Host:
        host = _host()
        self.hosts.append(host)
        host.set_handler(wire.PROTOCOL_ID, handler)
        return host

    def downloader(
        self, providers: list[Host], config: DownloadConfig = FAST_STALL, *, home: Path | None = None
    ) -> tuple[Host, BlobStore, PeerSource]:
        host = _host()
        self.hosts.append(host)
        for provider in providers:
            host.add_addresses(provider.peer_id, provider.listen_addrs)
        store = BlobStore(home or self.root / host.peer_id / "blobs")
        ids = [p.peer_id for p in providers]
        source = PeerSource(host, store, lambda d: ids, config=config, stats=ExchangeStats())
        return host, store, source

    def stop(self) -> None:
        for host in self.hosts:
            host.stop()


@pytest.fixture
def net(tmp_path: Path) -> Iterator[Net]:
    n = Net(tmp_path)
    try:
        yield n
    finally:
        n.stop()


def _obtain(store: BlobStore, source: PeerSource) -> bytes:
    stored = Sources(store, [source]).obtain(WANTED)
    assert stored.digest == DIGEST and stored.chunk_root == ROOT
    data = stored.path.read_bytes()
    assert hashlib.sha256(data).hexdigest() == DIGEST.hex
    return data


# -- rogue providers: each lies in one way ---------------------------------------------


def _serve(
    stream: Stream,
    *,
    chunk_list: Callable[[], wire.Message],
    chunk: Callable[[int], bytes],
    header_digest: Digest = DIGEST,
    stall: bool = False,
) -> None:
    reader = wire.RequestReader()
    while data := stream.read(65536, timeout=30):
        reader.receive_data(data)
        while (request := reader.next_request()) is not None:
            if isinstance(request, wire.GetChunkList):
                stream.write(wire.encode(chunk_list()))
                continue
            if stall:
                continue  # never answers, never closes
            header = wire.Chunks(digest=header_digest, first=request.first, count=request.count)
            stream.write(wire.encode(header))
            for index in range(request.first, request.first + request.count):
                body = chunk(index)
                stream.write(wire.chunk_frame_head(len(body)) + body)


def _true_list() -> wire.Message:
    return wire.ChunkList(digest=DIGEST, size=len(BLOB), chunk_size=CHUNK_BYTES, hashes=tuple(HASHES))


def _piece(index: int, blob: bytes = BLOB) -> bytes:
    return blob[index * CHUNK_BYTES : (index + 1) * CHUNK_BYTES]


def _flipped(index: int) -> bytes:
    body = bytearray(_piece(index))
    body[len(body) // 2] ^= 0xFF
    return bytes(body)


def flips_bytes(stream: Stream) -> None:
    _serve(stream, chunk_list=_true_list, chunk=_flipped)


def wrong_length(stream: Stream) -> None:
    _serve(stream, chunk_list=_true_list, chunk=lambda i: _piece(i)[:-1])


def stalls(stream: Stream) -> None:
    _serve(stream, chunk_list=_true_list, chunk=_piece, stall=True)


def other_blob(stream: Stream) -> None:
    other = Digest.of(OTHER)
    _serve(
        stream,
        chunk_list=lambda: wire.ChunkList(
            digest=other, size=len(OTHER), chunk_size=CHUNK_BYTES, hashes=tuple(chunk_hashes(OTHER))
        ),
        chunk=lambda i: _piece(i, OTHER),
        header_digest=other,
    )


def other_blob_chunks(stream: Stream) -> None:
    """Claims the right blob, sends another's bytes."""
    _serve(stream, chunk_list=_true_list, chunk=lambda i: _piece(i, OTHER))


def bad_list(stream: Stream) -> None:
    hashes = list(HASHES)
    hashes[3] = hashlib.sha256(b"not chunk 3").digest()
    _serve(
        stream,
        chunk_list=lambda: wire.ChunkList(
            digest=DIGEST, size=len(BLOB), chunk_size=CHUNK_BYTES, hashes=tuple(hashes)
        ),
        chunk=_piece,
    )


# -- tests -----------------------------------------------------------------------------


def test_a_blob_comes_from_three_providers_at_once(net: Net) -> None:
    providers = [net.provider() for _ in range(3)]
    _, store, source = net.downloader([p.host for p in providers])
    assert _obtain(store, source) == BLOB
    stats = source.stats.snapshot()
    senders = {peer for peer, size in stats.received_bytes_by_peer.items() if size > 0}
    assert len(senders) >= 2, stats.received_bytes_by_peer
    assert senders <= {p.host.peer_id for p in providers}
    assert stats.bytes_by_source["peer"] == sum(stats.received_bytes_by_peer.values()) >= len(BLOB)
    served = sum(sum(p.server.stats.snapshot().served_bytes_by_peer.values()) for p in providers if p.server)
    assert served >= len(BLOB)
    assert stats.transfers == () and stats.evictions == 0
    assert list(store.tmp_dir.iterdir()) == []  # no partial left behind


@pytest.mark.parametrize(
    ("rogue", "logged"),
    [
        (flips_bytes, "sent a bad chunk"),
        (wrong_length, "sent a bad chunk"),
        (other_blob_chunks, "sent a bad chunk"),
        (stalls, "stalled"),
    ],
)
def test_a_misbehaving_provider_is_evicted_and_named(
    net: Net, caplog: pytest.LogCaptureFixture, rogue: Callable[[Stream], None], logged: str
) -> None:
    # Slowed down when the liar stalls, so the deadline passes before the others finish.
    config = ServeConfig(max_upload_rate=3 * MIB if rogue is stalls else 0)
    honest = [net.provider(config), net.provider(config)]
    liar = net.rogue(rogue)
    _, store, source = net.downloader([liar, *(p.host for p in honest)])
    with caplog.at_level(logging.WARNING, logger="pyrsia.exchange"):
        assert _obtain(store, source) == BLOB
    evictions = [r.getMessage() for r in caplog.records if "evicting peer" in r.getMessage()]
    assert any(liar.peer_id in m and logged in m for m in evictions), evictions
    assert not any(p.host.peer_id in m for m in evictions for p in honest)
    assert (
        liar.peer_id
        not in {peer for peer, size in source.stats.snapshot().received_bytes_by_peer.items() if size}
        or rogue is stalls
    )


@pytest.mark.parametrize("rogue", [bad_list, other_blob])
def test_a_chunk_list_that_disagrees_with_the_log_is_refused(
    net: Net, caplog: pytest.LogCaptureFixture, rogue: Callable[[Stream], None]
) -> None:
    honest = net.provider()
    liar = net.rogue(rogue)
    _, store, source = net.downloader([liar, honest.host])  # the liar is asked first
    with caplog.at_level(logging.WARNING, logger="pyrsia.exchange"):
        assert _obtain(store, source) == BLOB
    assert any(liar.peer_id in r.getMessage() and "chunk list" in r.getMessage() for r in caplog.records)
    assert source.stats.snapshot().received_bytes_by_peer.get(liar.peer_id, 0) == 0


def test_only_liars_fail_cleanly_and_keep_nothing(net: Net) -> None:
    liars = [net.rogue(flips_bytes), net.rogue(wrong_length)]
    _, store, source = net.downloader(liars)
    with pytest.raises(ExchangeFailed) as failure:
        Sources(store, [source]).obtain(WANTED)
    assert all(liar.peer_id in failure.value.message for liar in liars)
    assert store.stored(DIGEST) is None
    assert list(store.tmp_dir.iterdir()) == []


def test_out_of_range_and_malformed_requests(net: Net) -> None:
    provider = net.provider()
    client = _host()
    net.hosts.append(client)
    client.add_addresses(provider.host.peer_id, provider.host.listen_addrs)
    stream = client.open_stream(provider.host.peer_id, [wire.PROTOCOL_ID])
    stream.write(wire.encode(wire.GetChunks(digest=DIGEST, first=CHUNKS - 1, count=2)))
    stream.write(wire.encode(wire.GetChunks(digest=Digest.of(b"unknown"), first=0, count=1)))
    stream.write(wire.encode(wire.GetChunks(digest=DIGEST, first=CHUNKS - 1, count=1)))
    reader = wire.ReplyReader()
    events: list[object] = []
    while len(events) < 4:
        reader.receive_data(stream.read(65536, timeout=10))
        while (event := reader.next_event()) is not None:
            events.append(event)
    assert isinstance(events[0], wire.Refused) and "beyond" in events[0].reason
    assert events[1] == wire.NotFound(digest=Digest.of(b"unknown"))
    assert events[2] == wire.Chunks(digest=DIGEST, first=CHUNKS - 1, count=1)
    assert events[3] == wire.ChunkData(index=CHUNKS - 1, data=_piece(CHUNKS - 1))
    # a request above the bound is a protocol violation: the stream is reset
    stream.write(varint_frame({"type": "get_chunks", "digest": str(DIGEST), "first": 0, "count": 10_000}))
    with pytest.raises(PeerError):
        while stream.read(65536, timeout=10):
            pass


def varint_frame(doc: dict[str, object]) -> bytes:
    from pyrsia.p2p.wire import varint
    from pyrsia.translog import codec

    return varint.prefixed(codec.encode(doc))


def test_blobs_the_log_does_not_vouch_for_are_not_served(net: Net) -> None:
    provider = net.provider()
    assert provider.server is not None
    provider.server._vouched = lambda d: False
    _, store, source = net.downloader([provider.host])
    with pytest.raises(ExchangeFailed, match="not found"):
        source.fetch(WANTED, store.opener(DIGEST, "peers"))


def test_serve_artifacts_false_serves_nothing(net: Net) -> None:
    provider = net.provider(ServeConfig(serve_artifacts=False))
    client, store, source = net.downloader([provider.host])
    client.connect(provider.host.listen_addrs[0].with_peer(provider.host.peer_id))
    info = client.wait_identified(provider.host.peer_id)
    assert wire.PROTOCOL_ID not in info.protocols
    with pytest.raises(PeerError):
        client.open_stream(provider.host.peer_id, [wire.PROTOCOL_ID], timeout=5)
    with pytest.raises(ExchangeFailed):
        source.fetch(WANTED, store.opener(DIGEST, "peers"))


def test_max_upload_peers_refuses_the_next_peer(net: Net) -> None:
    provider = net.provider(ServeConfig(max_upload_peers=1))
    first, second = _host(), _host()
    net.hosts += [first, second]
    streams = []
    for client in (first, second):
        client.add_addresses(provider.host.peer_id, provider.host.listen_addrs)
        streams.append(client.open_stream(provider.host.peer_id, [wire.PROTOCOL_ID]))
    streams[0].write(wire.encode(wire.GetChunkList(digest=DIGEST)))
    reader = wire.ReplyReader()
    while (reply := reader.next_event()) is None:
        reader.receive_data(streams[0].read(65536, timeout=10))
    assert isinstance(reply, wire.ChunkList)  # the first peer holds the only slot
    second_reply = wire.ReplyReader()
    while (refused := second_reply.next_event()) is None:
        data = streams[1].read(65536, timeout=10)
        assert data
        second_reply.receive_data(data)
    assert isinstance(refused, wire.Refused) and "busy" in refused.reason


def test_streams_beyond_streams_max_are_refused(net: Net) -> None:
    provider = net.provider(ServeConfig(streams_max=2))
    client = _host()
    net.hosts.append(client)
    client.add_addresses(provider.host.peer_id, provider.host.listen_addrs)
    replies = []
    streams = [client.open_stream(provider.host.peer_id, [wire.PROTOCOL_ID]) for _ in range(3)]
    for stream in streams:  # one at a time, so the first two hold their workers first
        stream.write(wire.encode(wire.GetChunkList(digest=DIGEST)))
        reader = wire.ReplyReader()
        while (reply := reader.next_event()) is None:
            data = stream.read(65536, timeout=10)
            assert data
            reader.receive_data(data)
        replies.append(reply)
    assert [type(r) for r in replies] == [wire.ChunkList, wire.ChunkList, wire.Refused]
    streams[0].close()  # its handler ends and frees a worker
    deadline = time.monotonic() + 10
    while True:
        again = client.open_stream(provider.host.peer_id, [wire.PROTOCOL_ID])
        again.write(wire.encode(wire.GetChunkList(digest=DIGEST)))
        reader = wire.ReplyReader()
        while (reply := reader.next_event()) is None:
            reader.receive_data(again.read(65536, timeout=10))
        again.reset()
        if isinstance(reply, wire.ChunkList) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert isinstance(reply, wire.ChunkList)


def test_upload_rate_cap_holds_over_five_second_windows(net: Net) -> None:
    cap = 2 * MIB
    provider = net.provider(ServeConfig(max_upload_rate=cap))
    client = _host()
    net.hosts.append(client)
    client.add_addresses(provider.host.peer_id, provider.host.listen_addrs)
    stream = client.open_stream(provider.host.peer_id, [wire.PROTOCOL_ID])
    stream.write(wire.encode(wire.GetChunks(digest=DIGEST, first=0, count=CHUNKS)))
    arrivals: list[tuple[float, int]] = []
    started = time.monotonic()
    got = 0
    while time.monotonic() - started < 12.0 and got < len(BLOB):
        data = stream.read(65536, timeout=10)
        assert data
        arrivals.append((time.monotonic(), len(data)))
        got += len(data)
    stream.reset()
    window_s = 5.0
    end = arrivals[-1][0]
    worst = 0
    for start, _ in arrivals:
        if start + window_s > end:
            break
        worst = max(worst, sum(size for at, size in arrivals if start <= at < start + window_s))
    assert worst > 0
    assert worst <= 1.1 * cap * window_s, f"{worst / window_s / MIB:.2f} MiB/s over {window_s} s"


def test_a_stopped_download_resumes_from_verified_chunks(net: Net, tmp_path: Path) -> None:
    slow = [net.provider(ServeConfig(max_upload_rate=8 * MIB)) for _ in range(2)]
    home = tmp_path / "downloader"
    _, store, source = net.downloader([p.host for p in slow], home=home)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            source.fetch(WANTED, store.opener(DIGEST, "peers"))
        except BaseException as exc:  # reported to the test thread
            failure.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        transfers = source.stats.snapshot().transfers
        if transfers and transfers[0].verified >= CHUNKS // 3:
            break
        time.sleep(0.02)
    for provider in slow:  # the providers go away mid-transfer
        provider.host.stop()
    thread.join(30)
    assert not thread.is_alive() and isinstance(failure[0], ExchangeFailed)
    assert store.stored(DIGEST) is None
    first_bytes = sum(source.stats.snapshot().received_bytes_by_peer.values())
    # A restart: a new store object on the same directory, new providers.
    fresh = net.provider()
    _, store2, source2 = net.downloader([fresh.host], home=home)
    assert store2.remove_temp_files() == 0
    assert _obtain(store2, source2) == BLOB
    refetched = sum(source2.stats.snapshot().received_bytes_by_peer.values())
    resumed_chunks = CHUNKS - refetched // CHUNK_BYTES
    assert first_bytes >= (CHUNKS // 3) * CHUNK_BYTES
    assert refetched <= len(BLOB) - (CHUNKS // 3 - 16) * CHUNK_BYTES, (first_bytes, refetched)
    assert resumed_chunks > 0
    assert list(store2.tmp_dir.iterdir()) == []


def test_download_rate_cap_holds_over_the_whole_blob(net: Net) -> None:
    cap = 8 * MIB
    providers = [net.provider() for _ in range(2)]
    config = DownloadConfig(exchange=FAST_STALL.exchange, max_download_rate=cap)
    _, store, source = net.downloader([p.host for p in providers], config)
    started = time.monotonic()
    assert _obtain(store, source) == BLOB
    elapsed = time.monotonic() - started
    burst = max(64 * 1024, cap // 10)  # the bucket's burst (ratelimit.BURST_S)
    assert len(BLOB) - burst <= cap * elapsed * 1.1, f"{len(BLOB) / elapsed / MIB:.1f} MiB/s"
