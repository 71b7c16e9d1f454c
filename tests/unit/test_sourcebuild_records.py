"""Records of files rebuilt from source, the source request messages, and each
authority's build status: the pure pieces of `pyrsia build source`, driven directly."""

from __future__ import annotations

import dataclasses
import io
import zipfile
from pathlib import Path

import pytest
from nacl.signing import SigningKey

from pyrsia.errors import ProtocolViolation, TxInvalid
from pyrsia.node.source_builds import maven_path
from pyrsia.p2p.behaviours import requests
from pyrsia.p2p.behaviours.requests import PublishReply, PublishRequest, RequestGuard
from pyrsia.sourcebuild.compare import OutputFile, describe_output
from pyrsia.sourcebuild.plan import BuilderFacts, ModuleOutputs, SourceBuildResult
from pyrsia.sourcebuild.spec import spec_from_flags
from pyrsia.sourcebuild.status import (
    BUILDING,
    BUILT,
    DIFFERED,
    FAILED,
    FETCHING_SOURCE,
    MATCHED,
    QUEUED,
    RESOLVING_DEPENDENCIES,
    SourceStatus,
    compare_with,
    phase_of,
    verdict_on_record,
)
from pyrsia.translog import codec
from pyrsia.translog.index import Query
from pyrsia.translog.ledger import Ledger
from pyrsia.translog.tx import ADD_ARTIFACT, AddArtifact, Transaction, sign

COMMIT = "a" * 40
OTHER_COMMIT = "b" * 40
SPEC = "sha256:" + "c" * 64
URL = "git://127.0.0.1:9418/hello.git"
BUILDER = BuilderFacts(jdk_major=17, jdk_version="17.0.15", maven_version="3.8.7")


def mirrored(**changes: object) -> AddArtifact:
    base = AddArtifact(
        package_type="maven",
        package_id="com.example:hello:1.0",
        path="/maven2/com/example/hello/1.0/hello-1.0.jar",
        digest="sha256:" + "ab" * 32,
        size=1234,
        chunk_size=1 << 20,
        chunk_root=bytes(32),
        media_type="application/java-archive",
        source="https://repo.example/maven2/com/example/hello/1.0/hello-1.0.jar",
        author="com.example",
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def rebuilt(**changes: object) -> AddArtifact:
    fields: dict[str, object] = {
        "source": URL,
        "build_source": URL,
        "build_commit": COMMIT,
        "build_spec": SPEC,
        "builder_jdk": "17.0.15",
        "builder_maven": "3.8.7",
        "reproduces_upstream": "absent",
    }
    fields.update(changes)
    return mirrored(**fields)


# -- records ------------------------------------------------------------------------------


def test_a_rebuilt_record_round_trips_and_a_mirror_record_keeps_its_encoding() -> None:
    record = rebuilt()
    assert record.rebuilt and not mirrored().rebuilt
    assert AddArtifact.from_map(codec.decode(record.encoded())) == record
    assert record.to_map()["build"] == {
        "source": URL, "commit": COMMIT, "spec": SPEC, "jdk": "17.0.15", "maven": "3.8.7",
        "reproduces_upstream": "absent",
    }  # fmt: skip
    # A record without build fields encodes exactly as before they existed (old logs keep their ids).
    assert "build" not in mirrored().to_map()
    old = mirrored().to_map()
    assert AddArtifact.from_map(old).encoded() == codec.encode(old)
    # The cached encoding is written in key order by hand: it is the canonical walk's.
    for value in (record, mirrored(), mirrored(registry="ghcr.io"), rebuilt(registry="central")):
        assert value.encoded() == codec.encode(value.to_map())


def test_a_signed_rebuilt_record_keeps_its_id_through_the_wire() -> None:
    tx = sign(SigningKey(bytes(32)), type=ADD_ARTIFACT, payload=rebuilt(), time=1_700_000_000, nonce=1)
    again = Transaction.from_map(codec.decode(tx.encoded()))
    assert again.id == tx.id and again.payload == rebuilt()


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"build_commit": ""}, "missing build_commit"),
        ({"build_commit": "abc123"}, "40-hex"),
        ({"build_commit": "A" * 40}, "40-hex"),
        ({"build_spec": "md5:" + "c" * 64}, "sha256"),
        ({"reproduces_upstream": "maybe"}, "reproduces_upstream"),
        ({"builder_jdk": "1" * 200}, "builder_jdk"),
        ({"build_source": ""}, "missing build_source"),
    ],
)
def test_a_rebuilt_record_with_a_bad_build_field_is_refused(changes: dict[str, object], needle: str) -> None:
    with pytest.raises(TxInvalid, match=needle):
        rebuilt(**changes)


