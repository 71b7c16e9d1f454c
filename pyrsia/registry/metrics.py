"""Prometheus text exposition (format 0.0.4) of the node's counters — a pure renderer.

`render(families)` turns metric families into the text `/metrics` answers with
(`Content-Type: text/plain; version=0.0.4`): a `# HELP` and a `# TYPE` line per
family, then one `name{label="value"} number` line per sample. Label values escape
backslash, double quote and newline as the format requires; names are checked
against the format's grammar, so a bad name is our bug and fails loudly.
`exchange_families(snapshot)` maps the artifact exchange's counters to families;
`p2p_families(...)` the swarm's connections and every refusal by the limit that made it;
`upstream_families(pools)` each upstream's connections and the fetches waiting for one.
`refusals_family` makes one counter family of refusals by reason (exchange serving,
consensus streams, publish requests).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyrsia.artifacts.exchange_service import ExchangeSnapshot
    from pyrsia.upstream.transport import PoolStats

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
KINDS = ("counter", "gauge", "untyped")


@dataclass(frozen=True, slots=True, kw_only=True)
class Sample:
    value: float | int
    labels: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Family:
    name: str
    help: str
    kind: str
    samples: tuple[Sample, ...]


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _escape_label(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float | int) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


def render(families: Iterable[Family]) -> str:
    lines: list[str] = []
    for family in families:
        assert _NAME.match(family.name), family.name
        assert family.kind in KINDS, family.kind
        lines.append(f"# HELP {family.name} {_escape_help(family.help)}")
        lines.append(f"# TYPE {family.name} {family.kind}")
        for sample in family.samples:
            assert all(_LABEL.match(k) and not k.startswith("__") for k, _ in sample.labels), sample
            labels = ",".join(f'{k}="{_escape_label(v)}"' for k, v in sample.labels)
            lines.append(
                f"{family.name}{{{labels}}} {_number(sample.value)}"
                if labels
                else f"{family.name} {_number(sample.value)}"
            )
    return "\n".join(lines) + "\n" if lines else ""


def exchange_families(snapshot: ExchangeSnapshot) -> list[Family]:
    """The artifact exchange's counters and gauges."""

    def by(label: str, values: dict[str, int]) -> tuple[Sample, ...]:
        return tuple(Sample(value=v, labels=((label, k),)) for k, v in sorted(values.items()))

    def by_path(values: dict[tuple[str, str], int]) -> tuple[Sample, ...]:
        return tuple(
            Sample(value=v, labels=(("peer", peer), ("path", path)))
            for (peer, path), v in sorted(values.items())
        )

    transfers = snapshot.transfers
    return [
        Family(
            name="pyrsia_exchange_served_bytes_total",
            help="Blob bytes sent to each peer over /pyrsia/exchange/1.0.0.",
            kind="counter",
            samples=by("peer", snapshot.served_bytes_by_peer),
        ),
        Family(
            name="pyrsia_exchange_received_bytes_total",
            help="Verified chunk bytes received from each peer.",
            kind="counter",
            samples=by("peer", snapshot.received_bytes_by_peer),
        ),
        Family(
            name="pyrsia_exchange_served_bytes_by_path_total",
            help="Blob bytes sent, by peer (an address on the HTTP path) and path: p2p or http.",
            kind="counter",
            samples=by_path(snapshot.served_bytes_by_peer_path),
        ),
        Family(
            name="pyrsia_exchange_received_bytes_by_path_total",
            help="Verified chunk bytes received, by peer and path: p2p or http.",
            kind="counter",
            samples=by_path(snapshot.received_bytes_by_peer_path),
        ),
        Family(
            name="pyrsia_blob_bytes_total",
            help="Blob bytes obtained, by source: local store, peers or upstream.",
            kind="counter",
            samples=by("source", snapshot.bytes_by_source),
        ),
        Family(
            name="pyrsia_exchange_evictions_total",
            help="Providers dropped for a blob: bad chunks, stalls, refusals, failed streams.",
            kind="counter",
            samples=(Sample(value=snapshot.evictions),),
        ),
        Family(
            name="pyrsia_exchange_serving_peers",
            help="Peers being served chunks now.",
            kind="gauge",
            samples=(Sample(value=snapshot.serving_peers),),
        ),
        Family(
            name="pyrsia_exchange_transfers",
            help="Blob downloads from peers in progress.",
            kind="gauge",
            samples=(Sample(value=len(transfers)),),
        ),
        refusals_family(
            "pyrsia_exchange_refused_total",
            "Exchange streams refused or cut while serving, by reason.",
            snapshot.refused,
        ),
        Family(
            name="pyrsia_exchange_transfer_verified_ratio",
            help="Share of each download's chunks verified so far.",
            kind="gauge",
            samples=tuple(
                Sample(value=t.verified / t.chunks if t.chunks else 1.0, labels=(("digest", t.digest),))
                for t in transfers
            ),
        ),
    ]


