"""Hostile consensus input against four real authority daemons: refused, nothing commits.

The genesis names five authorities; four run daemons, the fifth runs none. Only an
authority may speak `/pyrsia/consensus/3.0.0`, so the input comes from two in-process
p2p hosts, each writing varint-framed messages as `wire.encode` writes them, deflated as
the protocol's streams are (`wire.Deflater`):

- a stranger (a key of its own, in no authority set): every consensus stream it opens
  is reset before a byte of it is read, whatever it carries;
- an insider driven by the fifth authority's key (the test made its identity), which is
  admitted and so reaches message validation. Its own key signs nothing here: what it
  forges is signed by an outsider key (no authority), or by a real authority's key (the
  test made the homes) as a Byzantine authority or a replaying relay could.

With five authorities the quorum is four, so every commit after the first needs all four
daemons. What the insider sends:

- votes and proposals signed by the outsider, or naming an authority the outsider is not;
- decisions whose certificate has too few signers, a repeated one, or the outsider;
- an authority's vote replayed from a committed height or an earlier round, verbatim
  (ignored: its signature binds it to where it was cast) or relabelled (bad signature);
- a proposal signed by the right proposer whose (compact) block names a transaction the
  authorities never saw: each holds the proposal and asks the insider for exactly that
  transaction; once the insider sends it (with no endorsements), every authority
  refuses the proposal and prevotes nil;
- a transaction submitted by the outsider, or with a broken signature; verdicts with
  forged signatures; garbage, an unknown message type, messages longer than their type
  may be, an oversized length prefix.

Each case shows the refusal (the `consensus` counters of `/api/v1/status` and `/metrics`,
the reason in the daemon's log), that nothing was committed (heights, commits and the
log's search), that the refusal woke no idle core, and that a build still commits on
every node after.
"""

from __future__ import annotations

import itertools
import os
import queue
import re
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass

import httpx
import pytest
from nacl.signing import SigningKey

from pyrsia.consensus import messages as m
from pyrsia.consensus import wire
from pyrsia.consensus.compact import compact
from pyrsia.consensus.service import MALFORMED, NOT_AUTHORITY, OVERSIZED, PEER_STREAMS
from pyrsia.errors import PeerTimeout, StreamClosed
from pyrsia.node.home import load_identity
from pyrsia.p2p.behaviours.sync import core as sync
from pyrsia.p2p.identity import Identity
from pyrsia.p2p.swarm.host import Host, HostConfig, Stream
from pyrsia.p2p.wire import varint
from pyrsia.translog import codec
from pyrsia.translog.block import Block, commit_signature, quorum
from pyrsia.translog.chain import Chain
from pyrsia.translog.tx import ADD_ARTIFACT, AddArtifact, Transaction, endorse, sign
from tests.support import images
from tests.support.bft import DEADLINE_S, Member, eventually, start_network
from tests.support.registry import RegistryProcess

STREAM_TIMEOUT_S = 30.0
FORGED_PACKAGE = "hostile/forged"
_SIZES = itertools.count()


@dataclass
class Network:
    authorities: list[Member]  # the four daemons
    regular: list[Member]
    keys: dict[str, SigningKey]  # every genesis authority's signing key, by peer id
    absent: Identity  # the fifth authority: in the genesis, no daemon; the insider's identity
    genesis_hash: bytes
    upstream: RegistryProcess

    @property
    def members(self) -> list[Member]:
        return [*self.authorities, *self.regular]

    @property
    def ordered(self) -> list[str]:
        """The authority set (the absent one too) as the core rotates proposers over it."""
        return sorted(self.keys)

    def proposer(self, height: int, round_: int) -> str:
        return self.ordered[(height + round_) % len(self.ordered)]


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Network]:
    root = tmp_path_factory.mktemp("hostile")
    absent = Identity.from_seed(os.urandom(32))
    with ExitStack() as stack:
        upstream = stack.enter_context(RegistryProcess(root / "upstream"))
        authorities, regular, genesis = start_network(
            stack,
            root,
            authorities=4,
            regular=1,
            absent=[absent.peer_id],
            flags=lambda role, i: ("--docker-upstream", upstream.url),
        )
        keys = {a.peer_id: load_identity(a.node.home).signing_key for a in authorities}
        keys[absent.peer_id] = absent.signing_key
        net = Network(
            authorities=authorities,
            regular=regular,
            keys=keys,
            absent=absent,
            genesis_hash=Block.decode(genesis.read_bytes()).header.hash,
            upstream=upstream,
        )
        assert authorities[0].authorities() == set(net.ordered) and len(net.ordered) == 5
        assert quorum(len(net.ordered)) == 4, "every commit needs all four daemons"
        # A committed block to replay votes from, and a log that is not just genesis.
        still_works(net, "hostile/first")
        yield net


