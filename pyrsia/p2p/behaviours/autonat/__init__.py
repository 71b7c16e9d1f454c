"""AutoNAT v2 (libp2p/specs autonat/autonat-v2.md): is each of our addresses reachable?

`messages` is the codec of both streams; `server.AutonatServer` answers
`/libp2p/autonat/2/dial-request` and dials clients back through the host;
`client.AutonatClient` asks servers and answers `/libp2p/autonat/2/dial-back`;
`reachability.Reachability` turns servers' answers into a verdict per address and the
node's `public` / `private` / `unknown`; `v1` serves and asks AutoNAT v1
(`/libp2p/autonat/1.0.0`, what js-libp2p's `@libp2p/autonat` speaks), its verdicts
votes in the same tally. All pure: the host executes dials and calls `tick`.
"""

from __future__ import annotations

from pyrsia.p2p.behaviours.autonat.client import AutonatClient, ProbeResult, ReachabilityChanged
from pyrsia.p2p.behaviours.autonat.server import AutonatServer, DialBackRequested, DialBackServed, DialBackTag

__all__ = [
    "AutonatClient",
    "AutonatServer",
    "DialBackRequested",
    "DialBackServed",
    "DialBackTag",
    "ProbeResult",
    "ReachabilityChanged",
]
