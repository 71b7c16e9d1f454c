"""A BFT network of real `pyrsia daemon` processes on loopback, as tests and benchmarks run it.

`start_network` makes the authorities' homes (their identities first, so their peer
ids can go into the genesis block), writes one genesis file naming them, and starts
the authorities and then the regular nodes with `--genesis FILE`, each bootstrapped
to the first authority. The genesis may name further authorities that run no daemon
(`absent`: a test holds their keys and speaks for them, or leaves them silent). Every
node's flags can differ (an authority with its own, lying upstream). Admin calls go
through the node API with each node's own token.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
from nacl.signing import SigningKey

from pyrsia.node.home import ensure_home, load_identity, read_admin_token
from pyrsia.translog.chain import genesis_block
from tests.support.node import NodeProcess

DEADLINE_S = 90.0


@dataclass
class Member:
    node: NodeProcess
    peer_id: str

    @property
    def url(self) -> str:
        return self.node.url

    def token(self) -> str:
        token = read_admin_token(self.node.home)
        assert token is not None
        return token

    def get(self, path: str, **params: str) -> dict[str, object]:
        response = httpx.get(f"{self.url}{path}", params=params, timeout=30)
        assert response.status_code == 200, response.text
        doc: dict[str, object] = response.json()
        return doc

    def post(self, path: str, body: dict[str, object], *, token: str | None = "") -> httpx.Response:
        headers = {} if token is None else {"Authorization": f"Bearer {token or self.token()}"}
        return httpx.post(f"{self.url}{path}", json=body, headers=headers, timeout=30)

    def height(self) -> int:
        translog = self.get("/api/v1/status")["translog"]
        assert isinstance(translog, dict)
        return int(translog["height"])

    def authorities(self) -> set[str]:
        return set(self.get("/api/v1/log")["authorities"])  # type: ignore[arg-type]

    def block(self, height: int | str) -> dict[str, object]:
        return self.get(f"/api/v1/log/blocks/{height}")

    def build(self, kind: str, target: str) -> str:
        response = self.post("/api/v1/builds", {"kind": kind, "target": target})
        assert response.status_code == 202, response.text
        return str(response.json()["id"])

    def build_status(self, build_id: str) -> dict[str, object]:
        return self.get(f"/api/v1/builds/{build_id}")

    def finished_build(self, build_id: str, within_s: float = DEADLINE_S) -> dict[str, object]:
        found: dict[str, object] = {}

        def done() -> bool:
            found.update(self.build_status(build_id))
            return found["state"] != "running"

        eventually(done, f"build {build_id} on {self.peer_id} finished", within_s)
        return found


def eventually(condition: Callable[[], bool], what: str, within_s: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + within_s
    while not condition():
        assert time.monotonic() < deadline, f"not within {within_s:g} s: {what}"
        time.sleep(0.1)


def write_genesis(path: Path, authorities: Sequence[str], origin: str = "") -> Path:
    path.write_bytes(genesis_block(SigningKey.generate(), int(time.time()), authorities, origin).encode())
    return path


def prepare(home: Path) -> str:
    """The peer id a node started with this home will have."""
    ensure_home(home)
    return load_identity(home).peer_id


def start_network(
    stack: ExitStack,
    root: Path,
    *,
    authorities: int,
    regular: int = 0,
    absent: Sequence[str] = (),
    flags: Callable[[str, int], Sequence[str]] = lambda role, i: (),
) -> tuple[list[Member], list[Member], Path]:
    """`authorities` authority daemons and `regular` regular ones of one new network;
    `flags(role, index)` adds each node's own flags; `absent` are peer ids the genesis
    also names as authorities, with no daemon started. Returns them and the genesis file."""
    homes = [root / f"authority-{i}" for i in range(authorities)]
    ids = [prepare(home) for home in homes]
    genesis = write_genesis(root / "genesis.blk", [*ids, *absent])
    members: list[Member] = []
    for i, home in enumerate(homes):
        bootstrap = ["--bootstrap", members[0].node.p2p_address] if members else []
        node = NodeProcess(home, "--genesis", str(genesis), *bootstrap, *flags("authority", i))
        members.append(Member(stack.enter_context(node), ids[i]))
    others = [
        join(stack, root / f"node-{i}", genesis, members[0], *flags("regular", i)) for i in range(regular)
    ]
    for member in members + others:
        eventually(lambda m=member: peers(m) >= 1, f"{member.peer_id} has a peer")
    return members, others, genesis


def peers(member: Member) -> int:
    p2p = member.get("/api/v1/status")["p2p"]
    assert isinstance(p2p, dict)
    return int(p2p["peers"])


def join(stack: ExitStack, home: Path, genesis: Path, bootstrap: Member, *flags: str) -> Member:
    peer_id = prepare(home)
    node = NodeProcess(home, "--genesis", str(genesis), "--bootstrap", bootstrap.node.p2p_address, *flags)
    return Member(stack.enter_context(node), peer_id)