class Peer:
    """A p2p host of a given key talking consensus to the daemons."""

    def __init__(self, identity: Identity) -> None:
        self.identity = identity
        self.key = identity.signing_key
        self.peer_id = identity.peer_id
        self.host = Host(identity, HostConfig(listen_host="127.0.0.1", listen_port=0)).start()

    def stream(self, member: Member, protocol: str = wire.PROTOCOL_ID) -> Stream:
        if not self.host.is_connected(member.peer_id):
            assert self.host.connect(member.node.p2p_address) == member.peer_id
        return self.host.open_stream(member.peer_id, [protocol], timeout=STREAM_TIMEOUT_S)

    def send(self, member: Member, *messages: wire.Message | bytes) -> None:
        """Each message framed on one stream, then EOF; the node must close it, not reset it."""
        stream = self.stream(member)
        deflater = wire.Deflater()
        for message in messages:
            raw = message if isinstance(message, bytes) else wire.encode(message)
            stream.write(deflater.batch([raw]), STREAM_TIMEOUT_S)
        stream.close()
        assert stream.read(timeout=STREAM_TIMEOUT_S) == b"", "the node answered on a consensus stream"

    def was_reset(self, member: Member, message: wire.Message) -> bool:
        """`message` on a stream of its own: whether the node reset that stream (rather than
        reading to our EOF and closing it)."""
        stream = self.stream(member)
        try:
            stream.write(wire.Deflater().batch([wire.encode(message)]), STREAM_TIMEOUT_S)
            stream.close()
            stream.read(timeout=STREAM_TIMEOUT_S)
        except StreamClosed:
            return True
        return False

    def reset_by(self, member: Member, frame: bytes, *, raw: bool = False) -> bool:
        """Writes `frame` (deflated, unless `raw`) and keeps the stream open: whether the node reset it."""
        stream = self.stream(member)
        stream.write(frame if raw else wire.Deflater().piece(frame), STREAM_TIMEOUT_S)
        try:
            stream.read(timeout=STREAM_TIMEOUT_S)
        except StreamClosed:
            return True
        except PeerTimeout:
            return False  # still waiting for the rest of the message
        return False

    def blocks(self, member: Member) -> list[Block]:
        """Every block `member` holds, fetched over `/pyrsia/sync/1.0.0` like a syncing peer."""
        stream = self.stream(member, sync.PROTOCOL_ID)
        stream.write_message(sync.encode(sync.GetBlocks(start=0, count=member.height() + 1)))
        raw = stream.read_message(sync.MESSAGE_BYTES_MAX, STREAM_TIMEOUT_S)
        assert raw is not None
        reply = sync.decode(raw)
        assert isinstance(reply, sync.Blocks)
        return [Block.decode(b) for b in reply.blocks]

    def chain(self, member: Member) -> Chain:
        """The chain core replayed from `member`'s blocks, every signature checked."""
        chain = Chain()
        for block in self.blocks(member):
            chain.apply(block)
        return chain

    def stop(self) -> None:
        self.host.stop()


@pytest.fixture
def stranger() -> Iterator[Peer]:
    """A peer of its own key, in no authority set."""
    peer = Peer(Identity.from_seed(os.urandom(32)))
    try:
        yield peer
    finally:
        peer.stop()


@pytest.fixture(scope="module")
def insider(network: Network) -> Iterator[Peer]:
    """The absent authority's key on a host of the test's: admitted to consensus streams."""
    peer = Peer(network.absent)
    try:
        yield peer
    finally:
        peer.stop()


@pytest.fixture
def outsider() -> Identity:
    """A key in no authority set, to sign what the insider forges."""
    return Identity.from_seed(os.urandom(32))


# -- what the tests observe ----------------------------------------------------------------


