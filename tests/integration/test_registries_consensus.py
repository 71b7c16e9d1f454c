"""The agreed Docker registries changed by consensus, like the authority set, on one
network of real daemons: four authorities and a regular node whose genesis agrees to
docker.io alone, a CNCF docker-registry on loopback standing in for ghcr.io. Every
admin command runs as `python -m pyrsia …`, exactly as typed in a shell.

The tests share the network and run in file order: bad input first (it changes
nothing), then the story of ghcr.io: two approvals change nothing, a third adds it; a
restarted regular node rebuilds the list from its log and then publishes from it;
removed, new records are refused while the old ones still serve."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass

import httpx
import pytest
from nacl.signing import SigningKey

from pyrsia.translog.chain import genesis_block
from tests.support import images
from tests.support.bft import Member, eventually, join, peers, prepare
from tests.support.cli import ok, one_line_error, run
from tests.support.node import NodeProcess
from tests.support.registry import RegistryProcess

ACCEPT = {"Accept": ", ".join([images.DOCKER_MANIFEST, images.OCI_MANIFEST, images.OCI_INDEX])}
WITHIN_S = 180.0
PULL_TIMEOUT_S = 180.0
FIRST = images.nested("org/app", "1.0")
LATER = images.nested("org/app", "2.0")


@dataclass
class Network:
    authorities: list[Member]
    regular: Member
    upstream: RegistryProcess

    @property
    def everyone(self) -> list[Member]:
        return [*self.authorities, self.regular]


@pytest.fixture(autouse=True)
def isolated_client(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """No developer settings, and no node home or token unless a command passes one."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("xdg")))
    monkeypatch.setenv("PYRSIA_HOME", str(tmp_path_factory.mktemp("no-node-here")))
    for name in ("PYRSIA_NODE", "PYRSIA_ADMIN_TOKEN", "DOCKER_CONFIG"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Network]:
    root = tmp_path_factory.mktemp("registries")
    with ExitStack() as stack:
        upstream = stack.enter_context(RegistryProcess(root / "upstream"))
        images.push(upstream.url, FIRST)
        images.push(upstream.url, LATER)
        homes = [root / f"authority-{i}" for i in range(4)]
        ids = [prepare(home) for home in homes]
        genesis = root / "genesis.blk"
        genesis.write_bytes(
            genesis_block(SigningKey.generate(), int(time.time()), ids, registries=["docker.io"]).encode()
        )
        for home in [*homes, root / "regular"]:
            home.mkdir(parents=True, exist_ok=True)
            (home / "pyrsia.toml").write_text(f'[upstreams."ghcr.io"]\nurl = "{upstream.url}"\n')
        members: list[Member] = []
        for i, home in enumerate(homes):
            bootstrap = ["--bootstrap", members[0].node.p2p_address] if members else []
            node = NodeProcess(home, "--genesis", str(genesis), "--docker-upstream", upstream.url, *bootstrap)
            members.append(Member(stack.enter_context(node), ids[i]))
        regular = join(stack, root / "regular", genesis, members[0], "--docker-upstream", upstream.url)
        for member in [*members, regular]:
            eventually(lambda m=member: peers(m) >= 1, f"{member.peer_id} has a peer", WITHIN_S)
        yield Network(authorities=members, regular=regular, upstream=upstream)


def agreed(member: Member) -> dict[str, int]:
    doc = member.get("/api/v1/registries")
    return {r["host"]: r["since"] for r in doc["registries"]}  # type: ignore[union-attr, index]


def pending(member: Member) -> list[dict[str, object]]:
    return member.get("/api/v1/registries")["pending"]  # type: ignore[return-value]


def admin(member: Member, *args: str) -> dict[str, object]:
    out = ok(run("registries", *args, "--node", member.url, "--home", str(member.node.home), "--json"))
    doc: dict[str, object] = json.loads(out)
    return doc


def manifest(member: Member, image: images.Image) -> httpx.Response:
    return httpx.get(
        f"{member.url}/v2/ghcr.io/{image.name}/manifests/{image.tag}", headers=ACCEPT, timeout=PULL_TIMEOUT_S
    )


def refused_in_one_line(answer: httpx.Response) -> None:
    assert answer.status_code == 403, answer.text
    error = answer.json()["errors"][0]
    assert error["code"] == "DENIED", error
    assert "ghcr.io" in error["message"] and "\n" not in error["message"]


def approve(member: Member, action: str, tx_id: str) -> None:
    """`member`'s admin approves the pending change once it reached that node, as an
    operator would who saw it in `pyrsia registries`."""
    eventually(
        lambda: [p["tx_id"] for p in pending(member)] == [tx_id],
        f"{member.peer_id} sees the pending change",
        WITHIN_S,
    )
    again = admin(member, action, "ghcr.io")
    assert again["tx_id"] == tx_id and again["state"] == "pending", again