def p2p_families(
    *,
    peers_by_direction: dict[str, int],
    refusals: dict[str, int],
    holepunch: Mapping[str, int] | None = None,
    relay: Mapping[str, int] | None = None,
    reservations: int = 0,
    protocol_bytes: Mapping[str, Mapping[str, int]] | None = None,
) -> list[Family]:
    """Peers held, refusals (keyed `limit` or `limit:protocol` as the swarm counts them),
    hole punches by outcome (dials made, punches that went direct, punches given up), and
    the relay's counters (reservations granted, circuits opened, spliced and ended, bytes
    relayed) with the reservations this node holds on relays, and stream payload bytes
    by direction and protocol id."""

    def refusal(key: str, value: int) -> Sample:
        limit, _, protocol = key.partition(":")
        return Sample(value=value, labels=(("limit", limit), ("protocol", protocol)))

    return [
        Family(
            name="pyrsia_p2p_peers",
            help="Peers connected now, by who dialled.",
            kind="gauge",
            samples=tuple(
                Sample(value=v, labels=(("direction", k),)) for k, v in sorted(peers_by_direction.items())
            ),
        ),
        Family(
            name="pyrsia_p2p_refusals_total",
            help="Connections, streams and messages refused, by the limit that refused them.",
            kind="counter",
            samples=tuple(refusal(k, v) for k, v in sorted(refusals.items())),
        ),
        Family(
            name="pyrsia_p2p_holepunch_total",
            help="Hole punches (DCUtR): dials made (attempts), punches that went direct, punches given up.",
            kind="counter",
            samples=tuple(
                Sample(value=v, labels=(("outcome", k),)) for k, v in sorted((holepunch or {}).items())
            ),
        ),
        Family(
            name="pyrsia_p2p_relay_total",
            help="Circuit relay v2: reservations granted, circuits opened, spliced and ended, bytes relayed.",
            kind="counter",
            samples=tuple(Sample(value=v, labels=(("event", k),)) for k, v in sorted((relay or {}).items())),
        ),
        Family(
            name="pyrsia_p2p_relay_reservations",
            help="Relays holding a reservation for this node now.",
            kind="gauge",
            samples=(Sample(value=reservations),),
        ),
        Family(
            name="pyrsia_p2p_protocol_bytes_total",
            help="Stream payload bytes (before yamux and Noise framing), by direction and protocol id.",
            kind="counter",
            samples=tuple(
                Sample(value=v, labels=(("direction", direction), ("protocol", protocol)))
                for direction, counts in sorted((protocol_bytes or {}).items())
                for protocol, v in sorted(counts.items())
            ),
        ),
    ]


def refusals_family(name: str, help: str, counts: Mapping[str, int]) -> Family:
    """A counter of refusals, one sample per reason."""
    return Family(
        name=name,
        help=help,
        kind="counter",
        samples=tuple(Sample(value=v, labels=(("reason", k),)) for k, v in sorted(counts.items())),
    )


def upstream_families(pools: Mapping[str, PoolStats]) -> list[Family]:
    """Connections to each upstream (by URL), busy and idle, and the fetches waiting for
    one because the pool's cap is reached: a waiting count that stays up means the cap,
    not the upstream, sets the pace."""
    ordered = sorted(pools.items())
    return [
        Family(
            name="pyrsia_upstream_connections",
            help="Connections open to each upstream, by state.",
            kind="gauge",
            samples=tuple(
                Sample(value=count, labels=(("upstream", url), ("state", state)))
                for url, stats in ordered
                for state, count in (("busy", stats.open - stats.idle), ("idle", stats.idle))
            ),
        ),
        Family(
            name="pyrsia_upstream_fetches_waiting",
            help="Upstream requests waiting for a connection because the pool is at its cap.",
            kind="gauge",
            samples=tuple(Sample(value=stats.waiting, labels=(("upstream", url),)) for url, stats in ordered),
        ),
    ]
