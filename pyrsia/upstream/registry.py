"""Client for an upstream Docker Registry v2 (Docker Hub, or any distribution-spec registry).

What it owns:
- the anonymous bearer-token flow: a 401 carrying `WWW-Authenticate: Bearer
  realm=…,service=…,scope=…` is answered by fetching a token from the realm and
  retrying once; tokens are cached per scope until they expire;
- redirects for blobs (Docker Hub sends layers from a CDN), with the registry's
  token never forwarded to another origin (httpx drops it on cross-origin redirects);
- bounded retries with backoff for connection failures, timeouts, truncated bodies,
  429 and 5xx; everything else fails at once with a clear error;
- a digest check on everything downloaded: manifests in memory (bounded size), blobs
  streamed through a `BlobWriter` that refuses to publish mismatched bytes.
httpx errors never leave this module; they become `UpstreamError`s.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import httpx

from pyrsia import __version__
from pyrsia.artifacts.blobstore import BlobStore
from pyrsia.artifacts.digest import Digest
from pyrsia.errors import (
    BlobUnknown,
    DigestMismatch,
    ManifestUnknown,
    NameUnknown,
    UpstreamError,
    UpstreamUnavailable,
)
from pyrsia.registry.manifest import ALL_TYPES, MANIFEST_BYTES_MAX, media_type_of

log = logging.getLogger("pyrsia.upstream")

T = TypeVar("T")
CHUNK_BYTES = 1024 * 1024
TAG_PAGES_MAX = 100
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')
_RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


class _Retryable(Exception):
    """A failure worth another attempt (network trouble, 5xx, truncated body)."""


@dataclass(frozen=True, slots=True)
class FetchedManifest:
    body: bytes
    media_type: str
    digest: Digest


class RegistryClient:
    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = 60.0,
        retries_max: int = 3,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._retries_max = retries_max
        self._sleep = sleep
        self._http = httpx.Client(
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0)),
            follow_redirects=True,
            headers={"User-Agent": f"pyrsia/{__version__}"},
            transport=transport,
        )
        self._tokens: dict[str, tuple[str, float]] = {}
        self._tokens_lock = threading.Lock()

    def close(self) -> None:
        self._http.close()

    # -- public operations ----------------------------------------------------------

    def get_manifest(self, name: str, reference: str, accept: Sequence[str] = ALL_TYPES) -> FetchedManifest:
        """Fetch a manifest by tag or digest and check its digest."""
        url = f"{self.base_url}/v2/{name}/manifests/{reference}"

        def attempt() -> FetchedManifest:
            with self._stream("GET", url, name, {"Accept": ", ".join(accept)}) as response:
                if response.status_code == 404:
                    raise ManifestUnknown(f"{self._where()} has no manifest {name}:{reference}")
                self._check_status(response, url)
                body = self._read_bounded(response, MANIFEST_BYTES_MAX, url)
            expected = reference if ":" in reference else response.headers.get("Docker-Content-Digest")
            digest = Digest.parse(expected) if expected else Digest.of(body)
            calculated = Digest.of(body, digest.algorithm)
            if calculated != digest:
                raise DigestMismatch(expected=str(digest), calculated=str(calculated), source=self._where())
            declared = response.headers.get("Content-Type", "").split(";")[0].strip() or None
            return FetchedManifest(body=body, media_type=media_type_of(body, declared), digest=digest)

        return self._with_retries(attempt, url)

    def fetch_blob(self, name: str, digest: Digest, store: BlobStore) -> Path:
        """Stream a blob into the store; it is published only if its digest matches."""
        url = f"{self.base_url}/v2/{name}/blobs/{digest}"

        def attempt() -> Path:
            with (
                store.writer(digest, source=self._where()) as writer,
                self._stream("GET", url, name, {}) as response,
            ):
                if response.status_code == 404:
                    raise BlobUnknown(f"{self._where()} has no blob {digest} in {name}")
                self._check_status(response, url)
                expected = response.headers.get("Content-Length")
                for chunk in self._iter_body(response, url):
                    writer.write(chunk)
                if expected is not None and int(expected) != writer.size:
                    raise _Retryable(f"{url}: body ended after {writer.size} of {expected} bytes")
                return writer.commit()

        return self._with_retries(attempt, url)

    def list_tags(self, name: str) -> list[str]:
        """Every tag of a repository, following `Link` pagination (bounded)."""
        url: str | None = f"{self.base_url}/v2/{name}/tags/list"
        tags: list[str] = []
        for _ in range(TAG_PAGES_MAX):
            if url is None:
                break
            page, url = self._with_retries(functools.partial(self._tag_page, name, url), url)
            tags.extend(page)
        return tags

    def _tag_page(self, name: str, url: str) -> tuple[list[str], str | None]:
        with self._stream("GET", url, name, {"Accept": "application/json"}) as response:
            if response.status_code == 404:
                raise NameUnknown(f"{self._where()} has no repository {name}")
            self._check_status(response, url)
            body = self._read_bounded(response, MANIFEST_BYTES_MAX, url)
            next_link = response.links.get("next", {}).get("url")
            next_url = str(response.url.join(next_link)) if next_link else None
        try:
            tags = json.loads(body).get("tags") or []
        except (ValueError, AttributeError) as exc:
            raise UpstreamError(f"{url}: tag list is not a JSON object") from exc
        return [t for t in tags if isinstance(t, str)], next_url

    # -- plumbing -------------------------------------------------------------------

    def _where(self) -> str:
        return f"upstream {self.base_url}"

    @contextmanager
    def _stream(self, method: str, url: str, name: str, headers: dict[str, str]) -> Iterator[httpx.Response]:
        scope = f"repository:{name}:pull"
        token = self._cached_token(scope)
        auth = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            with self._http.stream(method, url, headers={**headers, **auth}) as response:
                if response.status_code != 401 or token is not None:
                    yield response
                    return
                challenge = response.headers.get("WWW-Authenticate", "")
            token = self._fetch_token(challenge, scope)
            authorized = {**headers, "Authorization": f"Bearer {token}"}
            with self._http.stream(method, url, headers=authorized) as retry:
                yield retry
        except httpx.TransportError as exc:
            raise _Retryable(f"{url}: {type(exc).__name__}: {exc}") from exc

    def _cached_token(self, scope: str) -> str | None:
        with self._tokens_lock:
            token, expires = self._tokens.get(scope, ("", 0.0))
        return token if token and time.monotonic() < expires else None

    def _fetch_token(self, challenge: str, scope: str) -> str:
        """Anonymous token flow of the Docker registry auth spec."""
        if not challenge.lower().startswith("bearer "):
            raise UpstreamError(f"{self._where()} asks for authentication pyrsia cannot give: {challenge!r}")
        params = dict(_CHALLENGE_PARAM.findall(challenge))
        realm = params.pop("realm", None)
        if not realm:
            raise UpstreamError(f"{self._where()} sent a bearer challenge without a realm")
        params["scope"] = scope
        try:
            response = self._http.get(realm, params=params)
        except httpx.TransportError as exc:
            raise _Retryable(f"token endpoint {realm}: {exc}") from exc
        if response.status_code != 200:
            raise UpstreamError(f"token endpoint {realm} answered {response.status_code}")
        try:
            doc = response.json()
            token = str(doc.get("token") or doc["access_token"])
            lifetime = float(doc.get("expires_in", 60))
        except (ValueError, KeyError, TypeError) as exc:
            raise UpstreamError(f"token endpoint {realm} sent no token") from exc
        with self._tokens_lock:
            # Renew a little early so a token never expires mid-request.
            self._tokens[scope] = (token, time.monotonic() + max(lifetime - 10, 1))
        return token

    def _check_status(self, response: httpx.Response, url: str) -> None:
        if response.status_code in _RETRY_STATUSES:
            raise _Retryable(f"{url}: HTTP {response.status_code}")
        if response.status_code == 401:
            raise UpstreamError(f"{url}: upstream refused anonymous access (401)")
        if response.status_code != 200:
            raise UpstreamError(f"{url}: unexpected HTTP {response.status_code}")

    def _iter_body(self, response: httpx.Response, url: str) -> Iterator[bytes]:
        try:
            yield from response.iter_bytes(CHUNK_BYTES)
        except httpx.TransportError as exc:
            raise _Retryable(f"{url}: body interrupted: {exc}") from exc

    def _read_bounded(self, response: httpx.Response, limit: int, url: str) -> bytes:
        chunks: list[bytes] = []
        size = 0
        for chunk in self._iter_body(response, url):
            size += len(chunk)
            if size > limit:
                raise UpstreamError(f"{url}: response larger than {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    def _with_retries(self, attempt: Callable[[], T], url: str) -> T:
        failures: list[str] = []
        for tries in range(self._retries_max + 1):
            try:
                return attempt()
            except _Retryable as exc:
                failures.append(str(exc))
                log.warning("%s (attempt %d of %d)", exc, tries + 1, self._retries_max + 1)
                if tries < self._retries_max:
                    self._sleep(min(0.2 * 2**tries, 2.0))
        raise UpstreamUnavailable(f"{self._where()} failed: {failures[-1]}", detail=failures)
