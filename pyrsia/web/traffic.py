"""A short history of the node's byte counters, for the dashboard's traffic chart — pure.

The node samples the same counters `/metrics` renders (`pyrsia_blob_bytes_total` by
source, `pyrsia_exchange_served_bytes_total` summed over peers) every few seconds and
`record`s them here with the time it read them. The history keeps at most
`samples_max` samples, dropping the oldest; readers get cumulative values and compute
rates themselves, so a missed sample widens one interval instead of losing bytes.
A counter that goes down (it never should) is kept as read: the reader sees the drop.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

SERIES_MAX = 64  # names per sample; the node has a handful (sources, served)


@dataclass(frozen=True, slots=True, kw_only=True)
class TrafficSample:
    at_s: float
    bytes_total: tuple[tuple[str, int], ...]


class TrafficHistory:
    def __init__(self, *, samples_max: int, interval_s: float) -> None:
        if samples_max < 1:
            raise ValueError("a traffic history keeps at least one sample")
        self.samples_max = samples_max
        self.interval_s = interval_s
        self._samples: deque[TrafficSample] = deque(maxlen=samples_max)

    def record(self, at_s: float, bytes_total: Mapping[str, int]) -> None:
        """Adds a sample; one not later than the last replaces nothing and is ignored."""
        if self._samples and at_s <= self._samples[-1].at_s:
            return
        kept = sorted(bytes_total.items())[:SERIES_MAX]
        self._samples.append(TrafficSample(at_s=at_s, bytes_total=tuple(kept)))

    def samples(self) -> list[TrafficSample]:
        return list(self._samples)

    def to_json(self) -> dict[str, object]:
        """`{"interval_s", "samples_max", "series": [names], "samples": [{"at", "bytes": {…}}]}`."""
        samples = list(self._samples)
        names = sorted({name for s in samples for name, _ in s.bytes_total})
        return {
            "interval_s": self.interval_s,
            "samples_max": self.samples_max,
            "series": names,
            "samples": [{"at": s.at_s, "bytes": dict(s.bytes_total)} for s in samples],
        }


def counters_of(
    bytes_by_source: Mapping[str, int], served_bytes_by_peer: Mapping[str, int]
) -> dict[str, int]:
    """The sampled series: bytes received by source and bytes served to peers, all peers summed."""
    series = {f"received.{source}": value for source, value in bytes_by_source.items()}
    series["served.peers"] = sum(served_bytes_by_peer.values())
    return series