def consensus(member: Member) -> dict[str, object]:
    found = member.get("/api/v1/status")["consensus"]
    assert isinstance(found, dict)
    return found


def counter(member: Member, name: str) -> int:
    return count_in(consensus(member), name)


def count_in(status: dict[str, object], name: str) -> int:
    """A counter of a `consensus` status: its own (`messages_rejected`), or a reason a
    stream or message was refused at the door (`not_authority`, `oversized`, ...)."""
    if name in status:
        return number(status[name])
    reasons = status["refused"]
    assert isinstance(reasons, dict) and name in reasons, status
    return number(reasons[name])


def number(value: object) -> int:
    assert isinstance(value, int), value
    return value


def metric(member: Member, reason: str) -> int:
    """`pyrsia_consensus_refused_total{reason=…}` as `/metrics` shows it."""
    text = httpx.get(f"{member.url}/metrics", timeout=30).text
    found = re.search(rf'^pyrsia_consensus_refused_total\{{reason="{reason}"\}} (\d+)$', text, re.M)
    assert found is not None, f"no consensus refusals for {reason} in /metrics:\n{text}"
    return int(found.group(1))


@dataclass
class Snapshot:
    """Heights and consensus counters of every node, to compare after the hostile input."""

    heights: dict[str, int]
    tips: dict[str, object]
    counters: dict[str, dict[str, object]]

    @classmethod
    def of(cls, net: Network) -> Snapshot:
        return cls(
            heights={m.peer_id: m.height() for m in net.members},
            tips={m.peer_id: m.block("latest")["hash"] for m in net.members},
            counters={a.peer_id: consensus(a) for a in net.authorities},
        )

    def grew(self, member: Member, name: str) -> int:
        return counter(member, name) - count_in(self.counters[member.peer_id], name)


def quiet(net: Network) -> Snapshot:
    """Waits until every node is at one height with no core running (nothing to agree on)."""

    def settled() -> bool:
        heights = {m.height() for m in net.members}
        return len(heights) == 1 and not any(consensus(a)["running"] for a in net.authorities)

    eventually(settled, "every node at one height, every core idle")
    return Snapshot.of(net)


def refused(member: Member, before: Snapshot, count: int, name: str = "messages_rejected") -> None:
    """`member` counted exactly `count` more refusals of kind `name`."""
    eventually(lambda: before.grew(member, name) >= count, f"{member.peer_id} refused {count} ({name})")
    assert before.grew(member, name) == count, consensus(member)


def logged(member: Member, *fragments: str) -> int:
    """How many lines of the daemon's log hold every one of `fragments`."""
    return sum(all(f in line for f in fragments) for line in member.node.output().splitlines())


def said(member: Member, *fragments: str) -> None:
    """The daemon logged a line holding every one of `fragments` (a refusal and its reason)."""
    assert logged(member, *fragments), (
        f"no line with {fragments} in the log of {member.peer_id}:\n" + (member.node.output()[-4000:])
    )


def no_core_running(net: Network) -> None:
    assert not any(consensus(a)["running"] for a in net.authorities), [consensus(a) for a in net.authorities]


def nothing_committed(net: Network, before: Snapshot) -> None:
    after = Snapshot.of(net)
    assert after.heights == before.heights
    assert after.tips == before.tips
    for a in net.authorities:
        assert after.counters[a.peer_id]["commits"] == before.counters[a.peer_id]["commits"]
    for member in net.members:
        assert member.get("/api/v1/log/search", package=FORGED_PACKAGE)["results"] == []


def still_works(net: Network, name: str) -> None:
    """A new image builds on an authority and its records reach every node."""
    image = images.large(name, "1.0", layer_bytes=1000 + next(_SIZES))  # content of its own
    images.push(net.upstream.url, image)
    builder = net.authorities[len(name) % len(net.authorities)]
    done = builder.finished_build(builder.build("docker", image.reference))
    assert done["state"] == "committed", done
    height = number(done["height"])

    missing: dict[str, object] = {}

    def everywhere() -> bool:
        missing.clear()
        for member in net.members:
            found = member.get("/api/v1/log/search", package=image.name)["results"]
            digests = {r["digest"] for r in found}  # type: ignore[attr-defined]
            if member.height() < height or digests != {image.top, *image.blobs}:
                missing[member.peer_id] = (member.height(), sorted(digests))
        return not missing

    deadline = time.monotonic() + DEADLINE_S
    while not everywhere():
        assert time.monotonic() < deadline, (
            f"{image.reference} (height {height}) not on every node: {missing}"
        )
        time.sleep(0.1)


