"""`maven-metadata.xml` merged across repositories: versions, latest/release, lastUpdated, bad input."""

from __future__ import annotations

import random
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from pyrsia.artifacts.blobstore import BlobStore
from pyrsia.errors import MavenFileUnknown, UpstreamMetadataInvalid, UpstreamUnavailable
from pyrsia.formats.maven_layout import CHECKSUMS
from pyrsia.formats.maven_metadata import ArtifactMetadata, merge, parse, render, version_key
from pyrsia.upstream.maven import MavenRepositories
from tests.unit.test_maven_repositories import Repo


def metadata(
    versions: list[str],
    *,
    latest: str = "",
    release: str = "",
    updated: str = "",
    ga: str = "com.example:app",
) -> bytes:
    group, artifact = ga.split(":")
    parts = [f"<version>{v}</version>" for v in versions]
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<metadata><groupId>{group}</groupId>'
        f"<artifactId>{artifact}</artifactId><versioning>"
        + (f"<latest>{latest}</latest>" if latest else "")
        + (f"<release>{release}</release>" if release else "")
        + f"<versions>{''.join(parts)}</versions>"
        + (f"<lastUpdated>{updated}</lastUpdated>" if updated else "")
        + "</versioning></metadata>"
    ).encode()


def parsed(body: bytes) -> ArtifactMetadata:
    found = parse(body, "test")
    assert found is not None
    return found


# Maven's own order (maven-artifact ComparableVersion's documented examples).
MAVEN_ORDER = [
    "1.0-alpha-1",
    "1.0-alpha-2",
    "1.0-beta-1",
    "1.0-rc1",
    "1.0-SNAPSHOT",
    "1.0",
    "1.0-sp",
    "1.0-whatever",
    "1.0.1",
    "1.1",
    "1.2",
    "1.10",
    "2.0-M1",
    "2.0",
]


def test_maven_version_order() -> None:
    for seed in range(20):
        shuffled = MAVEN_ORDER[:]
        random.Random(seed).shuffle(shuffled)
        assert sorted(shuffled, key=version_key) == MAVEN_ORDER, f"seed={seed}"


@pytest.mark.parametrize(
    ("a", "b"), [("1", "1.0.0"), ("1.0", "1-ga"), ("1.0-final", "1.0"), ("1.0-cr1", "1.0-rc1")]
)
def test_equal_versions(a: str, b: str) -> None:
    assert version_key(a) == version_key(b)


def test_versions_are_the_union_in_maven_order() -> None:
    central = parsed(
        metadata(["1.0", "1.2", "1.10"], latest="1.10", release="1.10", updated="20240101000000")
    )
    company = parsed(
        metadata(
            ["1.2", "1.11-SNAPSHOT", "1.9"], latest="1.11-SNAPSHOT", release="1.9", updated="20250301120000"
        )
    )
    merged = merge([central, company])
    assert merged.versions == ("1.0", "1.2", "1.9", "1.10", "1.11-SNAPSHOT")
    assert merged.latest == "1.11-SNAPSHOT"
    assert merged.release == "1.10"  # by version order, not by which file is newer
    assert merged.last_updated == "20250301120000"
    assert (merged.group_id, merged.artifact_id) == ("com.example", "app")


def test_latest_and_release_from_versions_when_a_repository_declares_none() -> None:
    merged = merge([parsed(metadata(["1.0"])), parsed(metadata(["2.0-SNAPSHOT", "1.5"]))])
    assert merged.latest == "2.0-SNAPSHOT" and merged.release == "1.5"
    assert merged.last_updated == ""


def test_the_merge_does_not_depend_on_repository_order() -> None:
    docs = [
        parsed(metadata(["1.0", "1.1"], latest="1.1", release="1.1", updated="20240101000000")),
        parsed(metadata(["2.0"], latest="2.0", release="2.0", updated="20230101000000")),
        parsed(metadata(["1.5", "3.0-rc1"], latest="3.0-rc1", release="1.5", updated="20240601000000")),
    ]
    first = render(merge(docs))
    for seed in range(10):
        shuffled = docs[:]
        random.Random(seed).shuffle(shuffled)
        assert render(merge(shuffled)) == first, f"seed={seed}"


def test_render_round_trips_and_is_maven_metadata() -> None:
    merged = merge([parsed(metadata(["1.0", "2.0"], latest="2.0", release="2.0", updated="20240101000000"))])
    body = render(merged)
    assert parsed(body) == merged
    root = ET.fromstring(body)
    assert root.tag == "metadata" and root.findtext("versioning/lastUpdated") == "20240101000000"
    assert [v.text for v in root.findall("versioning/versions/version")] == ["1.0", "2.0"]


