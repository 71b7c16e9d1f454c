"""The chain core: whether a block may come next, and the state it leaves behind.

`Chain` holds the tip block, the RFC 6962 tree over every transaction id, the
authority set in force for the next height and the log's origin. `apply(block)` is
the only way the state moves, for every block there is: replayed from disk at open,
committed by this node, synced from a peer or agreed by consensus. It checks, in
order of cost:

- the link: height, previous hash, non-decreasing time, log size;
- a genesis block alone may name the log's origin and the registries the network
  vouches for (`registries`; absent, the built-in list);
- the authority set: `authorities_hash` names the set in force at this height, and
  the proposer is in it;
- every transaction: distinct ids, the submitter's signature and each endorsement's
  (when `verify_signatures`), endorsements from a quorum of the authorities in force
  (after genesis: each authority verified the transaction on its own before it could be
  ordered), and the authority rules below;
- `tx_root` and `transactions_hash` (when the header has one: the block's
  transactions and endorsements are the bytes the certificate covers), then the
  commit certificate: distinct signers, each an authority in force, each signature
  over the block hash and over the C2SP checkpoint valid (when `verify_signatures`),
  at least a quorum (more than two thirds) of them;
- `log_root` against the tree with this block's ids appended.

Only then does the state advance; a block that fails raises `ChainBroken` naming its
height and leaves the state as it was. `verify_signatures=False` is for blocks this
node verified (or signed) before it wrote them: replay at open is then hashing only.

Authority rules. Genesis (height 0) holds only AddAuthorizedNode transactions, all
submitted, proposed and certified by one key, its creator (`pyrsia genesis`): the peers
they add are the first set, and the creator vouches for nothing after it (everyone
pins the genesis block by hash, so its creator has no further say). Later,
AddAuthorizedNode/RemoveAuthorizedNode must be submitted by an authority in force,
may not add a member or remove a stranger, and may not leave the set empty or larger
than `AUTHORITIES_MAX`; the new set is in force from the next height on.

Registry rules. The Docker registries the network vouches for start as its genesis
lists them (absent: the built-in list). Later, AddRegistry/RemoveRegistry must be
submitted by an authority in force, may not add a listed host or remove an unlisted
one, may not remove `docker.io` (every name without a host is Docker Hub's) or the
last registry, nor make more than `REGISTRIES_MAX`; like the authority set, the new
list is in force from the next height on, and each host remembers the height that
added it. A Docker AddArtifact must name a registry in force at its height: records
of a registry logged before its removal stay valid (the chain never looks back), new
ones are refused. So the list in force at a height is a pure function of the log.

Pure: no clock (`now` is an argument), no files, no lock; one owner drives it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from nacl.signing import SigningKey

from pyrsia.errors import ChainBroken, TxInvalid
from pyrsia.formats.peer_id import peer_id_of
from pyrsia.translog import checkpoint, merkle
from pyrsia.translog.block import (
    AUTHORITIES_MAX,
    DEFAULT_REGISTRIES,
    REGISTRIES_MAX,
    ZERO_HASH,
    Block,
    BlockHeader,
    CommitSignature,
    authorities_hash,
    commit_signature,
    quorum,
    transactions_hash,
    tx_root,
)
from pyrsia.translog.tx import (
    ADD_ARTIFACT,
    ADD_AUTHORIZED_NODE,
    ADD_REGISTRY,
    REMOVE_AUTHORIZED_NODE,
    REMOVE_REGISTRY,
    AddArtifact,
    AuthorizedNode,
    Claim,
    Registry,
    Transaction,
    check,
    claims_of,
    endorse,
    sign,
    signer_id,
    verify_signature,
    verify_signature_once,
)

_Fail = Callable[[str], ChainBroken]
# The set in force changes rarely: its hash is computed once per set, not once per block.
_hash_of_set: Callable[[frozenset[str]], bytes] = functools.lru_cache(maxsize=16)(authorities_hash)
# Docker Hub is where every name without a registry host goes: it is never removed.
PERMANENT_REGISTRY = "docker.io"


def origin_of(genesis: BlockHeader) -> str:
    """The log's name in checkpoints, fixed by its genesis block: the name its creator
    chose, else one derived from its hash."""
    return genesis.origin or f"pyrsia.log/{genesis.hash.hex()[:16]}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Mark:
    """Where a chain stood, to rewind to when a block applied in memory is not stored."""

    tip: Block | None
    authorities: frozenset[str]
    origin: str
    size: int
    registries_since: tuple[tuple[str, int], ...]


class Chain:
    def __init__(self) -> None:
        self.tip: Block | None = None
        self.tree = merkle.Tree()
        self.authorities: frozenset[str] = frozenset()  # in force for the next height
        self.origin = ""
        # The Docker registries the network vouches for, in force for the next height, each
        # with the height that added it (its genesis, then AddRegistry; until genesis none).
        self.registries_since: tuple[tuple[str, int], ...] = ()

    @property
    def registries(self) -> tuple[str, ...]:
        """The registry hosts in force for the next height, sorted."""
        return tuple(host for host, _ in self.registries_since)

    @property
    def height(self) -> int:
        """Height of the tip; -1 before genesis."""
        return -1 if self.tip is None else self.tip.header.height

    @property
    def size(self) -> int:
        return self.tree.size

    def mark(self) -> Mark:
        return Mark(
            tip=self.tip,
            authorities=self.authorities,
            origin=self.origin,
            size=self.tree.size,
            registries_since=self.registries_since,
        )

    def rewind(self, mark: Mark) -> None:
        self.tip, self.authorities, self.origin = mark.tip, mark.authorities, mark.origin
        self.registries_since = mark.registries_since
        self.tree.truncate(mark.size)

    # -- applying ---------------------------------------------------------------------

    def apply(self, block: Block, *, verify_signatures: bool = True, certified: bool = True) -> int:
        """Verify `block` as the next one and advance; returns the leaf index of its
        first transaction. `ChainBroken` (state unchanged) if it may not follow.
        `certified=False` skips the certificate: `check_proposal` only."""
        header = block.header
        height = header.height

        def fail(reason: str) -> ChainBroken:
            return ChainBroken(height, reason)

        prev = None if self.tip is None else self.tip.header
        if height != self.height + 1:
            raise fail(f"height {height} follows {self.height}")
        if header.prev_hash != (ZERO_HASH if prev is None else prev.hash):
            raise fail("previous block hash does not match")
        if prev is not None and header.time < prev.time:
            raise fail(f"block time {header.time} is before its predecessor's {prev.time}")
        if not block.transactions:
            raise fail("block has no transactions")
        if header.log_size != self.tree.size + len(block.transactions):
            raise fail("log size does not add up")
        if prev is not None and header.origin:
            raise fail("only a genesis block names the log's origin")
        if prev is not None and header.registries:
            raise fail("only a genesis block names the network's registries")
        if prev is None:
            authorities = _genesis_set(block.transactions, header.proposer, fail)
            certifiers = frozenset({header.proposer})
        else:
            authorities = certifiers = self.authorities
            if header.proposer not in authorities:
                raise fail(f"proposer {header.proposer} is not an authority at this height")
        if header.authorities_hash != _hash_of_set(authorities):
            raise fail("authority set hash does not match")
        ids = [tx.id for tx in block.transactions]
        if len(set(ids)) != len(ids):
            raise fail("a transaction appears twice in the block")
        if verify_signatures:
            for tx in block.transactions:
                try:
                    check(tx)
                except TxInvalid as exc:
                    raise fail(exc.message) from exc
        if prev is not None:
            _check_endorsed(block.transactions, authorities, fail)
        following = authorities if prev is None else _authorities_after(authorities, block.transactions, fail)
        if prev is None:
            registries_since = tuple((host, 0) for host in header.registries or DEFAULT_REGISTRIES)
        else:
            registries_since = _registries_after(
                self.registries_since, height, authorities, block.transactions, fail
            )
        if header.tx_root != merkle.root_of(ids):
            raise fail("transaction root does not match its transactions")
        if header.transactions_hash and header.transactions_hash != transactions_hash(block.transactions):
            raise fail("transactions hash does not match the block's transactions and endorsements")
        origin = self.origin or origin_of(header)
        if certified:
            _check_certificate(header, block.certificate, certifiers, origin, verify_signatures, fail)
        first = self.tree.size
        for tx_id in ids:
            self.tree.append(tx_id)
        if self.tree.root() != header.log_root:
            self.tree.truncate(first)
            raise fail("log root does not match the transactions so far")
        self.tip, self.authorities, self.origin = block, following, origin
        self.registries_since = registries_since
        return first

    def check_proposal(self, block: Block) -> None:
        """Whether `block` (its certificate not yet gathered) may come next: everything
        `apply` checks but the certificate, with every signature; the state is unchanged."""
        mark = self.mark()
        self.apply(block, certified=False)
        self.rewind(mark)

    # -- proposing --------------------------------------------------------------------

    def propose(
        self,
        transactions: Sequence[Transaction],
        now: int,
        proposer: str,
        origin: str = "",
        registries: tuple[str, ...] = (),
    ) -> BlockHeader:
        """The header of the next block holding `transactions`, proposed at `now`
        (`origin`: the log's name, for a genesis block only)."""
        if not transactions:
            raise TxInvalid("a block needs at least one transaction")
        prev = None if self.tip is None else self.tip.header
        if prev is None:
            authorities = frozenset(
                tx.payload.peer_id for tx in transactions if isinstance(tx.payload, AuthorizedNode)
            )
        else:
            authorities = self.authorities
        size = self.tree.size
        for tx in transactions:
            self.tree.append(tx.id)
        try:
            log_root = self.tree.root()
        finally:
            self.tree.truncate(size)
        return BlockHeader(
            height=self.height + 1,
            prev_hash=ZERO_HASH if prev is None else prev.hash,
            tx_root=tx_root(transactions),
            transactions_hash=transactions_hash(transactions),
            log_size=size + len(transactions),
            log_root=log_root,
            time=now if prev is None else max(now, prev.time),
            proposer=proposer,
            authorities_hash=authorities_hash(authorities),
            origin=origin,
            registries=registries,
        )

    def certify(self, header: BlockHeader, key: SigningKey) -> CommitSignature:
        """`key`'s commit signature over a header proposed on this chain."""
        return commit_signature(key, header, self.origin or origin_of(header))

    def propose_certified(self, transactions: Sequence[Transaction], now: int, key: SigningKey) -> Block:
        """The next block, endorsed, proposed and certified by `key` alone: the embedded
        network, where this node is the one authority and one signature is the quorum."""
        me = signer_id(key)
        endorsed = tuple(
            tx if any(e.signer == me for e in tx.endorsements)
            else tx.with_endorsements((*tx.endorsements, endorse(key, tx.id)))
            for tx in transactions
        )  # fmt: skip
        header = self.propose(endorsed, now, me)
        return Block(header=header, transactions=endorsed, certificate=(self.certify(header, key),))


def genesis_block(
    key: SigningKey,
    now: int,
    authorities: Sequence[str] = (),
    origin: str = "",
    registries: Sequence[str] = (),
) -> Block:
    """Height 0 of a new log, created by `key`: its authorities are `authorities`, or
    `key`'s own peer alone (the embedded one-authority network); `registries` the Docker
    registry hosts it vouches for (none given: the built-in list)."""
    me = peer_id_of(bytes(key.verify_key))
    members = list(dict.fromkeys(authorities)) or [me]
    txs = [
        sign(key, type=ADD_AUTHORIZED_NODE, payload=AuthorizedNode(peer_id=peer), time=now, nonce=i)
        for i, peer in enumerate(members)
    ]
    agreed = tuple(sorted(set(registries)))
    header = Chain().propose(txs, now, me, origin, () if agreed == DEFAULT_REGISTRIES else agreed)
    certificate = (commit_signature(key, header, origin_of(header)),)
    return Block(header=header, transactions=tuple(txs), certificate=certificate)


def _genesis_set(transactions: Sequence[Transaction], creator: str, fail: _Fail) -> frozenset[str]:
    added: set[str] = set()
    for tx in transactions:
        if tx.type != ADD_AUTHORIZED_NODE or not isinstance(tx.payload, AuthorizedNode):
            raise fail("genesis holds only AddAuthorizedNode transactions")
        if tx.submitter != creator:
            raise fail(f"genesis transaction submitted by {tx.submitter}, not by its proposer {creator}")
        if tx.payload.peer_id in added:
            raise fail(f"genesis adds {tx.payload.peer_id} twice")
        added.add(tx.payload.peer_id)
    if len(added) > AUTHORITIES_MAX:
        raise fail(f"genesis names more than {AUTHORITIES_MAX} authorities")
    return frozenset(added)


def _check_endorsed(transactions: Sequence[Transaction], authorities: frozenset[str], fail: _Fail) -> None:
    """Each transaction carries endorsements from a quorum of `authorities` (their
    signatures are `check`ed with the transaction's own)."""
    needed = quorum(len(authorities))
    for tx in transactions:
        signers = {e.signer for e in tx.endorsements}
        outsiders = signers - authorities
        if outsiders:
            raise fail(
                f"transaction {tx.id.hex()[:16]} is endorsed by {sorted(outsiders)[0]}, not an authority"
            )
        if len(signers) < needed:
            raise fail(f"transaction {tx.id.hex()[:16]} has {len(signers)} endorsements of {needed} needed")


def _authorities_after(
    authorities: frozenset[str], transactions: Sequence[Transaction], fail: _Fail
) -> frozenset[str]:
    current = set(authorities)
    for tx in transactions:
        if tx.type not in (ADD_AUTHORIZED_NODE, REMOVE_AUTHORIZED_NODE):
            continue
        assert isinstance(tx.payload, AuthorizedNode), "tx.py pairs these types with this payload"
        peer = tx.payload.peer_id
        if tx.submitter not in authorities:
            raise fail(f"{tx.type} submitted by {tx.submitter}, not an authority")
        if tx.type == ADD_AUTHORIZED_NODE:
            if peer in current:
                raise fail(f"{peer} is already an authority")
            current.add(peer)
        else:
            if peer not in current:
                raise fail(f"{peer} is not an authority, so cannot be removed")
            current.discard(peer)
    if not current:
        raise fail("the block would remove every authority")
    if len(current) > AUTHORITIES_MAX:
        raise fail(f"the block would make more than {AUTHORITIES_MAX} authorities")
    return frozenset(current)


def _registries_after(
    since: tuple[tuple[str, int], ...],
    height: int,
    authorities: frozenset[str],
    transactions: Sequence[Transaction],
    fail: _Fail,
) -> tuple[tuple[str, int], ...]:
    """The registry list after this block's changes; its Docker records checked against
    the list in force at this height (`since`)."""
    in_force = {host for host, _ in since}
    current = dict(since)
    for tx in transactions:
        if tx.type == ADD_ARTIFACT:
            assert isinstance(tx.payload, AddArtifact), "tx.py pairs this type with this payload"
            if tx.payload.package_type == "docker":
                registry = tx.payload.registry_or_default
                if registry not in in_force:
                    raise fail(
                        f"transaction {tx.id.hex()[:16]} names registry {registry[:100]}, "
                        "which the network does not vouch for at this height"
                    )
            continue
        if tx.type not in (ADD_REGISTRY, REMOVE_REGISTRY):
            continue
        assert isinstance(tx.payload, Registry), "tx.py pairs these types with this payload"
        host = tx.payload.host
        if tx.submitter not in authorities:
            raise fail(f"{tx.type} submitted by {tx.submitter}, not an authority")
        if tx.type == ADD_REGISTRY:
            if host in current:
                raise fail(f"registry {host} is agreed already")
            current[host] = height
        else:
            if host not in current:
                raise fail(f"registry {host} is not agreed, so cannot be removed")
            if host == PERMANENT_REGISTRY:
                raise fail(f"registry {host} cannot be removed: names without a host are its")
            del current[host]
    if not current:
        raise fail("the block would remove every registry")
    if len(current) > REGISTRIES_MAX:
        raise fail(f"the block would make more than {REGISTRIES_MAX} registries")
    return tuple(sorted(current.items()))


def _check_certificate(
    header: BlockHeader,
    certificate: Sequence[CommitSignature],
    authorities: frozenset[str],
    origin: str,
    verify_signatures: bool,
    fail: _Fail,
) -> None:
    seen: set[str] = set()
    for s in certificate:
        if s.signer in seen:
            raise fail(f"commit certificate names {s.signer} twice")
        if s.signer not in authorities:
            raise fail(f"commit certificate signer {s.signer} is not an authority at this height")
        seen.add(s.signer)
    needed = quorum(len(authorities))
    if len(seen) < needed:
        raise fail(f"commit certificate has {len(seen)} signatures of {needed} needed")
    if verify_signatures:
        _verify_certificate(header, certificate, origin, fail)


def _verify_certificate(
    header: BlockHeader, certificate: Sequence[CommitSignature], origin: str, fail: _Fail
) -> None:
    for signer, message, signature, reason in _certificate_claims(header, certificate, origin):
        if not verify_signature(signer, message, signature):
            raise fail(reason)


def _certificate_claims(
    header: BlockHeader, certificate: Sequence[CommitSignature], origin: str
) -> list[Claim]:
    point = checkpoint.Checkpoint(origin=origin, size=header.log_size, root=header.log_root).body()
    claims: list[Claim] = []
    for s in certificate:
        over = f"commit signature of {s.signer} over the"
        claims.append((s.signer, header.hash, s.block, f"{over} block does not verify"))
        claims.append((s.signer, point, s.checkpoint, f"{over} checkpoint does not verify"))
    return claims


def signature_claims(block: Block, origin: str) -> list[Claim]:
    """The signatures a certified block needs checked before `apply` with
    `verify_signatures=False` takes it, in the order `check_signatures` checks them.
    The certificate's over the block and the checkpoint of `origin`, always; each
    transaction's and its endorsements' only in a block without `transactions_hash`:
    with one, the certificate covers their bytes (`apply` then compares the hash).
    Depends on no chain state but the origin, so a batch can be checked off the chain's
    owner (even in another process), then applied by a chain of that origin."""
    claims = [] if block.header.transactions_hash else [c for tx in block.transactions for c in claims_of(tx)]
    return claims + _certificate_claims(block.header, block.certificate, origin)


def check_signatures(block: Block, origin: str) -> None:
    """`signature_claims` checked here: `ChainBroken` for the first that does not verify.
    The answers are not remembered: a synced block's signatures are met once."""
    for signer, message, signature, reason in signature_claims(block, origin):
        if not verify_signature_once(signer, message, signature):
            raise ChainBroken(block.header.height, reason)