# -- what the tests forge ------------------------------------------------------------------


def artifact_tx(key: SigningKey) -> Transaction:
    """An AddArtifact of a file no upstream holds, signed by `key`."""
    data = os.urandom(64)
    digest = images.sha256(data)
    payload = AddArtifact(
        package_type="docker",
        package_id=FORGED_PACKAGE,
        path=f"/v2/{FORGED_PACKAGE}/blobs/{digest}",
        digest=digest,
        size=len(data),
        chunk_size=1 << 20,
        chunk_root=os.urandom(32),
        media_type="application/octet-stream",
        source="https://forged.example",
        author="",
    )
    return sign(key, type=ADD_ARTIFACT, payload=payload, time=int(time.time()), nonce=1)


def endorsed(tx: Transaction, keys: Sequence[SigningKey]) -> Transaction:
    return tx.with_endorsements(tuple(endorse(k, tx.id) for k in keys))


def proposal_block(chain: Chain, txs: Sequence[Transaction], proposer: str) -> Block:
    """The next block as a proposer would put it in a proposal: uncertified."""
    header = chain.propose(txs, int(time.time()), proposer)
    return Block(header=header, transactions=tuple(txs), certificate=())


def precommit(net: Network, signer: str, height: int, round_: int, block: Block) -> m.Precommit:
    """`signer`'s precommit for `block`, carrying its commit signature as the shell's `extend` does."""
    key = net.keys[signer]
    signature = commit_signature(key, block.header, origin_of(net))
    extension = codec.encode({"block": signature.block, "checkpoint": signature.checkpoint})
    return m.sign_precommit(
        key,
        net.genesis_hash,
        height=height,
        round=round_,
        value=m.value_hash(block.encode()),
        extension=extension,
    )


def origin_of(net: Network) -> str:
    return str(net.authorities[0].get("/api/v1/log")["origin"])


def decision(height: int, round_: int, block: Block, votes: Sequence[m.Precommit]) -> m.Decision:
    """A decision whose certificate holds exactly `votes`, repeats and all (as a liar sends it)."""
    proposal = block.encode()
    signatures = tuple(
        m.CertificateSignature(signer=v.signer, signature=v.signature, extension=v.extension) for v in votes
    )
    certificate = m.Certificate(
        height=height, round=round_, value=m.value_hash(proposal), signatures=signatures
    )
    return m.Decision(proposal=proposal, certificate=certificate)


def relabelled(vote: m.Prevote, *, height: int | None = None, round_: int | None = None) -> m.Prevote:
    """The same signature under another height or round: what a replaying relay would send."""
    return m.Prevote(
        height=vote.height if height is None else height,
        round=vote.round if round_ is None else round_,
        value=vote.value,
        signer=vote.signer,
        signature=vote.signature,
    )


def padded(message: wire.Message, size: int) -> bytes:
    """`message` encoded with an extra field that brings it to exactly `size` bytes.

    Decoding ignores the field and no signature covers it: only the length differs
    from the message itself.
    """
    doc = codec.decode(wire.encode(message))
    base = len(codec.encode({**doc, "padding": b""}))
    for pad in range(max(0, size - base - 3), size - base + 1):  # a bin header is 2 to 5 bytes
        raw = codec.encode({**doc, "padding": bytes(pad)})
        if len(raw) == size:
            return raw
    raise AssertionError(f"no padding brings a {type(message).__name__} to {size} bytes")


# -- the cases -----------------------------------------------------------------------------


def admitted(member: Member, before: Snapshot) -> None:
    """`member` reset none of the insider's streams at the door: what it refused, it read."""
    for reason in (NOT_AUTHORITY, PEER_STREAMS, OVERSIZED, MALFORMED):
        assert before.grew(member, reason) == 0, (reason, consensus(member))


