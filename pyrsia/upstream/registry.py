"""Client for an upstream Docker Registry v2 (Docker Hub, or any distribution-spec registry).

What it owns:
- the anonymous bearer-token flow: a 401 carrying `WWW-Authenticate: Bearer
  realm=…,service=…,scope=…` is answered by fetching a token from the realm and
  retrying once; tokens are cached per scope until they expire. The token endpoint's
  answer is checked like any upstream input (a JSON object, a header-safe string
  token, a sane lifetime);
- the token goes only to the registry's own origin: httpx drops `Authorization` on a
  redirect to another origin (Docker Hub sends layers from a CDN), and tag-list `Link`
  pages on another origin are not followed at all;
- deadlines, a rate floor and bounded retries (see `upstream.http`);
- checks on everything downloaded: a manifest's digest (against the reference, else a
  `Docker-Content-Digest` that must itself parse) and its whole structure
  (`formats.manifest.parse`), in memory and bounded in size; a blob streamed into a
  `Sink` (`upstream.sink`) that refuses mismatched bytes, cut off as soon as it runs
  past the size its descriptor declared.
Whatever an upstream sends that does not check out is an `UpstreamError` (502) or, when
it is down or too slow, `UpstreamUnavailable`/`UpstreamTimeout` (503/504), never a
client error; httpx errors never leave this package.
"""

from __future__ import annotations

import functools
import math
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import httpx

from pyrsia.errors import (
    BlobUnknown,
    DigestInvalid,
    DigestMismatch,
    ManifestInvalid,
    ManifestUnknown,
    NameUnknown,
    TagInvalid,
    UpstreamError,
    UpstreamManifestInvalid,
    UpstreamSizeInvalid,
)
from pyrsia.formats import manifest
from pyrsia.formats.digest import Digest, looks_like_digest
from pyrsia.formats.manifest import ALL_TYPES, MANIFEST_BYTES_MAX
from pyrsia.formats.reference import parse_tag
from pyrsia.upstream.http import (
    DEADLINE_S,
    RATE_MIN_BYTES_S,
    RETRIES_MAX,
    TIMEOUT_S,
    Clock,
    Deadline,
    Retryable,
    UpstreamHttp,
)
from pyrsia.upstream.sink import OpenSink