def submit(member: Member, action: str) -> str:
    answer = admin(member, action, "ghcr.io")
    assert answer["state"] == "pending" and answer["action"] == action, answer
    return str(answer["tx_id"])


def test_bad_input_is_refused_in_one_line(network: Network) -> None:
    first = network.authorities[0]
    home = ("--node", first.url, "--home", str(first.node.home))
    before = first.height()
    for host in ("ghcr.io/org/app", "https://ghcr.io", " ghcr.io", "ghcr.io ", "a" * 300, "ghcr.io:70000"):
        one_line_error(run("registries", "add", host, *home), 2, "registry host")
    one_line_error(run("registries", "remove", "docker.io", *home), 2, "docker.io cannot be removed")
    one_line_error(run("registries", "remove", "quay.io", *home), 2, "quay.io is not agreed")
    one_line_error(run("registries", "add", "docker.io", *home), 2, "docker.io is agreed already")
    # The API refuses what the CLI would not send, and admin calls need the token.
    spaced = first.post("/api/v1/registries", {"host": "ghcr.io\t", "action": "add"})
    assert spaced.status_code == 400 and "\n" not in spaced.json()["errors"][0]["message"]
    assert (
        first.post("/api/v1/registries", {"host": "ghcr.io", "action": "add"}, token=None).status_code == 401
    )
    regular = network.regular
    one_line_error(
        run("registries", "add", "ghcr.io", "--node", regular.url, "--home", str(regular.node.home)),
        1,
        "not an authority",
    )
    refused_in_one_line(manifest(regular, FIRST))
    assert first.height() == before
    assert all(pending(a) == [] for a in network.authorities)
    assert all(agreed(m) == {"docker.io": 0} for m in network.everyone)


def test_ghcr_io_is_added_by_three_admins_then_removed(network: Network) -> None:
    authorities, regular = network.authorities, network.regular
    # Two admins of four: the change gathers their endorsements and nothing more.
    tx_id = submit(authorities[0], "add")
    approve(authorities[1], "add", tx_id)
    two = {authorities[0].peer_id, authorities[1].peer_id}
    eventually(
        lambda: [set(p["endorsed_by"]) for p in pending(authorities[0])] == [two],  # type: ignore[arg-type]
        "both approvals reached the submitter",
        WITHIN_S,
    )
    assert all(agreed(m) == {"docker.io": 0} for m in network.everyone)
    refused_in_one_line(manifest(regular, FIRST))

    # The third admin's approval makes the quorum: every node agrees to ghcr.io.
    approve(authorities[2], "add", tx_id)
    eventually(lambda: all("ghcr.io" in agreed(m) for m in network.everyone), "ghcr.io agreed", WITHIN_S)
    since = agreed(authorities[0])["ghcr.io"]
    assert since > 0
    assert all(agreed(m) == {"docker.io": 0, "ghcr.io": since} for m in network.everyone)
    block = authorities[0].block(since)
    assert [tx["type"] for tx in block["transactions"]] == ["AddRegistry"]  # type: ignore[index, union-attr]
    listed = ok(run("registries", "--node", regular.url))
    assert "2 registries agreed" in listed
    assert ["ghcr.io", str(since)] in [line.split()[:2] for line in listed.splitlines()], listed

    # A restarted node rebuilds the list, with each host's height, from its own log.
    before = regular.get("/api/v1/registries")["registries"]
    regular.node.stop()
    regular.node.start()
    assert regular.get("/api/v1/registries")["registries"] == before
    eventually(lambda: peers(regular) >= 1, "the restarted node has a peer", WITHIN_S)

    # A regular node now publishes from it, through the authorities.
    served = manifest(regular, FIRST)
    assert served.status_code == 200, served.text
    assert served.headers["Docker-Content-Digest"] == FIRST.top
    found = regular.get("/api/v1/log/search", registry="ghcr.io")["results"]
    assert isinstance(found, list) and FIRST.top in {r["digest"] for r in found}

    # Removed by three admins: new ghcr.io records are refused, the logged ones still serve.
    removal = submit(authorities[3], "remove")
    for member in authorities[:2]:
        approve(member, "remove", removal)
    eventually(lambda: all("ghcr.io" not in agreed(m) for m in network.everyone), "ghcr.io removed", WITHIN_S)
    height = authorities[0].height()
    refused_in_one_line(manifest(regular, LATER))
    refused_in_one_line(manifest(authorities[1], LATER))
    for member in (regular, authorities[2]):
        again = manifest(member, FIRST)
        assert again.status_code == 200 and again.headers["Docker-Content-Digest"] == FIRST.top, again.text
    assert authorities[0].height() == height
