"""Rebuilding from source (`pyrsia build source`): this authority's builds, and the
requests that make the authorities agree on their outputs.

Not the same thing as `node/builds.py` (`Publications`: publishing what an upstream
serves through the authorities). Here every authority *rebuilds* a release from its git
tag in the sandbox (`pyrsia.sourcebuild`) and the log only takes bytes that a quorum
of authorities built identically.

- `SourceBuilder` runs this authority's own builds: one per spec digest, on a bounded
  worker pool (`source_build_workers`, never the consensus thread), at most
  `QUEUED_MAX` waiting; the result is kept (`KEPT_MAX` specs, the oldest finished go
  first with their files) so verifying several records of one build builds once.
- `SourceBuilds` holds the requests this node was given (`pyrsia build source`), each
  with an id, like publications; kept in memory, the newest `REQUESTS_KEPT`.
- `SourceBuildService` wires them: the proposer (the authority a request reached) asks
  every other authority to rebuild (`source_rebuild`), builds, puts its outputs in the
  blob store, compares each with the upstream's published file for the same
  coordinates (`reproduces_upstream`), and submits one `AddArtifact` per output; it
  polls the others (`source_status`) so `build status` shows where each one is and
  names the files and jar entries that differ. The consensus verifier (`verify`)
  endorses a rebuilt record only once this authority's own build of the same spec
  finished with the same commit and a byte-identical file; until then the record waits
  (`PENDING`, looked at again when a build ends). A regular node sends the request to
  one authority (`build_source`) and waits for its answer.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import re
import secrets
import shutil
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from pyrsia.artifacts.blobstore import BlobStore
from pyrsia.artifacts.records import RecordStore
from pyrsia.consensus.service import PENDING, ConsensusService, VerifyResult
from pyrsia.errors import (
    BuildSpecInvalid,
    BuildUnknown,
    ConfigError,
    ConsensusTimeout,
    MavenFileUnknown,
    PeerError,
    ProtocolViolation,
    PublishRefused,
    PyrsiaError,
    SourceBuildError,
    UpstreamError,
)
from pyrsia.formats.digest import Digest
from pyrsia.formats.maven_layout import CHECKSUMS
from pyrsia.node.builds import BuildRequest, answers_doc, merge_verdict
from pyrsia.p2p.behaviours.requests import PublishReply, PublishRequest
from pyrsia.sourcebuild.compare import OutputFile
from pyrsia.sourcebuild.plan import SandboxLayout, SandboxLimits, SourceBuildResult
from pyrsia.sourcebuild.sandbox import MirrorAddress, probe_toolchain, release_work_dir, run_source_build
from pyrsia.sourcebuild.spec import BuildSpec, Toolchain, canonical_fields, spec_digest, spec_from_canonical
from pyrsia.sourcebuild.status import (
    BUILT,
    FAILED,
    FETCHING_SOURCE,
    MATCHED,
    QUEUED,
    AuthorityView,
    SourceStatus,
    compare_with,
    phase_of,
    verdict_on_record,
)
from pyrsia.translog.chunks import CHUNK_BYTES, chunk_hashes, chunk_root
from pyrsia.translog.ledger import Ledger
from pyrsia.translog.tx import ADD_ARTIFACT, AddArtifact, Transaction
from pyrsia.upstream.maven import MavenRepositories

log = logging.getLogger("pyrsia.sourcebuild")

QUEUED_MAX = 16
KEPT_MAX = 32
REQUESTS_KEPT = 200
STATUS_POLL_S = 2.0
STATUS_ASK_TIMEOUT_S = 10.0
LOG_TAIL_SHOWN_CHARS = 2000
BUILD_TIMEOUT_MARGIN_S = 120.0
_WORK_DIR = re.compile(r"[0-9a-f]{16}-[0-9a-f]{8}")
MEDIA_TYPES = {".jar": "application/java-archive", ".pom": "application/xml"}


def spec_json(spec: BuildSpec) -> str:
    """The spec as it travels in a request: its canonical fields as JSON."""
    return json.dumps(canonical_fields(spec), sort_keys=True, separators=(",", ":"))


def spec_of_json(text: str) -> BuildSpec:
    """A spec from a request (a peer's or a client's), every field checked again."""
    try:
        fields = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise BuildSpecInvalid("the spec is not JSON") from exc
    if not isinstance(fields, dict):
        raise BuildSpecInvalid("the spec must be a JSON object")
    return spec_from_canonical(fields)


def maven_path(spec: BuildSpec, filename: str, result: SourceBuildResult | None = None) -> str:
    """Where a built file lives in the Maven layout: under its own module's coordinates
    (a multi-module build), else the spec's."""
    module = result.coordinates_of(filename) if result is not None else None
    group, artifact, version = (
        (module.group_id, module.artifact_id, module.version)
        if module is not None
        else (spec.group_id, spec.artifact_id, spec.version)
    )
    return f"{group.replace('.', '/')}/{artifact}/{version}/{filename}"