TAG_PAGES_MAX = 100
TOKEN_BYTES_MAX = 64 * 1024
TOKEN_LIFETIME_S_DEFAULT = 60.0  # Docker registry token spec: when expires_in is absent
TOKEN_LIFETIME_S_MAX = 24 * 3600.0
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')
# RFC 6750 §2.1 b64token, which is also always a valid header value.
_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
_DEFAULT_PORTS = {"http": 80, "https": 443}


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
        timeout_s: float = TIMEOUT_S,
        retries_max: int = RETRIES_MAX,
        deadline_s: float = DEADLINE_S,
        request_deadline_s: float | None = None,
        rate_min_bytes_s: float = RATE_MIN_BYTES_S,
        rate_window_s: float | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Clock = time.monotonic,
        role: str = "upstream",
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
            role=role,
        )
        self.base_url = self._http.base_url
        self._origin = _origin(httpx.URL(self.base_url))
        self._where = self._http.where
        self._tokens: dict[str, tuple[str, float]] = {}
        self._tokens_lock = threading.Lock()

    def close(self) -> None:
        self._http.close()

    # -- public operations ----------------------------------------------------------

    def get_manifest(self, name: str, reference: str, accept: Sequence[str] = ALL_TYPES) -> FetchedManifest:
        """Fetch a manifest by tag or digest; check its digest and its whole structure."""
        url = f"{self.base_url}/v2/{name}/manifests/{reference}"
        deadline = self._http.request_deadline(f"{self._where}: manifest {name}:{reference}")
        # Asked for by digest, that digest decides (the caller parsed it: a bad one is its error).
        asked = Digest.parse(reference) if looks_like_digest(reference) else None

        def attempt() -> FetchedManifest:
            with self._stream(url, name, {"Accept": ", ".join(accept)}, deadline) as response:
                if response.status_code == 404:
                    raise ManifestUnknown(f"{self._where} has no manifest {name}:{reference}")
                self._http.check_status(response, url)
                body = self._http.read_bounded(response, MANIFEST_BYTES_MAX, url, deadline)
                header = response.headers.get("Docker-Content-Digest")
                declared = response.headers.get("Content-Type", "").split(";")[0].strip() or None
            digest = asked or self._header_digest(header, url) or Digest.of(body)
            calculated = Digest.of(body, digest.algorithm)
            if calculated != digest:
                raise DigestMismatch(expected=str(digest), calculated=str(calculated), source=self._where)
            try:
                parsed = manifest.parse(body, declared)
            except ManifestInvalid as exc:
                raise UpstreamManifestInvalid(
                    f"{self._where} sent an invalid manifest for {name}:{reference}: {exc.message}",
                    detail=exc.detail,
                ) from exc
            return FetchedManifest(body=body, media_type=parsed.media_type, digest=digest)

        return self._http.with_retries(attempt, deadline)

    def fetch_blob(
        self,
        name: str,
        digest: Digest,
        open_sink: OpenSink,
        progress: Callable[[int], None] | None = None,
        *,
        size_bytes: int | None = None,
    ) -> object:
        """Stream a blob into a sink; what `commit()` returns once the sink accepted the bytes.

        With `size_bytes` (the descriptor's, or the log's, size) the download stops as soon
        as more bytes arrive, and a body that hashes right but is shorter is refused too:
        the descriptor lied.
        """
        url = f"{self.base_url}/v2/{name}/blobs/{digest}"
        deadline = self._http.transfer_deadline(f"{self._where}: blob {digest}", size_bytes)
        # Layers are compressed already; asking for no encoding keeps sizes comparable.
        headers = {"Accept-Encoding": "identity"}

        def attempt() -> object:
            sink = open_sink()
            try:
                with self._stream(url, name, headers, deadline) as response:
                    if response.status_code == 404:
                        raise BlobUnknown(f"{self._where} has no blob {digest} in {name}")
                    self._http.check_status(response, url)
                    for chunk in self._http.iter_body(
                        response, url, limit_bytes=size_bytes, deadline=deadline
                    ):
                        sink.write(chunk)
                        if progress is not None:
                            progress(len(chunk))
                    self._http.check_length(response, sink.size, url)
                if size_bytes is not None and sink.size != size_bytes:
                    if sink.hexdigests().get(digest.algorithm) == digest.hex:
                        raise UpstreamSizeInvalid(
                            f"{self._where}: blob {digest} is {sink.size} bytes, not {size_bytes}",
                            detail={"declared": size_bytes, "received": sink.size},
                        )
                    raise Retryable(f"{url}: body ended after {sink.size} of {size_bytes} bytes")
                return sink.commit()
            except BaseException:
                sink.abort()
                raise

        return self._http.with_retries(attempt, deadline)

    def list_tags(self, name: str) -> list[str]:
        """Every tag of a repository, following `Link` pagination on the registry's origin (bounded)."""
        url: str | None = f"{self.base_url}/v2/{name}/tags/list"
        tags: list[str] = []
        # One deadline for every page: a hundred slow pages must not add up to a hundred deadlines.
        deadline = self._http.request_deadline(f"{self._where}: tags of {name}")
        for _ in range(TAG_PAGES_MAX):
            if url is None:
                break
            page, url = self._http.with_retries(
                functools.partial(self._tag_page, name, url, deadline), deadline
            )
            tags.extend(page)
        return tags

    def _tag_page(self, name: str, url: str, deadline: Deadline) -> tuple[list[str], str | None]:
        with self._stream(url, name, {"Accept": "application/json"}, deadline) as response:
            if response.status_code == 404:
                raise NameUnknown(f"{self._where} has no repository {name}")
            self._http.check_status(response, url)
            body = self._http.read_bounded(response, MANIFEST_BYTES_MAX, url, deadline)
            next_url = self._next_page(response)
        try:
            doc = manifest.load_json(body, "tag list")
        except ManifestInvalid as exc:
            raise UpstreamError(f"{url}: {exc.message}") from exc
        tags = doc.get("tags") if isinstance(doc, dict) else None
        if tags is None:
            tags = []
        if not isinstance(tags, list):
            raise UpstreamError(f"{url}: tag list is not a list")
        return [t for t in tags if isinstance(t, str) and _is_tag(t)], next_url

    def _next_page(self, response: httpx.Response) -> str | None:
        """The `Link: <…>; rel="next"` page, only when it is on the registry's own origin."""
        link = response.links.get("next", {}).get("url")
        if not link:
            return None
        try:
            target = response.url.join(link)
        except httpx.InvalidURL:
            return None
        if _origin(target) != self._origin:
            # The token would follow the request there: a page elsewhere is not ours to read.
            return None
        return str(target)

    def _header_digest(self, header: str | None, url: str) -> Digest | None:
        if header is None:
            return None
        try:
            return Digest.parse(header.strip())
        except DigestInvalid as exc:
            raise UpstreamError(f"{url}: invalid Docker-Content-Digest header", detail=header[:200]) from exc

    # -- token auth -----------------------------------------------------------------

    @contextmanager
    def _stream(
        self, url: str, name: str, headers: dict[str, str], deadline: Deadline
    ) -> Iterator[httpx.Response]:
        """GET with the cached token for the repository; on a bearer challenge, get one and retry once."""
        scope = f"repository:{name}:pull"
        token = self._cached_token(scope)
        auth = {"Authorization": f"Bearer {token}"} if token else {}
        with self._http.stream("GET", url, {**headers, **auth}, deadline) as response:
            if response.status_code != 401 or token is not None:
                yield response
                return
            challenge = response.headers.get("WWW-Authenticate", "")
        token = self._fetch_token(challenge, scope, deadline)
        with self._http.stream(
            "GET", url, {**headers, "Authorization": f"Bearer {token}"}, deadline
        ) as retry:
            yield retry

    def _cached_token(self, scope: str) -> str | None:
        with self._tokens_lock:
            token, expires = self._tokens.get(scope, ("", 0.0))
        return token if token and self._http.clock() < expires else None

    def _fetch_token(self, challenge: str, scope: str, deadline: Deadline) -> str:
        """Anonymous token flow of the Docker registry auth spec."""
        if not challenge.lower().startswith("bearer "):
            raise UpstreamError(
                f"{self._where} asks for authentication pyrsia cannot give: {challenge[:200]!r}"
            )
        params = dict(_CHALLENGE_PARAM.findall(challenge))
        realm = params.pop("realm", "")
        params["scope"] = scope
        try:
            realm_url = httpx.URL(realm)
            url = str(realm_url.copy_merge_params(params))
        except httpx.InvalidURL as exc:
            raise UpstreamError(f"{self._where} sent an unusable token realm {realm[:200]!r}") from exc
        if realm_url.scheme not in _DEFAULT_PORTS or not realm_url.host:
            raise UpstreamError(f"{self._where} sent a bearer challenge without an http(s) realm")
        with self._http.stream("GET", url, {"Accept": "application/json"}, deadline) as response:
            self._http.check_status(response, realm)
            body = self._http.read_bounded(response, TOKEN_BYTES_MAX, realm, deadline)
        token, lifetime = _parse_token(body, realm)
        with self._tokens_lock:
            # Renew a little early so a token never expires mid-request.
            self._tokens[scope] = (token, self._http.clock() + max(lifetime - 10, 1))
        return token