def test_a_peers_record_with_bad_or_unknown_build_fields_is_refused() -> None:
    doc = rebuilt().to_map()
    with pytest.raises(TxInvalid, match="unknown build fields"):
        AddArtifact.from_map({**doc, "build": {**doc["build"], "shell": "rm -rf /"}})
    with pytest.raises(TxInvalid):
        AddArtifact.from_map({**doc, "build": {**doc["build"], "commit": 7}})
    with pytest.raises(TxInvalid):
        AddArtifact.from_map({**doc, "build": "not a map"})
    partial = {k: v for k, v in doc["build"].items() if k != "spec"}
    with pytest.raises(TxInvalid):
        AddArtifact.from_map({**doc, "build": partial})


def test_the_index_finds_rebuilt_records_by_source_and_reproducibility(tmp_path: Path) -> None:
    ledger = Ledger.open(tmp_path, SigningKey.generate(), clock=lambda: 1_700_000_000)
    ledger.publish(
        [
            mirrored(),
            rebuilt(path="/maven2/a.jar", digest="sha256:" + "01" * 32, reproduces_upstream="yes"),
            rebuilt(path="/maven2/b.jar", digest="sha256:" + "02" * 32, reproduces_upstream="no"),
            rebuilt(
                path="/maven2/c.jar", digest="sha256:" + "03" * 32, source="git://other/x.git",
                build_source="git://other/x.git",
            ),
        ]
    )  # fmt: skip
    ledger.close()
    reopened = Ledger.open(tmp_path, SigningKey.generate())
    assert {r.path for r in reopened.search(Query(build_source=URL))} == {"/maven2/a.jar", "/maven2/b.jar"}
    assert [r.path for r in reopened.search(Query(reproduces_upstream="yes"))] == ["/maven2/a.jar"]
    (found,) = reopened.search(Query(build_source="git://other/x.git"))
    assert (found.build_commit, found.build_spec, found.builder_jdk) == (COMMIT, SPEC, "17.0.15")
    (plain,) = reopened.search(Query(digest=mirrored().digest))
    assert (plain.build_source, plain.reproduces_upstream) == ("", "")
    assert found.to_json()["build_source"] == "git://other/x.git"


# -- request messages ---------------------------------------------------------------------


def test_source_requests_carry_a_whole_spec_and_a_status_map() -> None:
    spec = '{"groupId":"com.example","command":["mvn","package"]}' + " " * 20_000
    for kind in ("build_source", "source_rebuild"):
        request = PublishRequest(kind=kind, name="com.example:hello:1.0", reference=spec)
        assert requests.decode(requests.encode(request)) == request
    status = SourceStatus(state=BUILT, commit=COMMIT, builder=BUILDER, outputs=(_jar({"a": b"1"}),))
    reply = PublishReply(ok=True, height=3, source=status.to_fields())
    decoded = requests.decode(requests.encode(reply))
    assert isinstance(decoded, PublishReply)
    assert decoded.source is not None and SourceStatus.from_fields(decoded.source) == status


def test_a_spec_past_its_bound_and_a_long_reference_on_other_kinds_are_refused() -> None:
    too_long = PublishRequest(
        kind="build_source", name="g:a:v", reference="x" * (requests.SPEC_CHARS_MAX + 1)
    )
    with pytest.raises(ProtocolViolation):
        requests.decode(requests.encode(too_long))
    other = PublishRequest(kind="maven", name="x", reference="x" * (requests.FIELD_CHARS_MAX + 1))
    with pytest.raises(ProtocolViolation):
        requests.decode(requests.encode(other))
    not_a_map = codec.encode(
        {"type": "reply", "ok": True, "height": 1, "status": 0, "error": "", "source": 5}
    )
    with pytest.raises(ProtocolViolation):
        requests.decode(not_a_map)


