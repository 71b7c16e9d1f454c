"""Authorities verify on their own and agree: real `pyrsia daemon` processes on loopback.

Four authorities (and regular nodes) start from one genesis file. A build on one
authority is verified by every live authority against its own upstream (a CNCF
docker-registry), ordered by consensus, and committed on every node, with one
authority killed. An authority whose upstream serves other bytes for the tag refuses,
and says why in `build status`; with two of four refusing nothing commits. A fifth
node becomes an authority once three admins approved it, and then signs commits.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from tests.support import images
from tests.support.bft import Member, eventually, join, start_network
from tests.support.registry import RegistryProcess

ACCEPT = {"Accept": ", ".join([images.OCI_MANIFEST, images.DOCKER_MANIFEST, images.OCI_INDEX])}


def honest() -> list[images.Image]:
    return [images.three_layer(), images.nested(), images.three_layer(tag="2.0")]


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    with RegistryProcess(tmp_path_factory.mktemp("upstream")) as registry:
        for image in honest():
            images.push(registry.url, image)
        yield registry


def pull(member: Member, image: images.Image) -> None:
    response = httpx.get(f"{member.url}/v2/{image.name}/manifests/{image.tag}", headers=ACCEPT, timeout=120)
    assert response.status_code == 200, response.text
    assert response.headers["Docker-Content-Digest"] == image.top
    for digest, data in image.blobs.items():
        blob = httpx.get(f"{member.url}/v2/{image.name}/blobs/{digest}", timeout=120)
        assert blob.status_code == 200 and blob.content == data, digest


def committed_digests(member: Member, image: images.Image) -> set[str]:
    found = member.get("/api/v1/log/search", package=image.name)["results"]
    assert isinstance(found, list)
    return {r["digest"] for r in found}


def test_a_build_commits_on_every_live_node_with_one_authority_down(
    upstream: RegistryProcess, tmp_path: Path
) -> None:
    image = images.three_layer()
    with ExitStack() as stack:
        authorities, regular, _ = start_network(
            stack,
            tmp_path,
            authorities=4,
            regular=2,
            flags=lambda role, i: ("--docker-upstream", upstream.url),
        )
        down = authorities[3]
        down.node.kill()
        live = authorities[:3] + regular

        build = authorities[1].build("docker", image.reference)
        done = authorities[1].finished_build(build)
        assert done["state"] == "committed", done
        assert {t["state"] for t in done["transactions"]} == {"committed"}  # type: ignore[union-attr]
        # manifest, config and each layer: every file of the image
        assert {t["digest"] for t in done["transactions"]} == {image.top, *image.blobs}  # type: ignore[union-attr]
        verdicts = {v["authority"]: v["verdict"] for v in done["verdicts"]}  # type: ignore[union-attr]
        assert [verdicts.get(a.peer_id) for a in authorities[:3]] == ["endorsed"] * 3
        height = int(done["height"])  # type: ignore[arg-type]
        eventually(lambda: all(m.height() >= height for m in live), f"every live node at height {height}")

        # Each record carries endorsements of a quorum, and each block a certificate of one,
        # from the three authorities alive: the dead one signed nothing.
        alive = {a.peer_id for a in authorities[:3]}
        for h in range(1, height + 1):
            block = regular[0].block(h)
            assert set(block["certificate"]) == alive  # type: ignore[arg-type]
            for tx in block["transactions"]:  # type: ignore[union-attr]
                assert set(tx["endorsements"]) <= alive and len(tx["endorsements"]) >= 3

        # A regular node serves the image: it asks no one, its log vouches for every file.
        assert committed_digests(regular[1], image) == {image.top, *image.blobs}
        pull(regular[1], image)

        # The dead authority comes back and catches up by sync.
        down.node.start()
        eventually(lambda: down.height() >= height, "the restarted authority caught up")


def test_a_lying_upstream_is_refused_and_two_liars_stop_a_commit(
    upstream: RegistryProcess, tmp_path: Path
) -> None:
    truth, other = images.three_layer(), images.nested()
    # Two other registries: one lies about both images' tags, one only about `other`.
    with ExitStack() as stack:
        liar_both = stack.enter_context(RegistryProcess(tmp_path / "liar-both"))
        liar_one = stack.enter_context(RegistryProcess(tmp_path / "liar-one"))
        images.push(liar_both.url, images.nested(name=truth.name, tag=truth.tag))
        images.push(liar_both.url, images.three_layer(name=other.name, tag=other.tag))
        images.push(liar_one.url, truth)
        images.push(liar_one.url, images.three_layer(name=other.name, tag=other.tag))
        upstreams = [upstream.url, upstream.url, liar_one.url, liar_both.url]
        authorities, _, _ = start_network(
            stack, tmp_path, authorities=4, flags=lambda role, i: ("--docker-upstream", upstreams[i])
        )
        first = authorities[0]

        done = first.finished_build(first.build("docker", truth.reference))
        assert done["state"] == "committed", done
        verdicts = {v["authority"]: (v["verdict"], v["reason"]) for v in done["verdicts"]}  # type: ignore[union-attr]
        assert verdicts[authorities[3].peer_id][0] == "refused"
        assert liar_both.url in verdicts[authorities[3].peer_id][1]  # names the upstream that disagreed
        assert all(verdicts[a.peer_id][0] == "endorsed" for a in authorities[:3])
        height = first.height()

        refused = first.finished_build(first.build("docker", other.reference))
        assert refused["state"] == "refused", refused
        said = {v["authority"]: v["verdict"] for v in refused["verdicts"]}  # type: ignore[union-attr]
        assert said[authorities[2].peer_id] == said[authorities[3].peer_id] == "refused"
        assert "refused" in str(refused["error"])
        # Nothing of it reached any log, and the network is where it was.
        for member in authorities:
            assert committed_digests(member, other) == set()
            assert member.height() == height
        response = httpx.get(
            f"{first.url}/v2/{other.name}/manifests/{other.tag}", headers=ACCEPT, timeout=120
        )
        assert response.status_code >= 400


def test_a_fifth_authority_joins_after_three_admins_approve_and_then_signs(
    upstream: RegistryProcess, tmp_path: Path
) -> None:
    with ExitStack() as stack:
        authorities, _, genesis = start_network(
            stack, tmp_path, authorities=4, flags=lambda role, i: ("--docker-upstream", upstream.url)
        )
        fifth = join(stack, tmp_path / "fifth", genesis, authorities[0], "--docker-upstream", upstream.url)
        candidate = fifth.peer_id

        for admin in authorities[:2]:
            response = admin.post("/api/v1/authorities", {"peer_id": candidate, "action": "add"})
            assert response.status_code == 200, response.text
            assert response.json()["state"] == "pending"
        pending = authorities[0].get("/api/v1/authorities")["pending"]
        assert [p["peer_id"] for p in pending] == [candidate]  # type: ignore[union-attr]
        assert candidate not in authorities[0].authorities()  # two approvals are not a quorum

        authorities[2].post("/api/v1/authorities", {"peer_id": candidate, "action": "add"})
        eventually(
            lambda: all(candidate in m.authorities() for m in [*authorities, fifth]), "five authorities"
        )
        assert fifth.get("/api/v1/status")["p2p"]["authority"] is True  # type: ignore[index]
        added_at = fifth.height()
        change = next(
            tx
            for tx in authorities[0].block(added_at)["transactions"]
            if tx["type"] == "AddAuthorizedNode"  # type: ignore[union-attr]
        )
        assert set(change["endorsements"]) == {a.peer_id for a in authorities[:3]}  # the three admins

        # With one of the first four down, a quorum of five (four) needs the new one's signature.
        authorities[3].node.kill()
        done = authorities[0].finished_build(authorities[0].build("docker", images.nested().reference))
        assert done["state"] == "committed", done
        later = int(done["height"])  # type: ignore[arg-type]
        assert later > added_at
        assert candidate in authorities[0].block(later)["certificate"]  # type: ignore[operator]


def test_admin_calls_need_the_token_and_refuse_bad_input(upstream: RegistryProcess, tmp_path: Path) -> None:
    with ExitStack() as stack:
        authorities, regular, _ = start_network(
            stack,
            tmp_path,
            authorities=4,
            regular=1,
            flags=lambda role, i: ("--docker-upstream", upstream.url),
        )
        first = authorities[0]
        before = first.height()
        for token in (None, "wrong"):
            assert (
                first.post(
                    "/api/v1/builds", {"kind": "docker", "target": "library/x:1"}, token=token
                ).status_code
                == 401
            )
            refused = first.post(
                "/api/v1/authorities", {"peer_id": regular[0].peer_id, "action": "add"}, token=token
            )
            assert refused.status_code == 401
        assert (
            first.post("/api/v1/authorities", {"peer_id": "not-a-peer", "action": "add"}).status_code == 400
        )
        assert (
            first.post("/api/v1/authorities", {"peer_id": first.peer_id, "action": "add"}).status_code == 400
        )
        assert (
            regular[0].post("/api/v1/authorities", {"peer_id": first.peer_id, "action": "remove"}).status_code
            == 403
        )
        assert first.post("/api/v1/builds", {"kind": "npm", "target": "x"}).status_code == 400
        assert first.post("/api/v1/builds", {"kind": "maven", "target": "no-coordinates"}).status_code == 400
        assert first.get("/api/v1/authorities")["pending"] == []
        assert first.height() == before


def test_a_pull_through_a_regular_node_asks_every_authority_and_commits_once(
    upstream: RegistryProcess, tmp_path: Path
) -> None:
    image = images.nested()
    with ExitStack() as stack:
        authorities, regular, _ = start_network(
            stack,
            tmp_path,
            authorities=4,
            regular=1,
            flags=lambda role, i: ("--docker-upstream", upstream.url),
        )
        pull(regular[0], image)  # unknown to the log: every authority is asked, one commit wins
        eventually(lambda: all(committed_digests(a, image) == {image.top, *image.blobs} for a in authorities),
                   "every authority holds the records")  # fmt: skip
        found = regular[0].get("/api/v1/log/search", package=image.name)["results"]
        assert isinstance(found, list)
        paths = [r["path"] for r in found]
        assert len(paths) == len(set(paths)) == 1 + len(image.blobs)  # each file recorded once
