"""The consensus core: Tendermint rounds as a pure state machine (etcd raft's shape).

Authorities agree, height by height, on one opaque proposal each (the chain puts a
block in it). The algorithm is Tendermint's (Buchman, Kwon, Milosevic, "The latest
gossip on BFT consensus", arXiv:1807.04938, Algorithm 1); comments cite its lines.
Per height: rounds; per round: the proposer `sorted(authorities)[(height + round) %
n]` proposes, everyone prevotes, then precommits; a quorum (more than two thirds) of
precommits for one value decides it. `lockedValue/lockedRound` keep a node that
precommitted a value from prevoting another unless a later quorum of prevotes frees
it, and `validValue/validRound` make the next proposer re-propose the latest value
that had a quorum of prevotes. Timeouts grow with the round, so after the network
stabilises (GST) some round's timeouts outlast its delays and a decision follows.

The core does no I/O. Its inputs are four verbs:

    tick(now_ticks)   time, as an integer count of ticks; fires the timeouts due
    step(message)     a decoded message from a peer; refused ones raise MessageRejected
                      or CertificateInvalid and change nothing
    ready()           what the shell must do now (`Ready`)
    advance()         the shell did all of it

`Ready` follows etcd raft's contract, in this order: (1) persist `hard_state` (fsync)
if it is set, (2) then send `messages`, (3) then apply `commits` in order, then call
`advance()`. Persisting before sending is what keeps a restarted node from signing a
second, different vote for a (height, round, type): it resumes from the hard state
and never re-enters a step it has passed. `hard_state.last_decision` carries the
latest commit, so a crash between persisting and applying loses nothing. `timeouts`
say when the shell must call `tick` next (also `next_deadline_ticks()`); `evidence`
holds pairs of conflicting signed messages from one authority.

After a decision the core enters the next height only at that `advance()`, once the
shell applied the commit: `validate` and `get_value` of the next height need the
decided block in the chain, and a proposal that arrived with the deciding precommits
(buffered meanwhile) would otherwise be judged without it and prevoted nil. So an
`advance()` after a commit may leave new output (the next height's first messages):
the shell calls `ready()` again.

What the shell injects, all pure:
    authorities(height)   the authority set in force at `height` (None while unknown,
                          for future heights); may change from height to height
    validate(height, v)   whether proposal bytes `v` may be decided at `height`. The
                          node's validate checks the chain's rules: the block links to
                          the chain, its transactions are well signed, and each carries
                          endorsements from a quorum of the authorities at `height`
    get_value(height)     what to propose when this node is the proposer, or None
    extend(height, round, v)
                          the vote extension this node attaches to its precommit for
                          proposal bytes `v` (CometBFT ABCI++'s ExtendVote): the node
                          signs there what the chain's block certificate needs from
                          each authority. Never called for a nil precommit
    verify_extension(height, round, v, signer, extension)
                          whether `signer`'s extension is valid for proposal `v`
                          (ABCI++'s VerifyVoteExtension). A decision counts only
                          precommits whose extension verifies, so its certificate
                          holds every extension the block certificate is built from

Messages for the next few heights wait in a bounded buffer until the node gets
there. The paper assumes that after GST every message between correct nodes arrives
(§2, gossip); over a lossy network without gossip relays the core gets there by:
  - re-sending what it signed in the current round after `rebroadcast_ticks`, then
    with backoff (doubling, at most `rebroadcast_backoff_max` times that), starting
    over in each new round;
  - voting nil in a round it leaves (by its precommit timeout or a round skip)
    before it voted there, so that peers still in that round can get a quorum;
  - answering a peer still in an earlier round of this height with what it signed
    there, and a peer at an earlier height with the decisions it keeps (`Decision`:
    proposal and certificate; a verified certificate decides at once);
  - asking a peer it sees at a later height to catch it up (`CatchUp`), which is how
    a node that signs nothing at its height (not an authority there) learns decisions;
  - re-proposing a valid value together with the quorum of prevotes that made it
    valid (Proposal.proof), counted even when a Byzantine signer sent us another vote.
Every answer is rate-limited per peer. A node more than `decisions_kept` heights
behind must get blocks from the chain's sync instead, then start a core there.

Extensions are not covered by the precommit's signature, so anyone relaying a
precommit could swap its extension. A precommit whose extension fails against a
proposal the core holds is refused on arrival, and its signer's vote is not taken:
its genuine precommit still counts. One that arrives before the proposal is kept,
with a few alternative extensions per signer, and checked once the proposal is known;
a signer none of whose extensions verifies is left out of the count for that value.
The precommit timeout (line 47) counts every precommit taken, its extension checked
or not (see `_upon_precommits`, and `_leave_round` for why that stays live).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from nacl.signing import SigningKey

from pyrsia.consensus import messages as m
from pyrsia.consensus.quorum import Added, Conflict, Participation, Tally, quorum
from pyrsia.consensus.quorum import Vote as CountedVote
from pyrsia.errors import ConsensusError, MessageRejected, StorageError, TxInvalid
from pyrsia.translog import codec
from pyrsia.translog.tx import verify_signature

Authorities = Callable[[int], frozenset[str] | None]
Validate = Callable[[int, bytes], bool]
GetValue = Callable[[int], bytes | None]
# extend(height, round, proposal bytes) -> the extension for this node's precommit.
Extend = Callable[[int, int, bytes], bytes]
# verify_extension(height, round, proposal bytes, signer, extension) -> valid?
VerifyExtension = m.VerifyExtension
# Alternative extensions kept per (round, signer) until the proposal is known.
EXTENSIONS_PENDING_PER_SIGNER_MAX = 4


def no_extension(height: int, round_: int, proposal: bytes) -> bytes:
    """The default `extend`: precommits carry nothing."""
    return b""


def any_extension(height: int, round_: int, proposal: bytes, signer: str, extension: bytes) -> bool:
    """The default `verify_extension`: every extension is accepted."""
    return True


class Step(IntEnum):
    PROPOSE = 0
    PREVOTE = 1
    PRECOMMIT = 2


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    genesis_hash: bytes
    # timeoutX(round) = X_ticks + X_delta_ticks * round, at most timeout_ticks_max (§2: the
    # timeouts must grow so that after GST they eventually exceed the message delays).
    timeout_propose_ticks: int = 30
    timeout_propose_delta_ticks: int = 10
    timeout_prevote_ticks: int = 10
    timeout_prevote_delta_ticks: int = 5
    timeout_precommit_ticks: int = 10
    timeout_precommit_delta_ticks: int = 5
    timeout_ticks_max: int = 1000
    rebroadcast_ticks: int = 50
    rebroadcast_backoff_max: int = 4
    rounds_ahead_max: int = 256
    heights_ahead_max: int = 4
    future_messages_max: int = 4096
    future_messages_per_signer_max: int = 256
    proposals_per_round_max: int = 4
    decisions_kept: int = 16
    decisions_sent_max: int = 4


# -- effects ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Broadcast:
    """Send to every authority of the message's height (and to observers, if any)."""

    message: m.Message


