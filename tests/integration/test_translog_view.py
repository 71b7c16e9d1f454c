"""The ledger's lookup view on real files: a lookup right after a commit sees it, even
when the view held "none" for that key, while readers on other threads keep filling
it; its records are exactly the index's; a node's GET after a commit sees it too."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
from nacl.signing import SigningKey

from pyrsia.node.network import LedgerChain
from pyrsia.p2p.behaviours.sync.service import SyncService
from pyrsia.p2p.identity import Identity
from pyrsia.p2p.swarm.host import Host, HostConfig
from pyrsia.translog.chain import Chain
from pyrsia.translog.index import IndexReader
from pyrsia.translog.ledger import INDEX_FILE, Ledger
from pyrsia.translog.tx import ADD_ARTIFACT, AddArtifact, sign
from pyrsia.translog.view import records_of
from tests.support import images
from tests.support.node import NodeProcess
from tests.support.registry import RegistryProcess

KEY = SigningKey(bytes(range(32)))
OTHER = SigningKey(bytes([7]) * 32)
T0 = 1_700_000_000
WAIT_S = 60.0  # a bound on waiting for another thread, never a measure of speed


def artifact(n: int, package_type: str = "docker") -> AddArtifact:
    return AddArtifact(
        package_type=package_type,
        package_id=f"library/app:{n}",
        path=f"/v2/library/app/manifests/{n}",
        digest=f"sha256:{n:064x}",
        size=n,
        chunk_size=1 << 20,
        chunk_root=n.to_bytes(32, "big"),
        media_type="application/vnd.oci.image.manifest.v1+json",
        source="https://registry-1.docker.io",
        author="Ada",
        dependencies=(f"library/base:{n}", "library/other"),
    )


def opened(root: Path, **kwargs: object) -> Ledger:
    clock = iter(range(T0, T0 + 1_000_000))
    return Ledger.open(root, KEY, clock=lambda: next(clock), **kwargs)  # type: ignore[arg-type]


def test_a_lookup_right_after_a_commit_sees_it_though_none_was_held(tmp_path: Path) -> None:
    ledger = opened(tmp_path)
    try:
        for n in range(1, 4):
            a = artifact(n)
            assert ledger.latest("docker", a.path) is None  # "none", now held in the view
            assert not ledger.has_digest("docker", a.digest)
            assert ledger.latest("docker", a.path) is None
            ledger.publish([a])
            found = ledger.latest("docker", a.path)
            assert found is not None and found.digest == a.digest
            assert ledger.has_digest("docker", a.digest)
            assert ledger.newest_by_digest("docker", a.digest) == found
            assert not ledger.has_digest("maven", a.digest)
        # A tag moved by a later block: the newest record answers.
        moved = AddArtifact(**{**_fields(artifact(1)), "digest": f"sha256:{99:064x}"})
        ledger.publish([moved])
        latest = ledger.latest("docker", moved.path)
        assert latest is not None and latest.digest == moved.digest
    finally:
        ledger.close()


def test_a_block_appended_from_elsewhere_updates_the_view(tmp_path: Path) -> None:
    ledger = opened(tmp_path)
    try:
        ledger.publish([artifact(1)])
        a = artifact(2)
        assert ledger.latest("docker", a.path) is None
        chain = Chain()
        for height in range(ledger.height + 1):
            chain.apply(ledger.block(height))
        tx = sign(OTHER, type=ADD_ARTIFACT, payload=a, time=T0, nonce=chain.size)
        ledger.append(chain.propose_certified([tx], T0 + 10, KEY))
        found, mine = ledger.latest("docker", a.path), ledger.latest("docker", artifact(1).path)
        assert found is not None and mine is not None and found.submitter != mine.submitter
        assert ledger.newest_by_digest("docker", a.digest) == found
    finally:
        ledger.close()


def test_who_waits_for_a_synced_block_can_look_it_up_once_the_wait_ends(tmp_path: Path) -> None:
    """The head shows a synced block before the index and the view learn it: a publish
    request that waited for the height and then looked up a cached "none" was refused."""
    ledger = opened(tmp_path)
    host = Host(Identity.from_seed(bytes(32)), HostConfig())  # never started: sync only waits here
    held, release = threading.Event(), threading.Event()
    index_apply = ledger._index.apply

    def slow_apply(*args: object, **kwargs: object) -> object:
        held.set()
        release.wait(WAIT_S)
        return index_apply(*args, **kwargs)  # type: ignore[arg-type]

    try:
        a = artifact(1)
        assert ledger.latest("docker", a.path) is None  # "none", held in the view
        chain = Chain()
        chain.apply(ledger.block(0))
        tx = sign(OTHER, type=ADD_ARTIFACT, payload=a, time=T0, nonce=chain.size)
        block = chain.propose_certified([tx], T0 + 10, KEY)
        sync = SyncService(host, LedgerChain(ledger))
        ledger._index.apply = slow_apply  # type: ignore[method-assign]
        stored = ledger.submit_blocks([block])
        assert held.wait(WAIT_S), "the batch never reached the index"
        assert ledger.height == 1 and ledger.lookup_height == 0
        assert not sync.wait_for_height(1, 0.3)
        assert ledger.latest("docker", a.path) is None
        release.set()
        assert sync.wait_for_height(1, WAIT_S)
        found = ledger.latest("docker", a.path)
        assert found is not None and found.digest == a.digest
        assert stored.result(WAIT_S) == 1
    finally:
        release.set()
        host.stop()
        ledger.close()


def test_readers_racing_commits_never_keep_a_stale_answer(tmp_path: Path) -> None:
    """Reader threads keep asking for the paths about to be committed (so their "none"
    fills race each block); once `publish` returns, every lookup must see the block."""
    ledger = opened(tmp_path, view_entries_max=64)
    count = 150
    stop = threading.Event()
    committed = [0]
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            while not stop.is_set():
                n = committed[0]
                for k in range(n + 1, n + 4):
                    ledger.latest("docker", artifact(k).path)
                    ledger.has_digest("docker", artifact(k).digest)
                for k in range(max(1, n - 2), n + 1):
                    found = ledger.latest("docker", artifact(k).path)
                    if found is None or found.digest != artifact(k).digest:
                        raise AssertionError(f"committed {k} but a lookup said {found}")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        for n in range(1, count + 1):
            ledger.publish([artifact(n)])
            committed[0] = n
            found = ledger.latest("docker", artifact(n).path)
            assert found is not None and found.digest == artifact(n).digest, n
            assert ledger.has_digest("docker", artifact(n).digest), n
    finally:
        stop.set()
        for t in threads:
            t.join(WAIT_S)
        ledger.close()
    assert errors == []


def test_the_views_records_are_the_indexs(tmp_path: Path) -> None:
    ledger = opened(tmp_path, view_entries_max=0)  # every lookup from the index
    try:
        block = ledger.publish([artifact(1), artifact(2, "maven"), artifact(3)])
        first_leaf = block.header.log_size - len(block.transactions)
        reader = IndexReader(tmp_path / INDEX_FILE)
        try:
            from_index = [reader.latest(a.package_type, a.path) for a in (artifact(1), artifact(2, "maven"))]
            from_index.append(reader.latest("docker", artifact(3).path))
        finally:
            reader.close()
        assert records_of(block, first_leaf) == from_index
        assert [ledger.latest(r.package_type, r.path) for r in from_index] == from_index
    finally:
        ledger.close()


def test_a_node_serves_a_blob_right_after_the_commit_that_vouches_for_it(tmp_path: Path) -> None:
    """The config blob is asked for before its image is pulled (404: the log does not
    vouch for it, and the view now holds that), then the image is pulled (committing the
    config's record) and the same GET is served at once."""
    image = images.three_layer()
    with (
        RegistryProcess(tmp_path / "upstream") as registry,
        NodeProcess(tmp_path / "node", "--docker-upstream", registry.url) as node,
        httpx.Client(base_url=node.url, timeout=60) as client,
    ):
        images.push(registry.url, image)
        media_type, top = image.manifests[image.top]
        config = image.config_of(image.top)
        blob = f"/v2/{image.name}/blobs/{config}"
        assert client.get(blob).status_code == 404
        pulled = client.get(f"/v2/{image.name}/manifests/{image.tag}", headers={"Accept": media_type})
        assert pulled.status_code == 200 and pulled.content == top
        served = client.get(blob)
        assert served.status_code == 200 and images.sha256(served.content) == config
        again = client.get(f"/v2/{image.name}/manifests/{image.top}", headers={"Accept": media_type})
        assert again.status_code == 200 and again.content == top


def _fields(a: AddArtifact) -> dict[str, object]:
    return {
        f: getattr(a, f)
        for f in (
            "package_type", "package_id", "path", "digest", "size", "chunk_size", "chunk_root",
            "media_type", "source", "author", "dependencies",
        )
    }  # fmt: skip
