"""Where one authority's build from source is, and what its result means to another.

Each authority runs its own build of a spec and reports it as a `SourceStatus`:

    queued → fetching_source → resolving_dependencies → building → built | failed

`phase_of` reads which of the middle three a running build is in from its Maven log
(nothing yet: fetching the source; Maven downloading: resolving dependencies; a plugin
goal running: building). A finished build carries the commit it resolved the tag to,
its builder (JDK, Maven) and its outputs (`OutputFile`: name, size, SHA-256, jar
entries).

Seen from another authority, a finished build `matched` (same commit, byte-identical
outputs), `differed` (the reason names the differing files and jar entries) or
`failed`; `compare_with` decides which. `verdict_on_record` is the consensus verifier's
decision on one proposed file (`None`: endorse; text: refuse with that reason).

Statuses cross the network (`/pyrsia/request/1.0.0` `source_status`), so
`SourceStatus.from_fields` checks a peer's map like any untrusted input. Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pyrsia.errors import BuildFailed, ProtocolViolation
from pyrsia.sourcebuild.compare import OutputFile, compare_outputs
from pyrsia.sourcebuild.plan import BuilderFacts

QUEUED = "queued"
FETCHING_SOURCE = "fetching_source"
RESOLVING_DEPENDENCIES = "resolving_dependencies"
BUILDING = "building"
BUILT = "built"
FAILED = "failed"
STATES = (QUEUED, FETCHING_SOURCE, RESOLVING_DEPENDENCIES, BUILDING, BUILT, FAILED)
RUNNING_STATES = (QUEUED, FETCHING_SOURCE, RESOLVING_DEPENDENCIES, BUILDING)
# Another authority's build, as this one sees it.
MATCHED = "matched"
DIFFERED = "differed"
VIEW_STATES = (*RUNNING_STATES, BUILT, MATCHED, DIFFERED, FAILED, "unreachable")

OUTPUTS_MAX = 64
DETAIL_CHARS_MAX = 4096
LOG_TAIL_CHARS_MAX = 4096
VERSION_CHARS_MAX = 100
_COMMIT = re.compile(r"[0-9a-f]{40}")
_GOAL = re.compile(r"^\[INFO\] --- ", re.MULTILINE)
_FINISHED = re.compile(r"^\[INFO\] BUILD (?:SUCCESS|FAILURE)", re.MULTILINE)
_DOWNLOAD = re.compile(r"^(?:\[INFO\] )?Download(?:ing|ed) from ", re.MULTILINE)


@dataclass(frozen=True, slots=True, kw_only=True)
class SourceStatus:
    """One authority's build of one spec."""

    state: str
    detail: str = ""  # why it failed; empty otherwise
    log_tail: str = ""
    commit: str = ""  # once built: the full commit the tag resolved to
    builder: BuilderFacts | None = None
    outputs: tuple[OutputFile, ...] = ()

    def __post_init__(self) -> None:
        if self.state not in STATES:
            raise ValueError(f"unknown source build state {self.state!r}")

    @property
    def running(self) -> bool:
        return self.state in RUNNING_STATES

    def to_fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "state": self.state,
            "detail": self.detail[:DETAIL_CHARS_MAX],
            "logTail": self.log_tail[-LOG_TAIL_CHARS_MAX:],
            "commit": self.commit,
            "outputs": [o.to_fields() for o in self.outputs[:OUTPUTS_MAX]],
        }
        if self.builder is not None:
            fields["builder"] = self.builder.to_fields()
        return fields

    @classmethod
    def from_fields(cls, fields: Any) -> SourceStatus:
        """A peer's status, checked: `ProtocolViolation` when it is not one."""
        try:
            if not isinstance(fields, Mapping):
                raise ValueError("not a map")
            state, detail, tail, commit = (fields[k] for k in ("state", "detail", "logTail", "commit"))
            if state not in STATES:
                raise ValueError("state")
            for name, text, limit in (
                ("detail", detail, DETAIL_CHARS_MAX),
                ("logTail", tail, LOG_TAIL_CHARS_MAX),
            ):
                if not isinstance(text, str) or len(text) > limit:
                    raise ValueError(name)
            if not isinstance(commit, str) or (commit and not _COMMIT.fullmatch(commit)):
                raise ValueError("commit")
            raw_outputs = fields["outputs"]
            if not isinstance(raw_outputs, list | tuple) or len(raw_outputs) > OUTPUTS_MAX:
                raise ValueError("outputs")
            outputs = tuple(OutputFile.from_fields(o) for o in raw_outputs)
            builder = _builder(fields["builder"]) if "builder" in fields else None
        except (KeyError, TypeError, ValueError, BuildFailed) as exc:
            raise ProtocolViolation(f"malformed source build status ({exc})") from exc
        return cls(state=state, detail=detail, log_tail=tail, commit=commit, builder=builder, outputs=outputs)