@dataclass(frozen=True, slots=True, kw_only=True)
class SendTo:
    peer: str
    message: m.Message


@dataclass(frozen=True, slots=True, kw_only=True)
class Commit:
    height: int
    round: int
    proposal: bytes
    certificate: m.Certificate


@dataclass(frozen=True, slots=True, kw_only=True)
class ScheduleTimeout:
    """Call `tick(now)` with `now >= at_ticks`; `kind` is propose, prevote, precommit or rebroadcast."""

    at_ticks: int
    kind: str
    height: int
    round: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Evidence:
    """Two different signed messages from one authority for one (height, round, type)."""

    first: m.Proposal | m.Prevote | m.Precommit
    second: m.Proposal | m.Prevote | m.Precommit

    @property
    def signer(self) -> str:
        return self.first.signer


@dataclass(frozen=True, slots=True, kw_only=True)
class HardState:
    """What must be on disk before anything this node signed leaves it."""

    height: int
    round: int
    step: Step
    locked_value: bytes | None
    locked_round: int
    valid_value: bytes | None
    valid_round: int
    # The quorum of prevotes that made valid_value valid, sent along when re-proposing it.
    valid_proof: tuple[m.Prevote, ...]
    # What this node signed in `round`: re-sent after a restart, never signed anew.
    own: tuple[m.Proposal | m.Prevote | m.Precommit, ...]
    last_decision: m.Decision | None

    def encode(self) -> bytes:
        return codec.encode(
            {
                "height": self.height,
                "round": self.round,
                "step": int(self.step),
                "locked_value": self.locked_value,
                "locked_round": self.locked_round,
                "valid_value": self.valid_value,
                "valid_round": self.valid_round,
                "valid_proof": [m.to_map(vote) for vote in self.valid_proof],
                "own": [m.to_map(message) for message in self.own],
                "last_decision": None if self.last_decision is None else m.to_map(self.last_decision),
            }
        )

    @classmethod
    def decode(cls, data: bytes) -> HardState:
        try:
            doc = codec.decode(data)
            own = [m.from_map(entry) for entry in codec.field(doc, "own", list)]
            proof = [m.from_map(entry) for entry in codec.field(doc, "valid_proof", list)]
            if not all(isinstance(x, m.Prevote) for x in proof):
                raise TxInvalid("hard state proof holds something other than prevotes")
            last = doc.get("last_decision")
            decision = None if last is None else m.from_map(last)
            locked, valid = doc.get("locked_value"), doc.get("valid_value")
            if (
                len(own) > 3
                or not all(isinstance(x, m.Proposal | m.Prevote | m.Precommit) for x in own)
                or not (decision is None or isinstance(decision, m.Decision))
            ):
                raise TxInvalid("hard state holds the wrong kind of message")
            if not (locked is None or isinstance(locked, bytes)) or not (
                valid is None or isinstance(valid, bytes)
            ):
                raise TxInvalid("hard state locked/valid value must be bytes or nil")
            return cls(
                height=codec.field(doc, "height", int),
                round=codec.field(doc, "round", int),
                step=Step(codec.field(doc, "step", int)),
                locked_value=locked,
                locked_round=codec.field(doc, "locked_round", int),
                valid_value=valid,
                valid_round=codec.field(doc, "valid_round", int),
                valid_proof=tuple(x for x in proof if isinstance(x, m.Prevote)),
                own=tuple(x for x in own if isinstance(x, m.Proposal | m.Prevote | m.Precommit)),
                last_decision=decision if isinstance(decision, m.Decision) else None,
            )
        except (TxInvalid, ConsensusError, ValueError) as exc:
            raise StorageError(f"unreadable consensus state: {exc}") from exc