def test_only_authorities_and_listed_peers_may_ask_for_rebuilds() -> None:
    guard = RequestGuard(rate_per_s=0, burst=1, missing_ttl_s=60)
    for kind in ("build_source", "source_rebuild"):
        request = PublishRequest(kind=kind, name="g:a:v", reference="{}")
        refusal = guard.admit("stranger", request, 0.0, may_build=False)
        assert refusal is not None and refusal.reply.status == 403
        assert guard.admit("authority", request, 0.0, may_build=True) is None
    status = PublishRequest(kind="source_status", name=SPEC)
    assert guard.admit("stranger", status, 0.0, may_build=False) is None


# -- each authority's build ---------------------------------------------------------------


def _jar(entries: dict[str, bytes], name: str = "hello-1.0.jar") -> OutputFile:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for entry, data in entries.items():
            archive.writestr(zipfile.ZipInfo(entry, (2024, 1, 1, 0, 0, 0)), data)
    buffer.seek(0)
    return describe_output(name, buffer)


def test_the_phase_is_read_from_the_maven_log() -> None:
    assert phase_of("") == FETCHING_SOURCE
    assert phase_of("[INFO] Scanning for projects...\n") == RESOLVING_DEPENDENCIES
    downloading = (
        "[INFO] Scanning for projects...\nDownloading from node: http://127.0.0.1:8081/maven2/x.pom\n"
    )
    assert phase_of(downloading) == RESOLVING_DEPENDENCIES
    compiling = (
        downloading + "[INFO] --- maven-compiler-plugin:3.10.1:compile (default-compile) @ hello ---\n"
    )
    assert phase_of(compiling) == BUILDING
    assert phase_of(compiling + "Downloaded from node: http://127.0.0.1:8081/maven2/y.jar\n") == (
        RESOLVING_DEPENDENCIES
    )
    finished = (
        compiling + "[INFO] Downloaded from node: http://127.0.0.1:8081/maven2/z.jar\n[INFO] BUILD SUCCESS\n"
    )
    assert phase_of(finished) == BUILDING


def test_a_status_round_trips_and_a_peers_bad_status_is_refused() -> None:
    status = SourceStatus(state=BUILT, commit=COMMIT, builder=BUILDER, outputs=(_jar({"a": b"1"}),))
    assert SourceStatus.from_fields(status.to_fields()) == status
    good = status.to_fields()
    for bad in (
        {**good, "state": "hacked"},
        {**good, "commit": "xyz"},
        {**good, "detail": "x" * 10_000},
        {**good, "outputs": [{"name": "a"}] * 2},
        {**good, "outputs": [good["outputs"][0]] * 100},
        {**good, "builder": {"jdk": "17", "jdkMajor": True, "maven": "3"}},
        {k: v for k, v in good.items() if k != "state"},
        "not a map",
    ):
        with pytest.raises(ProtocolViolation):
            SourceStatus.from_fields(bad)
    with pytest.raises(ValueError):
        SourceStatus(state="nonsense")


def test_another_authoritys_build_matched_differed_failed_or_is_running() -> None:
    ours = SourceStatus(
        state=BUILT, commit=COMMIT, builder=BUILDER, outputs=(_jar({"a": b"1", "t": b"12:00"}),)
    )
    same = dataclasses.replace(ours)
    assert compare_with(ours, same).state == MATCHED
    clock = dataclasses.replace(ours, outputs=(_jar({"a": b"1", "t": b"12:01"}),))
    view = compare_with(ours, clock)
    assert view.state == DIFFERED and "hello-1.0.jar" in view.detail and "t (size 5 vs 5, crc" in view.detail
    moved = dataclasses.replace(ours, commit=OTHER_COMMIT)
    assert compare_with(ours, moved).state == DIFFERED and OTHER_COMMIT in compare_with(ours, moved).detail
    failed = SourceStatus(state=FAILED, detail="spec jdk 25: this node has JDK 17")
    assert compare_with(ours, failed).state == FAILED and "JDK 17" in compare_with(ours, failed).detail
    building = SourceStatus(state=BUILDING, log_tail="[INFO] --- maven-jar-plugin")
    assert (
        compare_with(ours, building).state == BUILDING
        and "maven-jar-plugin" in compare_with(ours, building).detail
    )
    assert compare_with(ours, SourceStatus(state=QUEUED)).state == QUEUED


