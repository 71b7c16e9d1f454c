"""Client for an upstream Maven repository (Maven Central by default).

A file is streamed into a sink (the blob store's writer) while every checksum Maven clients may ask
for is computed (sha1, md5, sha256, sha512). When the upstream publishes a checksum
for the file (`.sha256`, else `.sha1`), the bytes must match it or nothing is stored.
A file is cut off past `file_bytes_max` (refused before reading when its
`Content-Length` already says more), and its download has a deadline and a rate floor
like every upstream fetch (`upstream.http`). The upstream's `Last-Modified` comes back
with the file, as epoch seconds, for the node to serve on.
A directory's HTML listing (`listing`) is read, bounded, for the node's own listings.

A node has one or more repositories, each with an id (`MavenRepositories`), tried in
order per file: a 404 moves on to the next, and a file no repository has is a 404.
Any other failure (5xx or a timeout after the retries, a refused login, a bad checksum)
is an error for that file, and the repositories after it are not asked: the order
says which repository owns a coordinate, and a file the log vouches for is never
replaced, so an outage of the first must not let a later one answer for its
coordinates (the path dependency confusion takes). A repository's credentials
(`Credentials`) go only to its own base URL: httpx drops `Authorization` on a redirect
to another origin. A refused login is one line naming the repository and the user,
never the password.

`maven-metadata.xml` is the exception to "the first that has it": as Maven's resolver
does, every repository is asked and the G:A metadata merged (`formats.maven_metadata`);
one whose file is no metadata, or that fails, is skipped and counted, not a 500.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from pathlib import Path

import httpx

from pyrsia.config import Config, maven_repositories
from pyrsia.errors import (
    ConfigError,
    DigestMismatch,
    MavenFileUnknown,
    UpstreamError,
    UpstreamMetadataInvalid,
)
from pyrsia.formats import maven_metadata
from pyrsia.formats.digest import Digest
from pyrsia.formats.maven_settings import Credentials, credentials_file, servers
from pyrsia.upstream.http import (
    DEADLINE_S,
    RATE_MIN_BYTES_S,
    RETRIES_MAX,
    TIMEOUT_S,
    Clock,
    Deadline,
    UpstreamHttp,
)
from pyrsia.upstream.sink import OpenSink
from pyrsia.upstream.transport import PoolStats

CHECKSUM_BYTES_MAX = 1024
FILE_BYTES_MAX = 4 * 1024**3
LISTING_BYTES_MAX = 8 * 1024 * 1024
# Checked in order; the first one the upstream publishes decides.
PUBLISHED_CHECKSUMS = ("sha256", "sha1")
_HEX = {"sha1": 40, "md5": 32, "sha256": 64, "sha512": 128}
METADATA_FILE = "maven-metadata.xml"
log = logging.getLogger(__name__)


class MemorySink:
    """A bounded in-memory sink, for a file read whole before it is stored (metadata to merge)."""

    def __init__(self, bytes_max: int, where: str) -> None:
        self._bytes_max = bytes_max
        self._where = where
        self.reset()

    def reset(self) -> MemorySink:
        self._parts: list[bytes] = []
        self._size = 0
        self._hashes = {name: hashlib.new(name) for name in _HEX}
        return self

    @property
    def size(self) -> int:
        return self._size

    @property
    def data(self) -> bytes:
        return b"".join(self._parts)

    def write(self, data: bytes) -> None:
        self._size += len(data)
        if self._size > self._bytes_max:
            raise UpstreamMetadataInvalid(f"{self._where} is larger than {self._bytes_max} bytes")
        self._parts.append(data)
        for digest in self._hashes.values():
            digest.update(data)

    def hexdigests(self) -> dict[str, str]:
        return {name: digest.hexdigest() for name, digest in self._hashes.items()}

    def commit(self) -> object:
        return None

    def abort(self) -> None:
        self._parts = []


@dataclass(frozen=True, slots=True)
class FetchedFile:
    digest: Digest
    size: int
    checksums: dict[str, str]
    verified_with: str | None
    committed: object  # what the sink's commit() returned
    last_modified: float | None = None  # epoch seconds of the upstream's Last-Modified, if it sent one
    repository: str = ""  # the id of the repository that served it
    base_url: str = ""  # and its base URL


class MavenClient:
    def __init__(
        self,
        base_url: str,
        *,
        repository_id: str = "central",
        credentials: Credentials | None = None,
        timeout_s: float = TIMEOUT_S,
        retries_max: int = RETRIES_MAX,
        deadline_s: float = DEADLINE_S,
        request_deadline_s: float | None = None,
        rate_min_bytes_s: float = RATE_MIN_BYTES_S,
        rate_window_s: float | None = None,
        file_bytes_max: int = FILE_BYTES_MAX,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Clock = time.monotonic,
    ) -> None:
        self._http = UpstreamHttp(
            base_url,
            timeout_s=timeout_s,
            retries_max=retries_max,
            deadline_s=deadline_s,
            request_deadline_s=request_deadline_s,
            rate_min_bytes_s=rate_min_bytes_s,
            rate_window_s=rate_window_s,
            transport=transport,
            sleep=sleep,
            clock=clock,
        )
        self.base_url = self._http.base_url
        self.file_bytes_max = file_bytes_max
        self.repository_id = repository_id
        self._credentials = credentials
        if credentials is not None:
            self._http.client.headers["Authorization"] = credentials.authorization()

    def close(self) -> None:
        self._http.close()

    def fetch(self, path: str, open_sink: OpenSink, *, sidecar: bool = True) -> FetchedFile:
        """Download one file of the repository into a sink, checked against its published checksum.

        The sink must compute every algorithm of `CHECKSUMS`; it is stored under its sha256.
        Without `sidecar` the published checksum is not asked for (one request, not two or
        three): for a caller that checks the bytes against a digest it already holds.
        """
        published = self._published_checksum(path) if sidecar else None
        url = f"{self.base_url}/{path}"
        deadline = self._http.transfer_deadline(f"{self._http.where}: {path}", None)

        def attempt() -> FetchedFile:
            sink = open_sink()
            try:
                with self._http.stream("GET", url, {}, deadline) as response:
                    if response.status_code == 404:
                        raise MavenFileUnknown(f"{self._http.where} has no {path}")
                    self._check_status(response, url)
                    length = response.headers.get("Content-Length", "")
                    if length.isascii() and length.isdigit():  # a big file gets the time its size needs
                        deadline.stretch(
                            self._http.deadline_s + min(int(length), self.file_bytes_max) / 2**20
                        )
                    for chunk in self._http.iter_body(
                        response, url, limit_bytes=self.file_bytes_max, deadline=deadline
                    ):
                        sink.write(chunk)
                    self._http.check_length(response, sink.size, url)
                    modified = last_modified(response.headers.get("Last-Modified"))
                sums = sink.hexdigests()
                if published is not None:
                    algorithm, expected = published
                    if sums[algorithm] != expected:
                        raise DigestMismatch(
                            expected=f"{algorithm}:{expected}",
                            calculated=f"{algorithm}:{sums[algorithm]}",
                            source=f"{self._http.where} ({path})",
                        )
                committed = sink.commit()
            except BaseException:
                sink.abort()
                raise
            return FetchedFile(
                Digest("sha256", sums["sha256"]),
                sink.size,
                sums,
                published[0] if published else None,
                committed,
                modified,
                self.repository_id,
                self.base_url,
            )

        return self._http.with_retries(attempt, deadline)

    def listing(self, directory: str) -> tuple[str, str] | None:
        """The upstream's HTML listing of `directory` (ending in `/`) and the URL it came
        from after redirects; None when it has no such directory or lists it in another
        format. At most `LISTING_BYTES_MAX` bytes are read."""
        url = f"{self.base_url}/{directory}"
        deadline = self._http.request_deadline(f"{self._http.where}: listing of {directory}")

        def attempt() -> tuple[str, str] | None:
            with self._http.stream("GET", url, {"Accept": "text/html"}, deadline) as response:
                if response.status_code == 404:
                    return None
                self._check_status(response, url)
                if "html" not in response.headers.get("Content-Type", "text/html").lower():
                    return None
                body = self._http.read_bounded(response, LISTING_BYTES_MAX, url, deadline)
                # Entries are ASCII path segments; any other byte cannot make one valid.
                return body.decode("utf-8", "replace"), str(response.url)

        return self._http.with_retries(attempt, deadline)

    def _check_status(self, response: httpx.Response, url: str) -> None:
        if response.status_code in (401, 403):
            raise UpstreamError(self.refusal(response.status_code))
        self._http.check_status(response, url)

    def refusal(self, status: int) -> str:
        """One line on a refused request: which repository, whose login; never the secret."""
        where = f"maven repository {self.repository_id!r} ({self.base_url})"
        if self._credentials is None:
            return (
                f"{where} refused anonymous access (HTTP {status}): give it credentials, a <server> "
                f"with id {self.repository_id!r} in settings.xml or maven_credentials"
            )
        return (
            f"{where} refused the credentials of {self._credentials.who} from "
            f"{self._credentials.source} (HTTP {status}): check the password"
        )

    def _published_checksum(self, path: str) -> tuple[str, str] | None:
        for algorithm in PUBLISHED_CHECKSUMS:
            url = f"{self.base_url}/{path}.{algorithm}"
            deadline = self._http.request_deadline(f"{self._http.where}: {path}.{algorithm}")

            def attempt(url: str = url, deadline: Deadline = deadline) -> bytes | None:
                with self._http.stream("GET", url, {}, deadline) as response:
                    if response.status_code == 404:
                        return None
                    self._check_status(response, url)
                    return self._http.read_bounded(response, CHECKSUM_BYTES_MAX, url, deadline)

            body = self._http.with_retries(attempt, deadline)
            if body is not None:
                return algorithm, _parse_checksum(body, algorithm, url)
        return None


def last_modified(header: str | None) -> float | None:
    """RFC 9110 §8.8.2 `Last-Modified` as epoch seconds; None when absent or unreadable."""
    if not header:
        return None
    try:
        when = parsedate_to_datetime(header)
        if when.tzinfo is None:  # RFC 5322's "-0000": UTC, origin unknown
            when = when.replace(tzinfo=UTC)
        return when.timestamp()
    except (ValueError, TypeError, IndexError, OverflowError):
        return None


def _parse_checksum(body: bytes, algorithm: str, url: str) -> str:
    """The hex digest in a sidecar; tools write `hex`, `hex  filename` or `SHA1(file)= hex`."""
    text = body.decode("ascii", "replace").strip().lower()
    for token in re.split(r"[\s=]+", text):
        if len(token) == _HEX[algorithm] and all(c in "0123456789abcdef" for c in token):
            return token
    raise DigestMismatch(expected=f"{algorithm} sidecar", calculated=f"unreadable {text[:80]!r}", source=url)


class MavenRepositories:
    """A node's Maven repositories, tried in order per file (see the module's rules)."""

    def __init__(self, clients: Sequence[MavenClient]) -> None:
        if not clients:
            raise ConfigError("a node needs at least one Maven repository")
        self.clients = tuple(clients)
        self.base_url = self.clients[0].base_url
        # maven-metadata.xml files left out of a merge: `invalid:ID` (no metadata), `failed:ID`.
        self.metadata_skipped: dict[str, int] = {}

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(client.repository_id for client in self.clients)

    def pool_stats(self) -> dict[str, PoolStats]:
        """Each repository's connections, by its URL."""
        return {c.base_url: s for c in self.clients if (s := c._http.pool_stats()) is not None}

    def close(self) -> None:
        for client in self.clients:
            client.close()

    def fetch(self, path: str, open_sink: OpenSink, *, sidecar: bool = True) -> FetchedFile:
        if len(self.clients) > 1 and path.rsplit("/", 1)[-1] == METADATA_FILE:
            return self._merged_metadata(path, open_sink)
        for client in self.clients:
            try:
                return client.fetch(path, open_sink, sidecar=sidecar)
            except MavenFileUnknown:
                continue
        raise MavenFileUnknown(f"no Maven repository of this node has {path} ({', '.join(self.ids)})")

    def _merged_metadata(self, path: str, open_sink: OpenSink) -> FetchedFile:
        """`maven-metadata.xml` from every repository that has it, merged as Maven's resolver
        merges it (`formats.maven_metadata`). A repository whose file is no metadata is
        skipped (counted in `metadata_skipped`); so is one that fails, while another
        answers. The record names the first repository that contributed."""
        found: list[tuple[MavenClient, FetchedFile, bytes]] = []
        failures: list[UpstreamError] = []
        for client in self.clients:
            sink = MemorySink(maven_metadata.METADATA_BYTES_MAX, f"{client.repository_id}: {path}")
            try:
                fetched = client.fetch(path, sink.reset)
            except MavenFileUnknown:
                continue
            except UpstreamError as exc:
                failures.append(exc)
                self._skip(client, path, exc)
                continue
            found.append((client, fetched, sink.data))
        if not found:
            if failures:
                raise failures[0]
            raise MavenFileUnknown(f"no Maven repository of this node has {path} ({', '.join(self.ids)})")
        parsed: list[tuple[FetchedFile, bytes, maven_metadata.ArtifactMetadata]] = []
        for client, fetched, data in found:
            try:
                metadata = maven_metadata.parse(data, f"{client.repository_id} ({client.base_url})")
                if metadata is None:  # not a G:A's versions: the first repository's file stands
                    return self._store(data, fetched, open_sink)
                if parsed and (metadata.group_id, metadata.artifact_id) != (
                    parsed[0][2].group_id,
                    parsed[0][2].artifact_id,
                ):
                    raise UpstreamMetadataInvalid(
                        f"{client.repository_id}: {path} names {metadata.group_id}:{metadata.artifact_id}"
                    )
            except UpstreamMetadataInvalid as exc:
                self._skip(client, path, exc)
                continue
            parsed.append((fetched, data, metadata))
        if not parsed:
            raise UpstreamMetadataInvalid(
                f"no Maven repository of this node has valid metadata at {path} ({', '.join(self.ids)})"
            )
        if len(parsed) == 1:  # nothing to merge: the repository's own bytes
            return self._store(parsed[0][1], parsed[0][0], open_sink)
        merged = maven_metadata.render(maven_metadata.merge([metadata for _f, _d, metadata in parsed]))
        modified = [fetched.last_modified for fetched, _d, _m in parsed if fetched.last_modified is not None]
        origin = dataclasses.replace(
            parsed[0][0], verified_with=None, last_modified=max(modified, default=None)
        )
        return self._store(merged, origin, open_sink)

    def _skip(self, client: MavenClient, path: str, exc: UpstreamError) -> None:
        kind = "invalid" if isinstance(exc, UpstreamMetadataInvalid) else "failed"
        key = f"{kind}:{client.repository_id}"
        self.metadata_skipped[key] = self.metadata_skipped.get(key, 0) + 1
        log.warning("maven-metadata.xml of %s skipped: %s", client.repository_id, exc.message)

    @staticmethod
    def _store(data: bytes, origin: FetchedFile, open_sink: OpenSink) -> FetchedFile:
        sink = open_sink()
        try:
            sink.write(data)
            sums = sink.hexdigests()
            committed = sink.commit()
        except BaseException:
            sink.abort()
            raise
        return dataclasses.replace(
            origin,
            digest=Digest("sha256", sums["sha256"]),
            size=len(data),
            checksums=sums,
            committed=committed,
        )

    def client_for(self, source: str) -> MavenClient | None:
        """The repository a record's `source` URL names, by its base URL; None when none does."""
        for client in self.clients:
            if source.startswith(client.base_url + "/"):
                return client
        return None

    def fetch_from(self, source: str, path: str, open_sink: OpenSink, *, sidecar: bool = True) -> FetchedFile:
        """`path` from the repository `source` names, else (another node's URL for it) in order.
        Metadata is always the merge of every repository, as it was when recorded."""
        client = self.client_for(source)
        if len(self.clients) > 1 and path.rsplit("/", 1)[-1] == METADATA_FILE:
            client = None
        if client is not None:
            return client.fetch(path, open_sink, sidecar=sidecar)
        return self.fetch(path, open_sink, sidecar=sidecar)

    def listing(self, directory: str) -> tuple[str, str] | None:
        for client in self.clients:
            if (page := client.listing(directory)) is not None:
                return page
        return None


