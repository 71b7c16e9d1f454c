"""A real CNCF `docker-registry` (distribution) on a free loopback port.

It is the upstream a node pulls through in end-to-end tests and benchmarks: storage in
a directory of the test's, ready once `GET /v2/` answers; no auth, or with `login`
(user, password) the registry's htpasswd basic auth (bcrypt at its lowest cost, so a
request does not spend a second hashing), or with `auth` an `auth:` section of its own
(a token realm: `tests.support.token_server`). `host` is the loopback address it
listens on.
"""

from __future__ import annotations

import subprocess
import time
import warnings
from pathlib import Path
from types import TracebackType

import httpx

from tests.support.ports import free_port

READY_TIMEOUT_S = 20.0


class RegistryProcess:
    """`docker-registry serve` with its config and storage under `root`."""

    def __init__(
        self,
        root: Path,
        port: int | None = None,
        binary: str = "docker-registry",
        prefix: list[str] | None = None,
        login: tuple[str, str] | None = None,
        auth: str = "",
        host: str = "127.0.0.1",
    ) -> None:
        self.root = root
        self.login = login
        self.auth = auth
        self.host = host
        self.prefix = prefix or []  # e.g. nsenter into a namespace
        self.port = port or free_port(host)
        self.binary = binary
        self.process: subprocess.Popen[bytes] | None = None
        root.mkdir(parents=True, exist_ok=True)
        self.config_path = root / "config.yml"
        self.log_path = root / "registry.log"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> RegistryProcess:
        self.config_path.write_text(
            "version: 0.1\n"
            "log:\n  level: warn\n"
            "storage:\n"
            f"  filesystem:\n    rootdirectory: {self.root / 'data'}\n"
            "  delete:\n    enabled: true\n"
            f"http:\n  addr: {self.host}:{self.port}\n" + (self.auth or self._auth_config())
        )
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [*self.prefix, self.binary, "serve", str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            if self._answers():
                return self
            time.sleep(0.05)
        raise RuntimeError(f"docker-registry did not start:\n{self.log_path.read_text()}")

    def _auth_config(self) -> str:
        if self.login is None:
            return ""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import crypt  # glibc's bcrypt; the registry reads `$2b$` hashes

            user, password = self.login
            hashed = crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16))
        htpasswd = self.root / "htpasswd"
        htpasswd.write_text(f"{user}:{hashed}\n")
        return f"auth:\n  htpasswd:\n    realm: pyrsia-test\n    path: {htpasswd}\n"

    def _answers(self) -> bool:
        if self.prefix:  # our own sockets live outside the namespace; ask from inside it
            probe = [*self.prefix, "curl", "-sf", "-o", "/dev/null", f"{self.url}/v2/"]
            return subprocess.run(probe, capture_output=True, timeout=10).returncode == 0
        try:
            status = httpx.get(f"{self.url}/v2/", timeout=1).status_code
            return status == 200 or ((self.login is not None or bool(self.auth)) and status == 401)
        except httpx.TransportError:
            return False

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None

    def __enter__(self) -> RegistryProcess:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
