"""A real `pyrsia daemon` process on a free loopback port, as tests and benchmarks run it.

The daemon prints `ready http://HOST:PORT` once it serves; that line, not a sleep, is
the readiness signal. Output is kept in a file under the node's home so a failing test
can show what the daemon said.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

from tests.support.ports import free_port

PYRSIA = [sys.executable, "-m", "pyrsia"]
READY_TIMEOUT_S = 30.0


class NodeProcess:
    """Starts `pyrsia daemon --home HOME` with extra flags; `url` once ready."""

    def __init__(
        self,
        home: Path,
        *flags: str,
        command: list[str] | None = None,
        env: dict[str, str] | None = None,
        ready_timeout_s: float = READY_TIMEOUT_S,
    ) -> None:
        self.home = home
        self.ready_timeout_s = ready_timeout_s  # a log of 100,000 blocks takes minutes to open
        self.flags = list(flags)
        self.command = command or self.default_command()
        self.env = {**os.environ, **(env or {})}
        self.url = ""
        self.process: subprocess.Popen[bytes] | None = None
        self._log_offset = 0
        home.mkdir(parents=True, exist_ok=True)
        self.log_path = home / "daemon.out"

    @staticmethod
    def default_command() -> list[str]:
        return list(PYRSIA)

    def start(self) -> NodeProcess:
        # Free ports for HTTP and p2p, unless the flags choose (nodes run side by side).
        ports = [] if "--p2p-port" in self.flags else ["--p2p-port", "0"]
        if "--peer-http-port" not in self.flags and "PYRSIA_PEER_HTTP_PORT" not in self.env:
            ports += ["--peer-http-port", str(free_port("0.0.0.0"))]
        argv = [*self.command, "daemon", "--home", str(self.home), "--http-port", "0", *ports, *self.flags]
        # A restarted node appends to the same file; only this run's ready line counts.
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as out:
            self.process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=self.env)
        self.url = self._wait_ready()
        return self

    def _wait_ready(self) -> str:
        deadline = time.monotonic() + self.ready_timeout_s
        assert self.process is not None
        while time.monotonic() < deadline:
            with self.log_path.open("rb") as log:
                log.seek(self._log_offset)
                lines = log.read().decode(errors="replace").splitlines()
            for line in lines:
                if line.startswith("ready "):
                    return line.split()[1]
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"node did not become ready:\n{self.output()}")

    @property
    def p2p_address(self) -> str:
        """This run's p2p multiaddr (`/ip4/…/tcp/…/p2p/<peer id>`), as the daemon printed it."""
        with self.log_path.open("rb") as log:
            log.seek(self._log_offset)
            for line in log.read().decode(errors="replace").splitlines():
                if line.startswith("p2p "):
                    return line.split()[1]
        raise RuntimeError(f"node printed no p2p address:\n{self.output()}")

    @property
    def address(self) -> str:
        """`127.0.0.1:PORT`, the form registry clients take."""
        return self.url.removeprefix("http://")

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=timeout_s)
        self.process = None
        return code

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=30)
            self.process = None

    def __enter__(self) -> NodeProcess:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.process is not None and self.process.poll() is None:
            self.stop()
        self.kill()
