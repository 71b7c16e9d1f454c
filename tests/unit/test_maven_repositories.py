"""Several Maven repositories, tried in order per file, each with its own credentials."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import httpx
import pytest

from pyrsia import config
from pyrsia.artifacts.blobstore import BlobStore
from pyrsia.artifacts.maven import MavenArtifacts
from pyrsia.artifacts.records import RecordStore
from pyrsia.artifacts.vouch import MemoryArtifactLog, NewArtifact
from pyrsia.errors import ConfigError, MavenFileUnknown, UpstreamError, UpstreamUnavailable
from pyrsia.formats.maven_layout import CHECKSUMS, parse_path
from pyrsia.formats.maven_settings import Credentials, credentials_file, servers
from pyrsia.translog.chunks import CHUNK_BYTES
from pyrsia.translog.tx import AddArtifact
from pyrsia.upstream.maven import MavenClient, MavenRepositories, repositories

JAR = b"PK\x03\x04 a jar" * 50
PATH = "com/example/only/1.0/only-1.0.jar"
SECRET = "s3cret-Pa55"


class Repo:
    """One repository on an httpx mock: its files, a login it may demand, what it was asked."""

    def __init__(
        self, name: str, files: dict[str, bytes], *, login: str | None = None, status: int | None = None
    ) -> None:
        self.name = name
        self.files = files
        self.login = login
        self.status = status
        self.seen: list[tuple[str, str | None]] = []

    def client(self, credentials: Credentials | None = None) -> MavenClient:
        def handler(request: httpx.Request) -> httpx.Response:
            path = request.url.path.removeprefix(f"/{self.name}/")
            self.seen.append((path, request.headers.get("Authorization")))
            if self.status is not None:
                return httpx.Response(self.status)
            if self.login is not None and request.headers.get("Authorization") != self.login:
                return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="repo"'})
            return (
                httpx.Response(200, content=self.files[path]) if path in self.files else httpx.Response(404)
            )

        return MavenClient(
            f"https://{self.name}.test/{self.name}",
            repository_id=self.name,
            credentials=credentials,
            transport=httpx.MockTransport(handler),
            sleep=lambda _s: None,
            retries_max=1,
        )


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def fetch(repos: MavenRepositories, tmp_path: Path, path: str = PATH) -> object:
    return repos.fetch(path, BlobStore(tmp_path).opener(None, "test", CHECKSUMS))


def test_a_file_only_in_the_second_comes_from_the_second(tmp_path: Path) -> None:
    first, second = Repo("central", {}), Repo("google", {PATH: JAR})
    fetched = MavenRepositories([first.client(), second.client()]).fetch(
        PATH, BlobStore(tmp_path).opener(None, "test", CHECKSUMS)
    )
    assert fetched.repository == "google" and fetched.base_url == "https://google.test/google"
    assert str(fetched.digest) == "sha256:" + hashlib.sha256(JAR).hexdigest()
    assert (PATH, None) in first.seen  # the first was asked, and said 404


def test_the_first_that_has_it_wins_and_later_ones_are_not_asked(tmp_path: Path) -> None:
    first, second = Repo("central", {PATH: JAR}), Repo("google", {PATH: b"other bytes"})
    fetched = MavenRepositories([first.client(), second.client()]).fetch(
        PATH, BlobStore(tmp_path).opener(None, "test", CHECKSUMS)
    )
    assert fetched.repository == "central" and second.seen == []


@pytest.mark.parametrize("status", [500, 503])
def test_an_outage_of_the_first_does_not_let_the_second_answer(tmp_path: Path, status: int) -> None:
    first, second = Repo("central", {}, status=status), Repo("google", {PATH: JAR})
    with pytest.raises(UpstreamUnavailable, match="central"):
        fetch(MavenRepositories([first.client(), second.client()]), tmp_path)
    assert second.seen == []


def test_a_file_in_none_is_a_404_naming_every_repository(tmp_path: Path) -> None:
    with pytest.raises(MavenFileUnknown, match="central, google"):
        fetch(MavenRepositories([Repo("central", {}).client(), Repo("google", {}).client()]), tmp_path)


def test_credentials_go_only_to_their_repository(tmp_path: Path) -> None:
    login = basic("builder", SECRET)
    first, second = Repo("central", {}), Repo("company", {PATH: JAR}, login=login)
    creds = Credentials(username="builder", secret=SECRET, source="settings.xml <server> company")
    fetched = MavenRepositories([first.client(), second.client(creds)]).fetch(
        PATH, BlobStore(tmp_path).opener(None, "test", CHECKSUMS)
    )
    assert fetched.repository == "company"
    assert all(auth is None for _path, auth in first.seen)
    assert second.seen and all(auth == login for _path, auth in second.seen)


def test_a_wrong_password_is_one_line_without_the_password(tmp_path: Path) -> None:
    repo = Repo("company", {PATH: JAR}, login=basic("builder", SECRET))
    creds = Credentials(username="builder", secret="wrong-" + SECRET, source="/home/b/.m2/settings.xml")
    with pytest.raises(UpstreamError) as caught:
        fetch(MavenRepositories([repo.client(creds)]), tmp_path)
    message = caught.value.message
    assert "'company'" in message and "'builder'" in message and "HTTP 401" in message
    assert SECRET not in message and "\n" not in message and SECRET not in repr(creds)


def test_no_credentials_for_a_repository_that_wants_them_says_how_to_give_them(tmp_path: Path) -> None:
    repo = Repo("company", {PATH: JAR}, login=basic("builder", SECRET))
    with pytest.raises(UpstreamError, match=r"refused anonymous access.*<server> with id 'company'"):
        fetch(MavenRepositories([repo.client()]), tmp_path)


def test_verification_goes_to_the_repository_the_record_names(tmp_path: Path) -> None:
    first, second = Repo("central", {PATH: b"central's bytes"}), Repo("google", {PATH: JAR})
    repos = MavenRepositories([first.client(), second.client()])
    opener = BlobStore(tmp_path).opener(None, "test", CHECKSUMS)
    fetched = repos.fetch_from(f"https://google.test/google/{PATH}", PATH, opener)
    assert fetched.repository == "google" and first.seen == []
    # A source this node does not know (another node's URL for the repository): in order.
    fetched = repos.fetch_from(f"https://mirror.elsewhere/maven2/{PATH}", PATH, opener)
    assert fetched.repository == "central"


SETTINGS_XML = """<?xml version="1.0"?>
<settings xmlns="http://maven.apache.org/SETTINGS/1.0.0">
  <!-- <servers><server><id>commented</id><password>x</password></server></servers> -->
  <servers>
    <server><id>company</id><username>builder</username><password>${env.COMPANY_PASSWORD}</password></server>
    <server><id>tokens</id><password>tok-123</password></server>
    <server><id>sealed</id><username>u</username><password>{COQLCE6DU6GtcS5P=}</password></server>
    <server><id>nopassword</id><username>u</username></server>
  </servers>