def repositories(config: Config, environ: Mapping[str, str]) -> MavenRepositories:
    """The node's repositories from its settings, each with its credentials, if any."""
    specs = maven_repositories(config)
    wanted = {repository_id for repository_id, _url in specs}
    found: dict[str, Credentials] = {}
    if config.maven_settings:
        settings_file = Path(config.maven_settings).expanduser()
        text = _read_text(settings_file, "maven_settings")
        if text is not None:
            found = {k: v for k, v in servers(text, str(settings_file), environ).items() if k in wanted}
    for entry in config.maven_credentials:
        repository_id, _sep, file = entry.partition("=")
        if repository_id.strip() not in wanted:
            raise ConfigError(
                f"maven_credentials: {repository_id.strip()[:100]!r} is not one of this node's Maven "
                f"repositories ({', '.join(sorted(wanted))})"
            )
        path = Path(file.strip()).expanduser()
        text = _read_text(path, f"maven_credentials {repository_id}")
        if text is None:
            raise ConfigError(f"maven_credentials: {path} does not exist")
        found[repository_id.strip()] = credentials_file(text, str(path))
    for credentials in found.values():
        if credentials.encrypted:
            raise ConfigError(
                f"{credentials.source}: the password is encrypted (settings-security.xml), which "
                "pyrsia cannot read; give it in plain text or through maven_credentials"
            )
    return MavenRepositories(
        [
            MavenClient(
                url,
                repository_id=repository_id,
                credentials=found.get(repository_id),
                timeout_s=config.upstream_timeout_s,
                retries_max=config.upstream_retries_max,
                deadline_s=config.upstream_deadline_s,
                rate_min_bytes_s=config.upstream_rate_min_bytes_s,
                file_bytes_max=config.maven_file_bytes_max,
            )
            for repository_id, url in specs
        ]
    )


def _read_text(path: Path, setting: str) -> str | None:
    try:
        return path.read_text("utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(f"{setting}: cannot read {path}: {reason}") from None
