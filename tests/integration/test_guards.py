"""Hostile peers against real daemons: requests, consensus and exchange defend themselves.

A stranger is an in-process p2p `Host` with a key of its own (not an authority) that
speaks the node's protocols with the project's own codecs:

- 200 publish requests for a name the upstream does not have cost the authority one
  upstream fetch (the negative cache), the flood beyond the stranger's burst is
  answered 429 and counted, a build request from it is refused with 403, and another
  peer's request is served meanwhile;
- twenty 16 MiB consensus proposals from a non-authority are reset unread: the
  daemon's RSS stays far below what reading them would take, and a pull through it
  commits meanwhile;
- eight exchange streams from one peer that never reads: it gets only its share of
  the upload slots, and loses those at the request deadline, while another node
  downloads a layer from the same provider.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from pyrsia.consensus import messages as m
from pyrsia.consensus import wire as consensus_wire
from pyrsia.errors import PeerError, StreamClosed
from pyrsia.formats.digest import Digest
from pyrsia.p2p.behaviours import requests
from pyrsia.p2p.behaviours.exchange import wire as exchange_wire
from pyrsia.p2p.behaviours.requests import PublishReply, PublishRequest
from pyrsia.p2p.identity import Identity
from pyrsia.p2p.swarm.host import Host, HostConfig, Stream
from tests.integration.test_p2p_network import eventually, height
from tests.support import images
from tests.support.node import NodeProcess
from tests.support.registry import RegistryProcess
from tests.support.scripted_upstream import ScriptedUpstream

TIMEOUT_S = 30.0
HONEST_S = 20.0  # an unhindered request or pull here takes well under a second or two


class Stranger:
    def __init__(self) -> None:
        self.identity = Identity.from_seed(os.urandom(32))
        self.peer_id = self.identity.peer_id
        self.host = Host(self.identity, HostConfig(listen_host="127.0.0.1", listen_port=0)).start()

    def stream(self, node: NodeProcess, protocol: str) -> Stream:
        peer = self.host.connect(node.p2p_address, timeout=TIMEOUT_S)
        return self.host.open_stream(peer, [protocol], timeout=TIMEOUT_S)

    def ask(self, node: NodeProcess, request: PublishRequest) -> PublishReply:
        stream = self.stream(node, requests.PROTOCOL_ID)
        try:
            stream.write_message(requests.encode(request), TIMEOUT_S)
            raw = stream.read_message(requests.MESSAGE_BYTES_MAX, 120.0)
        finally:
            stream.close()
        assert raw is not None
        reply = requests.decode(raw)
        assert isinstance(reply, PublishReply)
        return reply


@pytest.fixture
def stranger() -> Iterator[Stranger]:
    peer = Stranger()
    try:
        yield peer
    finally:
        peer.host.stop()


def metric(node: NodeProcess, family: str, reason: str) -> int:
    text = httpx.get(f"{node.url}/metrics", timeout=10).text
    found = re.search(rf'^{family}\{{reason="{reason}"\}} (\d+)$', text, re.M)
    assert found is not None, f"no {family}{{reason={reason}}} in /metrics:\n{text}"
    return int(found.group(1))


def rss_bytes(node: NodeProcess) -> int:
    text = Path(f"/proc/{node.pid}/status").read_text()
    found = re.search(r"^VmRSS:\s+(\d+) kB$", text, re.M)
    assert found is not None
    return int(found.group(1)) * 1024


# -- 1. publish and build requests ---------------------------------------------------------


def test_a_request_flood_costs_one_upstream_fetch_and_strangers_cannot_build(
    tmp_path: Path, stranger: Stranger
) -> None:
    image = images.three_layer("library/present", "1.0")
    missing = PublishRequest(kind="docker_manifest", name="library/missing", reference="1.0")
    with ExitStack() as stack:
        upstream = stack.enter_context(ScriptedUpstream())
        upstream.serve_image(image)
        node = stack.enter_context(
            NodeProcess(
                tmp_path / "a",
                "--docker-upstream",
                upstream.url,
                "--request-burst",
                "40",
                "--request-rate",
                "2",
            )
        )
        honest = Stranger()
        stack.callback(honest.host.stop)
        answers: list[PublishReply] = []
        # Fewer senders than the node's 8 request streams per peer: a sender opens its next
        # stream as soon as it has read a reply, perhaps before the node's handler let the
        # last one go, and the ninth stream would be reset (a limit of its own, not this test's).
        with ThreadPoolExecutor(6) as pool:
            flood = [pool.submit(stranger.ask, node, missing) for _ in range(200)]
            # Meanwhile another peer asks for something that exists: served, in its normal time.
            started = time.monotonic()
            reply = honest.ask(node, PublishRequest(kind="docker_manifest", name=image.name, reference="1.0"))
            took_s = time.monotonic() - started
            answers = [f.result(timeout=120) for f in flood]
        assert reply.ok and reply.height >= 1, reply
        assert took_s < HONEST_S
        statuses = [a.status for a in answers]
        assert set(statuses) <= {404, 429}, set(statuses)
        assert statuses.count(404) >= 40 and statuses.count(429) >= 100
        assert all("\n" not in a.error for a in answers)
        # One upstream GET for the whole flood, however many were served past the bucket.
        gets = [s for s in upstream.requests_to("/v2/library/missing/") if s.method == "GET"]
        assert len(gets) == 1, gets
        assert metric(node, "pyrsia_request_refused_total", "rate_limited") == statuses.count(429)
        # The rest of the 404s were answered from memory, but for those that arrived while
        # the first was being fetched (at most one per other sender) and shared its answer.
        cached = metric(node, "pyrsia_request_refused_total", "known_missing")
        assert statuses.count(404) - 8 <= cached <= statuses.count(404) - 1, cached

        build = honest.ask(node, PublishRequest(kind="build_docker", name=image.reference))
        assert (build.ok, build.status) == (False, 403), build
        assert "may not request builds" in build.error and "\n" not in build.error
        assert metric(node, "pyrsia_request_refused_total", "build_forbidden") == 1
        assert f"request build_docker {image.name}" in node.output()


# -- 2. consensus proposals from a non-authority ---------------------------------------------


def test_sixteen_mib_proposals_from_a_non_authority_are_reset_unread(
    tmp_path: Path, stranger: Stranger
) -> None:
    image = images.three_layer("library/during", "1.0")
    proposal = consensus_wire.encode(
        m.sign_proposal(
            stranger.identity.signing_key,
            bytes(32),
            height=1,
            round=0,
            proposal=b"\0" * (m.PROPOSAL_BYTES_MAX - 1024),
            valid_round=-1,
        )
    )
    assert len(proposal) > 16_000_000
    with ExitStack() as stack:
        registry = stack.enter_context(RegistryProcess(tmp_path / "upstream"))
        images.push(registry.url, image)
        node = stack.enter_context(NodeProcess(tmp_path / "a", "--docker-upstream", registry.url))
        before = rss_bytes(node)
        reset = 0

        def attack() -> None:
            nonlocal reset
            for _ in range(20):
                stream = stranger.stream(node, consensus_wire.PROTOCOL_ID)
                try:
                    stream.write_message(proposal, TIMEOUT_S)
                    stream.read(timeout=TIMEOUT_S)
                except StreamClosed:
                    reset += 1
                except PeerError:
                    pass

        attacker = threading.Thread(target=attack)
        attacker.start()
        started = time.monotonic()
        pulled = httpx.get(f"{node.url}/v2/{image.name}/manifests/{image.tag}", timeout=60)
        took_s = time.monotonic() - started
        attacker.join(300)
        assert pulled.status_code == 200 and took_s < HONEST_S
        assert reset == 20
        assert metric(node, "pyrsia_consensus_refused_total", "not_authority") >= 20
        after = rss_bytes(node)
        assert after < 300 * 1024 * 1024, f"RSS {before} -> {after} bytes"
        assert "not an authority of the current set (not_authority)" in node.output()
        assert height(node) >= 1


# -- 3. exchange upload slots ---------------------------------------------------------------


def test_one_peer_holding_exchange_streams_gets_its_share_and_loses_it_at_the_deadline(
    tmp_path: Path, stranger: Stranger
) -> None:
    image = images.large("library/shared", "1.0", 8_000_000)
    layer = next(d for d in image.blobs if len(image.blobs[d]) > 1_000_000)
    with ExitStack() as stack:
        registry = stack.enter_context(RegistryProcess(tmp_path / "upstream"))
        images.push(registry.url, image)
        up = ("--docker-upstream", registry.url)
        a = stack.enter_context(NodeProcess(tmp_path / "a", *up, "--upload-request-deadline", "4"))
        assert httpx.get(f"{a.url}/v2/{image.name}/manifests/{image.tag}", timeout=60).status_code == 200
        assert httpx.get(f"{a.url}/v2/{image.name}/blobs/{layer}", timeout=60).content == image.blobs[layer]
        registry.stop()  # from here on the layer can only come from a
        b = stack.enter_context(NodeProcess(tmp_path / "b", *up, "--bootstrap", a.p2p_address))
        eventually(lambda: height(b) == height(a), "b synced")

        # The stranger asks for every chunk on eight streams and reads nothing.
        ask = exchange_wire.encode(exchange_wire.GetChunks(digest=Digest.parse(layer), first=0, count=8))
        streams = [stranger.stream(a, exchange_wire.PROTOCOL_ID) for _ in range(8)]
        for stream in streams:
            stream.write(ask, TIMEOUT_S)
        eventually(
            lambda: metric(a, "pyrsia_exchange_refused_total", "peer_streams") == 4,
            "a refused the stranger's streams beyond its share",
        )
        started = time.monotonic()
        got = httpx.get(f"{b.url}/v2/{image.name}/blobs/{layer}", timeout=120)
        took_s = time.monotonic() - started
        assert got.status_code == 200 and got.content == image.blobs[layer]
        assert took_s < HONEST_S
        # The four it served never read their answers: each loses its stream at the deadline.
        eventually(
            lambda: metric(a, "pyrsia_exchange_refused_total", "deadline") == 4,
            "the slow reader's streams were cut",
            within_s=60,
        )
        assert "did not take an answer within 4 s" in a.output()
        served = httpx.get(f"{a.url}/metrics", timeout=10).text
        assert re.search(r"^pyrsia_exchange_serving_peers 0$", served, re.M), served
