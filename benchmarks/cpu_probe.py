"""How fast one core of this machine is right now, printed beside a benchmark's figures.

On a shared machine a core's speed moves by a third from minute to minute (other
guests on the same host), and every CPU-bound figure moves with it, CPU time per item
included: the same code's sync measured from 239 to 398 ms of CPU per 1,000 blocks
within one hour. `p2p_network.py`, `translog.py` and `consensus.py` print this probe
before and after their runs; compare figures only between runs whose probes agree.
"""

from __future__ import annotations

import time

from nacl.signing import SigningKey

CHECKS = 2000  # about 0.15 s


def ed25519_check_us(checks: int = CHECKS) -> float:
    """CPU microseconds per Ed25519 signature check (libsodium, through PyNaCl) on the
    calling thread: the largest single item of a synced block's cost, and C code, so
    the figure tells the core's speed apart from the interpreter's."""
    key = SigningKey(bytes(range(32)))
    signed = key.sign(bytes(64))
    verify = key.verify_key.verify
    started = time.process_time()
    for _ in range(checks):
        verify(signed)
    return (time.process_time() - started) / checks * 1e6


def shown(before: float, after: float) -> str:
    return f"{before:.0f} / {after:.0f} µs per Ed25519 check (before / after)"
