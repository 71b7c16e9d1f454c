"""Build requests (`pyrsia build`): what was asked, and how far each got.

A build publishes one image or one Maven version through the authorities and ends
committed, refused (the authorities' verdicts say why) or failed (the upstream, the
network or a timeout). On an authority it runs here, and every transaction it submits
is followed through consensus (`Outcome`s: the verdict of each authority); a regular
node sends it to all authorities and records each one's answer. Kept in memory, the
newest `BUILDS_KEPT`: a build id names work of this node's current run.
"""

from __future__ import annotations

import secrets
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

from pyrsia.consensus.service import Outcome
from pyrsia.errors import BuildUnknown, UsageError
from pyrsia.formats.digest import Digest, looks_like_digest
from pyrsia.formats.maven_layout import parse_path
from pyrsia.formats.reference import parse_name, parse_tag

BUILDS_KEPT = 1000
KINDS = ("docker", "maven")


@dataclass(frozen=True, slots=True, kw_only=True)
class Committed:
    """A transaction committed without consensus (the one-authority network)."""

    tx_id: str
    path: str
    digest: str
    height: int
    submitter: str


@dataclass(slots=True)
class Build:
    id: str
    kind: str
    target: str
    via: str  # "this node" | "authorities"
    started_at: float
    state: str = "running"  # running | committed | refused | failed
    error: str | None = None
    height: int | None = None
    finished_at: float | None = None
    outcomes: list[Outcome] = field(default_factory=list)
    committed: list[Committed] = field(default_factory=list)
    # Asked of the authorities: each one's answer, and the verdicts they reported.
    answers: dict[str, tuple[str, str]] = field(default_factory=dict)
    reported: dict[str, tuple[str, str]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    done: threading.Event = field(default_factory=threading.Event, repr=False)

    def finish(self, state: str, now: float, *, height: int | None = None, error: str | None = None) -> None:
        with self.lock:
            self.state, self.height, self.error, self.finished_at = state, height, error, now
        self.done.set()


def docker_target(target: str) -> tuple[str, str]:
    """`alpine`, `alpine:3.18`, `library/alpine@sha256:…` → (repository name, tag or digest)."""
    name, at, digest = target.partition("@")
    if not at:
        slash = name.rfind("/")
        colon = name.rfind(":")
        name, reference = (name[:colon], name[colon + 1 :]) if colon > slash else (name, "latest")
    else:
        reference = digest
    if looks_like_digest(reference):
        Digest.parse(reference)
    else:
        parse_tag(reference)
    return parse_name(name), reference


def maven_paths(target: str) -> list[str]:
    """`G:A:V` → the repository paths of its POM and jar."""
    parts = target.split(":")
    if len(parts) != 3 or not all(parts):
        raise UsageError(f"{target!r} is not a Maven coordinate GROUP:ARTIFACT:VERSION")
    group, artifact, version = parts
    base = f"{group.replace('.', '/')}/{artifact}/{version}/{artifact}-{version}"
    paths = [f"{base}.pom", f"{base}.jar"]
    for path in paths:
        parse_path(path)  # MavenPathInvalid for anything a repository could not hold
    return paths


def check_target(kind: str, target: str) -> None:
    if kind not in KINDS:
        raise UsageError(f"build kind must be one of {', '.join(KINDS)}, not {kind[:40]!r}")
    if not target or len(target) > 1024:
        raise UsageError("a build needs a target of at most 1024 characters")
    if kind == "docker":
        docker_target(target)
    else:
        maven_paths(target)


class Builds:
    def __init__(self, kept: int = BUILDS_KEPT) -> None:
        self._kept = kept
        self._builds: OrderedDict[str, Build] = OrderedDict()
        self._lock = threading.Lock()

    def start(self, kind: str, target: str, via: str, now: float) -> tuple[Build, bool]:
        """A new build, or the running one for the same target (joined); and whether it is new."""
        check_target(kind, target)
        with self._lock:
            for build in self._builds.values():
                if build.kind == kind and build.target == target and build.state == "running":
                    return build, False
            build = Build(id=secrets.token_hex(8), kind=kind, target=target, via=via, started_at=now)
            self._builds[build.id] = build
            while len(self._builds) > self._kept:
                self._builds.popitem(last=False)
            return build, True

    def get(self, build_id: str) -> Build:
        with self._lock:
            build = self._builds.get(build_id)
        if build is None:
            raise BuildUnknown(f"no build {build_id[:40]!r} on this node (builds are kept while it runs)")
        return build

    def all(self) -> Sequence[Build]:
        with self._lock:
            return list(self._builds.values())