# -- this authority's own builds ---------------------------------------------------------


@dataclass(slots=True)
class _Job:
    spec: BuildSpec
    digest: str
    work_dir: Path
    state: str = QUEUED
    detail: str = ""
    log_tail: str = ""
    result: SourceBuildResult | None = None
    done: threading.Event = field(default_factory=threading.Event)


class SourceBuilder:
    """This authority's builds, by spec digest (see the module docstring)."""

    def __init__(
        self,
        *,
        root: Path,
        mirror: MirrorAddress,
        workers: int,
        uid: int,
        jdks: Sequence[str] = (),
        limits: SandboxLimits | None = None,
        on_done: Callable[[], None] = lambda: None,
    ) -> None:
        self._root = root
        self._mirror = mirror
        self._uid = uid
        bad = [major for major in jdks if not major.strip().isdigit()]
        if bad:
            raise ConfigError(f"source_build_jdks: {bad[0][:40]!r} is not a JDK major version such as 17")
        self._jdks = frozenset(int(major) for major in jdks)
        self._limits = limits or SandboxLimits()
        self._on_done = on_done
        # Daemon threads: a node that stops does not wait for a build; the sandbox dies
        # with the node (bubblewrap's --die-with-parent).
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._workers = [
            threading.Thread(target=self._work, name=f"pyrsia-source-build-{i}", daemon=True)
            for i in range(workers)
        ]
        self._started = False
        self._closed = False
        self._jobs: OrderedDict[str, _Job] = OrderedDict()
        self._lock = threading.Lock()
        self._toolchain: Toolchain | None = None
        self._remove_leftovers()

    def _remove_leftovers(self) -> None:
        """Build directories an earlier run left (a crash, a kill): only this module's names."""
        try:
            entries = list(self._root.iterdir())
        except OSError:
            return
        for entry in entries:
            if _WORK_DIR.fullmatch(entry.name) and entry.is_dir() and not entry.is_symlink():
                # A killed build may have left its capped filesystem mounted: unmount first.
                release_work_dir(SandboxLayout(work=PurePosixPath(entry)))
                shutil.rmtree(entry, ignore_errors=True)

    @property
    def timeout_s(self) -> float:
        return self._limits.fetch_time_s_max + self._limits.wall_time_s_max + BUILD_TIMEOUT_MARGIN_S

    def toolchain(self) -> Toolchain:
        """The JDKs and Maven this node builds with: those found, less those not listed."""
        if self._toolchain is None:
            found = probe_toolchain()
            if self._jdks:
                found = Toolchain(
                    maven_version=found.maven_version,
                    jdks=tuple(j for j in found.jdks if j.major in self._jdks),
                    newlines=found.newlines,
                )
            self._toolchain = found
        return self._toolchain

    def ensure(self, spec: BuildSpec) -> _Job:
        """This node's build of `spec`: the one held, else a new one queued."""
        digest = spec_digest(spec)
        with self._lock:
            job = self._jobs.get(digest)
            if job is not None and not (job.done.is_set() and job.state == FAILED):
                return job  # running or built; a failed one is tried again (a tag pushed since)
            if job is not None:
                shutil.rmtree(job.work_dir, ignore_errors=True)
                del self._jobs[digest]
            waiting = sum(1 for j in self._jobs.values() if not j.done.is_set())
            if waiting >= QUEUED_MAX:
                raise SourceBuildError(f"{waiting} builds from source are waiting here already; try later")
            work_dir = self._root / f"{digest.removeprefix('sha256:')[:16]}-{secrets.token_hex(4)}"
            job = _Job(spec=spec, digest=digest, work_dir=work_dir)
            self._jobs[digest] = job
            self._evict()
        with self._lock:
            if self._closed:
                self._finish(job, FAILED, "the node is stopping")
                return job
            if not self._started:
                self._started = True
                for worker in self._workers:
                    worker.start()
        self._queue.put(job)
        return job

    def job(self, digest: str) -> _Job | None:
        with self._lock:
            return self._jobs.get(digest)

    def status(self, digest: str) -> SourceStatus | None:
        job = self.job(digest)
        if job is None:
            return None
        state = job.state
        if state == FETCHING_SOURCE:  # the sandbox's log says how far it got
            tail = _tail(Path(SandboxLayout(work=PurePosixPath(job.work_dir)).log), LOG_TAIL_SHOWN_CHARS)
            return SourceStatus(state=phase_of(tail), log_tail=tail)
        result = job.result
        if state == BUILT and result is not None:
            return SourceStatus(
                state=BUILT,
                log_tail=result.log_tail[-LOG_TAIL_SHOWN_CHARS:],
                commit=result.commit,
                builder=result.builder,
                outputs=result.outputs,
            )
        return SourceStatus(state=state, detail=job.detail, log_tail=job.log_tail[-LOG_TAIL_SHOWN_CHARS:])

    def close(self) -> None:
        with self._lock:
            self._closed = True
        for _ in self._workers:
            self._queue.put(None)

    def _work(self) -> None:
        while (job := self._queue.get()) is not None:
            if self._closed:
                self._finish(job, FAILED, "the node is stopping")
                continue
            self._run(job)

    def _run(self, job: _Job) -> None:
        job.state = FETCHING_SOURCE
        try:
            self._root.mkdir(mode=0o755, parents=True, exist_ok=True)
            result = run_source_build(
                job.spec,
                work_dir=job.work_dir,
                mirror=self._mirror,
                toolchain=self.toolchain(),
                limits=self._limits,
                uid=self._uid,
            )
        except PyrsiaError as exc:
            tail = ""
            if isinstance(exc.detail, dict):
                tail = str(exc.detail.get("log_tail", ""))
            job.log_tail = tail
            log.info("build from source of %s failed: %s", job.spec.gav, exc.message)
            self._finish(job, FAILED, exc.message)
            return
        except Exception as exc:  # a bug fails this build, never the node
            log.exception("build from source of %s failed", job.spec.gav)
            self._finish(job, FAILED, f"{type(exc).__name__}: {exc}")
            return
        job.result = result
        log.info(
            "built %s from %s at %s in %.1f s",
            job.spec.gav,
            result.git_repo,
            result.commit,
            result.wall_time_s,
        )
        self._finish(job, BUILT, "")

    def _finish(self, job: _Job, state: str, detail: str) -> None:
        job.state, job.detail = state, detail
        job.done.set()
        self._on_done()

    def _evict(self) -> None:
        while len(self._jobs) > KEPT_MAX:
            oldest = next((d for d, j in self._jobs.items() if j.done.is_set()), None)
            if oldest is None:
                return
            gone = self._jobs.pop(oldest)
            shutil.rmtree(gone.work_dir, ignore_errors=True)


