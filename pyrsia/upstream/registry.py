"""Client for an upstream Docker Registry v2 (Docker Hub, or any distribution-spec registry).

What it owns:
- the anonymous bearer-token flow: a 401 carrying `WWW-Authenticate: Bearer
  realm=…,service=…,scope=…` is answered by fetching a token from the realm and
  retrying once; tokens are cached per scope until they expire;
- redirects for blobs (Docker Hub sends layers from a CDN), with the registry's
  token never forwarded to another origin (httpx drops it on cross-origin redirects);
- bounded retries (see `upstream.http`);
- a digest check on everything downloaded: manifests in memory (bounded size), blobs
  streamed into a `Sink` (`upstream.sink`) that refuses to publish mismatched bytes.
httpx errors never leave this module; they become `UpstreamError`s.
"""

from __future__ import annotations

import functools
import json
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import httpx

from pyrsia.errors import BlobUnknown, DigestMismatch, ManifestUnknown, NameUnknown, UpstreamError
from pyrsia.formats.digest import Digest
from pyrsia.formats.manifest import ALL_TYPES, MANIFEST_BYTES_MAX, media_type_of
from pyrsia.upstream.http import Retryable, UpstreamHttp
from pyrsia.upstream.sink import OpenSink

TAG_PAGES_MAX = 100
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')


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
        self._http = UpstreamHttp(
            base_url, timeout_s=timeout_s, retries_max=retries_max, transport=transport, sleep=sleep
        )
        self.base_url = self._http.base_url
        self._where = self._http.where
        self._tokens: dict[str, tuple[str, float]] = {}
        self._tokens_lock = threading.Lock()

    def close(self) -> None:
        self._http.close()

    # -- public operations ----------------------------------------------------------

    def get_manifest(self, name: str, reference: str, accept: Sequence[str] = ALL_TYPES) -> FetchedManifest:
        """Fetch a manifest by tag or digest and check its digest."""
        url = f"{self.base_url}/v2/{name}/manifests/{reference}"

        def attempt() -> FetchedManifest:
            with self._stream(url, name, {"Accept": ", ".join(accept)}) as response:
                if response.status_code == 404:
                    raise ManifestUnknown(f"{self._where} has no manifest {name}:{reference}")
                self._http.check_status(response, url)
                body = self._http.read_bounded(response, MANIFEST_BYTES_MAX, url)
                self._http.check_length(response, len(body), url)
            expected = reference if ":" in reference else response.headers.get("Docker-Content-Digest")
            digest = Digest.parse(expected) if expected else Digest.of(body)
            calculated = Digest.of(body, digest.algorithm)
            if calculated != digest:
                raise DigestMismatch(expected=str(digest), calculated=str(calculated), source=self._where)
            declared = response.headers.get("Content-Type", "").split(";")[0].strip() or None
            return FetchedManifest(body=body, media_type=media_type_of(body, declared), digest=digest)

        return self._http.with_retries(attempt)

    def fetch_blob(
        self, name: str, digest: Digest, open_sink: OpenSink, progress: Callable[[int], None] | None = None
    ) -> object:
        """Stream a blob into a sink; what `commit()` returns once the sink accepted the bytes."""
        url = f"{self.base_url}/v2/{name}/blobs/{digest}"

        def attempt() -> object:
            sink = open_sink()
            try:
                with self._stream(url, name, {}) as response:
                    if response.status_code == 404:
                        raise BlobUnknown(f"{self._where} has no blob {digest} in {name}")
                    self._http.check_status(response, url)
                    for chunk in self._http.iter_body(response, url):
                        sink.write(chunk)
                        if progress is not None:
                            progress(len(chunk))
                    self._http.check_length(response, sink.size, url)
                    return sink.commit()
            except BaseException:
                sink.abort()
                raise

        return self._http.with_retries(attempt)

    def list_tags(self, name: str) -> list[str]:
        """Every tag of a repository, following `Link` pagination (bounded)."""
        url: str | None = f"{self.base_url}/v2/{name}/tags/list"
        tags: list[str] = []
        for _ in range(TAG_PAGES_MAX):
            if url is None:
                break
            page, url = self._http.with_retries(functools.partial(self._tag_page, name, url))
            tags.extend(page)
        return tags

    def _tag_page(self, name: str, url: str) -> tuple[list[str], str | None]:
        with self._stream(url, name, {"Accept": "application/json"}) as response:
            if response.status_code == 404:
                raise NameUnknown(f"{self._where} has no repository {name}")
            self._http.check_status(response, url)
            body = self._http.read_bounded(response, MANIFEST_BYTES_MAX, url)
            next_link = response.links.get("next", {}).get("url")
            next_url = str(response.url.join(next_link)) if next_link else None
        try:
            tags = json.loads(body).get("tags") or []
        except (ValueError, AttributeError) as exc:
            raise UpstreamError(f"{url}: tag list is not a JSON object") from exc
        return [t for t in tags if isinstance(t, str)], next_url

    # -- token auth -----------------------------------------------------------------

    @contextmanager
    def _stream(self, url: str, name: str, headers: dict[str, str]) -> Iterator[httpx.Response]:
        """GET with the cached token for the repository; on a bearer challenge, get one and retry once."""
        scope = f"repository:{name}:pull"
        token = self._cached_token(scope)
        auth = {"Authorization": f"Bearer {token}"} if token else {}
        with self._http.stream("GET", url, {**headers, **auth}) as response:
            if response.status_code != 401 or token is not None:
                yield response
                return
            challenge = response.headers.get("WWW-Authenticate", "")
        token = self._fetch_token(challenge, scope)
        with self._http.stream("GET", url, {**headers, "Authorization": f"Bearer {token}"}) as retry:
            yield retry

    def _cached_token(self, scope: str) -> str | None:
        with self._tokens_lock:
            token, expires = self._tokens.get(scope, ("", 0.0))
        return token if token and time.monotonic() < expires else None

    def _fetch_token(self, challenge: str, scope: str) -> str:
        """Anonymous token flow of the Docker registry auth spec."""
        if not challenge.lower().startswith("bearer "):
            raise UpstreamError(f"{self._where} asks for authentication pyrsia cannot give: {challenge!r}")
        params = dict(_CHALLENGE_PARAM.findall(challenge))
        realm = params.pop("realm", None)
        if not realm:
            raise UpstreamError(f"{self._where} sent a bearer challenge without a realm")
        params["scope"] = scope
        try:
            response = self._http.client.get(realm, params=params)
        except httpx.TransportError as exc:
            raise Retryable(f"token endpoint {realm}: {exc}") from exc
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