def _builder(fields: Any) -> BuilderFacts:
    if not isinstance(fields, Mapping):
        raise ValueError("builder")
    jdk, major, maven = fields["jdk"], fields["jdkMajor"], fields["maven"]
    if isinstance(major, bool) or not isinstance(major, int) or not 0 < major < 1000:
        raise ValueError("builder jdkMajor")
    for text in (jdk, maven):
        if not isinstance(text, str) or not 0 < len(text) <= VERSION_CHARS_MAX:
            raise ValueError("builder version")
    return BuilderFacts(jdk_major=major, jdk_version=jdk, maven_version=maven)


def phase_of(log_text: str) -> str:
    """Which running phase a build is in, from its Maven log so far."""
    goal = max((m.start() for m in _GOAL.finditer(log_text)), default=-1)
    download = max((m.start() for m in _DOWNLOAD.finditer(log_text)), default=-1)
    if not log_text.strip():
        return FETCHING_SOURCE
    if goal > download or _FINISHED.search(log_text):  # Maven is done: its outputs are being collected
        return BUILDING
    return RESOLVING_DEPENDENCIES


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthorityView:
    """Another authority's build as this one sees it: a `VIEW_STATES` state and why."""

    state: str
    detail: str = ""


def compare_with(ours: SourceStatus, theirs: SourceStatus) -> AuthorityView:
    """`theirs` against `ours` (the proposer's reference build)."""
    if theirs.running:
        return AuthorityView(
            state=theirs.state, detail=theirs.log_tail[-400:] if theirs.state == BUILDING else ""
        )
    if theirs.state == FAILED:
        return AuthorityView(state=FAILED, detail=theirs.detail)
    if ours.state != BUILT:
        return AuthorityView(state=BUILT, detail="built; nothing to compare with yet")
    if theirs.commit != ours.commit:
        return AuthorityView(
            state=DIFFERED, detail=f"commit differs: theirs {theirs.commit}, ours {ours.commit}"
        )
    comparison = compare_outputs(ours.outputs, theirs.outputs)
    if comparison.identical:
        return AuthorityView(state=MATCHED)
    return AuthorityView(state=DIFFERED, detail=comparison.reason())


def verdict_on_record(
    *,
    ours: SourceStatus,
    commit: str,
    filename: str,
    digest: str,
    size: int,
    proposed: SourceStatus | None = None,
) -> str | None:
    """The verifier's answer to one proposed rebuilt file, given this authority's own
    finished build of the same spec: `None` to endorse, else the refusal reason.

    With the proposer's whole build (`proposed`) the build is judged whole: a release
    commits all its files or none, so even an identical pom is refused when the jar
    beside it differs, and the reason names the differing files and jar entries."""
    if ours.state == FAILED:
        return f"our build failed: {ours.detail}"
    if ours.state != BUILT:
        raise ValueError("our build has not finished")
    if commit != ours.commit:
        return f"commit differs: the tag is {ours.commit} here, the record says {commit}"
    if proposed is not None and proposed.state == BUILT:
        comparison = compare_outputs(ours.outputs, proposed.outputs)
        if not comparison.identical:
            return comparison.reason()
    mine = {o.name: o for o in ours.outputs}
    own = mine.get(filename)
    if own is not None and f"sha256:{own.sha256}" == digest and own.size == size:
        return None
    if own is None:
        return f"differs: {filename}: our build did not produce it"
    return (
        f"differs: {filename}: ours sha256:{own.sha256} ({own.size} bytes), proposed {digest} ({size} bytes)"
    )
