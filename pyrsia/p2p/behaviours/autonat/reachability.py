"""Which of our addresses are reachable, by the answers of distinct AutoNAT servers.

libp2p/specs autonat/autonat-v2.md "Implementation Suggestions": query several
servers; the suggested heuristic is about three agreeing servers. Here each address
keeps the answers of its last `window` (5) distinct servers, one answer per server
(its newest replaces its older one), and is *reachable* once `confirmations_min` (3)
of them say the dial-back arrived, *unreachable* once 3 say it did not, *unknown*
otherwise. Three of five is a majority, so reachable and unreachable never hold at
once, and two lying or misconfigured servers (a server whose own egress is filtered
says "unreachable" to everyone) can neither confirm nor deny an address alone; after a
network change three fresh answers flip it, whatever the window held.

A "distinct server" is its network group, as observers are counted
(`swarm/addresses.observer_group`: an IPv4 /24, an IPv6 /48), so one operator running
many peer ids counts once. A server reached on a private or loopback address (a lab or
company network, where the operator controls every node and groups would all be one)
counts by its peer id. Answers expire `ttl_s` after they were given, so an address
is re-checked rather than trusted forever; addresses tracked are bounded
(`addresses_max`, least recently answered dropped first).

The node's reachability is `public` when any address is reachable, `private` when
some address is unreachable and none reachable, `unknown` otherwise; a `forced`
setting (`public` / `private`) overrides what the answers say. Pure.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from dataclasses import dataclass, field

from pyrsia.errors import ConfigError
from pyrsia.p2p.swarm.addresses import kind_of, observer_group
from pyrsia.p2p.wire.multiaddr import Multiaddr

WINDOW = 5
CONFIRMATIONS_MIN = 3
ANSWER_TTL_S = 60 * 60.0
ADDRESSES_MAX = 32
REACHABILITY_MODES = ("auto", "public", "private")

PUBLIC = "public"
PRIVATE = "private"
UNKNOWN = "unknown"
REACHABLE = "reachable"
UNREACHABLE = "unreachable"


def server_key(peer: str, remote: Multiaddr) -> str:
    """What counts as one server: its address group, or its peer id off the public internet."""
    group = observer_group(remote)
    if group is None or remote.is_relayed or kind_of(remote) != "public":
        return f"peer:{peer}"
    return f"net:{group}"


@dataclass(slots=True, kw_only=True)
class _Answer:
    reachable: bool
    at_s: float


@dataclass(slots=True, kw_only=True)
class Reachability:
    """Answers per address, and the verdicts they add up to."""

    forced: str = "auto"
    window: int = WINDOW
    confirmations_min: int = CONFIRMATIONS_MIN
    ttl_s: float = ANSWER_TTL_S
    addresses_max: int = ADDRESSES_MAX
    _answers: OrderedDict[Multiaddr, OrderedDict[str, _Answer]] = field(default_factory=OrderedDict)
    dropped: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        if self.forced not in REACHABILITY_MODES:
            raise ConfigError(
                f"reachability must be one of {', '.join(REACHABILITY_MODES)}, not {self.forced!r}"
            )
        if not 1 <= self.confirmations_min <= self.window or 2 * self.confirmations_min <= self.window:
            raise ConfigError("autonat confirmations must be a majority of the window")

    def record(self, address: Multiaddr, server: str, *, reachable: bool, now_s: float) -> None:
        answers = self._answers.pop(address, None)
        if answers is None:
            answers = OrderedDict()
        self._answers[address] = answers  # newest answered last
        answers.pop(server, None)
        answers[server] = _Answer(reachable=reachable, at_s=now_s)
        while len(answers) > self.window:
            answers.popitem(last=False)
        while len(self._answers) > self.addresses_max:
            self._answers.popitem(last=False)
            self.dropped["autonat_addresses_full"] += 1

    def expire(self, now_s: float) -> None:
        for address in list(self._answers):
            answers = self._answers[address]
            for server in [s for s, a in answers.items() if now_s - a.at_s > self.ttl_s]:
                del answers[server]
            if not answers:
                del self._answers[address]

    def status(self, address: Multiaddr) -> str:
        """`reachable`, `unreachable` or `unknown` (call `expire` first to drop old answers)."""
        answers = self._answers.get(address)
        if not answers:
            return UNKNOWN
        yes = sum(1 for a in answers.values() if a.reachable)
        if yes >= self.confirmations_min:
            return REACHABLE
        if len(answers) - yes >= self.confirmations_min:
            return UNREACHABLE
        return UNKNOWN

    def addresses(self, verdict: str) -> tuple[Multiaddr, ...]:
        return tuple(sorted((a for a in self._answers if self.status(a) == verdict), key=str))

    @property
    def reachability(self) -> str:
        if self.forced != "auto":
            return self.forced
        if self.addresses(REACHABLE):
            return PUBLIC
        if self.addresses(UNREACHABLE):
            return PRIVATE
        return UNKNOWN