def test_metadata_of_another_shape_is_not_merged() -> None:
    snapshot = (
        b"<metadata><groupId>g</groupId><artifactId>a</artifactId><version>1.0-SNAPSHOT</version>"
        b"<versioning><snapshot><timestamp>20240101.000000</timestamp></snapshot></versioning></metadata>"
    )
    assert parse(snapshot, "test") is None
    plugins = b"<metadata><plugins><plugin><prefix>x</prefix></plugin></plugins></metadata>"
    assert parse(plugins, "test") is None


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"<metadata><versioning><versions>", "not XML"),
        (b"not xml at all", "not XML"),
        (b"<html><body>Not found</body></html>", "no <metadata> root"),
        (b'<!DOCTYPE m [<!ENTITY x "y">]><metadata/>', "DOCTYPE"),
        (metadata(["1.0"], updated="yesterday"), "lastUpdated"),
        (metadata(["1.0", ""]), "bad <version>"),
        (b" " * (4 * 1024 * 1024 + 1), "larger than"),
    ],
)
def test_bad_metadata_is_refused_with_a_typed_error(body: bytes, says: str) -> None:
    with pytest.raises(UpstreamMetadataInvalid) as caught:
        parse(body, "company (https://repo.example)")
    assert says in caught.value.message and "company" in caught.value.message


def test_metadata_of_another_artifact_is_refused() -> None:
    with pytest.raises(UpstreamMetadataInvalid):
        merge([parsed(metadata(["1.0"])), parsed(metadata(["1.0"], ga="com.example:other"))])


# ---- through the node's repositories (httpx mock upstreams) ---------------------------------

META = "com/example/app/maven-metadata.xml"


def fetch_metadata(tmp_path: Path, *repos: Repo, path: str = META) -> tuple[MavenRepositories, bytes]:
    repositories = MavenRepositories([repo.client() for repo in repos])
    store = BlobStore(tmp_path)
    fetched = repositories.fetch(path, store.opener(None, "test", CHECKSUMS))
    return repositories, store.path(fetched.digest).read_bytes()


def test_every_repository_is_asked_and_the_versions_merged(tmp_path: Path) -> None:
    central = Repo(
        "central", {META: metadata(["1.0"], latest="1.0", release="1.0", updated="20240101000000")}
    )
    google = Repo("google", {})
    company = Repo(
        "company", {META: metadata(["2.0"], latest="2.0", release="2.0", updated="20250101000000")}
    )
    repositories, body = fetch_metadata(tmp_path, central, google, company)
    merged = parsed(body)
    assert merged.versions == ("1.0", "2.0") and merged.release == "2.0"
    assert merged.last_updated == "20250101000000"
    assert [path for path, _auth in google.seen if path == META] == [META]
    assert repositories.metadata_skipped == {}


def test_bad_xml_from_one_repository_is_skipped_and_counted(tmp_path: Path) -> None:
    good = metadata(["1.0"], latest="1.0", release="1.0")
    central = Repo("central", {META: good})
    broken = Repo("broken", {META: b"<html>proxy error page"})
    repositories, body = fetch_metadata(tmp_path, central, broken)
    assert body == good  # nothing to merge: the one good file, byte for byte
    assert repositories.metadata_skipped == {"invalid:broken": 1}


def test_an_outage_of_one_repository_skips_it_for_metadata(tmp_path: Path) -> None:
    down = Repo("down", {}, status=503)
    company = Repo("company", {META: metadata(["2.0"])})
    repositories, body = fetch_metadata(tmp_path, down, company)
    assert parsed(body).versions == ("2.0",)
    assert repositories.metadata_skipped == {"failed:down": 1}


def test_metadata_nobody_can_give_is_an_upstream_error_not_a_500(tmp_path: Path) -> None:
    with pytest.raises(UpstreamMetadataInvalid) as caught:
        fetch_metadata(tmp_path, Repo("a", {META: b"garbage"}), Repo("b", {META: b"<metadata"}))
    assert caught.value.http_status == 502
    with pytest.raises(MavenFileUnknown):
        fetch_metadata(tmp_path, Repo("a", {}), Repo("b", {}))
    with pytest.raises(UpstreamUnavailable):
        fetch_metadata(tmp_path, Repo("a", {}, status=503), Repo("b", {}))


def test_release_files_still_come_from_the_first_repository_only(tmp_path: Path) -> None:
    jar = "com/example/app/1.0/app-1.0.jar"
    first = Repo("first", {jar: b"first"})
    second = Repo("second", {jar: b"second"})
    _repositories, body = fetch_metadata(tmp_path, first, second, path=jar)
    assert body == b"first" and second.seen == []


def test_verification_of_a_metadata_record_merges_again(tmp_path: Path) -> None:
    central = Repo("central", {META: metadata(["1.0"])})
    company = Repo("company", {META: metadata(["2.0"])})
    repositories = MavenRepositories([central.client(), company.client()])
    store = BlobStore(tmp_path)
    fetched = repositories.fetch_from(
        f"{central.client().base_url}/{META}", META, store.opener(None, "t", CHECKSUMS)
    )
    assert parsed(store.path(fetched.digest).read_bytes()).versions == ("1.0", "2.0")
    assert fetched.repository == "central"
