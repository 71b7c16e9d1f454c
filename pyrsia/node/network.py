"""The node's p2p side: the libp2p Host, log sync, and publish requests to authorities.

Boot (DESIGN §2): identity, then the log — a node with no log joins the network of
its `--genesis` file or of its bootstrap peers (block 0 fetched over sync, verified in
full, its hash pinned), or else starts its own one-authority network — then the Host
listens, dials the bootstrap peers (retried with back-off until one answers) and sync
brings the log up to the highest peer's. Every block this node commits is announced.

An authority answers `/pyrsia/request/1.0.0`: a request is served exactly as a pull
through it would be (fetch, verify, commit), and the reply names the height the
requester must sync to. A node that is not an authority never commits: its artifact
services call `request_publish`, which asks the authorities in turn and returns once
sync brought the commit here (or fails with one clear line, and with `on_missing =
"fail"` at once).

Before serving a request the authority puts it through `requests.RequestGuard`: a
token bucket per requesting peer (`request_rate`, `request_burst`; refused with 429),
builds only from authorities and `build_requesters` (403), and a negative cache of
what its upstream said is missing (`request_missing_ttl_s`; answered 404 from
memory). Requests for the same thing that arrive together share one serving. Each
refusal is counted by reason (`request_refusals()`, `/metrics`).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future
from pathlib import Path

from pyrsia.artifacts.singleflight import SingleFlight
from pyrsia.config import Config
from pyrsia.errors import (
    BlobUnknown,
    ConfigError,
    ManifestUnknown,
    MavenFileUnknown,
    PeerError,
    PeerTimeout,
    PyrsiaError,
    TxInvalid,
    UpstreamError,
    UpstreamUnavailable,
)
from pyrsia.formats.digest import Digest
from pyrsia.p2p.behaviours import requests
from pyrsia.p2p.behaviours.kad.service import KadService, kad_config
from pyrsia.p2p.behaviours.relay.hop import RelayLimits
from pyrsia.p2p.behaviours.requests import PublishReply, PublishRequest, RequestGuard
from pyrsia.p2p.behaviours.sync import core as sync
from pyrsia.p2p.behaviours.sync.core import Blocks, GetBlocks, Status, SyncConfig
from pyrsia.p2p.behaviours.sync.service import SyncService
from pyrsia.p2p.identity import Identity
from pyrsia.p2p.swarm.addresses import AdvertisePolicy
from pyrsia.p2p.swarm.host import Host, HostConfig, Stream
from pyrsia.p2p.swarm.limits import Limits
from pyrsia.p2p.wire.multiaddr import Multiaddr
from pyrsia.sourcebuild.status import SourceStatus
from pyrsia.translog.block import Block
from pyrsia.translog.ledger import Ledger
from pyrsia.translog.tx import check_peer_id

log = logging.getLogger("pyrsia.node")
DIAL_TIMEOUT_S = 10.0
KAD_TABLE_FILE = "kad-table.msgpack"
PROVIDERS_TIMEOUT_S = 10.0
ANNOUNCE_QUEUE_MAX = 100_000
# An authority gets each block from consensus, about when its peers do: sync leaves a
# block or two ahead to consensus this long (a peer's announcement that it committed
# first would otherwise fetch the whole block again), then fetches.
AUTHORITY_SYNC_NEAR_GAP_BLOCKS = 2
AUTHORITY_SYNC_NEAR_WAIT_S = 4.0
JOIN_TIMEOUT_S = 60.0
BOOTSTRAP_RETRY_S_MAX = 30.0
GENESIS_BYTES_MAX = 1024 * 1024
# Refusals of `/pyrsia/request/1.0.0`, as counted: the guard's, and these two.
MALFORMED = "malformed"
NOT_AUTHORITY = "not_authority"
REQUEST_REFUSALS = (*requests.REFUSAL_REASONS, MALFORMED, NOT_AUTHORITY)
# The host counts relay events only once they happen; status shows each of them from 0.
# Circuits this node opened or accepted as an end, and, as a relay: reservations granted,
# circuits bridged (spliced) and ended (relayed), bytes relayed, and times a circuit's
# sender was held back (no yamux credit) while its receiver's leg was backlogged.
RELAY_COUNTERS = (
    "reservations_granted",
    "circuits_opened",
    "circuits_spliced",
    "circuits_relayed",
    "bytes_relayed",
    "splices_held",
)


Verdicts = Sequence[tuple[str, str, str]]  # (authority, endorsed | refused | pending, reason)
ServeRequest = Callable[[PublishRequest], Verdicts | SourceStatus]


def _verdicts_in(detail: object) -> tuple[tuple[str, str, str], ...]:
    """The verdicts a `PublishRefused`/`ConsensusTimeout` carries in its detail, if any."""
    if not isinstance(detail, list):
        return ()
    return tuple(
        (str(d["authority"]), str(d["verdict"]), str(d["reason"]))
        for d in detail
        if isinstance(d, dict) and {"authority", "verdict", "reason"} <= d.keys()
    )


def _build_requesters(config: Config) -> frozenset[str]:
    """The peers besides the authorities that may request builds; each must be a peer id."""
    for peer in config.build_requesters:
        try:
            check_peer_id("build_requesters", peer)
        except TxInvalid as exc:
            raise ConfigError(f"build_requesters: {peer[:200]!r} is not a peer id: {exc.message}") from exc
    return frozenset(config.build_requesters)


def bootstrap_addresses(config: Config) -> list[Multiaddr]:
    """The configured bootstrap peers, each a /…/tcp/…/p2p/<peer id> multiaddr."""
    found = []
    for text in config.bootstrap:
        try:
            address = Multiaddr.parse(text)
        except PyrsiaError as exc:
            raise ConfigError(f"bootstrap: {text[:200]!r} is not a multiaddr: {exc.message}") from exc
        if address.peer_id is None or address.tcp_endpoint() is None:
            raise ConfigError(f"bootstrap: {text[:200]!r} needs /tcp/PORT and /p2p/PEER_ID")
        found.append(address)
    return found


def read_genesis(path: Path) -> Block:
    """A network's genesis block from a file (`pyrsia genesis` writes one)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"genesis: cannot read {path}: {exc.strerror}") from exc
    if len(data) > GENESIS_BYTES_MAX:
        raise ConfigError(f"genesis: {path} is larger than a genesis block can be")
    try:
        block = Block.decode(data)
    except TxInvalid as exc:
        raise ConfigError(f"genesis: {path} is not a pyrsia block: {exc.message}") from exc
    if block.header.height != 0:
        raise ConfigError(f"genesis: {path} holds block {block.header.height}, not a genesis block")
    return block