</settings>
"""


def test_settings_xml_servers_by_id_with_env_interpolation() -> None:
    found = servers(SETTINGS_XML, "settings.xml", {"COMPANY_PASSWORD": SECRET})
    assert set(found) == {"company", "tokens", "sealed"}
    assert found["company"].authorization() == basic("builder", SECRET)
    assert found["tokens"].authorization() == "Bearer tok-123"
    assert found["sealed"].encrypted and not found["company"].encrypted


def test_bad_settings_xml_and_credentials_files_are_refused_in_one_line() -> None:
    with pytest.raises(ConfigError, match=r"settings\.xml is not well-formed XML"):
        servers("<settings><servers>", "settings.xml", {})
    assert credentials_file("u:p\n", "f").authorization() == basic("u", "p")
    assert credentials_file("token\n", "f").authorization() == "Bearer token"
    for bad in ("", "a\nb\n", ":p", "u:"):
        with pytest.raises(ConfigError, match=r"one line|user:password"):
            credentials_file(bad, "f")


def test_repositories_from_config_in_order_with_credentials(tmp_path: Path) -> None:
    settings = tmp_path / "settings.xml"
    settings.write_text(SETTINGS_XML)
    cred = tmp_path / "google.cred"
    cred.write_text("g-user:g-pass\n")
    cfg = config.Config(
        home=tmp_path,
        maven_upstream="http://127.0.0.1:9/central",
        maven_repositories=("google=http://127.0.0.1:9/google", "company=http://127.0.0.1:9/company"),
        maven_settings=str(settings),
        maven_credentials=(f"google={cred}",),
    )
    repos = repositories(cfg, {"COMPANY_PASSWORD": SECRET})
    try:
        assert repos.ids == ("central", "google", "company")
        headers = [c._http.client.headers.get("Authorization") for c in repos.clients]
        assert headers == [None, basic("g-user", "g-pass"), basic("builder", SECRET)]
    finally:
        repos.close()


def test_credentials_for_a_repository_the_node_lacks_are_refused(tmp_path: Path) -> None:
    cfg = config.Config(home=tmp_path, maven_settings="", maven_credentials=("compnay=/f",))
    with pytest.raises(
        ConfigError, match=r"'compnay' is not one of this node's Maven repositories \(central\)"
    ):
        repositories(cfg, {})


def test_an_encrypted_password_for_a_configured_repository_is_refused(tmp_path: Path) -> None:
    settings = tmp_path / "settings.xml"
    settings.write_text(SETTINGS_XML)
    cfg = config.Config(
        home=tmp_path, maven_repositories=("sealed=http://127.0.0.1:9/s",), maven_settings=str(settings)
    )
    with pytest.raises(ConfigError, match="sealed: the password is encrypted"):
        repositories(cfg, {})


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"maven_repositories": ("no-equals",)}, "is not ID=URL"),
        ({"maven_repositories": ("x=ftp://a",)}, "http:// or https://"),
        ({"maven_repositories": ("central=http://a",)}, "given twice"),
        ({"maven_repositories": ("bad id=http://a",)}, "letters, digits"),
        ({"maven_credentials": ("nobody",)}, "is not ID=FILE"),
        ({"maven_credentials": ("=/f",)}, "is not ID=FILE"),
    ],
)
def test_bad_repository_settings_are_refused(tmp_path: Path, values: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config.Config(home=tmp_path, **values)  # type: ignore[arg-type]


# ---- the artifacts service: records name the repository, authorities verify against it ----------


def _service(tmp_path: Path, repos: list[Repo], published: list[NewArtifact]) -> MavenArtifacts:
    class Capturing(MemoryArtifactLog):
        def publish(self, artifacts: list[NewArtifact]) -> None:
            published.extend(artifacts)
            super().publish(artifacts)

    return MavenArtifacts(
        BlobStore(tmp_path / "blobs"),
        RecordStore(tmp_path / "refs"),
        Capturing(),
        MavenRepositories([repo.client() for repo in repos]),
        metadata_ttl_s=60,
    )


def _record(new: NewArtifact) -> AddArtifact:
    return AddArtifact(
        package_type=new.package_type,
        package_id=new.package_id,
        path=new.path,
        digest=new.digest,
        size=new.size,
        chunk_size=CHUNK_BYTES,
        chunk_root=new.chunk_root,
        media_type=new.media_type,
        source=new.source,
        registry=new.registry,
        author=new.author,
        dependencies=new.dependencies,
    )


def test_the_record_names_the_repository_and_other_authorities_verify_against_it(tmp_path: Path) -> None:
    published: list[NewArtifact] = []
    first = _service(tmp_path / "a", [Repo("central", {}), Repo("google", {PATH: JAR})], published)
    served = first.file(parse_path(PATH))
    assert served.blob.read_bytes() == JAR
    (new,) = published
    assert new.source == f"https://google.test/google/{PATH}"
    assert new.registry == "google"
    record = _record(new)
    assert record.registry == "google"

    # Another authority whose central has other bytes at that path: it checks google, and agrees.
    central = Repo("central", {PATH: b"a different artifact, same coordinates"})
    google = Repo("google", {PATH: JAR})
    assert _service(tmp_path / "b", [central, google], []).verify_record(record) is None
    assert central.seen == [] and google.seen

    # One whose google serves other bytes refuses, naming the repository.
    liar = _service(tmp_path / "c", [Repo("central", {}), Repo("google", {PATH: b"tampered"})], [])
    problem = liar.verify_record(record)
    assert problem is not None and "google (https://google.test/google)" in problem
