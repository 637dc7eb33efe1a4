"""The decisions, free of I/O: which Milvus calls bring Milvus to the spec, and what follows.

Level-based: the same plan serves create, resume, spec change and retries. The desired pair is
the spec; the applied pair is status.applied, the memory of what this object established.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass, field, replace
from typing import Protocol

from milvus_rbac_operator import status
from milvus_rbac_operator.inventory import Sharers
from milvus_rbac_operator.model import ConnectionRef, Operation, Outcome, ResStatus, RolePair
from milvus_rbac_operator.status import Readiness, Reason

DELETION_POLICY_ORPHAN = "Orphan"


@dataclass(frozen=True)
class Call:
    operation: Operation
    pair: RolePair
    # Other live bindings that want this pair too: the removal was skipped, not made.
    kept_for: tuple[str, ...] = ()
    # A removal of a provisional intent (inventory.provisional_intent): when its connection
    # cannot be used, nothing was ever added through it, and the removal is dropped.
    provisional: bool = False


def refusal(desired: RolePair, protected_users: frozenset[str]) -> Readiness | None:
    """A binding the operator must not act on, whatever Milvus would say."""
    if desired.username in protected_users:
        return status.refused(
            Reason.PROTECTED_USER,
            f"user {desired.username} is protected: the operator never adds or removes its roles",
        )
    return None


def _removal(pair: RolePair, provisional: RolePair | None) -> Call:
    return Call(Operation.REMOVE_USER_FROM_ROLE, pair, provisional=pair == provisional)


def plan_reconcile(
    desired: RolePair,
    claimed: list[RolePair],
    protected_users: frozenset[str],
    forbidden: bool = False,
    provisional: RolePair | None = None,
) -> list[Call]:
    """Remove every claimed pair the spec moved away from, then add the desired one.

    `claimed` is status.applied plus the last intent (see inventory.py); `provisional` is that
    intent when it is the admission's and no call is on record. The add is made even when it
    is already applied: AddUserToRole is idempotent, and this is how a resume or a retry
    confirms the grant is really there. When the connection's policy forbids the desired pair,
    it is not added, and removed if this binding had established it (the policy was tightened).
    """
    calls = [
        _removal(pair, provisional)
        for pair in claimed
        if (pair != desired or forbidden) and pair.username not in protected_users
    ]
    if not forbidden:
        calls.append(Call(Operation.ADD_USER_TO_ROLE, desired))
    return calls


def already_in_place(
    desired: RolePair,
    claimed: list[RolePair],
    ready: bool,
    observed_generation: int,
    generation: int,
) -> bool:
    """Status says this very spec is granted and nothing else is claimed: no call is needed.

    A restart then makes no call for the binding; the connection's first drift check, soon
    after start, verifies every grant with one listing instead of one call per binding.
    """
    return ready and observed_generation == generation and claimed == [desired]


def plan_release(
    claimed: list[RolePair],
    deletion_policy: str,
    protected_users: frozenset[str],
    provisional: RolePair | None = None,
) -> list[Call]:
    """What deleting the binding must remove before its finalizer goes."""
    if deletion_policy == DELETION_POLICY_ORPHAN:
        return []
    return [_removal(pair, provisional) for pair in claimed if pair.username not in protected_users]


def pair_is_gone(answer: ResStatus) -> bool:
    """A removal succeeded, or there is nothing left to remove (user or role missing)."""
    return answer.outcome in {Outcome.SUCCESS, Outcome.USER_NOT_FOUND, Outcome.ROLE_NOT_FOUND}


def connection_suspect(answer: ResStatus) -> bool:
    """A failure that may come from the connection or its Secret, not from the pair itself:
    the next call reads them again instead of trusting the cached client."""
    return not answer.succeeded and answer.outcome not in {
        Outcome.USER_NOT_FOUND,
        Outcome.ROLE_NOT_FOUND,
        Outcome.INVALID,
    }


# Another binding's first reconcile usually takes milliseconds. One that never gets there (it
# keeps failing before its status is written) holds a removal back for at most about 30 s.
SHARED_GRANT_WAIT_SECONDS = 0.5
SHARED_GRANT_MAX_WAITS = 60


def removal_may_wait(retry: int) -> bool:
    """Whether a removal may still wait for another binding about to add the same grant."""
    return retry < SHARED_GRANT_MAX_WAITS


def retry_delay(
    outcome: Outcome | None,
    retry: int,
    initial: float,
    maximum: float,
    slow: float,
    waiting: bool = False,
) -> float:
    """Transient failures back off exponentially up to `maximum`; the rest wait for a person."""
    if waiting:
        return SHARED_GRANT_WAIT_SECONDS
    if outcome is not None and outcome.transient:
        return float(min(initial * (2 ** min(retry, 30)), maximum))
    return slow


class RBACClient(Protocol):
    async def add_user_to_role(
        self, username: str, role_name: str, timeout: float | None = None
    ) -> ResStatus: ...

    async def remove_user_from_role(
        self, username: str, role_name: str, timeout: float | None = None
    ) -> ResStatus: ...


class SharedGrants(Protocol):
    """What other bindings want, asked at the moment of each call."""

    def serialized(self, pair: RolePair) -> AbstractAsyncContextManager[object]:
        """Held around each call on the pair's grant, and around the decision to remove it."""

    async def caught_up(self) -> None:
        """Returns once the watch events already received have reached what `sharers` reads."""

    def sharers(self, pair: RolePair) -> Sharers:
        """The other live bindings that want the pair: skip the removal, or wait for them."""

    def adding(self, pair: RolePair) -> None:
        """This binding is about to add the pair: from now on it holds it for the others."""


