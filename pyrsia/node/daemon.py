"""Wires a node together from its `Config` and runs it until told to stop.

Start order: home directory and secrets, blob store (leftover temp files from a crash
are removed), upstream clients, transparency log (chain verified, index brought up to
date), artifact services, HTTP server. Stop order is the
reverse: the HTTP server drains in-flight responses first, then the upstream client
closes and unfinished temp files are removed. Output is the CLI's job: `Node` only
reports what it is (`NodeInfo`), it never prints.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from urllib.parse import urlsplit

from pyrsia import __version__
from pyrsia.artifacts.blobstore import BlobStore
from pyrsia.artifacts.docker import DockerArtifacts, RegistrySource, StoredManifest
from pyrsia.artifacts.exchange_service import (
    DownloadConfig,
    ExchangeServer,
    ExchangeStats,
    PeerSource,
    ServeConfig,
    SharedBucket,
)
from pyrsia.artifacts.maven import MavenArtifacts
from pyrsia.artifacts.maven_listing import MavenListings
from pyrsia.artifacts.records import RecordStore
from pyrsia.artifacts.vouch import DOCKER, MAVEN, LedgerArtifactLog
from pyrsia.config import CONFIG_FILE, Config, set_in_file
from pyrsia.consensus.service import PENDING, ConsensusService, VerifyResult
from pyrsia.errors import (
    ConsensusTimeout,
    ListenError,
    MavenFileUnknown,
    NotAnAuthority,
    PeerError,
    PublishRefused,
    PyrsiaError,
    TxInvalid,
    UpstreamError,
    UsageError,
)
from pyrsia.formats.build_target import maven_paths
from pyrsia.formats.digest import Digest, looks_like_digest
from pyrsia.formats.manifest import INDEX_TYPES, children, image_parts
from pyrsia.formats.maven_layout import parse_path
from pyrsia.formats.reference import parse_image_reference, parse_tag
from pyrsia.http.server import HttpServer, Limits
from pyrsia.node.approvals import Approvals
from pyrsia.node.builds import Committed, Publication, Publications, answers_doc, merge_verdict
from pyrsia.node.home import ensure_home, load_admin_token, load_identity
from pyrsia.node.network import Network, Verdicts, bootstrap_addresses, host_for, join, read_genesis
from pyrsia.node.source_builds import SourceBuilder, SourceBuildService, spec_of_json
from pyrsia.p2p.behaviours.requests import PublishRequest
from pyrsia.registry.api import NodeApi
from pyrsia.registry.app import NodeApp
from pyrsia.registry.docker import DockerRegistry
from pyrsia.registry.maven import MavenRepository
from pyrsia.registry.metrics import (
    exchange_families,
    p2p_families,
    refusals_family,
    render,
    upstream_families,
)
from pyrsia.registry.peer_api import PeerBlobApp
from pyrsia.registry.peer_gate import GateConfig
from pyrsia.sourcebuild.sandbox import MirrorAddress
from pyrsia.sourcebuild.spec import BuildSpec
from pyrsia.sourcebuild.status import SourceStatus
from pyrsia.translog.block import DEFAULT_REGISTRIES, REGISTRIES_MAX, quorum
from pyrsia.translog.chain import PERMANENT_REGISTRY
from pyrsia.translog.chunks import CHUNK_BYTES
from pyrsia.translog.index import Query
from pyrsia.translog.ledger import Ledger
from pyrsia.translog.tx import (
    ADD_ARTIFACT,
    ADD_AUTHORIZED_NODE,
    ADD_REGISTRY,
    REMOVE_AUTHORIZED_NODE,
    REMOVE_REGISTRY,
    AddArtifact,
    AuthorizedNode,
    Registry,
    Transaction,
    check_peer_id,
)
from pyrsia.upstream.credentials import docker_config_path, load_docker_config, load_token_file
from pyrsia.upstream.maven import repositories as maven_repositories
from pyrsia.upstream.registry import RegistryClient, RegistryClients
from pyrsia.web.site import StaticSite
from pyrsia.web.traffic import TrafficHistory, counters_of

log = logging.getLogger("pyrsia.node")
CONSENSUS_DIR = "consensus"
APPROVALS_FILE = "approvals.json"
THIS_NODE = "this node"
VIA_AUTHORITIES = "authorities"
BUILD_FETCHES_MAX = 4
LOGGED_RECORDS_MAX = 1000  # records of one build target shown by a regular node (an image: its files)
SHUTDOWN_GRACE_S = 30.0
PARTIALS_KEPT_S = 7 * 86400.0
SOURCE_REQUEST_KINDS = (
    "build_source",
    "source_rebuild",
    "source_status",
)  # a peer download older than this is not resumed


@dataclass(frozen=True, slots=True)
class NodeInfo:
    peer_id: str
    http_url: str
    addresses: tuple[str, ...]
    p2p_addresses: tuple[str, ...] = ()


def http_limits(config: Config) -> Limits:
    """The HTTP server's limits: each `Limits` field `x` is the setting `http_x`."""
    return Limits(**{f.name: getattr(config, f"http_{f.name}") for f in dataclasses.fields(Limits)})


