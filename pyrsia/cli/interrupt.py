"""Ctrl-C for every command: stop within half a second, leave no partial file, exit 130.

`install()` (called once by the CLI root) makes SIGINT set `cancelled` and raise
`Interrupted` in the main thread, so `finally` blocks run as the command unwinds. Work
in other threads (parallel downloads) checks `check()` between chunks and stops
there. Unwinding can still block (a pool that joins a worker stuck in a socket read),
so the signal also arms a watchdog: `GRACE_S` later it removes every path registered
with `partial()` and ends the process with exit code 130 whatever the main thread is
doing. A second Ctrl-C takes that exit at once.

Commands register what they are writing with `partial(path)`: the path is removed when
the block fails or is interrupted, and forgotten when it completes. `pyrsia daemon`
and `pyrsia devnet up` install handlers of their own, which replace this one.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from types import FrameType

EXIT_CODE = 130  # 128 + SIGINT, as shells report it
GRACE_S = 0.3  # the unwinding gets this long before the watchdog exits for it

SHOW_CURSOR = "\x1b[?25h"

cancelled = threading.Event()
_partials: list[Path] = []
_lock = threading.Lock()


class Interrupted(BaseException):
    """Ctrl-C: a BaseException, so `except Exception` and click's handlers let it through."""


def install() -> None:
    signal.signal(signal.SIGINT, _on_sigint)


def _on_sigint(_signum: int, _frame: FrameType | None) -> None:
    if cancelled.is_set():
        abort()
    cancelled.set()
    watchdog = threading.Timer(GRACE_S, abort)
    watchdog.daemon = True
    watchdog.start()
    raise Interrupted


def check() -> None:
    """Raises `Interrupted` once Ctrl-C was pressed; worker threads call it between chunks."""
    if cancelled.is_set():
        raise Interrupted


@contextmanager
def partial(path: Path) -> Iterator[Path]:
    """`path` (a file or a directory this command creates) is removed unless the block completes."""
    with _lock:
        _partials.append(path)
    try:
        yield path
    except BaseException:
        _remove(path)
        raise
    finally:
        with _lock, suppress(ValueError):
            _partials.remove(path)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with suppress(OSError):
            path.unlink()


def abort() -> None:
    """Remove every registered partial path, flush, and end the process with exit code 130."""
    with _lock:
        pending = list(_partials)
        _partials.clear()
    for path in pending:
        _remove(path)
    with suppress(OSError, ValueError):
        if sys.stderr.isatty():
            sys.stderr.write(SHOW_CURSOR)  # a progress bar cut short leaves it hidden
    for stream in (sys.stdout, sys.stderr):
        with suppress(OSError, ValueError):  # a closed or broken pipe must not stop the exit
            stream.flush()
    os._exit(EXIT_CODE)
