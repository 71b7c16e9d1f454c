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
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from pyrsia import __version__
from pyrsia.artifacts.blobstore import BlobStore
from pyrsia.artifacts.docker import DockerArtifacts, RegistrySource
from pyrsia.artifacts.exchange_service import (
    DownloadConfig,
    ExchangeServer,
    ExchangeStats,
    PeerSource,
    ServeConfig,
)
from pyrsia.artifacts.maven import MavenArtifacts
from pyrsia.artifacts.maven_listing import MavenListings
from pyrsia.artifacts.records import RecordStore
from pyrsia.artifacts.vouch import DOCKER, MAVEN, LedgerArtifactLog
from pyrsia.config import CONFIG_FILE, Config, set_in_file
from pyrsia.formats.digest import Digest, looks_like_digest
from pyrsia.formats.maven_layout import parse_path
from pyrsia.formats.reference import parse_name, parse_tag
from pyrsia.http.server import HttpServer, Limits
from pyrsia.node.home import ensure_home, load_admin_token, load_identity
from pyrsia.node.network import Network, bootstrap_addresses, host_for, join, read_genesis
from pyrsia.p2p.requests import PublishRequest
from pyrsia.registry.api import NodeApi
from pyrsia.registry.app import NodeApp
from pyrsia.registry.docker import DockerRegistry
from pyrsia.registry.maven import MavenRepository
from pyrsia.registry.metrics import exchange_families, render
from pyrsia.translog.ledger import Ledger
from pyrsia.upstream.maven import MavenClient
from pyrsia.upstream.registry import RegistryClient

log = logging.getLogger("pyrsia.node")
SHUTDOWN_GRACE_S = 30.0
PARTIALS_KEPT_S = 7 * 86400.0  # a peer download older than this is not resumed


@dataclass(frozen=True, slots=True)
class NodeInfo:
    peer_id: str
    http_url: str
    addresses: tuple[str, ...]
    p2p_addresses: tuple[str, ...] = ()


def http_limits(config: Config) -> Limits:
    """The HTTP server's limits: each `Limits` field `x` is the setting `http_x`."""
    return Limits(**{f.name: getattr(config, f"http_{f.name}") for f in dataclasses.fields(Limits)})


class Node:
    def __init__(self, config: Config) -> None:
        self.config = config
        ensure_home(config.home)
        self.identity = load_identity(config.home)
        self._admin_token = load_admin_token(config.home)
        self.blobs = BlobStore(config.home / "blobs")
        removed = self.blobs.remove_temp_files()
        removed += self.blobs.remove_stale_partials(PARTIALS_KEPT_S, time.time())
        if removed:
            log.info("removed %d unfinished blob writes from an earlier run", removed)
        self._docker_upstream = RegistryClient(
            config.docker_upstream,
            timeout_s=config.upstream_timeout_s,
            retries_max=config.upstream_retries_max,
            deadline_s=config.upstream_deadline_s,
            rate_min_bytes_s=config.upstream_rate_min_bytes_s,
        )
        self._maven_upstream = MavenClient(
            config.maven_upstream,
            timeout_s=config.upstream_timeout_s,
            retries_max=config.upstream_retries_max,
            deadline_s=config.upstream_deadline_s,
            rate_min_bytes_s=config.upstream_rate_min_bytes_s,
            file_bytes_max=config.maven_file_bytes_max,
        )
        self.host = host_for(config, self.identity)
        self.host.start()
        try:
            self.ledger = self._open_log(config)
        except BaseException:
            self.host.stop()
            raise
        self.network = Network(config, self.identity, self.host, self.ledger)
        # A node that is not an authority never commits: it asks one (fixed at start).
        authority = None if self.network.is_authority else self.network
        vouched = LedgerArtifactLog(self.ledger)
        self.exchange = ExchangeStats()
        self._exchange_server = ExchangeServer(
            self.blobs,
            lambda d: vouched.vouches(DOCKER, str(d)) or vouched.vouches(MAVEN, str(d)),
            config=ServeConfig(
                serve_artifacts=config.serve_artifacts,
                max_upload_rate=config.max_upload_rate,
                max_upload_peers=config.max_upload_peers,
            ),
            stats=self.exchange,
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
            ),
            config.http_host,
            config.http_port,
            http_limits(config),
        )
        self._started = time.monotonic()
        self._stop = threading.Event()

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
        return Ledger.open(root, self.identity.signing_key, genesis=genesis)

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
        self.blobs.on_stored(self.network.provide)
        self._exchange_server.register(self.host)
        self.network.start(self._serve_request, self.blobs.digests())
        self._server.start()
        self._started = time.monotonic()
        return self.info

    def _serve_request(self, request: PublishRequest) -> None:
        """A publish request from another node, served as a pull through this one would be."""
        match request.kind:
            case "docker_manifest":
                name, ref = parse_name(request.name), request.reference
                self._docker.manifest(
                    name, Digest.parse(ref) if looks_like_digest(ref) else parse_tag(ref), ()
                )
            case "docker_blob":
                self._docker.blob(parse_name(request.name), Digest.parse(request.reference))
            case "maven":
                self._maven.file(parse_path(request.name))

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
            "transfers": [
                {"digest": t.digest, "size": t.size, "verified_chunks": t.verified, "chunks": t.chunks,
                 "providers": list(t.providers)}
                for t in snapshot.transfers
            ],
            "serve_artifacts": self.config.serve_artifacts,
        }  # fmt: skip

    def metrics(self) -> str:
        families = exchange_families(self.exchange.snapshot())
        return render(families)

    def ping(self, target: str) -> dict[str, object]:
        return self.network.ping(target)

    def request_stop(self) -> None:
        """Safe to call from a signal handler."""
        self._stop.set()

    def wait(self) -> None:
        self._stop.wait()

    def close(self) -> None:
        self._server.shutdown(SHUTDOWN_GRACE_S)
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
            "exchange": self.exchange_status(),
            "upstreams": {"docker": self.config.docker_upstream, "maven": self.config.maven_upstream},
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
