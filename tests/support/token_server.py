"""A token server for docker-registry's `auth: token`, as the distribution token spec has it.

`GET /token?service=…&scope=repository:NAME:pull` answers `{"token": JWT, …}`. With a
`Basic` login that matches its htpasswd-style file (bcrypt, checked with glibc's
`crypt`), the token grants what the scopes ask for; without a login it grants nothing
(anonymous, so the registry answers 401 again); a wrong login is a 401. The JWT is RS256,
signed with a key `openssl` makes at start, whose self-signed certificate the registry
trusts (`rootcertbundle`); the header's `kid` is libtrust's key id of that key, which
is how distribution 2.8 finds it among the bundle's keys. Every request is recorded
(the Basic user, whether the password matched, the scopes, whether a Bearer header came
along), so a test can check what reached the realm and what did not.

Only tests run this: no user's login ever goes through it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import threading
import time
import warnings
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from urllib.parse import parse_qs, urlsplit

import httpx

SERVICE = "pyrsia-test-registry"
ISSUER = "pyrsia-test-token-server"
TOKEN_LIFETIME_S = 300


@dataclass(frozen=True, slots=True, kw_only=True)
class Asked:
    """One request to the realm."""

    user: str | None  # the Basic login's user, if one came
    password_ok: bool
    scopes: tuple[str, ...]
    authorization: str  # the scheme of the Authorization header ("" when none)
    raw_authorization: str  # as sent, for checks that a secret did not come


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def libtrust_key_id(spki_der: bytes) -> str:
    """libtrust's key id: SHA-256 of the DER public key, 240 bits, base32, in groups of 4."""
    encoded = base64.b32encode(hashlib.sha256(spki_der).digest()[:30]).decode()
    return ":".join(encoded[i : i + 4] for i in range(0, len(encoded), 4))


def bcrypt_line(user: str, password: str) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt

        return f"{user}:{crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16))}\n"


def _password_matches(hashed: str, password: str) -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt

        return crypt.crypt(password, hashed) == hashed


class TokenServer:
    """The realm on `host` (a loopback address of its own: 127.0.0.2 by default)."""

    def __init__(self, root: Path, logins: dict[str, str], host: str = "127.0.0.2") -> None:
        self.root = root
        self.host = host
        root.mkdir(parents=True, exist_ok=True)
        self.key_path = root / "token.key"
        self.cert_path = root / "token.crt"
        self.htpasswd = root / "htpasswd"
        self.htpasswd.write_text("".join(bcrypt_line(u, p) for u, p in logins.items()))
        self.requests: list[Asked] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._kid = ""

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])

    @property
    def realm(self) -> str:
        return f"http://{self.host}:{self.port}/token"

    def registry_auth(self) -> str:
        """The `auth:` section of a docker-registry config that trusts this server."""
        return (
            "auth:\n  token:\n"
            f"    realm: {self.realm}\n    service: {SERVICE}\n    issuer: {ISSUER}\n"
            f"    rootcertbundle: {self.cert_path}\n"
        )

    def start(self) -> TokenServer:
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(self.key_path),
             "-out", str(self.cert_path), "-days", "2", "-subj", "/CN=pyrsia-test-token"],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        pubkey = subprocess.run(
            ["openssl", "x509", "-in", str(self.cert_path), "-noout", "-pubkey"],
            check=True, capture_output=True, timeout=30,
        ).stdout  # fmt: skip
        der = subprocess.run(
            ["openssl", "pkey", "-pubin", "-outform", "DER"],
            input=pubkey,
            check=True,
            capture_output=True,
            timeout=30,
        ).stdout
        self._kid = libtrust_key_id(der)
        server = ThreadingHTTPServer((self.host, 0), self._handler())
        server.daemon_threads = True
        self._server = server
        threading.Thread(target=server.serve_forever, name="token-server", daemon=True).start()
        return self

    def token(self, user: str, access: list[dict[str, object]]) -> str:
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "kid": self._kid}
        claims = {
            "iss": ISSUER, "sub": user, "aud": SERVICE, "exp": now + TOKEN_LIFETIME_S,
            "nbf": now - 10, "iat": now, "jti": f"{now}-{len(self.requests)}", "access": access,
        }  # fmt: skip
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        signature = subprocess.run(
            ["openssl", "dgst", "-sha256", "-sign", str(self.key_path)],
            input=signing_input.encode(), check=True, capture_output=True, timeout=30,
        ).stdout  # fmt: skip
        return f"{signing_input}.{_b64url(signature)}"

    def bearer(self, user: str, name: str, actions: tuple[str, ...] = ("pull", "push")) -> httpx.Auth:
        """A token for `name` made here, bypassing the login (to push a test's images)."""
        token = self.token(user, [{"type": "repository", "name": name, "actions": list(actions)}])

        class Bearer(httpx.Auth):
            def auth_flow(self, request: httpx.Request):  # type: ignore[no-untyped-def]
                request.headers["Authorization"] = f"Bearer {token}"
                yield request

        return Bearer()

    def _logins(self) -> dict[str, str]:
        lines = self.htpasswd.read_text().splitlines()
        return dict(line.split(":", 1) for line in lines if ":" in line)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_args: object) -> None:
                pass

            def do_GET(self) -> None:
                query = parse_qs(urlsplit(self.path).query)
                scopes = tuple(query.get("scope", []))
                raw = self.headers.get("Authorization", "")
                scheme, _, value = raw.partition(" ")
                user, password_ok = None, False
                if scheme.lower() == "basic":
                    try:
                        user, _, password = base64.b64decode(value).decode().partition(":")
                    except ValueError:
                        user, password = "?", ""
                    hashed = owner._logins().get(user)
                    password_ok = hashed is not None and _password_matches(hashed, password)
                with owner._lock:
                    owner.requests.append(
                        Asked(user=user, password_ok=password_ok, scopes=scopes,
                              authorization=scheme, raw_authorization=raw)
                    )  # fmt: skip
                if user is not None and not password_ok:
                    self._answer(401, {"errors": [{"code": "UNAUTHORIZED", "message": "bad login"}]})
                    return
                access: list[dict[str, object]] = []
                if password_ok:
                    for scope in scopes:
                        kind, _, rest = scope.partition(":")
                        name, _, actions = rest.rpartition(":")
                        access.append({"type": kind, "name": name, "actions": actions.split(",")})
                token = owner.token(user or "", access)
                self._answer(200, {"token": token, "access_token": token, "expires_in": TOKEN_LIFETIME_S})

            def _answer(self, status: int, doc: dict[str, object]) -> None:
                body = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> TokenServer:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