def _host_of(source: str) -> str:
    """`host[:port]` of a writer's source label (`upstream URL` or a bare URL), never its
    path or user info, so a page shows where bytes come from and nothing more."""
    parts = urlsplit(source.rpartition(" ")[2])
    host = parts.hostname or ""
    return f"{host}:{parts.port}" if parts.port else host


def docker_upstreams(config: Config) -> RegistryClients:
    """One client per registry host, each with only its own login: its token file, else
    its `auths` entry in docker's config.json (read once, at start)."""
    logins = load_docker_config(config.docker_config)
    where = docker_config_path(config.docker_config)
    clients = {}
    for host, upstream in config.docker_registries.items():
        credential = (
            load_token_file(upstream.token_file, host) if upstream.token_file else logins.for_host(host)
        )
        clients[host] = RegistryClient(
            upstream.url,
            timeout_s=config.upstream_timeout_s,
            retries_max=config.upstream_retries_max,
            deadline_s=config.upstream_deadline_s,
            rate_min_bytes_s=config.upstream_rate_min_bytes_s,
            registry=host,
            credential=credential,
            helper="" if credential is not None else logins.helper_for(host),
            realm_hosts=upstream.realm_hosts,
            login_hint=f'add its login to {where} (docker login {host}) or [upstreams."{host}"] token_file',
        )
        if credential is not None:
            log.info("registry %s: using the login from %s", host, credential.origin)
    return RegistryClients(clients)


