"""Two socket facts the HTTP server and the upstream connections both need: a kernel
send or receive timeout in the form `setsockopt` takes, and whether bytes (or an EOF)
wait on a socket."""

from __future__ import annotations

import math
import select
import socket
import struct


def timeval(seconds: float | None) -> bytes:
    """A `struct timeval` for `SO_RCVTIMEO` or `SO_SNDTIMEO`. None is no timeout; any
    other value is at least a microsecond, since a zero timeval means none at all."""
    if seconds is None:
        return struct.pack("@ll", 0, 0)
    micros = max(1, int(seconds * 1_000_000))
    return struct.pack("@ll", micros // 1_000_000, micros % 1_000_000)


def readable(sock: socket.socket, timeout_s: float) -> bool:
    """Whether bytes (or an EOF) arrive on `sock` within `timeout_s` (0: wait for none).
    `poll`, not `select`: a descriptor past FD_SETSIZE is fine. `OSError` or
    `ValueError` for a socket that is closed."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(math.ceil(timeout_s * 1000)))
