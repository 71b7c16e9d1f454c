"""Publications (`pyrsia build docker|maven`): what was asked, and how far each got.

Publishing through the authorities is not rebuilding from source (`node/source_builds.py`,
`pyrsia build source`): a publication mirrors one image or one Maven version through the
authorities and ends
committed, refused (the authorities' verdicts say why) or failed (the upstream, the
network or a timeout). On an authority it runs here, and every transaction it submits
is followed through consensus (`Outcome`s: the verdict of each authority); a regular
node sends it to all authorities and records each one's answer. Kept in memory, the
newest `PUBLICATIONS_KEPT`: a build id names work of this node's current run.
"""

from __future__ import annotations

import secrets
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

from pyrsia.consensus.service import Outcome
from pyrsia.errors import BuildUnknown
from pyrsia.formats.build_target import check_target

PUBLICATIONS_KEPT = 1000


@dataclass(frozen=True, slots=True, kw_only=True)
class Committed:
    """A transaction committed without consensus (the one-authority network)."""

    tx_id: str
    path: str
    digest: str
    height: int
    submitter: str


@dataclass(slots=True, kw_only=True)
class BuildRequest:
    """What a publication and a source build share: how far it got, and each authority's say.

    The first outcome `finish` is given stands."""

    id: str
    via: str  # "this node" | "authorities"
    started_at: float
    state: str = "running"  # running | committed | refused | failed
    error: str | None = None
    height: int | None = None
    finished_at: float | None = None
    outcomes: list[Outcome] = field(default_factory=list)
    # Asked of the authorities: each one's answer, and the verdicts they reported.
    answers: dict[str, tuple[str, str]] = field(default_factory=dict)
    reported: dict[str, tuple[str, str]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    done: threading.Event = field(default_factory=threading.Event, repr=False)

    def finish(self, state: str, now: float, *, height: int | None = None, error: str | None = None) -> None:
        with self.lock:
            if self.state != "running":
                return
            self.state, self.height, self.error, self.finished_at = state, height, error, now
        self.done.set()

    def head(self, *, kind: str, target: str) -> dict[str, object]:
        """The fields every build document starts with (call holding `lock`)."""
        return {
            "id": self.id,
            "kind": kind,
            "target": target,
            "state": self.state,
            "error": self.error,
            "height": self.height,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "via": self.via,
        }


@dataclass(slots=True, kw_only=True)
class Publication(BuildRequest):
    kind: str
    target: str
    committed: list[Committed] = field(default_factory=list)


def merge_verdict(verdicts: dict[str, tuple[str, str]], authority: str, verdict: str, reason: str) -> None:
    """One authority's verdict over several transactions: a refusal wins, then pending."""
    rank = {"refused": 2, "pending": 1, "endorsed": 0}
    held = verdicts.get(authority)
    if held is None or rank.get(verdict, 1) > rank.get(held[0], 1):
        verdicts[authority] = (verdict, reason)


def answers_doc(answers: dict[str, tuple[str, str]]) -> list[dict[str, str]]:
    """Each authority's answer to a build sent to the authorities, as documents show it."""
    return [{"authority": a, "answer": v, "detail": d} for a, (v, d) in sorted(answers.items())]


class Publications:
    def __init__(self, kept: int = PUBLICATIONS_KEPT) -> None:
        self._kept = kept
        self._builds: OrderedDict[str, Publication] = OrderedDict()
        self._lock = threading.Lock()

    def start(self, kind: str, target: str, via: str, now: float) -> tuple[Publication, bool]:
        """A new build, or the running one for the same target (joined); and whether it is new."""
        check_target(kind, target)
        with self._lock:
            for build in self._builds.values():
                if build.kind == kind and build.target == target and build.state == "running":
                    return build, False
            build = Publication(id=secrets.token_hex(8), kind=kind, target=target, via=via, started_at=now)
            self._builds[build.id] = build
            while len(self._builds) > self._kept:
                self._builds.popitem(last=False)
            return build, True

    def get(self, build_id: str) -> Publication:
        with self._lock:
            build = self._builds.get(build_id)
        if build is None:
            raise BuildUnknown(f"no build {build_id[:40]!r} on this node (builds are kept while it runs)")
        return build

    def all(self) -> Sequence[Publication]:
        with self._lock:
            return list(self._builds.values())