def test_a_strangers_consensus_streams_are_reset_before_anything_is_read(
    network: Network, stranger: Peer
) -> None:
    before = quiet(network)
    height = next(iter(before.heights.values())) + 1
    genesis = network.genesis_hash
    # The stranger is no outcast: sync serves it the chain it forges against.
    chain = stranger.chain(network.authorities[0])
    voter = network.authorities[0].peer_id
    key = network.keys[voter]
    tx = artifact_tx(key)
    proposer = network.proposer(height, 0)
    block = proposal_block(chain, [endorsed(tx, [network.keys[a] for a in network.ordered])], proposer)
    # Every one of these is signed by real authorities, and read from an authority each would
    # count: votes for a value wake an idle core, the transaction enters the mempool, the
    # proposal (every authority endorsed its transaction) would be prevoted for. Relayed by
    # a stranger, none of them is read.
    carried: list[wire.Message] = [
        m.sign_prevote(key, genesis, height=height, round=0, value=m.value_hash(block.encode())),
        precommit(network, voter, height, 0, block),
        wire.Submit(tx=tx),
        wire.endorsement_verdict(network.keys[network.ordered[1]], tx.id),
        m.sign_proposal(
            network.keys[proposer], genesis, height=height, round=0, proposal=block.encode(), valid_round=-1
        ),
    ]
    for member in network.authorities:
        for message in carried:
            assert stranger.was_reset(member, message), f"{type(message).__name__} to {member.peer_id}"
    for member in network.authorities:
        refused(member, before, len(carried), NOT_AUTHORITY)
        assert metric(member, NOT_AUTHORITY) == count_in(
            before.counters[member.peer_id], NOT_AUTHORITY
        ) + len(carried)
        assert before.grew(member, "messages_rejected") == 0, "a stranger's message was decoded"
        assert before.grew(member, PEER_STREAMS) == 0
        assert consensus(member)["pending"] == 0
        # One line for the stranger, however many streams it opens.
        by = f"consensus message from {stranger.peer_id} refused"
        assert logged(member, by, "not an authority of the current set (not_authority)") == 1
    no_core_running(network)
    nothing_committed(network, before)
    still_works(network, "hostile/after-stranger")


def test_votes_and_proposals_signed_by_an_outsider_are_refused(
    network: Network, insider: Peer, outsider: Identity
) -> None:
    before = quiet(network)
    target = network.authorities[1]
    height = before.heights[target.peer_id] + 1
    genesis = network.genesis_hash
    value = os.urandom(32)
    chain = insider.chain(target)
    block = proposal_block(chain, [artifact_tx(outsider.signing_key)], outsider.peer_id)
    impersonated = network.authorities[0].peer_id
    forged_name = m.Prevote(
        height=height,
        round=0,
        value=value,
        signer=impersonated,
        signature=m.sign_prevote(
            outsider.signing_key, genesis, height=height, round=0, value=value
        ).signature,
    )
    insider.send(
        target,
        m.sign_prevote(outsider.signing_key, genesis, height=height, round=0, value=value),
        m.sign_prevote(outsider.signing_key, genesis, height=height, round=0, value=None),
        m.sign_precommit(outsider.signing_key, genesis, height=height, round=0, value=value, extension=b"x"),
        m.sign_proposal(
            outsider.signing_key, genesis, height=height, round=0, proposal=block.encode(), valid_round=-1
        ),
        forged_name,
    )
    refused(target, before, 5)
    admitted(target, before)
    by = f"consensus message from {insider.peer_id} refused"
    assert logged(target, by, f"{outsider.peer_id} is not an authority at height {height}") == 4
    said(target, by, f"bad prevote signature from {impersonated}")
    # The refusals woke no core: an outsider's votes cannot set the authorities voting.
    no_core_running(network)
    assert before.grew(target, "proposals_refused") == 0
    nothing_committed(network, before)
    still_works(network, "hostile/after-outsiders")


