"""Client for an upstream Docker Registry v2 (Docker Hub, or any distribution-spec registry).

What it owns:
- authentication, per the distribution token spec and HTTP basic auth. A 401 carrying
  `WWW-Authenticate: Bearer realm=…,service=…,scope=…` is answered by fetching a token
  from the realm and retrying once; tokens are cached per scope until they expire. A
  `Basic` challenge is answered with the registry's user and password. The token
  endpoint's answer is checked like any upstream input (a JSON object, a header-safe
  string token, a sane lifetime);
- where a credential may go. A registry's credential (from a docker `config.json` or
  its token file) is for that registry only: basic credentials and identity tokens go
  to the registry's own origin, and to its token realm only when the realm is on the
  registry's own host (or a host its configuration lists in `realm_hosts`, as Docker
  Hub's `auth.docker.io`) and no less secure than the registry (https, or http only on
  the registry's own http host). The token spec has the registry name its realm; a
  realm elsewhere could be anyone's (a tampered or misconfigured challenge), so the
  token flow there goes on anonymously and the password is never sent (one warning
  says so). A token file's bearer token goes to the registry's origin only. Secrets
  are never logged and never part of an error message;
- a login that fails is one line (`UpstreamAuthFailed`): needed but absent, refused
  (wrong password), or kept by a credential helper pyrsia does not run;
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
import logging
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
    RegistryUnknown,
    TagInvalid,
    UpstreamAuthFailed,
    UpstreamError,
    UpstreamManifestInvalid,
    UpstreamSizeInvalid,
)
from pyrsia.formats import manifest
from pyrsia.formats.digest import Digest, looks_like_digest
from pyrsia.formats.docker_config import BASIC, BEARER, IDENTITY, Credential
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
from pyrsia.upstream.transport import PoolStats

log = logging.getLogger("pyrsia.upstream")
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
        registry: str = "",
        credential: Credential | None = None,
        helper: str = "",
        realm_hosts: Sequence[str] = (),
        login_hint: str = "",
    ) -> None:
        """`registry` is the host clients name (for messages); `credential` its login, if
        any; `helper` the credential helper said to hold it when config.json has none;
        `realm_hosts` further hosts its token realm may be on; `login_hint` where a login
        would go (shown when one is needed)."""
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
        self.registry = registry or httpx.URL(self.base_url).host
        self._credential = credential
        self._helper = helper
        self._realm_hosts = frozenset(h.lower() for h in realm_hosts)
        self._login_hint = login_hint
        self._basic = False  # the registry asked for basic auth: send it up front from now on
        self._warned_realms: set[str] = set()

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
        """GET with what authenticated last time; on a challenge, answer it and retry once."""
        scope = f"repository:{name}:pull"
        sent = self._auth_header(scope)
        with self._http.stream("GET", url, {**headers, **sent}, deadline) as response:
            if response.status_code != 401:
                yield response
                return
            challenge = response.headers.get("WWW-Authenticate", "")
        with self._tokens_lock:
            self._tokens.pop(scope, None)  # expired or revoked early: it is no use again
        answer, used_credential = self._answer(challenge, scope, deadline, sent)
        with self._http.stream("GET", url, {**headers, **answer}, deadline) as retry:
            if retry.status_code == 401:
                raise self._refused() if used_credential else self._login_needed()
            yield retry

    def _auth_header(self, scope: str) -> dict[str, str]:
        credential = self._credential
        if credential is not None and credential.kind == BEARER:
            return {"Authorization": f"Bearer {credential.secret}"}
        token = self._cached_token(scope)
        if token is not None:
            return {"Authorization": f"Bearer {token}"}
        if self._basic and credential is not None and credential.kind == BASIC:
            return {"Authorization": credential.basic_header()}
        return {}

    def _answer(
        self, challenge: str, scope: str, deadline: Deadline, sent: dict[str, str]
    ) -> tuple[dict[str, str], bool]:
        """The header answering a 401's challenge, and whether it carries our credential."""
        scheme = challenge.split(" ", 1)[0].lower()
        credential = self._credential
        if scheme == "basic":
            if credential is None or credential.kind != BASIC:
                raise self._login_needed()
            if sent and self._basic:
                raise self._refused()  # the same password, refused once already
            self._basic = True
            return {"Authorization": credential.basic_header()}, True
        if scheme == "bearer":
            if credential is not None and credential.kind == BEARER:
                raise self._refused()  # the token file's token was sent, and refused
            token, used = self._fetch_token(challenge, scope, deadline)
            return {"Authorization": f"Bearer {token}"}, used
        raise UpstreamError(f"{self._where} asks for authentication pyrsia cannot give: {challenge[:200]!r}")

    def _cached_token(self, scope: str) -> str | None:
        with self._tokens_lock:
            token, expires = self._tokens.get(scope, ("", 0.0))
        return token if token and self._http.clock() < expires else None

    def _fetch_token(self, challenge: str, scope: str, deadline: Deadline) -> tuple[str, bool]:
        """The token flow of the distribution auth spec: with the registry's credential when
        the realm may have it, else anonymous. Returns the token and whether the
        credential was used."""
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
        credential = self._credential
        headers = {"Accept": "application/json"}
        method, content, used = "GET", None, False
        if credential is not None and credential.kind in (BASIC, IDENTITY):
            if self._may_have_credential(realm_url):
                used = True
                if credential.kind == BASIC:
                    headers["Authorization"] = credential.basic_header()
                else:
                    # OAuth2 refresh-token grant, as docker does with an identity token.
                    method = "POST"
                    form = {
                        "grant_type": "refresh_token",
                        "refresh_token": credential.secret,
                        "service": params.get("service", ""),
                        "scope": scope,
                        "client_id": "pyrsia",
                    }
                    content = str(httpx.QueryParams(form)).encode()
                    headers["Content-Type"] = "application/x-www-form-urlencoded"
                    url = str(realm_url)
            elif realm_url.host not in self._warned_realms:
                self._warned_realms.add(realm_url.host)
                log.warning(
                    "%s: not sending the credentials for %s to token realm %s (not the registry's own"
                    " host; list it in upstreams.%s.realm_hosts to allow it); asking anonymously",
                    self._where,
                    self.registry,
                    realm_url.host,
                    self.registry,
                )
        shown = str(realm_url.copy_with(query=None))
        with self._http.stream(method, url, headers, deadline, content) as response:
            if response.status_code in (401, 403):
                raise self._refused() if used else self._login_needed()
            self._http.check_status(response, shown)
            body = self._http.read_bounded(response, TOKEN_BYTES_MAX, shown, deadline)
        token, lifetime = _parse_token(body, shown)
        with self._tokens_lock:
            # Renew a little early so a token never expires mid-request.
            self._tokens[scope] = (token, self._http.clock() + max(lifetime - 10, 1))
        return token, used

    def _may_have_credential(self, realm: httpx.URL) -> bool:
        """Whether the registry's credential may go to this token realm (see the module doc)."""
        own = httpx.URL(self.base_url)
        if realm.host == own.host:
            return realm.scheme == "https" or own.scheme == "http"
        return realm.scheme == "https" and realm.host in self._realm_hosts

    def _login_needed(self) -> UpstreamAuthFailed:
        if self._credential is not None and self._warned_realms:
            realm = sorted(self._warned_realms)[0]
            return UpstreamAuthFailed(
                f"{self.registry} ({self.base_url}) needs a login, and its token realm {realm} is not its own"
                f" host, so pyrsia did not send it the login for {self.registry}: list {realm} in"
                f" upstreams.{self.registry}.realm_hosts to allow it"
            )
        if self._helper:
            return UpstreamAuthFailed(
                f"{self.registry} needs a login, and its credentials are kept by credential helper"
                f" docker-credential-{self._helper}, which pyrsia does not run: put them in config.json"
                f" auths or in a token_file for upstreams.{self.registry}"
            )
        hint = f": {self._login_hint}" if self._login_hint else ""
        return UpstreamAuthFailed(f"{self.registry} ({self.base_url}) needs a login{hint}")

    def _refused(self) -> UpstreamAuthFailed:
        origin = self._credential.origin if self._credential is not None else ""
        source = f" from {origin}" if origin else ""
        return UpstreamAuthFailed(
            f"{self.registry} ({self.base_url}) refused the credentials for {self.registry}{source}:"
            " wrong user name, password or token"
        )


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


class RegistryClients:
    """One client per registry host the node pulls through, by host (`docker.io`, `ghcr.io`)."""

    def __init__(self, clients: dict[str, RegistryClient]) -> None:
        self._clients = dict(clients)

    @property
    def hosts(self) -> frozenset[str]:
        return frozenset(self._clients)

    def get(self, registry: str) -> RegistryClient:
        client = self._clients.get(registry)
        if client is None:
            known = ", ".join(sorted(self._clients))
            raise RegistryUnknown(
                f"no upstream is configured for registry {registry[:100]!r} (this node knows {known});"
                f' add [upstreams."{registry[:100]}"] url = … to pyrsia.toml'
            )
        return client

    def pool_stats(self) -> dict[str, PoolStats]:
        """Each upstream's connections, by its URL."""
        return {c.base_url: s for c in self._clients.values() if (s := c._http.pool_stats()) is not None}

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