Message = m.Message
Outbound = Broadcast | SendTo
Effect = Broadcast | SendTo | Commit | ScheduleTimeout | Evidence


@dataclass(frozen=True, slots=True, kw_only=True)
class Ready:
    hard_state: HardState | None
    messages: tuple[Outbound, ...]
    commits: tuple[Commit, ...]
    timeouts: tuple[ScheduleTimeout, ...]
    evidence: tuple[Evidence, ...]

    def effects(self) -> list[Effect]:
        """Everything but the hard state, in the order of the contract: send, apply, the rest."""
        return [*self.messages, *self.commits, *self.timeouts, *self.evidence]

    def __bool__(self) -> bool:
        return bool(self.hard_state or self.messages or self.commits or self.timeouts or self.evidence)


# -- the core ---------------------------------------------------------------------------


class Core:
    def __init__(
        self,
        *,
        key: SigningKey,
        config: Config,
        authorities: Authorities,
        validate: Validate,
        get_value: GetValue,
        height: int,
        now_ticks: int = 0,
        state: HardState | None = None,
        verify: m.Verifier = verify_signature,
        extend: Extend = no_extension,
        verify_extension: VerifyExtension = any_extension,
    ) -> None:
        """Start at `height` (the chain's height + 1), or resume from `state` at that height.

        If `state.height` is above `height`, the shell has not applied
        `state.last_decision` yet; it must apply it first.
        """
        if state is not None and state.height > height:
            raise ValueError(f"apply the decision of height {state.height - 1} before resuming")
        self._key = key
        self.peer_id = m.signer_of(key)
        self.config = config
        self._authorities = authorities
        self._validate = validate
        self._get_value = get_value
        self._verify = verify
        self._extend = extend
        self._verify_extension = verify_extension
        self._now = now_ticks
        self._timers: list[tuple[int, int, str, int, int]] = []
        self._timer_seq = 0
        self._future: dict[int, list[Message]] = {}
        self._future_count = 0
        self._future_per_signer: dict[str, int] = {}
        self._recent: dict[int, tuple[m.Decision, frozenset[str]]] = {}
        self._answered: dict[tuple[str, str], int] = {}
        self._catch_up_sent = (-1, 0)
        self._rebroadcasts = 0
        self._last_decision = state.last_decision if state is not None else None
        if self._last_decision is not None:
            # Kept across a restart: peers still at that height may need it to get past it.
            decided_by = authorities(self._last_decision.height)
            if decided_by:
                self._recent[self._last_decision.height] = (self._last_decision, decided_by)
        self._out_messages: list[Outbound] = []
        self._out_commits: list[Commit] = []
        self._out_timeouts: list[ScheduleTimeout] = []
        self._out_evidence: list[Evidence] = []
        self._handed: tuple[int, int, int, int, HardState | None] | None = None
        # Decided: the height entered at the `advance()` after the commit is applied.
        self._applying: int | None = None
        self._persisted: HardState | None = state
        self._schedule_at(self._now + config.rebroadcast_ticks, "rebroadcast", -1, -1)
        resume = state if state is not None and state.height == height else None
        self._enter_height(height, resume)
        self._evaluate()

    # -- the four verbs -----------------------------------------------------------------

    def tick(self, now_ticks: int) -> None:
        self._now = max(self._now, now_ticks)
        while self._timers and self._timers[0][0] <= self._now:
            _, _, kind, height, round_ = heapq.heappop(self._timers)
            self._on_timeout(kind, height, round_)
        self._evaluate()

    def step(self, message: Message) -> None:
        """One message from a peer; raises `MessageRejected`/`CertificateInvalid` if refused."""
        if isinstance(message, m.Decision):
            self._on_decision(message)
        elif isinstance(message, m.CatchUp):
            self._on_catch_up(message)
        else:
            self._on_signed(message)
        self._evaluate()

    def forget_invalid(self) -> None:
        """Ask `validate` again about values it refused at this height.

        For a shell whose validate can refuse for want of data it is fetching (a compact
        value's transactions): once the data is here, the answer may change. Safe at any
        time: validity only gates this node's own prevotes and decisions.
        """
        for value in [v for v, valid in self._valid_cache.items() if not valid]:
            del self._valid_cache[value]
        self._evaluate()

    def ready(self) -> Ready:
        state = self.hard_state()
        persist = state if state != self._persisted else None
        self._handed = (
            len(self._out_messages),
            len(self._out_commits),
            len(self._out_timeouts),
            len(self._out_evidence),
            persist,
        )
        return Ready(
            hard_state=persist,
            messages=tuple(self._out_messages),
            commits=tuple(self._out_commits),
            timeouts=tuple(self._out_timeouts),
            evidence=tuple(self._out_evidence),
        )

    def advance(self) -> None:
        """The shell persisted, sent and applied everything the last `ready()` returned."""
        if self._handed is None:
            return
        sent, applied, timed, reported, persisted = self._handed
        del self._out_messages[:sent]
        del self._out_commits[:applied]
        del self._out_timeouts[:timed]
        del self._out_evidence[:reported]
        if persisted is not None:
            self._persisted = persisted
        self._handed = None
        if self._applying is not None and not self._out_commits:  # the decision is applied
            height, self._applying = self._applying, None
            self._enter_height(height, None)
            self._evaluate()

    # -- queries --------------------------------------------------------------------------

    def next_deadline_ticks(self) -> int | None:
        return self._timers[0][0] if self._timers else None

    def hard_state(self) -> HardState:
        if self._applying is not None:  # the next height, entered with nothing signed yet
            return HardState(
                height=self._applying,
                round=0,
                step=Step.PROPOSE,
                locked_value=None,
                locked_round=-1,
                valid_value=None,
                valid_round=-1,
                valid_proof=(),
                own=(),
                last_decision=self._last_decision,
            )
        return HardState(
            height=self.height,
            round=self.round,
            step=self.current_step,
            locked_value=self._locked_value,
            locked_round=self.locked_round,
            valid_value=self._valid_value,
            valid_round=self.valid_round,
            valid_proof=self._valid_proof,
            own=tuple(self._own),
            last_decision=self._last_decision,
        )

    def proposer(self, height: int, round_: int) -> str:
        """Rotating over the sorted authority set of `height`."""
        ordered = self._sorted if height == self.height else sorted(self._authorities(height) or ())
        return ordered[(height + round_) % len(ordered)]

    @property
    def authorities(self) -> frozenset[str]:
        return self._auth

    # -- heights and rounds ---------------------------------------------------------------

    def _enter_height(self, height: int, resume: HardState | None) -> None:
        authorities = self._authorities(height)
        if not authorities:
            raise ValueError(f"the authority set of height {height} must be known to enter it")
        self.height = height
        self._auth = authorities
        self._sorted = sorted(authorities)
        self._is_authority = self.peer_id in authorities
        self.round = 0
        self.current_step = Step.PROPOSE
        self._locked_value: bytes | None = None
        self._locked_hash: bytes | None = None
        self.locked_round = -1
        self._valid_value: bytes | None = None
        self.valid_round = -1
        self._valid_proof: tuple[m.Prevote, ...] = ()
        self._proposals: dict[int, dict[bytes, m.Proposal]] = {}
        self._values: dict[bytes, bytes] = {}
        self._prevotes: dict[int, Tally] = {}
        self._precommits: dict[int, Tally] = {}
        self._participation = Participation(authorities)
        self._decidable: dict[tuple[int, bytes], m.Certificate | None] = {}
        # Extensions of the precommits counted for (round, value hash), by signer: those
        # verified against the value's proposal, and those still waiting for it.
        self._extensions: dict[tuple[int, bytes], dict[str, bytes]] = {}
        self._extensions_pending: dict[tuple[int, bytes], dict[str, list[bytes]]] = {}
        self._once: set[tuple[str, int]] = set()
        self._valid_cache: dict[bytes, bool] = {}
        self._reported: set[tuple[str, str, int]] = set()
        self._own: list[m.Proposal | m.Prevote | m.Precommit] = []
        # Everything signed at this height, by round: answers for peers in an earlier round.
        self._own_by_round: dict[int, list[m.Proposal | m.Prevote | m.Precommit]] = {}
        if resume is None:
            self._start_round(0)
        else:
            self._resume(resume)
        self._replay_future(height)

    def _resume(self, state: HardState) -> None:
        self.round = state.round
        self.current_step = state.step
        if state.locked_value is not None:
            self._lock(state.locked_value, state.locked_round)
        if state.valid_value is not None:
            self._valid_value, self.valid_round = state.valid_value, state.valid_round
            self._valid_proof = state.valid_proof
            self._values[m.value_hash(state.valid_value)] = state.valid_value
        for message in state.own:
            self._own.append(message)
            self._own_by_round.setdefault(message.round, []).append(message)
            self._accept(message)
            self._out_messages.append(Broadcast(message=message))
        if self.current_step == Step.PROPOSE:
            self._schedule("propose", self.round)

    def _start_round(self, round_: int) -> None:
        """StartRound (Algorithm 1, lines 11-21)."""
        self.round = round_
        self.current_step = Step.PROPOSE
        self._own = []
        self._rebroadcasts = 0
        if self._is_authority and self._sorted[(self.height + round_) % len(self._sorted)] == self.peer_id:
            value: bytes | None = self._valid_value
            valid_round = self.valid_round
            if value is None:
                value, valid_round = self._get_value(self.height), -1
            if value is not None:
                proposal = m.sign_proposal(
                    self._key,
                    self.config.genesis_hash,
                    height=self.height,
                    round=round_,
                    proposal=value,
                    valid_round=valid_round,
                    proof=self._valid_proof if valid_round >= 0 else (),
                )
                self._send_own(proposal)
        self._schedule("propose", round_)

    # -- inputs ---------------------------------------------------------------------------

    def _on_signed(self, message: m.Proposal | m.Prevote | m.Precommit) -> None:
        if message.height < self.height:
            kept = self._recent.get(message.height)
            # Unchecked, so answered only to an authority of that height, at a bounded rate.
            if kept is not None and message.signer in kept[1]:
                self._answer_lagging(message.signer, message.height)
            return
        if message.height > self.height:
            self._buffer(message)
            return
        if message.round > self.round + self.config.rounds_ahead_max:
            return
        self._check(message, self._auth, self._sorted)
        verified = isinstance(message, m.Precommit) and self._check_extension(message)
        self._accept(message, extension_verified=verified)
        if message.round < self.round:
            self._answer_lagging_round(message.signer, message.round)

    def _check(
        self, message: m.Proposal | m.Prevote | m.Precommit, authorities: frozenset[str], ordered: list[str]
    ) -> None:
        signer = message.signer
        if signer not in authorities:
            raise MessageRejected(f"{signer[:60]} is not an authority at height {message.height}")
        if isinstance(message, m.Proposal):
            if not -1 <= message.valid_round < message.round:
                raise MessageRejected(f"valid round {message.valid_round} is not below round {message.round}")
            expected = ordered[(message.height + message.round) % len(ordered)]
            if signer != expected:
                raise MessageRejected(
                    f"{signer[:60]} is not the proposer of height {message.height} round {message.round}"
                )
            if message.valid_round >= 0:
                self._check_proof(message, authorities)
        if isinstance(message, m.Precommit):
            m.check_extension(message.value, message.extension)
        if not m.is_signed(message, self.config.genesis_hash, self._verify):
            raise MessageRejected(f"bad {_kind(message)} signature from {signer[:60]}")

    def _check_extension(self, precommit: m.Precommit) -> bool:
        """Whether the extension was verified now; `MessageRejected` if it fails.

        Only checkable once the proposal for the precommit's value is held; until then
        it waits in `_extensions_pending` (see `_verified_extensions`).
        """
        if precommit.value is None:
            return False
        proposal = self._values.get(precommit.value)
        if proposal is None:
            return False
        known = self._extensions.get((precommit.round, precommit.value), {}).get(precommit.signer)
        if known == precommit.extension:
            return True
        if not self._verify_extension(
            self.height, precommit.round, proposal, precommit.signer, precommit.extension
        ):
            raise MessageRejected(f"precommit extension from {precommit.signer[:60]} does not verify")
        return True

    def _on_catch_up(self, request: m.CatchUp) -> None:
        if request.height >= self.height:
            return
        known = {request.height, *range(request.height, self.height)} & self._recent.keys()
        if not any(request.signer in self._recent[h][1] for h in known) and request.signer not in self._auth:
            raise MessageRejected(f"{request.signer[:60]} is no authority of the heights it asks for")
        if not m.is_signed(request, self.config.genesis_hash, self._verify):
            raise MessageRejected(f"bad catch-up signature from {request.signer[:60]}")
        self._answer_lagging(request.signer, request.height)

    def _check_proof(self, proposal: m.Proposal, authorities: frozenset[str]) -> None:
        """A re-proposal's proof: a quorum of distinct authorities prevoted it in valid_round."""
        signers = {s.signer for s in proposal.proof}
        if len(signers) != len(proposal.proof) or not signers <= authorities:
            raise MessageRejected("proposal proof repeats a signer or names a non-authority")
        needed = quorum(len(authorities))
        if len(signers) < needed:
            raise MessageRejected(f"proposal proof has {len(signers)} prevotes, a quorum is {needed}")
        for prevote in proposal.proof_prevotes():
            if not m.is_signed(prevote, self.config.genesis_hash, self._verify):
                raise MessageRejected(f"bad prevote signature from {prevote.signer[:60]} in a proposal proof")

    def _on_decision(self, decision: m.Decision) -> None:
        certificate = decision.certificate
        if decision.height < self.height:
            return
        if decision.height > self.height:
            self._buffer(decision)
            return
        if certificate.value != m.value_hash(decision.proposal):
            raise MessageRejected("certificate is for another value than the proposal")
        m.verify_certificate(
            certificate,
            self._auth,
            self.config.genesis_hash,
            self._verify,
            proposal=decision.proposal,
            verify_extension=self._verify_extension,
        )
        self._values.setdefault(certificate.value, decision.proposal)
        self._decidable[(certificate.round, certificate.value)] = certificate

    def _accept(
        self, message: m.Proposal | m.Prevote | m.Precommit, *, extension_verified: bool = False
    ) -> None:
        """Count a message of this height that is known to be signed by an authority."""
        if isinstance(message, m.Proposal):
            in_round = self._proposals.setdefault(message.round, {})
            if message.value in in_round:
                return
            if in_round:
                self._report(next(iter(in_round.values())), message)
            if len(in_round) >= self.config.proposals_per_round_max:
                return
            in_round[message.value] = message
            self._values.setdefault(message.value, message.proposal)
            self._participation.add(message.round, message.proposer)
            for prevote in message.proof_prevotes():
                self._count(prevote, justified=True)
            return
        self._count(message, justified=False)
        if isinstance(message, m.Precommit) and message.value is not None:
            self._keep_extension(message, verified=extension_verified)

    def _keep_extension(self, precommit: m.Precommit, *, verified: bool) -> None:
        """Remember the extension of a precommit counted for its value."""
        assert precommit.value is not None
        counted = self._precommits[precommit.round].vote_of(precommit.signer)
        if counted is None or counted.value != precommit.value:
            return  # the signer's counted precommit is for another value (or it is no authority)
        key = (precommit.round, precommit.value)
        verified_extensions = self._extensions.setdefault(key, {})
        if precommit.signer in verified_extensions:
            return
        if verified:
            verified_extensions[precommit.signer] = precommit.extension
            return
        pending = self._extensions_pending.setdefault(key, {}).setdefault(precommit.signer, [])
        if precommit.extension not in pending and len(pending) < EXTENSIONS_PENDING_PER_SIGNER_MAX:
            pending.append(precommit.extension)

    def _verified_extensions(self, round_: int, value: bytes) -> dict[str, bytes]:
        """Signer -> verified extension, for the precommits counted for `value` in `round_`.

        Extensions that arrived before the proposal are checked here once it is held,
        each once; a signer none of whose extensions verifies is left out (it may
        still send a good one).
        """
        verified = self._extensions.setdefault((round_, value), {})
        proposal = self._values.get(value)
        if proposal is None:
            return verified
        pending = self._extensions_pending.pop((round_, value), {})
        for signer, candidates in pending.items():
            if signer in verified:
                continue
            for candidate in candidates:
                if self._verify_extension(self.height, round_, proposal, signer, candidate):
                    verified[signer] = candidate
                    break
        return verified

    def _counted_precommits(self, round_: int, value: bytes) -> list[m.Precommit]:
        """The precommits for `value` in `round_` whose extension verifies against its proposal."""
        verified = self._verified_extensions(round_, value)
        return [
            m.Precommit(
                height=self.height,
                round=round_,
                value=value,
                signer=vote.signer,
                signature=vote.signature,
                extension=verified[vote.signer],
            )
            for vote in self._precommits[round_].votes_for(value)
            if vote.signer in verified
        ]

    def _count(self, message: m.Prevote | m.Precommit, *, justified: bool) -> None:
        tallies = self._prevotes if isinstance(message, m.Prevote) else self._precommits
        tally = tallies.get(message.round)
        if tally is None:
            tally = tallies[message.round] = Tally(self._auth)
        vote = CountedVote(signer=message.signer, value=message.value, signature=message.signature)
        outcome = tally.add_justified(vote) if justified else tally.add(vote)
        if isinstance(outcome, Conflict):
            first = type(message)(
                height=message.height,
                round=message.round,
                value=outcome.first.value,
                signer=outcome.first.signer,
                signature=outcome.first.signature,
            )
            self._report(first, message)
        elif isinstance(outcome, Added):
            self._participation.add(message.round, message.signer)
            if (
                isinstance(message, m.Precommit)
                and message.value is not None
                and tally.has_quorum(message.value)
            ):
                self._decidable.setdefault((message.round, message.value), None)

    def _report(
        self, first: m.Proposal | m.Prevote | m.Precommit, second: m.Proposal | m.Prevote | m.Precommit
    ) -> None:
        key = (_kind(first), first.signer, first.round)
        if key not in self._reported:
            self._reported.add(key)
            self._out_evidence.append(Evidence(first=first, second=second))

    def _buffer(self, message: m.Proposal | m.Prevote | m.Precommit | m.Decision) -> None:
        """Keep a message for a later height, within bounds; check it now if we can."""
        height = message.height
        if not isinstance(message, m.Decision) and self._applying is None:
            self._ask_to_catch_up(message.signer)
        if height > self.height + self.config.heights_ahead_max:
            return
        signer = "" if isinstance(message, m.Decision) else message.signer
        if (
            self._future_count >= self.config.future_messages_max
            or self._future_per_signer.get(signer, 0) >= self.config.future_messages_per_signer_max
        ):
            return
        authorities = self._authorities(height)
        if authorities and not isinstance(message, m.Decision):
            self._check(message, authorities, sorted(authorities))
        self._future.setdefault(height, []).append(message)
        self._future_count += 1
        self._future_per_signer[signer] = self._future_per_signer.get(signer, 0) + 1

    def _ask_to_catch_up(self, peer: str) -> None:
        """Someone is past our height: ask it for the decisions, once per height and interval."""
        sent = self._catch_up_sent
        if peer == self.peer_id or (
            sent[0] == self.height and self._now - sent[1] < self.config.rebroadcast_ticks
        ):
            return
        self._catch_up_sent = (self.height, self._now)
        request = m.sign_catch_up(self._key, self.config.genesis_hash, height=self.height)
        self._out_messages.append(SendTo(peer=peer, message=request))

    def _replay_future(self, height: int) -> None:
        for stale in [h for h in self._future if h < height]:
            self._forget_future(self._future.pop(stale))
        waiting = self._future.pop(height, [])
        self._forget_future(waiting)
        for message in waiting:
            try:
                if isinstance(message, m.Decision):
                    self._on_decision(message)
                elif not isinstance(message, m.CatchUp):
                    self._on_signed(message)
            except ConsensusError:
                continue  # refused now that its height's authority set is known

    def _forget_future(self, dropped: list[Message]) -> None:
        for message in dropped:
            signer = "" if isinstance(message, m.Decision) else message.signer
            self._future_count -= 1
            left = self._future_per_signer[signer] - 1
            if left:
                self._future_per_signer[signer] = left
            else:
                del self._future_per_signer[signer]

    def _answer_lagging(self, peer: str, height: int) -> None:
        """A peer still at a height we decided: send it the decisions we keep from there."""
        if peer == self.peer_id or height not in self._recent or self._recently_answered(("height", peer)):
            return
        for later in range(height, height + self.config.decisions_sent_max):
            kept = self._recent.get(later)
            if kept is not None:
                self._out_messages.append(SendTo(peer=peer, message=kept[0]))

    def _answer_lagging_round(self, peer: str, round_: int) -> None:
        """A peer still in an earlier round of this height: send it what we signed there.

        Its round may need our precommit to reach the quorum that lets it time out into
        the next round; our periodic re-sends cover only the round we are in.
        """
        own = self._own_by_round.get(round_)
        if not own or peer == self.peer_id or self._recently_answered(("round", peer)):
            return
        self._out_messages.extend(SendTo(peer=peer, message=message) for message in own)

    def _recently_answered(self, key: tuple[str, str]) -> bool:
        last = self._answered.get(key)
        if last is not None and self._now - last < self.config.rebroadcast_ticks:
            return True
        self._answered[key] = self._now
        return False

    # -- timeouts -------------------------------------------------------------------------

    def _timeout_ticks(self, kind: str, round_: int) -> int:
        c = self.config
        base, delta = {
            "propose": (c.timeout_propose_ticks, c.timeout_propose_delta_ticks),
            "prevote": (c.timeout_prevote_ticks, c.timeout_prevote_delta_ticks),
            "precommit": (c.timeout_precommit_ticks, c.timeout_precommit_delta_ticks),
        }[kind]
        return min(base + delta * round_, c.timeout_ticks_max)

    def _schedule(self, kind: str, round_: int) -> None:
        self._schedule_at(self._now + self._timeout_ticks(kind, round_), kind, self.height, round_)

    def _schedule_at(self, at_ticks: int, kind: str, height: int, round_: int) -> None:
        self._timer_seq += 1
        heapq.heappush(self._timers, (at_ticks, self._timer_seq, kind, height, round_))
        self._out_timeouts.append(ScheduleTimeout(at_ticks=at_ticks, kind=kind, height=height, round=round_))

    def _on_timeout(self, kind: str, height: int, round_: int) -> None:
        if kind == "rebroadcast":
            # Backoff: the k-th re-send in one round waits rebroadcast_ticks * 2**k, at most
            # rebroadcast_backoff_max times that; a new round or height starts over. A peer
            # that missed something and says so (a vote of an earlier round or height, a
            # catch-up) is answered at once instead.
            self._out_messages.extend(Broadcast(message=own) for own in self._own)
            self._rebroadcasts += 1
            factor = min(2**self._rebroadcasts, self.config.rebroadcast_backoff_max)
            self._schedule_at(self._now + self.config.rebroadcast_ticks * factor, "rebroadcast", -1, -1)
            return
        if height != self.height or round_ != self.round or self._applying is not None:
            return
        if kind == "propose" and self.current_step == Step.PROPOSE:  # OnTimeoutPropose, lines 57-60
            self._prevote(None)
        elif kind == "prevote" and self.current_step == Step.PREVOTE:  # OnTimeoutPrevote, lines 61-64
            self._precommit(None)
        elif kind == "precommit":  # OnTimeoutPrecommit, lines 65-67
            self._leave_round()
            self._start_round(self.round + 1)

    # -- the upon-rules -------------------------------------------------------------------

    def _evaluate(self) -> None:
        """Fire enabled rules until none is: each changes state, so this ends."""
        for _ in range(100_000):
            if self._applying is not None:  # decided: nothing more until the commit is applied
                return
            if not (
                self._upon_decide()
                or self._upon_round_skip()
                or self._upon_proposal()
                or self._upon_prevotes()
                or self._upon_precommits()
            ):
                return
        raise AssertionError("consensus rules did not settle")

    def _upon_decide(self) -> bool:
        """Lines 49-54: a proposal and a quorum of precommits for it, in any round.

        Only precommits whose extension verifies against the proposal count, so the
        certificate carries a quorum of valid extensions (`_decidable` holds the values
        with a quorum of precommits before that check).
        """
        for (round_, value), certificate in sorted(self._decidable.items(), key=lambda item: item[0]):
            proposal = self._values.get(value)
            if proposal is None or not self._is_valid(value):
                continue
            if certificate is None:
                precommits = self._counted_precommits(round_, value)
                if len(precommits) < quorum(len(self._auth)):
                    continue
                certificate = m.certificate_of(self.height, round_, value, precommits)
            decision = m.Decision(proposal=proposal, certificate=certificate)
            self._out_commits.append(
                Commit(height=self.height, round=round_, proposal=proposal, certificate=certificate)
            )
            self._last_decision = decision
            self._recent[self.height] = (decision, self._auth)
            while len(self._recent) > self.config.decisions_kept:
                del self._recent[min(self._recent)]
            self._applying = self.height + 1
            return True
        return False

    def _upon_round_skip(self) -> bool:
        """Lines 55-56: f+1 authorities are already in a later round; join them."""
        later = self._participation.highest_round_joined_above(self.round)
        if later is None:
            return False
        self._leave_round()
        self._start_round(later)
        return True

    def _upon_proposal(self) -> bool:
        """Lines 22-33: prevote for the round's proposal, or nil."""
        if self.current_step != Step.PROPOSE:
            return False
        for proposal in self._proposals.get(self.round, {}).values():
            value, valid_round = proposal.value, proposal.valid_round
            if valid_round == -1:  # line 22
                free = self.locked_round == -1 or self._locked_hash == value
            else:  # line 28: re-proposed with a quorum of prevotes from valid_round
                tally = self._prevotes.get(valid_round)
                if tally is None or not tally.has_quorum(value):
                    continue
                free = self.locked_round <= valid_round or self._locked_hash == value
            self._prevote(value if free and self._is_valid(value) else None)
            return True
        return False

    def _upon_prevotes(self) -> bool:
        """Lines 34-46 for the current round."""
        tally = self._prevotes.get(self.round)
        if tally is None or not tally.has_quorum_of_any():
            return False
        if self.current_step == Step.PREVOTE and self._first_time("prevote-timeout"):  # lines 34-35
            self._schedule("prevote", self.round)
            return True
        for value in tally.quorum_values():
            if value is None:
                if self.current_step == Step.PREVOTE:  # lines 44-46
                    self._precommit(None)
                    return True
            elif (
                self.current_step >= Step.PREVOTE
                and value in self._values
                and self._is_valid(value)
                and self._first_time("lock")
            ):  # lines 36-43
                proposal = self._values[value]
                if self.current_step == Step.PREVOTE:
                    self._lock(proposal, self.round)
                    self._precommit(value)
                self._valid_value, self.valid_round = proposal, self.round
                self._valid_proof = tuple(
                    m.Prevote(
                        height=self.height,
                        round=self.round,
                        value=value,
                        signer=v.signer,
                        signature=v.signature,
                    )
                    for v in tally.votes_for(value)
                )
                return True
        return False

    def _upon_precommits(self) -> bool:
        """Lines 47-48: a quorum of precommits for anything starts the precommit timeout.

        This counts signed precommits whatever their extensions (and one for a value
        whose proposal is not here yet cannot be checked): the rule only bounds how
        long to wait once a quorum has voted, and a decision counts only good ones.
        """
        tally = self._precommits.get(self.round)
        if tally is not None and tally.has_quorum_of_any() and self._first_time("precommit-timeout"):
            self._schedule("precommit", self.round)
            return True
        return False

    # -- acting ---------------------------------------------------------------------------

    def _first_time(self, what: str) -> bool:
        key = (what, self.round)
        if key in self._once:
            return False
        self._once.add(key)
        return True

    def _is_valid(self, value: bytes) -> bool:
        known = self._valid_cache.get(value)
        if known is None:
            known = self._valid_cache[value] = self._validate(self.height, self._values[value])
        return known

    def _leave_round(self) -> None:
        """Vote nil where this node has not voted yet in the round it leaves.

        As if the timeouts of lines 57 and 61 had fired just before: nil votes are
        always safe (they never help a value to a quorum, nor lock anything). Without
        gossip, a node that left a round unvoted (its precommit timeout counted a
        precommit the others never saw or refused, like one with a bad extension)
        could leave them waiting in that round for a quorum it alone could complete;
        now its nil precommit reaches them with the answers to a lagging round.
        """
        if self.current_step == Step.PROPOSE:
            self._prevote(None)
        if self.current_step == Step.PREVOTE:
            self._precommit(None)

    def _lock(self, proposal: bytes, round_: int) -> None:
        self._locked_value, self._locked_hash, self.locked_round = proposal, m.value_hash(proposal), round_
        self._values.setdefault(self._locked_hash, proposal)

    def _prevote(self, value: bytes | None) -> None:
        self.current_step = Step.PREVOTE
        if self._is_authority:
            self._send_own(
                m.sign_prevote(
                    self._key, self.config.genesis_hash, height=self.height, round=self.round, value=value
                )
            )

    def _precommit(self, value: bytes | None) -> None:
        self.current_step = Step.PRECOMMIT
        if self._is_authority:
            extension = b"" if value is None else self._extend(self.height, self.round, self._values[value])
            self._send_own(
                m.sign_precommit(
                    self._key,
                    self.config.genesis_hash,
                    height=self.height,
                    round=self.round,
                    value=value,
                    extension=extension,
                )
            )

    def _send_own(self, message: m.Proposal | m.Prevote | m.Precommit) -> None:
        self._own.append(message)
        self._own_by_round.setdefault(message.round, []).append(message)
        self._out_messages.append(Broadcast(message=message))
        self._accept(message)


def _kind(message: Any) -> str:
    return "proposal" if isinstance(message, m.Proposal) else str(message.kind)