def test_decisions_with_too_few_repeated_or_foreign_signers_are_refused(
    network: Network, insider: Peer, outsider: Identity
) -> None:
    before = quiet(network)
    target = network.authorities[2]
    height = before.heights[target.peer_id] + 1
    chain = insider.chain(target)
    signers = network.ordered
    keys = [network.keys[s] for s in signers]
    block = proposal_block(chain, [endorsed(artifact_tx(keys[0]), keys)], network.proposer(height, 0))
    votes = [precommit(network, s, height, 0, block) for s in signers]
    needed = quorum(len(signers))
    assert needed == 4

    # Control: with four distinct authorities the same certificate would be the block's.
    full = decision(height, 0, block, votes[:needed])
    m.verify_certificate(full.certificate, frozenset(signers), network.genesis_hash)
    certified = Block(
        header=block.header,
        transactions=block.transactions,
        certificate=tuple(commit_signature(k, block.header, origin_of(network)) for k in keys[:needed]),
    )
    chain.check_proposal(certified)

    foreign = m.sign_precommit(
        outsider.signing_key,
        network.genesis_hash,
        height=height,
        round=0,
        value=m.value_hash(block.encode()),
        extension=votes[0].extension,
    )
    insider.send(
        target,
        decision(height, 0, block, votes[: needed - 1]),
        decision(height, 0, block, [votes[0], *votes[: needed - 1]]),
        decision(height, 0, block, [*votes[: needed - 1], foreign]),
    )
    refused(target, before, 3)
    admitted(target, before)
    by = f"consensus message from {insider.peer_id} refused"
    said(target, by, f"{needed - 1} precommits of {needed} needed")
    said(target, by, "a signer appears more than once")
    said(target, by, f"{outsider.peer_id} is not an authority at height {height}")
    no_core_running(network)
    nothing_committed(network, before)
    still_works(network, "hostile/after-decisions")


def test_replayed_votes_from_an_earlier_height_or_round_are_refused_or_ignored(
    network: Network, insider: Peer, outsider: Identity
) -> None:
    before = quiet(network)
    target = network.authorities[3]
    tip = before.heights[target.peer_id]
    assert tip >= 1, "a build committed before"
    genesis = network.genesis_hash
    voter = next(a.peer_id for a in network.authorities if a is not target)
    key = network.keys[voter]
    # What `voter` signed for the committed tip in the round its proposer had (Ed25519 is
    # deterministic, so these are byte for byte the votes it sent then, if that round decided).
    committed = insider.blocks(target)[tip]
    decided_round = (network.ordered.index(committed.header.proposer) - tip) % len(network.ordered)
    value = m.value_hash(
        Block(header=committed.header, transactions=committed.transactions, certificate=()).encode()
    )
    old_prevote = m.sign_prevote(key, genesis, height=tip, round=decided_round, value=value)
    old_precommit = m.sign_precommit(key, genesis, height=tip, round=decided_round, value=value)
    # And a vote of the next height's round 0, replayed as if cast in a later round.
    early = m.sign_prevote(key, genesis, height=tip + 1, round=0, value=os.urandom(32))
    sentinel = m.sign_prevote(outsider.signing_key, genesis, height=tip + 1, round=0, value=None)

    insider.send(
        target,
        old_prevote,  # verbatim, for a decided height: ignored
        old_precommit,
        relabelled(old_prevote, height=tip + 1),  # moved to the height being decided
        relabelled(early, round_=3),  # moved to a later round
        relabelled(early, round_=1),
        sentinel,  # one stream, handled in order: once this is refused, all of them were
    )
    refused(target, before, 4)
    admitted(target, before)
    by = f"consensus message from {insider.peer_id} refused"
    assert logged(target, by, f"bad prevote signature from {voter}") == 3
    said(target, by, f"{outsider.peer_id} is not an authority at height {tip + 1}")
    # The verbatim replays counted for nothing: no equivocation reported, no core woken.
    assert before.grew(target, "evidence") == 0
    no_core_running(network)
    nothing_committed(network, before)
    still_works(network, "hostile/after-replays")


