"""Node configuration: one frozen `Config`, loaded from file, environment and flags.

Precedence, lowest first: built-in defaults, `<home>/pyrsia.toml`, `PYRSIA_*`
environment variables, command-line flags. Every setting is declared once, as a field
of `Config` carrying its type, default, help text, bounds and flag; `SETTINGS` is
derived from those fields, and from it the file keys, the `PYRSIA_<NAME>` variables,
the `pyrsia daemon` options and their help, so none of them can drift from another.
Values are validated here; a bad value is a `ConfigError` naming its source, and a
value that would not read back from `pyrsia.toml` is never written there.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import math
import os
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pyrsia.durable import write_atomic
from pyrsia.errors import ConfigError, NameInvalid
from pyrsia.formats.peer_id import base58btc_decode
from pyrsia.formats.registry_host import BUILTIN_REGISTRIES, DOCKER_IO, REGISTRIES_MAX, check_host

CONFIG_FILE = "pyrsia.toml"
ENV_PREFIX = "PYRSIA_"
ENV_HOME = "PYRSIA_HOME"
ENV_NODE = "PYRSIA_NODE"
ENV_ADMIN_TOKEN = "PYRSIA_ADMIN_TOKEN"
DEFAULT_NODE_URL = "http://127.0.0.1:7888"
DOCKER_HUB = "https://registry-1.docker.io"
MAVEN_CENTRAL = "https://repo.maven.apache.org/maven2"
LOG_LEVELS = ("debug", "info", "warning", "error")
STRING_CHARS_MAX = 2048
LIST_ITEMS_MAX = 64
GIB = 1024 * 1024 * 1024
UPSTREAMS = "upstreams"  # the `[upstreams."HOST"]` tables of pyrsia.toml
UPSTREAM_KEYS = ("url", "token_file", "realm_hosts")
# Docker Hub's token realm is on its own host, not the registry's.
_BUILTIN_REALM_HOSTS = {DOCKER_IO: ("auth.docker.io",)}


def default_home(environ: Mapping[str, str] = os.environ) -> Path:
    """`$PYRSIA_HOME`, else the XDG data dir, as DESIGN §4 fixes."""
    if home := environ.get(ENV_HOME):
        return Path(home).expanduser()
    xdg = environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(xdg) / "pyrsia"


def env_name(key: str) -> str:
    return ENV_PREFIX + key.upper()


@dataclass(frozen=True, slots=True, kw_only=True)
class Setting:
    """One node setting: everything the file, the environment, `--help` and validation need."""

    name: str
    kind: type  # int, float, str, bool, or tuple (a list of strings: repeatable flag, TOML array)
    default: int | float | str | bool | tuple[str, ...]
    help: str
    flag: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    url: bool = False
    empty_ok: bool = False  # a string setting whose empty value means "none"
    addresses: str = ""  # "multiaddr" or "multiaddr_or_cidr": what each list entry must be

    @property
    def env(self) -> str:
        return env_name(self.name)

    @property
    def default_text(self) -> str:
        if isinstance(self.default, bool):
            return "true" if self.default else "false"
        if isinstance(self.default, tuple):
            return ", ".join(self.default) or "none"
        if isinstance(self.default, float):
            return _num(self.default)
        return str(self.default) or "none"

    def check(self, value: object) -> None:
        """Raises `ConfigError` unless `value` (already of `kind`) is allowed."""
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{self.name} must be a finite number, not {value}")
        if isinstance(value, int | float) and not isinstance(value, bool):
            low = -math.inf if self.minimum is None else self.minimum
            high = math.inf if self.maximum is None else self.maximum
            if not low <= value <= high:
                raise ConfigError(f"{self.name} must be between {_num(low)} and {_num(high)}, not {value}")
        if self.choices and value not in self.choices:
            raise ConfigError(f"{self.name} must be one of {', '.join(self.choices)}, not {value!r}")
        if self.url:
            check_url(self.name, str(value))
        if isinstance(value, tuple):
            if len(value) > LIST_ITEMS_MAX:
                raise ConfigError(f"{self.name} takes at most {LIST_ITEMS_MAX} entries")
            for item in value:
                self._check_text(item, empty_ok=False)
                if self.addresses:
                    check_address(self.name, item, cidr_ok=self.addresses == "multiaddr_or_cidr")
        if isinstance(value, str):
            self._check_text(value, empty_ok=self.empty_ok)

    def _check_text(self, value: str, *, empty_ok: bool) -> None:
        if not value and not empty_ok:
            raise ConfigError(f"{self.name} must not be empty")
        if len(value) > STRING_CHARS_MAX or not value.isprintable():
            raise ConfigError(f"{self.name} must be printable and at most {STRING_CHARS_MAX} characters")


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _setting(
    default: Any,
    help: str,
    *,
    flag: str = "",
    minimum: float | None = None,
    maximum: float | None = None,
    choices: tuple[str, ...] = (),
    url: bool = False,
    empty_ok: bool = False,
    addresses: str = "",
) -> Any:
    """A `Config` field that is also a setting: its one declaration (see `SETTINGS`)."""
    spec = {
        "help": help,
        "flag": flag,
        "minimum": minimum,
        "maximum": maximum,
        "choices": choices,
        "url": url,
        "empty_ok": empty_ok,
        "addresses": addresses,
    }
    return field(default=default, metadata={"setting": spec})


@dataclass(frozen=True, slots=True, kw_only=True)
class Upstream:
    """A Docker registry the node pulls through: `[upstreams."HOST"]` in pyrsia.toml.

    `host` is the registry as clients name it (`ghcr.io`); `url` where the node reaches
    it; `token_file` a file holding a bearer token for it (else config.json's login for
    `host`, if any); `realm_hosts` hosts other than the registry's own its token realm
    may be on and still be sent its credential (Docker Hub: `auth.docker.io`).
    """

    host: str
    url: str
    token_file: str = ""
    realm_hosts: tuple[str, ...] = ()


def parse_upstreams(raw: object, source: str) -> tuple[Upstream, ...]:
    """The `upstreams` tables of a pyrsia.toml, checked; `ConfigError` naming the entry."""
    if not isinstance(raw, dict):
        raise ConfigError(f'{source}: {UPSTREAMS} must be tables, [{UPSTREAMS}."HOST"] url = "…"')
    if len(raw) > REGISTRIES_MAX:
        raise ConfigError(f"{source}: at most {REGISTRIES_MAX} {UPSTREAMS}")
    out: dict[str, Upstream] = {}
    for name, table in raw.items():
        where = f"{source}: {UPSTREAMS}.{str(name)[:100]}"
        try:
            host = check_host(str(name))
        except NameInvalid as exc:
            raise ConfigError(f"{where}: {exc.message}") from None
        if host in out:
            raise ConfigError(f"{where}: {host} is configured twice")
        if not isinstance(table, dict):
            raise ConfigError(f"{where} must be a table with url = …")
        unknown = sorted(set(table) - set(UPSTREAM_KEYS))
        if unknown:
            raise ConfigError(
                f"{where}: unknown key {unknown[0][:100]!r} (known: {', '.join(UPSTREAM_KEYS)})"
            )
        url = table.get("url", "")
        if host == DOCKER_IO and url:
            raise ConfigError(f"{where}: Docker Hub's url is the docker_upstream setting")
        if not isinstance(url, str) or (not url and host not in BUILTIN_REGISTRIES):
            raise ConfigError(f'{where} needs url = "https://…"')
        token_file = table.get("token_file", "")
        if (
            not isinstance(token_file, str)
            or len(token_file) > STRING_CHARS_MAX
            or not token_file.isprintable()
        ):
            raise ConfigError(f"{where}: token_file must be a file name")
        realm_hosts = table.get("realm_hosts", [])
        if not isinstance(realm_hosts, list) or len(realm_hosts) > LIST_ITEMS_MAX:
            raise ConfigError(f"{where}: realm_hosts must be a list of host names")
        for realm in realm_hosts:
            if not isinstance(realm, str) or not _HOSTNAME.match(realm):
                raise ConfigError(f"{where}: realm_hosts: {str(realm)[:100]!r} is not a host name")
        out[host] = Upstream(
            host=host,
            url=check_url(f"{where}.url", url) if url else "",
            token_file=token_file,
            realm_hosts=tuple(r.lower() for r in realm_hosts),
        )
    return tuple(out.values())


def dump_upstreams(upstreams: Iterable[Upstream]) -> str:
    """The `[upstreams."HOST"]` tables as TOML (JSON's string escapes are valid TOML)."""
    text = ""
    for up in upstreams:
        text += f"\n[{UPSTREAMS}.{json.dumps(up.host)}]\n"
        if up.url:
            text += f"url = {json.dumps(up.url)}\n"
        if up.token_file:
            text += f"token_file = {json.dumps(up.token_file)}\n"
        if up.realm_hosts:
            text += f"realm_hosts = {json.dumps(list(up.realm_hosts))}\n"
    return text


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    """Everything a node needs to start; immutable once loaded.

    Each field but `home` is a setting, declared once here: its type, default, help
    text, bounds and (when it is not the name less a `_s` unit) its daemon flag.
    """

    home: Path
    # `[upstreams."HOST"]` tables (file only): registries beyond, or settings of, the built-in ones.
    upstreams: tuple[Upstream, ...] = ()
    http_host: str = _setting("127.0.0.1", "Address the HTTP API binds to.")
    http_port: int = _setting(
        7888,
        "HTTP port for Docker, Maven and node API clients; 0 picks a free one.",
        minimum=0,
        maximum=65535,
    )
    docker_upstream: str = _setting(
        DOCKER_HUB, "Docker Hub (docker.io): the registry to pull its images through from.", url=True
    )
    docker_config: str = _setting(
        "",
        "Docker config.json to read registry logins from (auths: auth or identitytoken); "
        "empty: $DOCKER_CONFIG/config.json, else ~/.docker/config.json.",
        empty_ok=True,
    )
    maven_upstream: str = _setting(
        MAVEN_CENTRAL, "Maven repository to pull artifacts through from.", url=True
    )
    maven_upstream_id: str = _setting(
        "central",
        "Repository id of maven_upstream: the <server> id whose credentials it uses.",
    )
    maven_repositories: tuple[str, ...] = _setting(
        (),
        "Further Maven repository as ID=URL, tried in order after maven_upstream for a file it "
        "does not have (404); repeatable.",
    )
    maven_settings: str = _setting(
        "~/.m2/settings.xml",
        "Maven settings.xml whose <servers> give credentials to repositories by id; a missing "
        "file gives none; empty reads none.",
        empty_ok=True,
    )
    maven_credentials: tuple[str, ...] = _setting(
        (),
        "ID=FILE: a file holding user:password (or a bearer token) for that Maven repository; "
        "wins over maven_settings; repeatable.",
    )
    maven_metadata_ttl_s: float = _setting(
        600.0,
        "Seconds a maven-metadata.xml is served before it is fetched from the upstream again.",
        minimum=0,
        maximum=30 * 86400,
    )
    maven_file_bytes_max: int = _setting(
        4 * GIB,
        "Largest Maven file, in bytes, the node fetches from its upstream.",
        minimum=1,
        maximum=1024 * GIB,
    )
    log_level: str = _setting("info", "Log level; logs go to stderr.", choices=LOG_LEVELS)
    http_workers_max: int = _setting(
        64, "Connections served at once.", flag="--http-workers", minimum=1, maximum=4096
    )
    http_idle_connections_max: int = _setting(
        10_000, "Idle keep-alive connections kept open between requests.", minimum=0, maximum=1_000_000
    )
    http_header_bytes_max: int = _setting(
        64 * 1024, "Largest request head, in bytes.", minimum=1024, maximum=16 * 1024 * 1024
    )
    http_body_bytes_max: int = _setting(
        1024 * 1024, "Largest request body, in bytes.", minimum=0, maximum=GIB
    )
    http_header_timeout_s: float = _setting(
        10.0, "Seconds a client has to send a whole request head.", minimum=0.05, maximum=3600
    )
    http_idle_timeout_s: float = _setting(
        60.0, "Seconds an idle keep-alive connection stays open.", minimum=0.05, maximum=86400
    )
    manifest_cache_bytes_max: int = _setting(
        16 * 1024 * 1024,
        "Bytes of manifests served from memory; 0 reads every manifest from disk.",
        minimum=0,
        maximum=64 * GIB,
    )
    upstream_timeout_s: float = _setting(
        60.0, "Seconds an upstream may stay silent (connect, or between bytes).", minimum=0.05, maximum=3600
    )
    upstream_deadline_s: float = _setting(
        600.0, "Seconds one upstream fetch may take in all, retries included.", minimum=1, maximum=86400
    )
    upstream_rate_min_bytes_s: int = _setting(
        10 * 1024,
        "Slowest upstream transfer, in bytes per second, tolerated after a grace period; 0 allows any.",
        flag="--upstream-rate-min",
        minimum=0,
        maximum=GIB,
    )
    upstream_retries_max: int = _setting(
        3, "Further attempts after an upstream fetch fails.", minimum=0, maximum=20
    )

    p2p_host: str = _setting("0.0.0.0", "Address the p2p transport listens on (libp2p over TCP).")
    p2p_port: int = _setting(44000, "p2p port; 0 picks a free one.", minimum=0, maximum=65535)
    bootstrap: tuple[str, ...] = _setting(
        (),
        "Multiaddr of a node to join through, /ip4/HOST/tcp/PORT/p2p/PEER_ID; repeatable. "
        "With none and no log, the node starts its own one-authority network.",
    )
    genesis: str = _setting(
        "",
        "File holding the genesis block of the network to join; its hash is pinned.",
        empty_ok=True,
    )
    on_missing: str = _setting(
        "request",
        "What a pull of something the log does not vouch for does on a node that is not an "
        "authority: ask an authority to publish it and wait, or fail with 404.",
        choices=("request", "fail"),
    )
    request_timeout_s: float = _setting(
        120.0,
        "Seconds a pull waits for an authority to publish what it asked for.",
        minimum=1,
        maximum=3600,
    )
    announce: tuple[str, ...] = _setting(
        (),
        "Address to advertise to peers instead of the discovered ones, /ip4|ip6|dns*/HOST/tcp/PORT; "
        "repeatable. Use it behind a NAT that maps the p2p port.",
        addresses="multiaddr",
    )
    no_announce: tuple[str, ...] = _setting(
        (),
        "Address never to advertise: a multiaddr prefix (/ip4/10.1.2.3 or /ip4/10.1.2.3/tcp/44000) "
        "or a CIDR prefix (10.0.0.0/8, fd00::/8); repeatable.",
        addresses="multiaddr_or_cidr",
    )
    p2p_connections_max: int = _setting(
        256, "Inbound p2p connections accepted at once.", minimum=2, maximum=65536
    )
    p2p_connections_per_ip_max: int = _setting(
        32, "Inbound p2p connections one IP address may hold.", minimum=1, maximum=65536
    )
    p2p_connections_per_subnet_max: int = _setting(
        64,
        "Inbound p2p connections one subnet (IPv4 /24, IPv6 /64) may hold.",
        minimum=1,
        maximum=65536,
    )
    p2p_handshakes_max: int = _setting(
        64, "Inbound p2p connections still in their handshake at once.", minimum=1, maximum=65536
    )
    p2p_connections_reserved: int = _setting(
        32,
        "Inbound p2p connections only known peers (authorities, bootstrap peers) may use.",
        minimum=0,
        maximum=65536,
    )
    reachability: str = _setting(
        "auto",
        "Whether peers can dial this node: private keeps reservations on relays and advertises "
        "circuit addresses; auto asks AutoNAT servers among its peers and acts on their answer.",
        choices=("auto", "public", "private"),
    )
    relay_service: bool = _setting(True, "Relay circuits (libp2p circuit relay v2) for nodes behind NAT.")
    hole_punching: bool = _setting(
        True,
        "Turn connections through a relay into direct ones by hole punching (libp2p DCUtR).",
    )
    relay_reservations_max: int = _setting(
        128, "Reservations this node holds for others as a relay.", minimum=0, maximum=65536
    )
    relay_circuits_per_peer_max: int = _setting(
        16, "Relayed circuits one peer may have open through this node.", minimum=0, maximum=4096
    )
    relay_circuit_duration_s: int = _setting(
        600, "Seconds one relayed circuit may last; 0 is unlimited.", minimum=0, maximum=86400
    )
    relay_circuit_bytes_max: int = _setting(
        256 * 1024 * 1024,
        "Bytes one relayed circuit may carry each way (artifacts of NATed peers ride it); 0 is unlimited.",
        minimum=0,
        maximum=1024 * GIB,
    )
    relay_rate_max: int = _setting(
        30, "Relay requests (reserve, connect) one peer may make per minute.", minimum=1, maximum=100_000
    )
    p2p_limits_allow: tuple[str, ...] = _setting(
        (),
        "CIDR prefix exempt from the per-IP and per-subnet connection limits; repeatable.",
    )
    sync_peers_max: int = _setting(
        1024,
        "Peers whose log height sync tracks (and exchanges status with); when full, a peer this "
        "node dialled displaces one that dialled in and never delivered a block.",
        minimum=1,
        maximum=65536,
    )
    sync_batch_blocks_max: int = _setting(
        2048,
        "Blocks asked of a peer in one sync request (and served in one reply), stored as one "
        "batch: one fsync pass, one index transaction. A reply stays within 16 MiB whatever this says.",
        minimum=1,
        maximum=8192,
    )
    sync_strikes_max: int = _setting(
        3,
        "Sync answers that do not advance the log (blocks held already or not asked for, fewer "
        "than claimed) before the peer is dropped and banned.",
        minimum=1,
        maximum=1000,
    )
    sync_ban_s: float = _setting(
        600.0,
        "Seconds a peer dropped by sync is ignored; doubled on each repeat, up to 16 times.",
        minimum=1,
        maximum=7 * 24 * 3600,
    )
    serve_artifacts: bool = _setting(
        True, "Serve held blobs to peers and announce them; false downloads only, never serves."
    )
    max_upload_rate: int = _setting(
        0,
        "Bytes per second served to all peers together; 0 is unlimited.",
        flag="--max-upload-rate",
        minimum=0,
        maximum=1024 * GIB,
    )
    max_download_rate: int = _setting(
        0,
        "Bytes per second received from peers together; 0 is unlimited.",
        flag="--max-download-rate",
        minimum=0,
        maximum=1024 * GIB,
    )
    max_upload_peers: int = _setting(
        32, "Peers served at once.", flag="--max-upload-peers", minimum=1, maximum=4096
    )
    peer_http_port: int = _setting(
        44001,
        "Port of the peer-facing HTTP data plane (blobs the log vouches for, by digest, with "
        "Range), on the p2p listener's address; 0 turns it off (peers then use the p2p exchange).",
        minimum=0,
        maximum=65535,
    )
    peer_http_requests_per_ip_max: int = _setting(
        16,
        "Requests one address may have in progress at once on the peer HTTP data plane.",
        minimum=1,
        maximum=4096,
    )
    peer_http_request_rate: float = _setting(
        500.0,
        "Requests per second one address may make of the peer HTTP data plane (burst as many); "
        "beyond it the address gets 429 with Retry-After.",
        minimum=0.1,
        maximum=1_000_000,
    )
    max_upload_streams_per_peer: int = _setting(
        4,
        "Exchange streams served to one peer at once (of the 8 served in all).",
        minimum=1,
        maximum=64,
    )
    upload_request_deadline_s: float = _setting(
        120.0,
        "Seconds a peer has to take the whole answer to one exchange request; a slower "
        "or silent reader loses its stream.",
        minimum=0.5,
        maximum=3600,
    )
    traffic_sample_interval_s: float = _setting(
        2.0,
        "Seconds between samples of the byte counters kept for the dashboard's traffic chart.",
        minimum=0.1,
        maximum=3600,
    )
    traffic_samples_max: int = _setting(
        1800,
        "Samples of the byte counters kept in memory for the dashboard (oldest dropped first).",
        minimum=1,
        maximum=100_000,
    )
    request_rate: float = _setting(
        10.0,
        "Publish and build requests per second an authority serves to one peer; 0 is unlimited.",
        minimum=0,
        maximum=1_000_000,
    )
    request_burst: int = _setting(
        100,
        "Publish and build requests one peer may send at once before request_rate applies.",
        minimum=1,
        maximum=1_000_000,
    )
    request_missing_ttl_s: float = _setting(
        60.0,
        "Seconds an authority answers a request for what its upstream said is missing from "
        "memory, without asking the upstream again; 0 always asks.",
        minimum=0,
        maximum=86400,
    )
    build_requesters: tuple[str, ...] = _setting(
        (),
        "Peer id besides the authorities allowed to request builds from this authority; repeatable.",
    )
    source_build_workers: int = _setting(
        1,
        "Builds from source an authority runs at once; more wait in its queue.",
        minimum=1,
        maximum=16,
    )
    source_build_dir: str = _setting(
        "",
        "Directory the builds from source run in (empty: <home>/source-builds); every directory "
        "above it must be searchable by others (o+x), since the build drops to source_build_uid.",
        empty_ok=True,
    )
    source_build_uid: int = _setting(
        4242,
        "Unprivileged uid (and gid) a build from source runs as when the node runs as root.",
        minimum=1,
        maximum=2**31 - 2,
    )
    source_build_jdks: tuple[str, ...] = _setting(
        (),
        "JDK major version this authority builds from source with (e.g. 17); repeatable; "
        "empty: every JDK found under /usr/lib/jvm.",
    )
    kad_ip_group_peers_per_bucket_max: int = _setting(
        16,
        "DHT routing-table peers from one IPv4 /24 or IPv6 /48 in one k-bucket (of 20).",
        minimum=1,
        maximum=20,
    )
    kad_ip_group_peers_max: int = _setting(
        64,
        "DHT routing-table peers from one IPv4 /24 or IPv6 /48 in the whole table.",
        minimum=1,
        maximum=100_000,
    )
    kad_ip_group_exempt: tuple[str, ...] = _setting(
        (),
        "CIDR whose peers the DHT's per-address limits do not count (table and provider "
        "records); repeatable.",
    )
    kad_provider_records_per_peer_max: int = _setting(
        16_384,
        "DHT provider records held from one providing peer (of 65,536 in all).",
        minimum=1,
        maximum=65_536,
    )
    kad_provider_records_per_ip_group_max: int = _setting(
        16_384,
        "DHT provider records held from peers of one IPv4 /24 or IPv6 /48.",
        minimum=1,
        maximum=65_536,
    )

    def __post_init__(self) -> None:
        for setting in SETTINGS.values():
            value = getattr(self, setting.name)
            if not isinstance(value, setting.kind) or (isinstance(value, bool) and setting.kind is not bool):
                raise ConfigError(f"{setting.name} must be {setting.kind.__name__}, not {value!r}")
            setting.check(value)
        maven_repositories(self)
        for name in ("p2p_limits_allow", "kad_ip_group_exempt"):
            for prefix in getattr(self, name):
                try:
                    ipaddress.ip_network(prefix, strict=False)
                except ValueError as exc:
                    raise ConfigError(f"{name}: {prefix[:100]!r} is not a CIDR prefix") from exc

    @property
    def http_url(self) -> str:
        return f"http://{self.http_host}:{self.http_port}"

    @property
    def docker_registries(self) -> dict[str, Upstream]:
        """Every registry the node pulls through, by host: the built-in ones (Docker Hub's
        url is `docker_upstream`) overlaid with the `upstreams` tables."""
        out = {
            host: Upstream(
                host=host,
                url=self.docker_upstream if host == DOCKER_IO else url,
                realm_hosts=_BUILTIN_REALM_HOSTS.get(host, ()),
            )
            for host, url in BUILTIN_REGISTRIES.items()
        }
        for up in self.upstreams:
            held = out.get(up.host)
            out[up.host] = Upstream(
                host=up.host,
                url=up.url or (held.url if held else ""),
                token_file=up.token_file,
                realm_hosts=up.realm_hosts or (held.realm_hosts if held else ()),
            )
        return out


_REPOSITORY_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")


def maven_repositories(config: Config) -> tuple[tuple[str, str], ...]:
    """`(id, url)` of every Maven repository, in the order they are tried: maven_upstream first."""
    found = [(config.maven_upstream_id, config.maven_upstream)]
    for entry in config.maven_repositories:
        repository_id, sep, url = entry.partition("=")
        if not sep:
            raise ConfigError(f"maven_repositories: {entry[:200]!r} is not ID=URL")
        found.append((repository_id.strip(), check_url(f"maven_repositories {repository_id}", url.strip())))
    seen: set[str] = set()
    for repository_id, _url in found:
        if not _REPOSITORY_ID.match(repository_id):
            raise ConfigError(f"maven repository id {repository_id[:100]!r} must be letters, digits, . _ -")
        if repository_id in seen:
            raise ConfigError(f"maven repository id {repository_id!r} is given twice")
        seen.add(repository_id)
    for entry in config.maven_credentials:
        repository_id, sep, file = entry.partition("=")
        if not sep or not repository_id.strip() or not file.strip():
            raise ConfigError(f"maven_credentials: {entry[:100]!r} is not ID=FILE")
    return tuple(found)


def check_url(key: str, value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{key} must be an http:// or https:// URL, not {value!r}")
    return value.rstrip("/")


_ADDRESS_HOSTS = ("ip4", "ip6", "dns", "dns4", "dns6")
_HOSTNAME = re.compile(
    r"^(?=.{1,253}\Z)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?\Z"
)
_ADDRESS_FORMS = "/ip4|ip6|dns|dns4|dns6/HOST/tcp/PORT[/p2p/PEER_ID]"


def check_address(key: str, value: str, *, cidr_ok: bool = False) -> None:
    """A TCP multiaddr (`cidr_ok`: also a prefix of one, or a CIDR network), else `ConfigError`.

    The p2p layer parses these fully; this check lives here, below it, so a bad entry
    is refused with one line when the setting is read, naming it.
    """
    shown = repr(value[:200])
    if not value.startswith("/"):
        if cidr_ok:
            try:
                ipaddress.ip_network(value, strict=False)
                return
            except ValueError:
                raise ConfigError(
                    f"{key}: {shown} is neither a multiaddr ({_ADDRESS_FORMS}) nor a CIDR prefix "
                    "(10.0.0.0/8, fd00::/8)"
                ) from None
        raise ConfigError(f"{key}: {shown} is not a multiaddr {_ADDRESS_FORMS}")
    parts = value.removesuffix("/").split("/")[1:]
    if _address_parts_ok(parts, prefix_ok=cidr_ok):
        return
    wanted = f"a multiaddr {_ADDRESS_FORMS}" + (" or a prefix of one" if cidr_ok else "")
    raise ConfigError(f"{key}: {shown} is not {wanted}")


def _address_parts_ok(parts: list[str], *, prefix_ok: bool) -> bool:
    if len(parts) < 2 or parts[0] not in _ADDRESS_HOSTS:
        return False
    family, host, rest = parts[0], parts[1], parts[2:]
    try:
        if family in ("ip4", "ip6"):
            ip = ipaddress.ip_address(host)
            if ip.version != int(family[-1]):
                return False
        elif not _HOSTNAME.match(host):
            return False
    except ValueError:
        return False
    if not rest:
        return prefix_ok
    if len(rest) < 2 or rest[0] != "tcp" or not rest[1].isdigit() or not 0 < int(rest[1]) <= 65535:
        return False
    rest = rest[2:]
    if not rest:
        return True
    if len(rest) != 2 or rest[0] not in ("p2p", "ipfs"):
        return False
    try:
        multihash = base58btc_decode(rest[1])
    except ValueError:
        return False
    # A multihash: one-byte code (identity, sha2-256), one-byte length, that many bytes.
    return 2 < len(multihash) <= 66 and multihash[0] < 0x80 and multihash[1] == len(multihash) - 2


_KINDS: dict[str, type] = {"int": int, "float": float, "str": str, "bool": bool, "tuple[str, ...]": tuple}


def _settings() -> dict[str, Setting]:
    out = {}
    for f in fields(Config):
        if "setting" not in f.metadata:
            continue
        spec = dict(f.metadata["setting"])
        kind, default = _KINDS[str(f.type)], f.default
        assert isinstance(default, int | float | str | bool | tuple) and isinstance(default, kind), f.name
        spec["flag"] = spec["flag"] or "--" + f.name.removesuffix("_s").replace("_", "-")
        out[f.name] = Setting(name=f.name, kind=kind, default=default, **spec)
    return out


# Every key a user may set, in declaration order; `home` is chosen before the file is read.
SETTINGS: dict[str, Setting] = _settings()


def default_of(key: str) -> Any:
    """A setting's one declared default, for modules that take settings as plain values."""
    return SETTINGS[key].default


def _coerce(key: str, raw: Any, source: str) -> Any:
    """`raw` (TOML value, environment string, JSON value or flag) as the setting's type.

    Floats must be finite; an int setting takes an int or a decimal string, never a
    fraction silently truncated. Ranges are checked by `Config` itself.
    """
    want = SETTINGS[key].kind
    try:
        if want is bool:
            if isinstance(raw, bool):
                return raw
            if isinstance(raw, str) and raw.strip().lower() in _BOOLEANS:
                return _BOOLEANS[raw.strip().lower()]
            raise ValueError(raw)
        if isinstance(raw, bool):
            raise ValueError(raw)
        if want is int:
            if isinstance(raw, float) and raw.is_integer():
                raw = int(raw)
            if isinstance(raw, str) and _DECIMAL.match(raw.strip()):
                raw = int(raw.strip())
            if not isinstance(raw, int):
                raise ValueError(raw)
            return raw
        if want is float:
            if not isinstance(raw, int | float | str):
                raise ValueError(raw)
            value = float(raw)
            if not math.isfinite(value):
                raise ValueError(raw)
            return value
        if want is tuple:
            # An environment variable (which click also hands over as one flag value) is
            # comma- or space-separated.
            items = [raw] if isinstance(raw, str) else raw
            if not isinstance(items, list | tuple) or not all(isinstance(item, str) for item in items):
                raise ValueError(raw)
            return tuple(part for item in items for part in re.split(r"[,\s]+", item) if part)
        if not isinstance(raw, str):
            raise ValueError(raw)
        return raw
    except (ValueError, OverflowError):
        shown = repr(raw) if len(repr(raw)) <= 60 else repr(raw)[:57] + "..."
        raise ConfigError(f"{source}: {key} must be {_DESCRIBE[want]}, not {shown}") from None


_BOOLEANS = {
    "true": True,
    "yes": True,
    "on": True,
    "1": True,
    "false": False,
    "no": False,
    "off": False,
    "0": False,
}
_DECIMAL = re.compile(r"^[+-]?[0-9]{1,30}\Z")
_DESCRIBE = {
    bool: "true or false",
    int: "int (a whole number)",
    float: "float (a finite number)",
    str: "str (a string)",
    tuple: "a list of strings",
}


def read_file(path: Path) -> dict[str, Any]:
    """Parse `pyrsia.toml`; a missing file is an empty config."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        parsed = tomllib.loads(data.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    upstreams = parsed.pop(UPSTREAMS, None)
    unknown = sorted(set(parsed) - set(SETTINGS))
    if unknown:
        raise ConfigError(f"{path}: unknown key {unknown[0]!r}")
    values = {k: _coerce(k, v, str(path)) for k, v in parsed.items()}
    if upstreams is not None:
        values[UPSTREAMS] = parse_upstreams(upstreams, str(path))
    return values


def dump_toml(values: Mapping[str, object]) -> str:
    """TOML for flat settings (strings, ints, floats); JSON's string escapes are valid TOML."""
    return "".join(f"{key} = {json.dumps(value)}\n" for key, value in sorted(values.items()))


def unknown_setting(key: str, known: Iterable[str]) -> ConfigError:
    """One line naming the closest settings, not all of them (there are dozens)."""
    close = difflib.get_close_matches(key[:100], list(known), n=3)
    hint = f"did you mean {', '.join(close)}?" if close else "`pyrsia daemon --help` lists every setting"
    return ConfigError(f"unknown setting {key[:100]!r}; {hint}")


def set_in_file(home: Path, key: str, raw: object) -> object:
    """Validate one setting and write it to `<home>/pyrsia.toml`; returns the stored value.

    The whole file is re-validated as a `Config` first, so a bad value never lands.
    """
    if key not in SETTINGS:
        raise unknown_setting(key, SETTINGS)
    path = home / CONFIG_FILE
    values = read_file(path)
    values[key] = _coerce(key, raw, key)
    Config(home=home, **values)
    upstreams = values.pop(UPSTREAMS, ())
    text = dump_toml(values) + dump_upstreams(upstreams)
    # What lands must read back as itself, or the node could not start again.
    reread = tomllib.loads(text)
    if {k: _coerce(k, v, key) for k, v in reread.items() if k != UPSTREAMS} != values or parse_upstreams(
        reread.get(UPSTREAMS, {}), key
    ) != upstreams:  # pragma: no cover - the checks above make this unreachable
        raise ConfigError(f"{key}: value cannot be written to {CONFIG_FILE}")
    write_atomic(path, text.encode())
    return values[key]


def load(
    home: Path | None = None,
    environ: Mapping[str, str] = os.environ,
    flags: Mapping[str, object] | None = None,
) -> Config:
    """Build the effective `Config`: defaults < file < environment < flags."""
    home = home if home is not None else default_home(environ)
    values: dict[str, Any] = read_file(home / CONFIG_FILE)
    for key in SETTINGS:
        if (raw := environ.get(env_name(key))) is not None:
            values[key] = _coerce(key, raw, env_name(key))
    for key, flag in (flags or {}).items():
        if flag is not None and flag != ():  # a repeatable flag never given is empty
            values[key] = _coerce(key, flag, SETTINGS[key].flag)
    return Config(home=home, **values)