class Node:
    def __init__(self, config: Config) -> None:
        self.config = config
        ensure_home(config.home)
        self.identity = load_identity(config.home)
        self._admin_token = load_admin_token(config.home)
        self.blobs = BlobStore(config.home / "blobs")
        # Set on a verifier thread while it fetches a file to check another authority's record.
        self._verifying = threading.local()
        removed = self.blobs.remove_temp_files()
        removed += self.blobs.remove_stale_partials(PARTIALS_KEPT_S, time.time())
        if removed:
            log.info("removed %d unfinished blob writes from an earlier run", removed)
        self._docker_upstream = docker_upstreams(config)
        self._maven_upstream = maven_repositories(config, os.environ)
        self.host = host_for(config, self.identity)
        self.host.start()
        try:
            self.ledger = self._open_log(config)
        except BaseException:
            self.host.stop()
            raise
        self.network = Network(config, self.identity, self.host, self.ledger)
        bootstrap_ids = frozenset(a.peer_id for a in bootstrap_addresses(config) if a.peer_id)
        self.host.set_known(lambda peer: peer in bootstrap_ids or peer in self.ledger.authorities)
        self.consensus = ConsensusService(
            self.host,
            self.ledger,
            self.identity.signing_key,
            state_dir=config.home / CONSENSUS_DIR,
            verify=self._verify_tx,
            find_peer=lambda peer, timeout: self.network.kad.find_peer(peer, timeout=timeout),
        )
        self._approvals = Approvals(config.home / CONSENSUS_DIR / APPROVALS_FILE)
        self._builds = Publications()
        self._build_context = threading.local()
        # A node that is not an authority never commits: it asks one (fixed at start).
        authority = None if self.network.is_authority else self.network
        vouched = LedgerArtifactLog(self.ledger, commit=self._commit)
        self.exchange = ExchangeStats()
        upload = SharedBucket(config.max_upload_rate, time.monotonic, time.sleep)
        self._peer_http = self._peer_http_server(config, vouched, upload)
        peer_http_port = self._peer_http.address[1] if self._peer_http is not None else 0
        self._exchange_server = ExchangeServer(
            self.blobs,
            lambda d: vouched.vouches(DOCKER, str(d)) or vouched.vouches(MAVEN, str(d)),
            config=ServeConfig(
                serve_artifacts=config.serve_artifacts,
                max_upload_rate=config.max_upload_rate,
                max_upload_peers=config.max_upload_peers,
                streams_per_peer_max=config.max_upload_streams_per_peer,
                request_deadline_s=config.upload_request_deadline_s,
                http_port=peer_http_port,
            ),
            stats=self.exchange,
            upload=upload,
        )
        peers = PeerSource(
            self.host,
            self.blobs,
            self.network.providers,
            config=DownloadConfig(max_download_rate=config.max_download_rate),
            stats=self.exchange,
        )
        # DESIGN §2: log record → local store → peers → the upstream named in the record.
        self._docker = DockerArtifacts(
            self.blobs,
            vouched,
            self._docker_upstream,
            RecordStore(config.home / "refs" / "docker"),
            sources=[peers, RegistrySource(self._docker_upstream)],
            authority=authority,
            observe=self.exchange.obtained,
            agreed=lambda: self.ledger.registries,
            manifest_cache_bytes_max=config.manifest_cache_bytes_max,
        )
        self._maven = MavenArtifacts(
            self.blobs,
            RecordStore(config.home / "refs" / "maven"),
            vouched,
            self._maven_upstream,
            config.maven_metadata_ttl_s,
            authority=authority,
            peers=[peers],
            observe=self.exchange.obtained,
        )
        docker, maven = self._docker, self._maven
        api = NodeApi(self, self._admin_token, self.ledger)
        self._server = HttpServer(
            NodeApp(
                DockerRegistry(docker),
                MavenRepository(maven, MavenListings(vouched, self._maven_upstream)),
                api,
                StaticSite(),
            ),
            config.http_host,
            config.http_port,
            http_limits(config),
        )
        server_host, server_port = self._server.address
        self._sources = SourceBuildService(
            builder=SourceBuilder(
                root=Path(config.source_build_dir)
                if config.source_build_dir
                else config.home / "source-builds",
                # The sandbox reaches this node's own /maven2/ through its unix-socket bridge.
                mirror=MirrorAddress(
                    host="127.0.0.1" if server_host in ("0.0.0.0", "::") else server_host, port=server_port
                ),
                workers=config.source_build_workers,
                uid=config.source_build_uid,
                jdks=config.source_build_jdks,
                on_done=self.consensus.reverify,
            ),
            network=self.network,
            consensus=self.consensus,
            ledger=self.ledger,
            blobs=self.blobs,
            maven_records=RecordStore(config.home / "refs" / "maven"),
            maven_upstream=self._maven_upstream,
            me=self.identity.peer_id,
            request_timeout_s=config.request_timeout_s,
        )
        self._started = time.monotonic()
        self._stop = threading.Event()
        self._traffic = TrafficHistory(
            samples_max=config.traffic_samples_max, interval_s=config.traffic_sample_interval_s
        )
        self._traffic_lock = threading.Lock()
        self._traffic_stop = threading.Event()
        self._traffic_thread = threading.Thread(target=self._sample_traffic, name="traffic", daemon=True)

    def _peer_http_server(
        self, config: Config, vouched: LedgerArtifactLog, upload: SharedBucket
    ) -> HttpServer | None:
        """The peer HTTP data plane's listener, bound like the p2p one; None when off.

        A port that cannot be bound leaves the node serving peers over the p2p exchange
        only (its chunk lists then advertise no port), rather than not starting.
        """
        if not config.serve_artifacts or config.peer_http_port == 0:
            return None
        app = PeerBlobApp(
            self.blobs,
            lambda d: vouched.vouches(DOCKER, str(d)) or vouched.vouches(MAVEN, str(d)),
            gate=GateConfig(
                request_rate=config.peer_http_request_rate,
                requests_per_ip_max=config.peer_http_requests_per_ip_max,
                peers_max=config.max_upload_peers,
            ),
            upload=upload,
            stats=self.exchange,
        )
        try:
            return HttpServer(app, config.p2p_host, config.peer_http_port, http_limits(config))
        except ListenError as exc:
            log.warning("peer HTTP data plane off: %s", exc.message)
            return None

    def _open_log(self, config: Config) -> Ledger:
        """Open the log, or start it: from a genesis file, from the bootstrap peers' network,
        or (neither given) as this node's own one-authority network. Opening verifies the
        chain; a broken one, or one of another network than `--genesis`, stops the node."""
        root = config.home / "translog"
        genesis = read_genesis(Path(config.genesis)) if config.genesis else None
        fresh = not any((root / "blocks").glob("*.blk"))
        bootstrap = bootstrap_addresses(config)
        if fresh and genesis is None and bootstrap:
            genesis = join(self.host, bootstrap, None)
        # The embedded network's genesis agrees to the built-in registries and those configured.
        registries = sorted(set(DEFAULT_REGISTRIES) | set(config.docker_registries))
        return Ledger.open(root, self.identity.signing_key, genesis=genesis, registries=registries)

    @property
    def info(self) -> NodeInfo:
        host, port = self._server.address
        url = f"http://{host}:{port}"
        address = f"/ip4/{host}/tcp/{port}/http"
        return NodeInfo(
            peer_id=self.identity.peer_id,
            http_url=url,
            addresses=(address,),
            p2p_addresses=tuple(self.network.addresses()),
        )

    def start(self) -> NodeInfo:
        self.blobs.on_stored(self._stored)
        self._exchange_server.register(self.host)
        self.consensus.start()
        self.network.start(self._serve_request, self.blobs.digests())
        self._server.start()
        if self._peer_http is not None:
            self._peer_http.start()
        self._started = time.monotonic()
        self._traffic_thread.start()
        return self.info

    def _sample_traffic(self) -> None:
        """Reads the byte counters every `traffic_sample_interval_s` for the dashboard's chart."""
        while True:
            snapshot = self.exchange.snapshot()
            counters = counters_of(snapshot.bytes_by_source, snapshot.served_bytes_by_peer)
            with self._traffic_lock:
                self._traffic.record(time.time(), counters)
            if self._traffic_stop.wait(self.config.traffic_sample_interval_s):
                return

    def traffic(self) -> dict[str, object]:
        with self._traffic_lock:
            return self._traffic.to_json()

    def transfers(self) -> list[dict[str, object]]:
        """Blob downloads in progress: from peers (chunks verified so far, an upper bound of
        their bytes while the short last chunk is among them) and from upstreams (bytes
        written so far, in order, checked against the digest at the end)."""
        peers: list[dict[str, object]] = [
            {
                "digest": t.digest,
                "size": t.size,
                "chunks": t.chunks,
                "verified_chunks": t.verified,
                "verified_bytes": min(t.size, t.verified * CHUNK_BYTES),
                "providers": list(t.providers),
                "source": "peers",
            }
            for t in self.exchange.snapshot().transfers
        ]
        upstream: list[dict[str, object]] = [
            {"digest": w.digest, "size": w.size, "written_bytes": w.written, "source": "upstream",
             "upstream": _host_of(w.source)}
            for w in self.blobs.writes_in_progress()
            if w.source != PeerSource.label and w.written > 0
        ]  # fmt: skip
        upstream.sort(key=lambda t: str(t["digest"]))
        return peers + upstream

    def _serve_request(self, request: PublishRequest) -> Verdicts | SourceStatus:
        """A publish request from another node, served as a pull through this one would be;
        a build request runs (or joins) that build here and answers once it ended."""
        if request.kind in SOURCE_REQUEST_KINDS:
            return self._sources.serve(request)
        if request.kind.startswith("build_"):
            build, new = self._builds.start(
                request.kind.removeprefix("build_"), request.name, THIS_NODE, time.time()
            )
            if new:
                self._run_build(build)
            elif not build.done.wait(self.config.request_timeout_s):
                raise ConsensusTimeout(f"build {build.id} of {build.target} is still running")
            verdicts = self._verdicts_of(build)
            if build.state == "committed":
                return verdicts
            error = PublishRefused if build.state == "refused" else UpstreamError
            raise error(
                build.error or f"build {build.state}",
                detail=[{"authority": a, "verdict": v, "reason": r} for a, v, r in verdicts],
            )
        match request.kind:
            case "docker_manifest":
                name, ref = self._docker.resolve(request.name, None), request.reference
                self._docker.manifest(
                    name, Digest.parse(ref) if looks_like_digest(ref) else parse_tag(ref), ()
                )
            case "docker_blob":
                self._docker.blob(self._docker.resolve(request.name, None), Digest.parse(request.reference))
            case "maven":
                self._maven.file(parse_path(request.name))
        return ()

    # -- publishing through the authorities -------------------------------------------

    def _commit(self, payloads: Sequence[AddArtifact]) -> None:
        """How the artifact services commit: alone as the one authority, else by consensus."""
        build: Publication | None = getattr(self._build_context, "build", None)
        if self.ledger.authorities == {self.identity.peer_id}:
            block = self.ledger.publish(payloads)
            if build is not None:
                with build.lock:
                    build.committed += [
                        Committed(
                            tx_id=tx.id.hex(),
                            path=tx.payload.path,
                            digest=tx.payload.digest,
                            height=block.header.height,
                            submitter=tx.submitter,
                        )
                        for tx in block.transactions
                        if isinstance(tx.payload, AddArtifact)
                    ]
            return
        outcomes = self.consensus.submit([self.consensus.sign(ADD_ARTIFACT, p) for p in payloads])
        if build is not None:
            with build.lock:
                build.outcomes += outcomes
        self.consensus.wait(outcomes, self.config.request_timeout_s)

    def _stored(self, digest: Digest) -> None:
        """A new blob: announced as provided, unless this thread stored it to verify
        another authority's record (then held, and announced at the republish)."""
        if getattr(self._verifying, "active", False):
            self.network.hold(digest)
        else:
            self.network.provide(digest)

    def _verify_tx(self, tx: Transaction) -> VerifyResult:
        """This authority's own check of another's transaction (the consensus verifier)."""
        payload = tx.payload
        if isinstance(payload, AddArtifact) and payload.rebuilt:
            return self._sources.verify(tx)
        if isinstance(payload, AddArtifact):
            service = self._docker if payload.package_type == DOCKER else self._maven
            self._verifying.active = True
            try:
                return service.verify_record(payload)
            finally:
                self._verifying.active = False
        if isinstance(payload, Registry):
            remove = tx.type == REMOVE_REGISTRY
            problem = self._registry_change_problem(payload.host, remove)
            if problem is not None:
                return problem
            return (
                None if self._approvals.has_registry(payload.host, "remove" if remove else "add") else PENDING
            )
        assert isinstance(payload, AuthorizedNode)
        action = "add" if tx.type == ADD_AUTHORIZED_NODE else "remove"
        return None if self._approvals.has(payload.peer_id, action) else PENDING

    def authorize(self, peer_id: str, remove: bool) -> dict[str, object]:
        """This node's admin approves adding (removing) `peer_id` as an authority, and the
        change is submitted (or an equal pending one endorsed)."""
        try:
            check_peer_id("peer id", peer_id)
        except TxInvalid as exc:
            raise UsageError(f"{peer_id[:100]!r} is not a peer id: {exc.message}") from exc
        me = self.identity.peer_id
        authorities = self.ledger.authorities
        if me not in authorities:
            raise NotAnAuthority("this node is not an authority: run this on an authorized node")
        action = "remove" if remove else "add"
        if not remove and peer_id in authorities:
            raise UsageError(f"{peer_id} is an authority already")
        if remove and peer_id not in authorities:
            raise UsageError(f"{peer_id} is not an authority")
        if remove and authorities == {peer_id}:
            raise UsageError("the last authority cannot be removed")
        self._approvals.approve(peer_id, action)
        answer: dict[str, object] = {"peer_id": peer_id, "action": action, "approved": True}
        tx = self.consensus.sign(
            REMOVE_AUTHORIZED_NODE if remove else ADD_AUTHORIZED_NODE, AuthorizedNode(peer_id=peer_id)
        )
        if authorities == {me}:
            block = self.ledger.commit_signed([tx])
            return {**answer, "tx_id": tx.id.hex(), "state": "committed", "height": block.header.height}
        pending = [
            p
            for p in self.consensus.pending_authority_changes()
            if (p["peer_id"], p["action"]) == (peer_id, action)
        ]
        if pending:
            self.consensus.reverify()  # endorse the one already going round
            return {**answer, "tx_id": pending[0]["tx_id"], "state": "pending", "height": None}
        self.consensus.submit([tx])
        return {**answer, "tx_id": tx.id.hex(), "state": "pending", "height": None}

    def authorities(self) -> dict[str, object]:
        authorities = self.ledger.authorities
        return {
            "height": self.ledger.height,
            "quorum": quorum(len(authorities)),
            "authorities": sorted(authorities),
            "me": self.identity.peer_id,
            "is_authority": self.identity.peer_id in authorities,
            "approvals": self._approvals.entries(),
            "pending": self.consensus.pending_authority_changes(),
        }

    # -- the agreed registries ------------------------------------------------------------

    def _registry_change_problem(self, host: str, remove: bool) -> str | None:
        """Why the chain would refuse this change at the tip (the chain's rules, as one line), or None."""
        agreed = self.ledger.registries
        if not remove and host in agreed:
            return f"registry {host} is agreed already"
        if not remove and len(agreed) >= REGISTRIES_MAX:
            return f"the network agrees to {REGISTRIES_MAX} registries, the most it may"
        if remove and host == PERMANENT_REGISTRY:
            return f"registry {host} cannot be removed: every name without a registry host is its"
        if remove and host not in agreed:
            return f"registry {host} is not agreed, so it cannot be removed"
        if remove and agreed == (host,):
            return "the last registry cannot be removed"
        return None

    def change_registry(self, host: str, remove: bool) -> dict[str, object]:
        """This node's admin approves adding (removing) `host` to the agreed Docker
        registries, and the change is submitted (or an equal pending one endorsed)."""
        me = self.identity.peer_id
        authorities = self.ledger.authorities
        if me not in authorities:
            raise NotAnAuthority("this node is not an authority: run this on an authorized node")
        try:
            payload = Registry(host=host)
        except TxInvalid as exc:
            raise UsageError(exc.message) from exc
        problem = self._registry_change_problem(host, remove)
        if problem is not None:
            raise UsageError(problem)
        action = "remove" if remove else "add"
        self._approvals.approve_registry(host, action)
        answer: dict[str, object] = {"host": host, "action": action, "approved": True}
        tx = self.consensus.sign(REMOVE_REGISTRY if remove else ADD_REGISTRY, payload)
        if authorities == {me}:
            block = self.ledger.commit_signed([tx])
            return {**answer, "tx_id": tx.id.hex(), "state": "committed", "height": block.header.height}
        pending = [
            p for p in self.consensus.pending_registry_changes() if (p["host"], p["action"]) == (host, action)
        ]
        if pending:
            self.consensus.reverify()  # endorse the one already going round
            return {**answer, "tx_id": pending[0]["tx_id"], "state": "pending", "height": None}
        self.consensus.submit([tx])
        return {**answer, "tx_id": tx.id.hex(), "state": "pending", "height": None}

    def registries(self) -> dict[str, object]:
        authorities = self.ledger.authorities
        return {
            "height": self.ledger.height,
            "quorum": quorum(len(authorities)),
            "registries": [{"host": h, "since": since} for h, since in self.ledger.registries_since],
            "upstreams": {h: u.url for h, u in sorted(self.config.docker_registries.items())},
            "me": self.identity.peer_id,
            "is_authority": self.identity.peer_id in authorities,
            "approvals": self._approvals.registry_entries(),
            "pending": self.consensus.pending_registry_changes(),
        }

    # -- builds -------------------------------------------------------------------------

    def start_build(self, kind: str, target: str) -> dict[str, object]:
        via = THIS_NODE if self.network.is_authority else VIA_AUTHORITIES
        build, new = self._builds.start(kind, target, via, time.time())
        if new:
            threading.Thread(
                target=self._run_build, args=(build,), name=f"build-{build.id}", daemon=True
            ).start()
        return self.build(build.id)

    def builds(self) -> list[Mapping[str, object]]:
        sources: list[Mapping[str, object]] = [self._sources.to_json(b) for b in self._sources.builds.all()]
        return [self.build(b.id) for b in self._builds.all()] + sources

    def start_source_build(self, spec: BuildSpec) -> dict[str, object]:
        """`pyrsia build source`: rebuilt by every authority, committed if a quorum built the same bytes."""
        return self._sources.to_json(self._sources.start(spec))

    def source_spec(self, text: str) -> BuildSpec:
        return spec_of_json(text)

    def _run_build(self, build: Publication) -> None:
        try:
            if build.via == THIS_NODE:
                self._build_here(build)
                heights = [o.height for o in build.outcomes if o.height is not None]
                heights += [c.height for c in build.committed]
                build.finish("committed", time.time(), height=max(heights, default=self.ledger.height))
            else:
                self._build_via_authorities(build)
        except PublishRefused as exc:
            build.finish("refused", time.time(), error=exc.message)
        except PyrsiaError as exc:
            build.finish("failed", time.time(), error=exc.message)
        except Exception as exc:
            log.exception("build %s failed", build.id)
            build.finish("failed", time.time(), error=f"{type(exc).__name__}: {exc}")

    def _build_here(self, build: Publication) -> None:
        """Publish every file of the target through this authority (with consensus among several)."""

        def within(step: Callable[[], object]) -> object:
            self._build_context.build = build
            try:
                return step()
            finally:
                self._build_context.build = None

        if build.kind == "maven":
            pom, jar = maven_paths(build.target)
            within(lambda: self._maven.file(parse_path(pom)))
            try:
                within(lambda: self._maven.file(parse_path(jar)))
            except MavenFileUnknown:
                log.info("build %s: %s has no jar (a POM-only module)", build.id, build.target)
            return
        name, reference = parse_image_reference(build.target)
        ref: str | Digest = Digest.parse(reference) if looks_like_digest(reference) else reference
        top = within(lambda: self._docker.manifest(name, ref, ()))
        assert isinstance(top, StoredManifest)
        platforms = [top]
        if top.media_type in INDEX_TYPES:
            platforms = [
                self._docker.manifest(name, Digest.parse(child.digest), ()) for child in children(top.body)
            ]
        layers = {Digest.parse(d.digest) for p in platforms for d in image_parts(p.body)[1:]}
        with ThreadPoolExecutor(BUILD_FETCHES_MAX) as pool:
            for done in [
                pool.submit(within, partial(self._docker.blob, name, d)) for d in sorted(layers, key=str)
            ]:
                done.result()

    def _build_via_authorities(self, build: Publication) -> None:
        """Send the build to every authority; committed once one did and sync brought it here."""
        request = PublishRequest(kind=f"build_{build.kind}", name=build.target)
        deadline = time.monotonic() + self.config.request_timeout_s
        refused = False
        for authority, answer in self.network.ask_authorities(request):
            with build.lock:
                if isinstance(answer, PeerError):
                    build.answers[authority] = ("unreachable", answer.message)
                    continue
                for who, verdict, reason in answer.verdicts:
                    build.reported[who] = (verdict, reason)
                if answer.ok:
                    build.answers[authority] = ("committed", f"at height {answer.height}")
                else:
                    refused = refused or answer.status == PublishRefused.http_status
                    build.answers[authority] = ("refused" if answer.status == 422 else "failed", answer.error)
            left = max(0.0, deadline - time.monotonic())
            if (
                answer.ok
                and build.state == "running"
                and self.network.sync.wait_for_height(answer.height, left)
            ):
                # The authority's answer carries its log height when it answered, which can be
                # past the build's block; what this node's log holds of the target says where.
                logged = self._logged(build)
                with build.lock:
                    build.committed = logged
                height = max((c.height for c in logged), default=answer.height)
                build.finish("committed", time.time(), height=height)
        if build.state == "running":
            errors = "; ".join(f"{a}: {d}" for a, (_, d) in sorted(build.answers.items()))
            build.finish(
                "refused" if refused else "failed", time.time(), error=errors or "no authority answered"
            )

    def _logged(self, build: Publication) -> list[Committed]:
        """The records this node's log holds of a build's target, as committed transactions."""
        if build.kind == "maven":
            package = build.target
        else:
            name, reference = parse_image_reference(build.target)
            package = f"{name}{'@' if looks_like_digest(reference) else ':'}{reference}"
        records = self.ledger.search(Query(package=package, limit=LOGGED_RECORDS_MAX))
        return [
            Committed(tx_id=r.tx_id, path=r.path, digest=r.digest, height=r.height, submitter=r.submitter)
            for r in sorted(records, key=lambda r: r.leaf)
            if r.package_id == package
        ]

    def _verdicts_of(self, build: Publication) -> list[tuple[str, str, str]]:
        """Each authority's verdict over the build's transactions (a refusal wins, then pending)."""
        with build.lock:
            verdicts = dict(build.reported)
            outcomes, committed = list(build.outcomes), list(build.committed)
        for outcome in outcomes:
            for v in self.consensus.verdicts_of(outcome):
                merge_verdict(verdicts, v["authority"], v["verdict"], v["reason"])
        for c in committed:
            merge_verdict(verdicts, c.submitter, "endorsed", "")
        return [(a, v, r) for a, (v, r) in sorted(verdicts.items())]

    def build(self, build_id: str) -> dict[str, object]:
        source = self._sources.builds.find(build_id)
        if source is not None:
            return self._sources.to_json(source)
        build = self._builds.get(build_id)
        with build.lock:
            outcomes, committed, answers = list(build.outcomes), list(build.committed), dict(build.answers)
            doc = build.head(kind=build.kind, target=build.target)
        transactions: list[dict[str, object]] = []
        for outcome in outcomes:
            payload = outcome.tx.payload
            assert isinstance(payload, AddArtifact)
            transactions.append(
                {
                    "tx_id": outcome.tx.id.hex(),
                    "path": payload.path,
                    "digest": payload.digest,
                    "state": outcome.state,
                }
            )
        for c in committed:
            transactions.append({"tx_id": c.tx_id, "path": c.path, "digest": c.digest, "state": "committed"})
        doc["transactions"] = transactions
        doc["verdicts"] = [
            {"authority": a, "verdict": v, "reason": r} for a, v, r in self._verdicts_of(build)
        ]
        if build.via == VIA_AUTHORITIES:
            doc["answers"] = answers_doc(answers)
        return doc

    def peers(self) -> list[dict[str, object]]:
        return self.network.peers()

    def exchange_status(self) -> dict[str, object]:
        snapshot = self.exchange.snapshot()
        return {
            "bytes_by_source": dict(snapshot.bytes_by_source),
            "served_bytes_by_peer": dict(snapshot.served_bytes_by_peer),
            "received_bytes_by_peer": dict(snapshot.received_bytes_by_peer),
            "serving_peers": snapshot.serving_peers,
            "evictions": snapshot.evictions,
            "refused": dict(snapshot.refused),
            "transfers": [
                {"digest": t.digest, "size": t.size, "verified_chunks": t.verified, "chunks": t.chunks,
                 "providers": list(t.providers)}
                for t in snapshot.transfers
            ],
            "serve_artifacts": self.config.serve_artifacts,
            "peer_http_port": self._peer_http.address[1] if self._peer_http is not None else 0,
        }  # fmt: skip

    def metrics(self) -> str:
        host = self.host.stats()
        sync = self.network.sync.counters()
        families = [
            *exchange_families(self.exchange.snapshot()),
            *p2p_families(
                peers_by_direction={"inbound": host.peers_inbound, "outbound": host.peers_outbound},
                refusals=host.refusals,
                holepunch=host.holepunch,
                relay=host.relay,
                reservations=host.reservations,
                protocol_bytes={"in": host.protocol_bytes_in, "out": host.protocol_bytes_out},
            ),
            refusals_family(
                "pyrsia_consensus_refused_total",
                "Consensus streams and messages refused, by reason.",
                self.consensus.refusals(),
            ),
            refusals_family(
                "pyrsia_sync_penalties_total",
                "Sync answers that did not advance the log, and bad blocks, by kind.",
                sync.penalties,
            ),
            refusals_family(
                "pyrsia_sync_drops_total",
                "Sync peers dropped and banned, by kind.",
                sync.drops,
            ),
            refusals_family(
                "pyrsia_request_refused_total",
                "Publish and build requests refused or answered from the negative cache, by reason.",
                self.network.request_refusals(),
            ),
            refusals_family(
                "pyrsia_maven_metadata_skipped_total",
                "maven-metadata.xml files left out of a merge, by `invalid:REPO` or `failed:REPO`.",
                dict(self._maven_upstream.metadata_skipped),
            ),
            *upstream_families(self._docker_upstream.pool_stats() | self._maven_upstream.pool_stats()),
        ]
        return render(families)

    def ping(self, target: str) -> dict[str, object]:
        return self.network.ping(target)

    def request_stop(self) -> None:
        """Safe to call from a signal handler."""
        self._stop.set()

    def wait(self) -> None:
        # Woken every second: a signal the kernel hands to another thread only sets a flag
        # the main thread checks when it runs, and an untimed wait would never run again.
        while not self._stop.wait(1.0):
            pass

    def close(self) -> None:
        self._traffic_stop.set()
        self._server.shutdown(SHUTDOWN_GRACE_S)
        if self._peer_http is not None:
            self._peer_http.shutdown(SHUTDOWN_GRACE_S)
        self.consensus.stop()
        self._sources.builder.close()
        self.network.stop()
        self.host.stop()
        self._docker_upstream.close()
        self._maven_upstream.close()
        self.ledger.close()
        self.blobs.remove_temp_files()

    def status(self) -> dict[str, object]:
        count, total = self.blobs.stats()
        info = self.info
        return {
            "peer_id": info.peer_id,
            "http_url": info.http_url,
            "addresses": list(info.addresses),
            "version": __version__,
            "uptime_seconds": round(time.monotonic() - self._started, 3),
            "blobs_stored": count,
            "blob_bytes": total,
            "translog": {
                "height": self.ledger.height,
                "size": self.ledger.size,
                "origin": self.ledger.origin,
            },
            "p2p": self.network.status(),
            "consensus": self.consensus.status(),
            "exchange": self.exchange_status(),
            "upstreams": {
                "docker": self.config.docker_upstream,
                "maven": self.config.maven_upstream,
                "registries": {h: u.url for h, u in sorted(self.config.docker_registries.items())},
                "agreed_registries": list(self.ledger.registries),
            },
        }

    def settings(self) -> dict[str, object]:
        def shown(value: object) -> object:
            if isinstance(value, tuple):
                return list(value)
            return value if isinstance(value, int | float) else str(value)

        return {k: shown(v) for k, v in dataclasses.asdict(self.config).items()}

    def set_setting(self, key: str, value: object) -> dict[str, object]:
        stored = set_in_file(self.config.home, key, value)
        return {
            "key": key,
            "value": stored,
            "file": str(self.config.home / CONFIG_FILE),
            "restart_required": True,
        }