def test_a_proposal_naming_an_unseen_transaction_is_fetched_then_refused_for_its_endorsements(
    network: Network, insider: Peer
) -> None:
    before = quiet(network)
    height = next(iter(before.heights.values())) + 1
    proposer = network.proposer(height, 0)  # maybe the absent authority: the insider holds its key
    receivers = [a for a in network.authorities if a.peer_id != proposer]
    chain = insider.chain(receivers[0])
    submitter = network.keys[network.authorities[1].peer_id]
    tx = artifact_tx(submitter)  # well signed by an authority, endorsed by nobody
    block = proposal_block(chain, [tx], proposer)
    proposal = m.sign_proposal(
        network.keys[proposer],
        network.genesis_hash,
        height=height,
        round=0,
        proposal=compact(block, network.ordered).encode(),  # names the tx by id
        valid_round=-1,
    )
    asked: queue.Queue[tuple[str, tuple[bytes, ...]]] = queue.Queue()

    def serve(stream: Stream) -> None:  # the daemons' outbound consensus streams to the insider
        inflater = wire.Inflater()
        while data := stream.read(65536, STREAM_TIMEOUT_S):
            for raw in inflater.messages(data):
                message = wire.decode(raw)
                if isinstance(message, wire.FetchTxs):
                    asked.put((stream.peer_id, message.ids))
        stream.close()

    insider.host.set_handler(wire.PROTOCOL_ID, serve, workers=4, pending_max=16, streams_per_peer_max=4)
    for receiver in receivers:
        insider.send(receiver, proposal)
    # Each receiver lacks the transaction: it holds the proposal (refusing nothing yet)
    # and asks the sender for exactly that id.
    askers: set[str] = set()
    while askers != {r.peer_id for r in receivers}:
        peer, ids = asked.get(timeout=DEADLINE_S)
        assert ids == (tx.id,), "a node asked for something the proposal does not name"
        askers.add(peer)
    for receiver in receivers:
        assert before.grew(receiver, "proposals_refused") == 0
        assert int(consensus(receiver)["txs_fetched"]) >= 1
    # Checked for all of them before any gets the transaction: a receiver still waiting
    # asks the other authorities too (with backoff), so once one holds it, the others may
    # get it from that one rather than from the insider.
    for receiver in receivers:
        insider.send(receiver, wire.Txs(txs=(tx,)))
    needed = quorum(len(network.ordered))
    assert needed == 4
    for receiver in receivers:
        refused(receiver, before, 1, "proposals_refused")
        assert f"has 0 endorsements of {needed} needed" in str(consensus(receiver)["last_refusal"])
        said(receiver, f"refusing the proposal for height {height}")
        assert before.grew(receiver, "messages_rejected") == 0  # well signed: refused as a value
        admitted(receiver, before)
    # They prevoted nil and let the rounds run out: nothing of it commits.
    eventually(
        lambda: not any(consensus(a)["running"] for a in network.authorities), "the rounds it started ended"
    )
    nothing_committed(network, before)
    still_works(network, "hostile/after-proposal")


def test_transactions_from_outsiders_and_forged_verdicts_are_refused(
    network: Network, insider: Peer, outsider: Identity
) -> None:
    before = quiet(network)
    target = network.authorities[0]
    authority = network.authorities[2].peer_id
    theirs = artifact_tx(outsider.signing_key)
    genuine = artifact_tx(network.keys[authority])
    tampered = Transaction.from_map({**genuine.to_map(), "nonce": genuine.nonce + 1})
    assert tampered.submitter == authority and tampered.id != genuine.id
    tx_id = os.urandom(32)
    fake_signature = os.urandom(64)
    insider.send(
        target,
        wire.Submit(tx=theirs),
        wire.Submit(tx=endorsed(theirs, [network.keys[a] for a in network.ordered])),
        wire.Submit(tx=tampered),
        wire.Verdict(tx_id=tx_id, signer=authority, endorse=True, reason="", signature=fake_signature),
        wire.Verdict(  # a refusal in an authority's name, signed by the outsider
            tx_id=genuine.id,
            signer=authority,
            endorse=False,
            reason="forged refusal",
            signature=outsider.signing_key.sign(wire.refusal_message(genuine.id, "forged refusal")).signature,
        ),
        wire.endorsement_verdict(outsider.signing_key, genuine.id),
    )
    refused(target, before, 6)
    admitted(target, before)
    theirs_refused = f"transaction {theirs.id.hex()[:16]} from {insider.peer_id} refused"
    assert logged(target, theirs_refused, f"submitted by {outsider.peer_id}, not an authority") == 2
    said(
        target,
        f"transaction {tampered.id.hex()[:16]} from {insider.peer_id} refused",
        f"is not signed by its submitter {authority}",
    )
    assert logged(target, f"verdict from {insider.peer_id} refused", "not signed by an authority") == 3
    # Nothing entered the mempool, so nothing waits for endorsement or ordering.
    assert consensus(target)["pending"] == 0
    no_core_running(network)
    nothing_committed(network, before)
    still_works(network, "hostile/after-submits")