def test_the_verifier_endorses_only_the_same_commit_and_bytes() -> None:
    jar = _jar({"a": b"1", "t": b"12:00"})
    ours = SourceStatus(state=BUILT, commit=COMMIT, builder=BUILDER, outputs=(jar,))
    digest = f"sha256:{jar.sha256}"
    common = {"filename": jar.name, "size": jar.size}
    assert verdict_on_record(ours=ours, commit=COMMIT, digest=digest, **common) is None  # type: ignore[arg-type]
    other_commit = verdict_on_record(ours=ours, commit=OTHER_COMMIT, digest=digest, **common)  # type: ignore[arg-type]
    assert other_commit is not None and "commit differs" in other_commit
    theirs = _jar({"a": b"1", "t": b"12:01"})
    proposed = SourceStatus(state=BUILT, commit=COMMIT, builder=BUILDER, outputs=(theirs,))
    named = verdict_on_record(
        ours=ours, commit=COMMIT, digest=f"sha256:{theirs.sha256}", filename=jar.name, size=theirs.size,
        proposed=proposed,
    )  # fmt: skip
    assert named is not None and named.startswith("differs: hello-1.0.jar: t (size")
    # The pom beside a differing jar is identical, and refused all the same: all files or none.
    pom = describe_output("hello-1.0.pom", io.BytesIO(b"<project/>"))
    ours_both = dataclasses.replace(ours, outputs=(jar, pom))
    theirs_both = dataclasses.replace(proposed, outputs=(theirs, pom))
    whole = verdict_on_record(
        ours=ours_both, commit=COMMIT, digest=f"sha256:{pom.sha256}", filename=pom.name, size=pom.size,
        proposed=theirs_both,
    )  # fmt: skip
    assert whole is not None and "hello-1.0.jar: t (size" in whole
    assert (
        verdict_on_record(
            ours=ours_both,
            commit=COMMIT,
            digest=f"sha256:{pom.sha256}",
            filename=pom.name,
            size=pom.size,
            proposed=ours_both,
        )
        is None
    )
    bare = verdict_on_record(ours=ours, commit=COMMIT, digest="sha256:" + "0" * 64, **common)  # type: ignore[arg-type]
    assert bare is not None and "ours sha256:" in bare
    missing = verdict_on_record(ours=ours, commit=COMMIT, digest=digest, filename="x.jar", size=1)
    assert missing is not None and "did not produce" in missing
    failed = SourceStatus(state=FAILED, detail="spec jdk 25: this node has JDK 17")
    refused = verdict_on_record(ours=failed, commit=COMMIT, digest=digest, **common)  # type: ignore[arg-type]
    assert refused == "our build failed: spec jdk 25: this node has JDK 17"
    with pytest.raises(ValueError):
        verdict_on_record(ours=SourceStatus(state=BUILDING), commit=COMMIT, digest=digest, **common)  # type: ignore[arg-type]


def test_a_built_file_lives_under_its_own_modules_coordinates() -> None:
    spec = spec_from_flags(
        git=URL, tag="v1.0", gav="org.example:parent:1.0", jdk=17, command="mvn -B package"
    )
    module = ModuleOutputs(
        group_id="org.example.sub", artifact_id="core", version="1.0", packaging="jar", path="core",
        files=("core-1.0.jar", "core-1.0.pom"),
    )  # fmt: skip
    result = SourceBuildResult(
        spec_digest=SPEC, git_repo=URL, commit=COMMIT, source_date_epoch=0, outputs=(), output_dir="",
        builder=BUILDER, log_tail="", log_path="", wall_time_s=0.0, modules=(module,),
    )  # fmt: skip
    assert maven_path(spec, "core-1.0.jar", result) == "org/example/sub/core/1.0/core-1.0.jar"
    assert maven_path(spec, "parent-1.0.pom", result) == "org/example/parent/1.0/parent-1.0.pom"
    assert maven_path(spec, "parent-1.0.pom") == "org/example/parent/1.0/parent-1.0.pom"