def _tail(path: Path, limit: int) -> str:
    try:
        with open(path, "rb") as stream:
            stream.seek(0, os.SEEK_END)
            stream.seek(max(0, stream.tell() - limit))
            return stream.read().decode(errors="replace")
    except OSError:
        return ""


def _status_in(reply: PublishReply) -> SourceStatus | str:
    """The build status a `source_status` reply carries, checked; else why there is none."""
    if reply.source is None:
        return reply.error or "no status in the answer"
    try:
        return SourceStatus.from_fields(reply.source)
    except ProtocolViolation as exc:
        return exc.message


def output_bytes(result: SourceBuildResult, output: OutputFile) -> bytes:
    return (Path(result.output_dir) / output.name).read_bytes()


# -- requests (`pyrsia build source`) ----------------------------------------------------


@dataclass(slots=True, kw_only=True)
class SourceBuild(BuildRequest):
    """One `pyrsia build source` on this node."""

    spec: BuildSpec
    spec_digest: str
    # Each other authority's build, as last heard (`source_status`), or why not heard.
    heard: dict[str, SourceStatus | str] = field(default_factory=dict)


class SourceBuilds:
    def __init__(self, kept: int = REQUESTS_KEPT) -> None:
        self._kept = kept
        self._builds: OrderedDict[str, SourceBuild] = OrderedDict()
        self._lock = threading.Lock()

    def start(self, spec: BuildSpec, via: str, now: float) -> tuple[SourceBuild, bool]:
        """A new request, or the running one for the same spec (joined); and whether it is new."""
        digest = spec_digest(spec)
        with self._lock:
            for build in self._builds.values():
                if build.spec_digest == digest and build.state == "running":
                    return build, False
            build = SourceBuild(
                id=secrets.token_hex(8), spec=spec, spec_digest=digest, via=via, started_at=now
            )
            self._builds[build.id] = build
            while len(self._builds) > self._kept:
                self._builds.popitem(last=False)
            return build, True

    def find(self, build_id: str) -> SourceBuild | None:
        with self._lock:
            return self._builds.get(build_id)

    def get(self, build_id: str) -> SourceBuild:
        build = self.find(build_id)
        if build is None:
            raise BuildUnknown(f"no build {build_id[:40]!r} on this node (builds are kept while it runs)")
        return build

    def all(self) -> Sequence[SourceBuild]:
        with self._lock:
            return list(self._builds.values())