class NoSharing:
    """A binding alone with its grants (unit tests, or a single binding per pair)."""

    def serialized(self, pair: RolePair) -> AbstractAsyncContextManager[object]:
        return nullcontext()

    async def caught_up(self) -> None:
        return None

    def sharers(self, pair: RolePair) -> Sharers:
        return Sharers()

    def adding(self, pair: RolePair) -> None:
        return None


class UnusableConnectionError(Exception):
    """The connection a call needs cannot be used (missing object or Secret, bad Secret)."""

    def __init__(self, readiness: Readiness) -> None:
        super().__init__(readiness.message)
        self.readiness = readiness


@dataclass
class Progress:
    """Where executing a plan got to."""

    applied: RolePair | None
    answers: list[ResStatus] = field(default_factory=list)
    made: list[Call] = field(default_factory=list)  # the calls behind `answers`, in order
    kept: list[Call] = field(default_factory=list)  # removals skipped for other bindings
    # Provisional removals dropped: their connection cannot be used, so nothing was added.
    dropped: list[Call] = field(default_factory=list)
    readiness: Readiness | None = None  # set when a call failed or a connection was unusable
    outcome: Outcome | None = None

    @property
    def done(self) -> bool:
        return self.readiness is None

    @property
    def waiting(self) -> bool:
        """A removal waits for other bindings about to add the same grant."""
        return self.readiness is not None and self.readiness.reason is Reason.SHARED_GRANT_PENDING


async def execute(
    calls: list[Call],
    applied: RolePair | None,
    client_for: Callable[[ConnectionRef], Awaitable[RBACClient]],
    timeout: float | None,
    before_add: Callable[[RolePair], Awaitable[None]] | None = None,
    shared: SharedGrants | None = None,
) -> Progress:
    """Make the calls in order; stop at the first one that did not take effect.

    `applied` moves only on a yes from Milvus: forgotten after a removal (or when the pair is
    already gone, or kept for another binding), set after an add. `before_add` runs once the
    connection is known to be usable, right before the add (it records the intent). Whether
    another binding still wants a pair is decided under the pair's lock, right before removing.
    A provisional removal whose connection cannot be used is dropped, not failed.
    """
    shared = shared or NoSharing()
    progress = Progress(applied=applied)
    for call in calls:
        removing = call.operation is Operation.REMOVE_USER_FROM_ROLE
        pair = call.pair
        try:
            if removing:
                async with shared.serialized(pair):
                    await shared.caught_up()
                    others = shared.sharers(pair)
                    if others.holding:
                        progress.kept.append(replace(call, kept_for=others.holding))
                        if progress.applied == pair:
                            progress.applied = None
                        continue
                    if others.adding:
                        progress.readiness = status.removal_waits(pair, others.adding)
                        return progress
                    try:
                        client = await client_for(pair.connection)
                    except UnusableConnectionError:
                        if not call.provisional:
                            raise
                        progress.dropped.append(call)
                        continue
                    answer = await client.remove_user_from_role(
                        pair.username, pair.role_name, timeout
                    )
            else:
                client = await client_for(pair.connection)
                if before_add is not None:
                    await before_add(pair)
                async with shared.serialized(pair):
                    shared.adding(pair)
                    answer = await client.add_user_to_role(pair.username, pair.role_name, timeout)
        except UnusableConnectionError as problem:
            progress.readiness = problem.readiness
            return progress
        progress.answers.append(answer)
        progress.made.append(call)
        if removing and pair_is_gone(answer):
            if progress.applied == pair:
                progress.applied = None
        elif answer.succeeded:
            progress.applied = pair
        else:
            progress.readiness = status.readiness_from_answer(answer, pair, removing)
            progress.outcome = answer.outcome
            return progress
    return progress