def _parse_token(body: bytes, realm: str) -> tuple[str, float]:
    """`{"token"|"access_token": …, "expires_in": …}`; a bad lifetime falls back to the default."""
    try:
        doc = manifest.load_json(body, "token answer")
    except ManifestInvalid as exc:
        raise UpstreamError(f"token endpoint {realm}: {exc.message}") from exc
    if not isinstance(doc, dict):
        raise UpstreamError(f"token endpoint {realm} sent no token object")
    token = doc.get("token") or doc.get("access_token")
    if not isinstance(token, str) or len(token) > TOKEN_BYTES_MAX or not _TOKEN.fullmatch(token):
        raise UpstreamError(f"token endpoint {realm} sent no usable token")
    raw = doc.get("expires_in")
    lifetime = TOKEN_LIFETIME_S_DEFAULT
    if isinstance(raw, int) and not isinstance(raw, bool):
        lifetime = float(min(max(raw, 0), int(TOKEN_LIFETIME_S_MAX)))  # a 400-digit int has no float
    elif isinstance(raw, float) and math.isfinite(raw):
        lifetime = min(max(raw, 0.0), TOKEN_LIFETIME_S_MAX)
    return token, lifetime


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    """RFC 6454 origin: scheme, host and port (the default one filled in)."""
    return url.scheme, url.host, url.port or _DEFAULT_PORTS.get(url.scheme)


def _is_tag(text: str) -> bool:
    try:
        parse_tag(text)
    except TagInvalid:
        return False
    return True