class SourceBuildService:
    THIS_NODE = "this node"
    VIA_AUTHORITIES = "authorities"

    def __init__(
        self,
        *,
        builder: SourceBuilder,
        network: Any,
        consensus: ConsensusService,
        ledger: Ledger,
        blobs: BlobStore,
        maven_records: RecordStore,
        maven_upstream: MavenRepositories,
        me: str,
        request_timeout_s: float,
    ) -> None:
        self.builder = builder
        self.builds = SourceBuilds()
        self._network = network
        self._consensus = consensus
        self._ledger = ledger
        self._blobs = blobs
        self._records = maven_records
        self._upstream = maven_upstream
        self._me = me
        self._request_timeout_s = request_timeout_s

    # -- starting ------------------------------------------------------------------

    def start(self, spec: BuildSpec) -> SourceBuild:
        """`pyrsia build source` on this node: proposed here (an authority), else sent to one."""
        via = self.THIS_NODE if self._me in self._ledger.authorities else self.VIA_AUTHORITIES
        build, new = self.builds.start(spec, via, time.time())
        if new:
            target = self._propose if via == self.THIS_NODE else self._via_authority
            threading.Thread(
                target=self._run, args=(build, target), name=f"source-{build.id}", daemon=True
            ).start()
        return build

    def _run(self, build: SourceBuild, step: Callable[[SourceBuild], None]) -> None:
        try:
            step(build)
        except PublishRefused as exc:
            build.finish("refused", time.time(), error=exc.message)
        except PyrsiaError as exc:
            build.finish("failed", time.time(), error=exc.message)
        except Exception as exc:
            log.exception("build from source %s failed", build.id)
            build.finish("failed", time.time(), error=f"{type(exc).__name__}: {exc}")

    def serve(self, request: PublishRequest) -> Sequence[tuple[str, str, str]] | SourceStatus:
        """A source request from a peer (`pyrsia.p2p.behaviours.requests`)."""
        if request.kind == "source_status":
            # Not known yet (its `source_rebuild` may still be on its way): queued, not
            # missing, so nothing remembers it as a 404.
            return self.builder.status(request.name) or SourceStatus(
                state=QUEUED, detail="not asked to build this spec yet"
            )
        spec = spec_of_json(request.reference)
        if request.kind == "source_rebuild":
            self.builder.toolchain()  # probed before answering, off the build worker
            self.builder.ensure(spec)
            return ()
        build, new = self.builds.start(spec, self.THIS_NODE, time.time())
        if new:
            self._run(build, self._propose)
        elif not build.done.wait(self.builder.timeout_s):
            raise ConsensusTimeout(f"build {build.id} of {spec.gav} is still running")
        verdicts = self.verdicts_of(build)
        if build.state == "committed":
            return verdicts
        error = PublishRefused if build.state == "refused" else UpstreamError
        raise error(
            build.error or f"build {build.state}",
            detail=[{"authority": a, "verdict": v, "reason": r} for a, v, r in verdicts],
        )

    # -- the proposer --------------------------------------------------------------

    def _propose(self, build: SourceBuild) -> None:
        spec = build.spec
        job = self.builder.ensure(spec)
        others = sorted(self._ledger.authorities - {self._me})
        request = PublishRequest(kind="source_rebuild", name=spec.gav, reference=spec_json(spec))
        for authority in others:
            threading.Thread(
                target=self._ask_rebuild, args=(build, authority, request), name="pyrsia-ask", daemon=True
            ).start()
        poller = threading.Thread(
            target=self._poll, args=(build, others), name="pyrsia-source-poll", daemon=True
        )
        poller.start()
        if not job.done.wait(self.builder.timeout_s):
            raise SourceBuildError(f"this authority's build of {spec.gav} did not end in time")
        result = job.result
        if job.state != BUILT or result is None:
            raise SourceBuildError(f"this authority's build failed: {job.detail}")
        payloads = [self._record(spec, result, output) for output in result.outputs]
        if self._ledger.authorities == {self._me}:
            block = self._ledger.publish(payloads)
            build.finish("committed", time.time(), height=block.header.height)
            return
        outcomes = self._consensus.submit([self._consensus.sign(ADD_ARTIFACT, p) for p in payloads])
        with build.lock:
            build.outcomes += outcomes
        timeout_s = self.builder.timeout_s + self._request_timeout_s
        height = self._consensus.wait(outcomes, timeout_s)
        build.finish("committed", time.time(), height=height)

    def _ask_rebuild(self, build: SourceBuild, authority: str, request: PublishRequest) -> None:
        try:
            reply = self._network.ask(authority, request, self._request_timeout_s)
        except PyrsiaError as exc:
            with build.lock:
                build.answers[authority] = ("unreachable", exc.message)
            return
        with build.lock:
            build.answers[authority] = ("queued", "") if reply.ok else ("failed", reply.error)

    def _poll(self, build: SourceBuild, others: Sequence[str]) -> None:
        """Follows the other authorities' builds until each finished (also after the commit:
        `build status` shows every authority's result), within the build time limit."""
        waiting = set(others)
        request = PublishRequest(kind="source_status", name=build.spec_digest)
        deadline = time.monotonic() + self.builder.timeout_s
        while waiting and time.monotonic() < deadline:
            for authority in sorted(waiting):
                try:
                    reply = self._network.ask(authority, request, STATUS_ASK_TIMEOUT_S)
                except PyrsiaError as exc:
                    heard: SourceStatus | str = f"unreachable: {exc.message}"
                else:
                    heard = _status_in(reply)
                with build.lock:
                    build.heard[authority] = heard
                if isinstance(heard, SourceStatus) and not heard.running:
                    waiting.discard(authority)
            if waiting:
                time.sleep(STATUS_POLL_S)

    def _record(self, spec: BuildSpec, result: SourceBuildResult, output: OutputFile) -> AddArtifact:
        """Store one output and describe it as a log record (compared with the upstream's file)."""
        data = output_bytes(result, output)
        digest = Digest("sha256", output.sha256)
        path = maven_path(spec, output.name, result)
        self.hold(path, digest, data, spec.git_repo)
        suffix = Path(output.name).suffix
        module = result.coordinates_of(output.name)
        gav = spec.gav if module is None else f"{module.group_id}:{module.artifact_id}:{module.version}"
        return AddArtifact(
            package_type="maven",
            package_id=gav,
            path=f"/maven2/{path}",
            digest=str(digest),
            size=len(data),
            chunk_size=CHUNK_BYTES,
            chunk_root=chunk_root(chunk_hashes(data)),
            media_type=MEDIA_TYPES.get(suffix, "application/octet-stream"),
            source=spec.git_repo,
            author=spec.group_id,
            build_source=spec.git_repo,
            build_commit=result.commit,
            build_spec=result.spec_digest,
            builder_jdk=result.builder.jdk_version,
            builder_maven=result.builder.maven_version,
            reproduces_upstream=self._reproduces_upstream(path, digest),
        )

    def hold(self, path: str, digest: Digest, data: bytes, source: str) -> None:
        """Keep a built file so this node serves it under `/maven2/` once the log holds it."""
        self._blobs.put(digest, data, source)
        checksums = {algorithm: hashlib.new(algorithm, data).hexdigest() for algorithm in CHECKSUMS}
        now = time.time()
        self._records.put(
            path + "@",
            {
                **checksums,
                "size": len(data),
                "fetched_at": now,
                "last_modified": now,
                "verified_with": "rebuilt",
            },
        )

    def _reproduces_upstream(self, path: str, digest: Digest) -> str:
        try:
            fetched = self._upstream.fetch(path, self._blobs.opener(None, "upstream comparison", CHECKSUMS))
        except MavenFileUnknown:
            return "absent"
        except PyrsiaError as exc:
            log.info("cannot compare %s with the upstream: %s", path, exc.message)
            return "absent"
        if str(fetched.digest) == str(digest):
            return "yes"
        self._blobs.remove(fetched.digest)
        return "no"

    # -- a regular node ------------------------------------------------------------

    def _via_authority(self, build: SourceBuild) -> None:
        request = PublishRequest(kind="build_source", name=build.spec.gav, reference=spec_json(build.spec))
        timeout_s = self.builder.timeout_s + self._request_timeout_s
        for authority in sorted(self._ledger.authorities):
            try:
                reply = self._network.ask(authority, request, timeout_s)
            except PeerError as exc:
                with build.lock:
                    build.answers[authority] = ("unreachable", exc.message)
                continue
            with build.lock:
                for who, verdict, reason in reply.verdicts:
                    build.reported[who] = (verdict, reason)
                build.answers[authority] = (
                    ("committed", f"at height {reply.height}") if reply.ok else ("refused", reply.error)
                )
            if not reply.ok:
                build.finish("refused" if reply.status == 422 else "failed", time.time(), error=reply.error)
                return
            self._network.sync.wait_for_height(reply.height, self._request_timeout_s)
            build.finish("committed", time.time(), height=reply.height)
            return
        raise PeerError(
            "no authority took the build: " + "; ".join(f"{a}: {d}" for a, (_, d) in build.answers.items())
        )

    # -- the verifier --------------------------------------------------------------

    def verify(self, tx: Transaction) -> VerifyResult:
        """Endorse a rebuilt record only if this authority built the same bytes."""
        payload = tx.payload
        assert isinstance(payload, AddArtifact) and payload.rebuilt
        job = self.builder.job(payload.build_spec)
        if job is None or not job.done.is_set():
            return PENDING  # its build request has not come, or the build runs: asked again when one ends
        ours = self.builder.status(payload.build_spec)
        assert ours is not None
        filename = payload.path.rsplit("/", 1)[-1]
        own = {o.name: o for o in ours.outputs}.get(filename)
        # The proposer's whole build, so a release is judged whole (all its files or none).
        proposed = self._status_of(tx.submitter, payload.build_spec) if ours.state == BUILT else None
        reason = verdict_on_record(
            ours=ours,
            commit=payload.build_commit,
            filename=filename,
            digest=payload.digest,
            size=payload.size,
            proposed=proposed,
        )
        if reason is None and job.result is not None:
            expected = "/maven2/" + maven_path(job.spec, filename, job.result)
            if payload.path != expected:
                reason = f"differs: {filename} belongs at {expected}, not {payload.path[:200]}"
        if reason is None and job.result is not None and own is not None:
            data = output_bytes(job.result, own)
            self.hold(
                payload.path.removeprefix("/maven2/"),
                Digest.parse(payload.digest),
                data,
                payload.build_source,
            )
        return reason

    def _status_of(self, authority: str, digest: str) -> SourceStatus | None:
        try:
            reply = self._network.ask(
                authority, PublishRequest(kind="source_status", name=digest), STATUS_ASK_TIMEOUT_S
            )
        except PyrsiaError:
            return None
        status = _status_in(reply)
        return status if isinstance(status, SourceStatus) else None

    # -- showing -------------------------------------------------------------------

    def verdicts_of(self, build: SourceBuild) -> list[tuple[str, str, str]]:
        with build.lock:
            verdicts = dict(build.reported)
            outcomes = list(build.outcomes)
        for outcome in outcomes:
            for v in self._consensus.verdicts_of(outcome):
                merge_verdict(verdicts, v["authority"], v["verdict"], v["reason"])
        return [(a, v, r) for a, (v, r) in sorted(verdicts.items())]

    def authority_views(self, build: SourceBuild) -> list[dict[str, object]]:
        """Each authority's build: queued … building (with the log tail), matched, differed, failed."""
        if build.via != self.THIS_NODE:
            return []
        ours = self.builder.status(build.spec_digest) or SourceStatus(state=QUEUED)
        with build.lock:
            heard, answers = dict(build.heard), dict(build.answers)
        verdicts = {a: (v, r) for a, v, r in self.verdicts_of(build)}
        views = []
        for authority in sorted(self._ledger.authorities | set(heard) | set(answers)):
            status: SourceStatus | None
            if authority == self._me:
                view = AuthorityView(state=MATCHED if ours.state == BUILT else ours.state, detail=ours.detail)
                status = ours
            else:
                said = heard.get(authority)
                status = said if isinstance(said, SourceStatus) else None
                if status is not None:
                    view = compare_with(ours, status)
                elif authority in answers and answers[authority][0] != "queued":
                    view = AuthorityView(
                        state=FAILED if answers[authority][0] == "failed" else "unreachable",
                        detail=answers[authority][1],
                    )
                else:
                    view = AuthorityView(state=QUEUED, detail=str(heard.get(authority, "")))
            verdict = verdicts.get(authority)
            if verdict is not None and verdict[0] == "refused" and view.state == MATCHED:
                view = AuthorityView(state=FAILED, detail=verdict[1])
            entry: dict[str, object] = {"authority": authority, "state": view.state, "detail": view.detail}
            if status is not None and status.state not in (BUILT,) and status.log_tail:
                entry["log_tail"] = status.log_tail[-LOG_TAIL_SHOWN_CHARS:]
            if status is not None and status.commit:
                entry["commit"] = status.commit
            if status is not None and status.builder is not None:
                entry["builder"] = status.builder.to_fields()
            views.append(entry)
        return views

    def to_json(self, build: SourceBuild) -> dict[str, object]:
        with build.lock:
            outcomes = list(build.outcomes)
            answers = dict(build.answers)
            doc = build.head(kind="source", target=build.spec.gav)
            doc.update(
                spec_digest=build.spec_digest, git_repo=build.spec.git_repo, git_tag=build.spec.git_tag
            )
        transactions: list[dict[str, object]] = []
        for outcome in outcomes:
            payload = outcome.tx.payload
            assert isinstance(payload, AddArtifact)
            transactions.append(
                {
                    "tx_id": outcome.tx.id.hex(),
                    "path": payload.path,
                    "digest": payload.digest,
                    "state": outcome.state,
                    "commit": payload.build_commit,
                    "reproduces_upstream": payload.reproduces_upstream,
                }
            )
        doc["transactions"] = transactions
        doc["verdicts"] = [{"authority": a, "verdict": v, "reason": r} for a, v, r in self.verdicts_of(build)]
        doc["authorities"] = self.authority_views(build)
        if build.via == self.VIA_AUTHORITIES:
            doc["answers"] = answers_doc(answers)
        return doc