class LedgerChain:
    """The ledger as sync sees it."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger

    def sync_status(self) -> Status:
        head = self._ledger.head
        return Status(
            genesis=self._ledger.genesis_hash, height=head.tip.header.height, tip=head.tip.header.hash
        )

    def lookup_height(self) -> int:
        return self._ledger.lookup_height

    def encoded_blocks(self, start: int, count: int, bytes_max: int) -> list[bytes]:
        out: list[bytes] = []
        size = 0
        for height in range(start, min(start + count, self._ledger.height + 1)):
            data = self._ledger.block_bytes(height)
            size += len(data)
            if out and size > bytes_max:
                break
            out.append(data)
        return out

    def submit_encoded(self, blocks: Sequence[bytes]) -> Future[int]:
        """Decoded here, stored as one batch by the ledger (held blocks are no-ops); a block
        that does not decode ends the batch: those before it are stored, then it fails."""
        decoded: list[Block] = []
        error: TxInvalid | None = None
        for data in blocks:
            try:
                decoded.append(Block.decode(data))
            except TxInvalid as exc:
                error = exc
                break
        if not decoded:
            raise error or TxInvalid("no blocks to store")
        stored = self._ledger.submit_blocks(decoded)
        if error is None:
            return stored
        outcome: Future[int] = Future()

        def settle(done: Future[int]) -> None:
            exc = done.exception()
            outcome.set_exception(exc if exc is not None else error)

        stored.add_done_callback(settle)
        return outcome


class Network:
    def __init__(self, config: Config, identity: Identity, host: Host, ledger: Ledger) -> None:
        self._config = config
        self._identity = identity
        self.host = host
        self.ledger = ledger
        authority = identity.peer_id in ledger.authorities  # at boot; the set may change later
        self.sync = SyncService(
            host,
            LedgerChain(ledger),
            pinned_genesis=ledger.genesis_hash,
            config=SyncConfig(
                peers_max=config.sync_peers_max,
                strikes_max=config.sync_strikes_max,
                ban_s=config.sync_ban_s,
                batch_blocks_max=config.sync_batch_blocks_max,
                near_gap_blocks=AUTHORITY_SYNC_NEAR_GAP_BLOCKS if authority else 0,
                near_wait_s=AUTHORITY_SYNC_NEAR_WAIT_S if authority else 0.0,
            ),
        )
        self.kad = KadService(
            host, identity, config=kad_config(config), snapshot_path=config.home / "p2p" / KAD_TABLE_FILE
        )
        self._bootstrap = bootstrap_addresses(config)
        for address in self._bootstrap:
            assert address.peer_id is not None  # bootstrap_addresses insists
            host.add_permanent_addresses(address.peer_id, [address])
        self._stop = threading.Event()
        self._serve_request: ServeRequest | None = None
        self._announce: queue.Queue[Digest] = queue.Queue(ANNOUNCE_QUEUE_MAX)
        self.announced = 0
        self.held_unannounced = 0  # blobs verified for consensus: held, left to the republish
        self._build_requesters = _build_requesters(config)
        self._guard = RequestGuard(
            rate_per_s=config.request_rate,
            burst=config.request_burst,
            missing_ttl_s=config.request_missing_ttl_s,
        )
        self._guard_lock = threading.Lock()
        self._refused: dict[str, int] = dict.fromkeys(REQUEST_REFUSALS, 0)
        self._serving = SingleFlight()

    @property
    def is_authority(self) -> bool:
        return self._identity.peer_id in self.ledger.authorities

    def start(self, serve_request: ServeRequest, held: Iterable[Digest]) -> None:
        """`serve_request` performs a publish request as a pull through this node would (or
        a build), and returns each authority's verdict if it knows them; `held` are the blobs
        stored at boot, announced as provided."""
        self._serve_request = serve_request
        # A regular node asks for a whole image's files at once (podman pulls layers in parallel).
        self.host.set_handler(requests.PROTOCOL_ID, self._serve, workers=16, streams_per_peer_max=8)
        self.sync.start()
        self.kad.start()
        self.ledger.on_commit(lambda _block: self.sync.committed())
        threading.Thread(target=self._announcer, name="pyrsia-announce", daemon=True).start()
        for digest in held:
            self.provide(digest)
        if self._bootstrap:
            threading.Thread(target=self._dial_bootstrap, name="pyrsia-bootstrap", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        self.sync.stop()
        self.kad.stop()

    def providers(self, digest: Digest) -> list[str]:
        """Peers the DHT names as providers of a blob (their addresses go to the Host)."""
        try:
            return [peer for peer, _ in self.kad.find_providers(str(digest), timeout=PROVIDERS_TIMEOUT_S)]
        except PyrsiaError as exc:
            log.info("finding providers of %s: %s", digest, exc.message)
            return []

    def provide(self, digest: Digest) -> None:
        """Announce a held blob in the DHT (queued; a full queue drops it until the next boot).
        A node with `serve_artifacts = false` never announces."""
        if digest.algorithm == "sha256" and self._config.serve_artifacts:
            # Peers asking us find us at once; the announcement to the DHT follows in turn.
            with contextlib.suppress(PyrsiaError):
                self.kad.hold(str(digest))
            with contextlib.suppress(queue.Full):
                self._announce.put_nowait(digest)

    def hold(self, digest: Digest) -> None:
        """Answer for a held blob as its provider, without announcing it now: the DHT hears
        of it at the next republish (or the next boot). For blobs this authority fetched
        only to verify another's record: the submitter announced the same file, and in a
        network of few authorities every one of them holds that provider record already."""
        if digest.algorithm == "sha256" and self._config.serve_artifacts:
            with contextlib.suppress(PyrsiaError):
                self.kad.hold(str(digest))
            self.held_unannounced += 1

    def _announcer(self) -> None:
        while not self._stop.is_set():
            try:
                digest = self._announce.get(timeout=1.0)
            except queue.Empty:
                continue
            try:
                self.kad.provide(str(digest))
                self.announced += 1
            except PyrsiaError as exc:
                log.debug("announcing %s: %s", digest, exc.message)

    # -- boot ------------------------------------------------------------------------

    def _dial_bootstrap(self) -> None:
        """Dial every bootstrap peer; retry the ones that fail with back-off while none answers."""
        wait = 1.0
        addresses = [str(a) for a in self._bootstrap]
        while not self._stop.is_set():
            try:
                peers = self.kad.bootstrap(addresses, timeout=JOIN_TIMEOUT_S)
                log.info("joined through %s; %d peers in the DHT table", ", ".join(addresses), peers)
                return  # identify, sync and the DHT take it from there
            except PyrsiaError as exc:
                log.warning("bootstrap: %s; retrying in %.0f s", exc.message, wait)
            self._stop.wait(wait)
            wait = min(wait * 2, BOOTSTRAP_RETRY_S_MAX)

    # -- publish requests ------------------------------------------------------------

    def request_publish(self, kind: str, name: str, reference: str = "") -> None:
        """Ask every authority to publish, then wait until sync brought the commit here."""
        what = f"{name}:{reference}" if kind == "docker_manifest" else name
        refused = {"docker_blob": BlobUnknown, "maven": MavenFileUnknown}.get(kind, ManifestUnknown)
        if self._config.on_missing == "fail":
            raise refused(
                f"{what} is not in the transparency log, and this node does not ask authorities to "
                'publish (on_missing = "fail"): pull it through an authority, or set on_missing = "request"'
            )
        deadline = time.monotonic() + self._config.request_timeout_s
        failures: list[str] = []
        refusal: PyrsiaError | None = None
        for authority, answer in self.ask_authorities(
            PublishRequest(kind=kind, name=name, reference=reference)
        ):
            if isinstance(answer, PeerError):
                failures.append(f"{authority}: {answer.message}")
            elif not answer.ok:
                # What the authority's refusal means to this node's client, by its status.
                error = {404: refused, 429: UpstreamUnavailable, 503: UpstreamUnavailable}.get(
                    answer.status, UpstreamError
                )
                refusal = refusal or error(f"authority {authority} could not publish {what}: {answer.error}")
                failures.append(f"{authority}: {answer.error}")
            elif self.sync.wait_for_height(answer.height, max(0.0, deadline - time.monotonic())):
                return
            else:
                failures.append(f"{authority} committed it at height {answer.height}, not yet synced here")
        if refusal is not None:
            raise refusal
        raise UpstreamUnavailable(
            f"no authority published {what} within {self._config.request_timeout_s:g} s",
            detail=failures or ["no authority reachable"],
        )

    def ask_authorities(self, request: PublishRequest) -> Iterator[tuple[str, PublishReply | PeerError]]:
        """Send `request` to every authority at once; their answers as they come, within
        `request_timeout_s` (an authority that did not answer by then yields a `PeerTimeout`)."""
        timeout_s = self._config.request_timeout_s
        deadline = time.monotonic() + timeout_s
        answers: queue.Queue[tuple[str, PublishReply | PeerError]] = queue.Queue()
        authorities = sorted(self.ledger.authorities)

        def ask(authority: str) -> None:
            try:
                if not self.host.is_connected(authority):  # learn where it is from the DHT
                    self.host.add_addresses(
                        authority, self.kad.find_peer(authority, timeout=min(timeout_s, 10.0))
                    )
                answers.put((authority, self._ask(authority, request, max(0.1, deadline - time.monotonic()))))
            except PeerError as exc:
                answers.put((authority, exc))
            except PyrsiaError as exc:  # finding the peer failed in another way
                answers.put((authority, PeerError(exc.message)))

        for authority in authorities:
            threading.Thread(target=ask, args=(authority,), name="pyrsia-ask", daemon=True).start()
        waiting = set(authorities)
        while waiting:
            try:
                authority, answer = answers.get(timeout=max(0.0, deadline - time.monotonic()) + 1.0)
            except queue.Empty:
                for authority in sorted(waiting):
                    yield authority, PeerTimeout(f"{authority} did not answer within {timeout_s:g} s")
                return
            waiting.discard(authority)
            yield authority, answer

    def ask(self, authority: str, request: PublishRequest, timeout_s: float) -> PublishReply:
        """Send `request` to one authority (found through the DHT when not connected)."""
        try:
            if not self.host.is_connected(authority):
                self.host.add_addresses(
                    authority, self.kad.find_peer(authority, timeout=min(timeout_s, 10.0))
                )
            return self._ask(authority, request, timeout_s)
        except PeerError:
            raise
        except PyrsiaError as exc:
            raise PeerError(exc.message) from exc

    def _ask(self, authority: str, request: PublishRequest, timeout_s: float) -> PublishReply:
        stream = self.host.open_stream(
            authority, [requests.PROTOCOL_ID], timeout=min(timeout_s, DIAL_TIMEOUT_S)
        )
        try:
            stream.write_message(requests.encode(request), timeout_s)
            raw = stream.read_message(requests.MESSAGE_BYTES_MAX, timeout_s)
        finally:
            stream.close()
        reply = requests.decode(raw) if raw is not None else None
        if not isinstance(reply, PublishReply):
            raise PeerError(f"{authority} did not answer the publish request")
        return reply

    def request_refusals(self) -> dict[str, int]:
        """Requests refused or answered without serving, by reason (for `/metrics`)."""
        with self._guard_lock:
            return dict(self._refused)

    def _count(self, reason: str) -> None:
        with self._guard_lock:
            self._refused[reason] = self._refused.get(reason, 0) + 1

    def _serve(self, stream: Stream) -> None:
        """An authority serving a publish request from any peer."""
        peer = stream.peer_id
        try:
            raw = stream.read_message(requests.MESSAGE_BYTES_MAX, DIAL_TIMEOUT_S)
            request = requests.decode(raw) if raw is not None else None
            if not isinstance(request, PublishRequest):
                raise PeerError(f"{peer} sent no publish request")
        except PeerError as exc:
            self._count(MALFORMED)
            log.info("publish request from %s refused: %s", peer, exc.message)
            stream.reset()
            return
        if not self.is_authority or self._serve_request is None:
            self._count(NOT_AUTHORITY)
            reply = PublishReply(ok=False, status=403, error="this node is not an authority")
        else:
            may_build = peer in self.ledger.authorities or peer in self._build_requesters
            with self._guard_lock:
                refusal = self._guard.admit(peer, request, time.monotonic(), may_build=may_build)
            if refusal is not None:
                self._count(refusal.reason)
                # One line per refusal a peer can be told about; a flood of them logs at debug.
                level = logging.DEBUG if refusal.reason == requests.RATE_LIMITED else logging.INFO
                log.log(level, "request %s %s from %s refused: %s", request.kind, request.name[:200],
                        peer, refusal.reply.error)  # fmt: skip
                reply = refusal.reply
            else:
                reply = self._serving.run(
                    "\0".join((request.kind, request.name, request.reference)),
                    lambda: self._perform(peer, request),
                )
                with self._guard_lock:
                    self._guard.served(request, reply, time.monotonic())
        try:
            stream.write_message(requests.encode(reply))
            stream.close()
        except PeerError:
            stream.reset()

    def _perform(self, peer: str, request: PublishRequest) -> PublishReply:
        if not self.is_authority or self._serve_request is None:
            return PublishReply(ok=False, status=403, error="this node is not an authority")
        try:
            answer = self._serve_request(request)
        except PyrsiaError as exc:
            log.info("publish request from %s for %s failed: %s", peer, request.name, exc.message)
            return PublishReply(
                ok=False, status=exc.http_status, error=exc.message, verdicts=_verdicts_in(exc.detail)
            )
        if isinstance(answer, SourceStatus):  # `source_status`: this authority's build of a spec
            return PublishReply(ok=True, height=self.ledger.height, source=answer.to_fields())
        log.info("published %s %s for %s", request.kind, request.name, peer)
        return PublishReply(ok=True, height=self.ledger.height, verdicts=tuple(answer))

    # -- status ----------------------------------------------------------------------

    def addresses(self) -> list[str]:
        """Where peers reach us, each ending in /p2p/<our peer id> (a bootstrap address)."""
        me = self._identity.peer_id
        return [str(a) if a.peer_id else f"{a}/p2p/{me}" for a in self.host.listen_addrs]

    def status(self) -> dict[str, object]:
        peers = self.host.peers()
        kad = self.kad.stats()
        host = self.host.stats()
        return {
            "addresses": self.addresses(),
            **self.host.address_kinds(),
            "peers": len(peers),
            "authority": self.is_authority,
            "authorities": sorted(self.ledger.authorities),
            "genesis": self.ledger.genesis_hash.hex(),
            "dht_peers": self.kad.routing_table_size,
            "provided_keys": kad.provided_keys,
            "held_unannounced": self.held_unannounced,
            "dht_provider_records": kad.provider_records,
            "dht_refused": {
                "table_bucket_group": kad.table_refused_bucket_group,
                "table_group": kad.table_refused_table_group,
                "provider_store_full": kad.provider_refused_store_full,
                "provider_peer_quota": kad.provider_refused_peer_quota,
                "provider_group_quota": kad.provider_refused_group_quota,
                "addrs_withheld": kad.addrs_withheld,
            },
            "best_known_height": max(self.ledger.height, self.sync.best_known_height()),
            "reachability": host.reachability,
            "relay": {
                "reservations_held": host.reservations,
                "circuits_relayed_now": host.circuits_relayed,
                **dict.fromkeys(RELAY_COUNTERS, 0),
                **host.relay,
            },
            "holepunch": host.holepunch,
            "bytes_by_protocol": {
                protocol: {
                    "in": host.protocol_bytes_in.get(protocol, 0),
                    "out": host.protocol_bytes_out.get(protocol, 0),
                }
                for protocol in sorted({*host.protocol_bytes_in, *host.protocol_bytes_out})
            },
        }

    def peers(self) -> list[dict[str, object]]:
        heights = self.sync.peer_heights()
        return [
            {
                "peer_id": info.peer_id,
                "address": str(info.address),
                "direction": info.direction,
                "relayed": info.relayed,
                "rtt_ms": None if info.rtt_s is None else round(info.rtt_s * 1000, 3),
                "bytes_in": info.bytes_in,
                "bytes_out": info.bytes_out,
                "agent": info.agent_version,
                "protocols": list(info.protocols),
                "height": heights.get(info.peer_id),
            }
            for info in sorted(self.host.peers().values(), key=lambda i: i.peer_id)
        ]

    def ping(self, target: str) -> dict[str, object]:
        """RTT to a peer id we know, or to a multiaddr (dialled first)."""
        if target.startswith("/"):
            try:
                address = Multiaddr.parse(target)
            except PyrsiaError as exc:
                raise ConfigError(f"{target[:200]!r} is not a multiaddr: {exc.message}") from exc
            # A new connection to that very address: reusing one already up to the peer
            # would answer for another address, and a wrong port would seem to work.
            peer = self.host.connect(address, timeout=DIAL_TIMEOUT_S, fresh=True)
        else:
            peer = target
        rtt_s = self.host.ping(peer, timeout=DIAL_TIMEOUT_S)
        return {"peer_id": peer, "rtt_ms": round(rtt_s * 1000, 3)}


def host_for(config: Config, identity: Identity) -> Host:
    policy = AdvertisePolicy.from_settings(announce=config.announce, no_announce=config.no_announce)
    return Host(
        identity,
        HostConfig(
            listen_host=config.p2p_host,
            listen_port=config.p2p_port,
            announce=policy.announce,
            no_announce=policy.no_announce,
            limits=Limits(
                connections_inbound_max=config.p2p_connections_max,
                connections_per_ip_max=config.p2p_connections_per_ip_max,
                connections_per_subnet_max=config.p2p_connections_per_subnet_max,
                handshakes_inbound_max=config.p2p_handshakes_max,
                reserved_known=min(config.p2p_connections_reserved, config.p2p_connections_max - 1),
                allow=config.p2p_limits_allow,
            ),
            reachability=config.reachability,
            relay_service=config.relay_service,
            hole_punching=config.hole_punching,
            relay_limits=RelayLimits(
                reservations_max=config.relay_reservations_max,
                circuits_per_peer_max=config.relay_circuits_per_peer_max,
                circuit_duration_s=config.relay_circuit_duration_s,
                circuit_bytes_max=config.relay_circuit_bytes_max,
                rate_per_minute_max=config.relay_rate_max,
            ),
        ),
    )


def join(host: Host, bootstrap: list[Multiaddr], pinned: Block | None) -> Block:
    """The genesis block of the network our bootstrap peers belong to, fetched over sync.

    Called only when the node has no log yet. Each peer in turn is asked for block 0;
    the first that answers decides (its hash is then pinned by the log itself).
    """
    if pinned is not None:
        return pinned
    deadline = time.monotonic() + JOIN_TIMEOUT_S
    failures: list[str] = []
    while time.monotonic() < deadline:
        for address in bootstrap:
            try:
                peer = host.connect(address, timeout=DIAL_TIMEOUT_S)
                stream = host.open_stream(peer, [sync.PROTOCOL_ID], timeout=DIAL_TIMEOUT_S)
                try:
                    stream.write_message(sync.encode(GetBlocks(start=0, count=1)))
                    raw = stream.read_message(sync.MESSAGE_BYTES_MAX, DIAL_TIMEOUT_S)
                finally:
                    stream.close()
                reply = sync.decode(raw) if raw is not None else None
                if isinstance(reply, Blocks) and len(reply.blocks) == 1:
                    block = Block.decode(reply.blocks[0])
                    if block.header.height == 0:
                        log.info("joining the network of %s (genesis %s)", peer, block.header.hash.hex()[:16])
                        return block
                failures.append(f"{address}: no genesis block in its answer")
            except (PeerError, TxInvalid) as exc:
                failures.append(f"{address}: {exc.message}")
        time.sleep(1.0)  # every bootstrap peer failed this round; the next round retries them
    raise ConfigError(
        "cannot join a network: no bootstrap peer gave its genesis block within "
        f"{JOIN_TIMEOUT_S:g} s ({'; '.join(failures[-3:])})"
    )