def test_garbage_and_oversized_frames_reset_the_stream_and_the_node_serves_on(
    network: Network, insider: Peer, outsider: Identity
) -> None:
    before = quiet(network)
    target = network.authorities[1]
    height = before.heights[target.peer_id] + 1
    genesis = network.genesis_hash
    vote = m.sign_prevote(outsider.signing_key, genesis, height=height, round=0, value=None)
    nil_precommit = m.sign_precommit(outsider.signing_key, genesis, height=height, round=0, value=None)
    tx = artifact_tx(outsider.signing_key)
    # Each frame and the reason the node resets its stream for. All but the two bad length
    # prefixes are read whole and counted as rejected messages.
    frames = {
        "garbage": (varint.prefixed(b"\xc1\xff not msgpack"), MALFORMED),
        "unknown type": (varint.prefixed(codec.encode({"type": "gossip", "height": 1})), MALFORMED),
        "a vote without a signature": (
            varint.prefixed(
                codec.encode({"type": "prevote", "height": 1, "round": 0, "value": None, "signer": "x"})
            ),
            MALFORMED,
        ),
        "a prevote longer than a prevote can be": (
            varint.prefixed(padded(vote, wire.VOTE_BYTES_MAX + 1)),
            OVERSIZED,
        ),
        "a precommit longer than a precommit can be": (
            varint.prefixed(padded(nil_precommit, wire.PRECOMMIT_BYTES_MAX + 1)),
            OVERSIZED,
        ),
        "a verdict longer than a verdict can be": (
            varint.prefixed(
                padded(wire.endorsement_verdict(outsider.signing_key, tx.id), wire.VERDICT_BYTES_MAX + 1)
            ),
            OVERSIZED,
        ),
        "a submit longer than a submit can be": (
            varint.prefixed(padded(wire.Submit(tx=tx), wire.SUBMIT_BYTES_MAX + 1)),
            OVERSIZED,
        ),
        "oversized length prefix": (varint.encode(wire.FRAME_BYTES_MAX + 1), OVERSIZED),
        "unterminated varint": (b"\xff" * 10, MALFORMED),
    }
    for what, (frame, _) in frames.items():
        assert insider.reset_by(target, frame), f"{what}: the stream was not reset"
    for reason in (MALFORMED, OVERSIZED):
        refused(target, before, sum(r == reason for _, r in frames.values()), reason)
    read_whole = len(frames) - 2
    refused(target, before, read_whole)
    assert before.grew(target, NOT_AUTHORITY) == 0
    by = f"consensus message from {insider.peer_id} refused"
    said(target, by, "message is not a map (malformed)")
    said(target, by, "unknown message type 'gossip' (malformed)")
    said(target, by, "missing field 'signature' (malformed)")
    for kind, bound in (
        ("prevote", wire.VOTE_BYTES_MAX),
        ("precommit", wire.PRECOMMIT_BYTES_MAX),
        ("verdict", wire.VERDICT_BYTES_MAX),
        ("submit", wire.SUBMIT_BYTES_MAX),
    ):
        said(target, by, f"{kind} of {bound + 1} bytes exceeds {bound} (oversized)")
    said(
        target, by, f"message of {wire.FRAME_BYTES_MAX + 1} bytes exceeds {wire.FRAME_BYTES_MAX} (oversized)"
    )
    said(target, by, f"varint longer than {varint.VARINT_BYTES_MAX} bytes (malformed)")
    # Bytes that are no DEFLATE stream: refused as the stream's framing, not as a message.
    assert insider.reset_by(target, b"\xff\xfe not deflate", raw=True)
    refused(target, before, read_whole)
    said(target, by, "consensus stream does not inflate")
    assert target.node.process is not None and target.node.process.poll() is None
    # The same connection still speaks consensus, and a prevote at its type's bound is
    # decoded: the outsider's vote is read (the stream closed, not reset) and refused.
    assert insider.host.is_connected(target.peer_id)
    insider.send(target, padded(vote, wire.VOTE_BYTES_MAX))
    refused(target, before, read_whole + 1)
    said(target, by, f"{outsider.peer_id} is not an authority at height {height}")
    assert before.grew(target, OVERSIZED) == sum(r == OVERSIZED for _, r in frames.values())
    no_core_running(network)
    nothing_committed(network, before)
    still_works(network, "hostile/after-garbage")
