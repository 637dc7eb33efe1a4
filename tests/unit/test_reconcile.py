"""The planner and the executor: which calls, in which order, and what `applied` becomes."""

from __future__ import annotations

import asyncio
import contextlib
from contextlib import AbstractAsyncContextManager

import pytest

from milvus_rbac_operator import reconcile
from milvus_rbac_operator.inventory import BindingRecord, LiveObjects, Sharers
from milvus_rbac_operator.model import (
    ConnectionRef,
    Operation,
    Outcome,
    ResStatus,
    RolePair,
    utcnow,
)
from milvus_rbac_operator.reconcile import Call, UnusableConnectionError
from milvus_rbac_operator.sharing import LiveSharing, PairLocks
from milvus_rbac_operator.status import Readiness, Reason

ADD, REMOVE = Operation.ADD_USER_TO_ROLE, Operation.REMOVE_USER_FROM_ROLE
PROTECTED = frozenset({"root"})
ALICE_READER = RolePair(ConnectionRef("milvus"), "alice", "reader")
ALICE_WRITER = RolePair(ConnectionRef("milvus"), "alice", "writer")
BOB_READER = RolePair(ConnectionRef("milvus"), "bob", "reader")
ALICE_READER_ELSEWHERE = RolePair(ConnectionRef("other"), "alice", "reader")


@pytest.mark.parametrize(
    ("desired", "applied", "expected"),
    [
        pytest.param(ALICE_READER, None, [Call(ADD, ALICE_READER)], id="new binding adds"),
        pytest.param(
            ALICE_READER,
            ALICE_READER,
            [Call(ADD, ALICE_READER)],
            id="unchanged binding confirms the grant",
        ),
        pytest.param(
            ALICE_WRITER,
            ALICE_READER,
            [Call(REMOVE, ALICE_READER), Call(ADD, ALICE_WRITER)],
            id="role change removes the old grant first",
        ),
        pytest.param(
            BOB_READER,
            ALICE_READER,
            [Call(REMOVE, ALICE_READER), Call(ADD, BOB_READER)],
            id="username change removes the old grant first",
        ),
        pytest.param(
            ALICE_READER_ELSEWHERE,
            ALICE_READER,
            [Call(REMOVE, ALICE_READER), Call(ADD, ALICE_READER_ELSEWHERE)],
            id="connection change removes through the old connection",
        ),
        pytest.param(
            ALICE_READER,
            RolePair(ConnectionRef("milvus"), "root", "admin"),
            [Call(ADD, ALICE_READER)],
            id="a protected applied user is never removed",
        ),
    ],
)
def test_plan_reconcile(desired: RolePair, applied: RolePair | None, expected: list[Call]) -> None:
    claimed = [applied] if applied else []
    assert reconcile.plan_reconcile(desired, claimed, PROTECTED) == expected


@pytest.mark.parametrize(
    ("applied", "policy", "expected"),
    [
        pytest.param(ALICE_READER, "Delete", [Call(REMOVE, ALICE_READER)], id="delete removes"),
        pytest.param(ALICE_READER, "Orphan", [], id="orphan leaves the grant"),
        pytest.param(None, "Delete", [], id="nothing applied, nothing to remove"),
        pytest.param(
            RolePair(ConnectionRef("milvus"), "root", "admin"),
            "Delete",
            [],
            id="root is never revoked",
        ),
    ],
)
def test_plan_release(applied: RolePair | None, policy: str, expected: list[Call]) -> None:
    claimed = [applied] if applied else []
    assert reconcile.plan_release(claimed, policy, PROTECTED) == expected


def test_binding_for_root_is_refused() -> None:
    refused = reconcile.refusal(RolePair(ConnectionRef("milvus"), "root", "reader"), PROTECTED)
    assert refused is not None
    assert refused.reason is Reason.PROTECTED_USER
    assert "root" in refused.message


def test_binding_for_ordinary_user_is_not_refused() -> None:
    assert reconcile.refusal(ALICE_READER, PROTECTED) is None


@pytest.mark.parametrize(
    ("outcome", "retry", "expected"),
    [
        (Outcome.UNAVAILABLE, 0, 1.0),
        (Outcome.UNAVAILABLE, 3, 8.0),
        (Outcome.TIMEOUT, 10, 60.0),  # capped
        (Outcome.RATE_LIMITED, 1, 2.0),
        (Outcome.USER_NOT_FOUND, 0, 30.0),  # waits for a person, at the slow pace
        (Outcome.ROLE_NOT_FOUND, 9, 30.0),
        (Outcome.UNAUTHENTICATED, 0, 30.0),
        (None, 0, 30.0),  # no call made: connection or Secret missing
    ],
)
def test_retry_delay(outcome: Outcome | None, retry: int, expected: float) -> None:
    assert reconcile.retry_delay(outcome, retry, initial=1, maximum=60, slow=30) == expected


def answer(operation: Operation, pair: RolePair, outcome: Outcome) -> ResStatus:
    ok = outcome is Outcome.SUCCESS
    return ResStatus(
        operation,
        pair.username,
        pair.role_name,
        0 if ok else 65535,
        "Success" if ok else "UnexpectedError",
        "" if ok else outcome.value,
        outcome,
        utcnow(),
    )


class ScriptedMilvus:
    """Answers each call with the next scripted outcome and records what was asked."""

    def __init__(
        self, connection: str, outcomes: list[Outcome], log: list[tuple[str, Call]]
    ) -> None:
        self.connection, self.outcomes, self.log = connection, outcomes, log

    async def _answer(self, operation: Operation, username: str, role: str) -> ResStatus:
        pair = RolePair(ConnectionRef(self.connection), username, role)
        self.log.append((self.connection, Call(operation, pair)))
        return answer(operation, pair, self.outcomes.pop(0))

    async def add_user_to_role(
        self, username: str, role_name: str, timeout: float | None = None
    ) -> ResStatus:
        return await self._answer(ADD, username, role_name)

    async def remove_user_from_role(
        self, username: str, role_name: str, timeout: float | None = None
    ) -> ResStatus:
        return await self._answer(REMOVE, username, role_name)


def run_plan(
    calls: list[Call],
    applied: RolePair | None,
    outcomes: list[Outcome],
    missing_connections: frozenset[str] = frozenset(),
    shared: reconcile.SharedGrants | None = None,
) -> tuple[reconcile.Progress, list[tuple[str, Call]]]:
    log: list[tuple[str, Call]] = []

    async def client_for(connection: ConnectionRef) -> ScriptedMilvus:
        if connection.name in missing_connections:
            raise UnusableConnectionError(
                Readiness(
                    False, Reason.CONNECTION_NOT_FOUND, f"MilvusConnection {connection} not found"
                )
            )
        return ScriptedMilvus(connection.name, outcomes, log)

    progress = asyncio.run(
        reconcile.execute(calls, applied, client_for, timeout=None, shared=shared)
    )
    return progress, log


def test_changing_role_removes_old_grant_first() -> None:
    calls = reconcile.plan_reconcile(ALICE_WRITER, [ALICE_READER], PROTECTED)
    progress, log = run_plan(calls, ALICE_READER, [Outcome.SUCCESS, Outcome.SUCCESS])
    assert [call for _, call in log] == [Call(REMOVE, ALICE_READER), Call(ADD, ALICE_WRITER)]
    assert progress.done
    assert progress.applied == ALICE_WRITER


def test_applied_is_recorded_only_after_milvus_said_yes() -> None:
    progress, _ = run_plan([Call(ADD, ALICE_READER)], None, [Outcome.USER_NOT_FOUND])
    assert progress.applied is None
    assert not progress.done
    assert progress.readiness is not None
    assert progress.readiness.reason is Reason.USER_NOT_FOUND
    assert progress.outcome is Outcome.USER_NOT_FOUND


def test_failed_removal_keeps_the_applied_pair_and_skips_the_add() -> None:
    calls = reconcile.plan_reconcile(ALICE_WRITER, [ALICE_READER], PROTECTED)
    progress, log = run_plan(calls, ALICE_READER, [Outcome.UNAVAILABLE])
    assert [call for _, call in log] == [Call(REMOVE, ALICE_READER)]
    assert progress.applied == ALICE_READER  # still to be removed on the next try
    assert progress.readiness is not None
    assert progress.readiness.reason is Reason.MILVUS_UNAVAILABLE
    assert "remove" in progress.readiness.message


@pytest.mark.parametrize("gone", [Outcome.USER_NOT_FOUND, Outcome.ROLE_NOT_FOUND])
def test_removal_of_a_pair_whose_user_or_role_is_gone_counts_as_removed(gone: Outcome) -> None:
    calls = reconcile.plan_reconcile(ALICE_WRITER, [ALICE_READER], PROTECTED)
    progress, _ = run_plan(calls, ALICE_READER, [gone, Outcome.SUCCESS])
    assert progress.done
    assert progress.applied == ALICE_WRITER


def test_release_of_a_dropped_user_completes() -> None:
    progress, _ = run_plan([Call(REMOVE, ALICE_READER)], ALICE_READER, [Outcome.USER_NOT_FOUND])
    assert progress.done
    assert progress.applied is None


def test_unusable_connection_stops_before_any_call() -> None:
    progress, log = run_plan(
        [Call(ADD, ALICE_READER)], None, [], missing_connections=frozenset({"milvus"})
    )
    assert log == []
    assert progress.readiness is not None
    assert progress.readiness.reason is Reason.CONNECTION_NOT_FOUND
    assert progress.outcome is None


def test_removal_goes_through_the_old_connection() -> None:
    calls = reconcile.plan_reconcile(ALICE_READER_ELSEWHERE, [ALICE_READER], PROTECTED)
    _, log = run_plan(calls, ALICE_READER, [Outcome.SUCCESS, Outcome.SUCCESS])
    assert [connection for connection, _ in log] == ["milvus", "other"]


def test_unconfirmed_intent_is_removed_too_when_the_spec_moved_on() -> None:
    """A crash after Milvus said yes but before status was written leaves only the intent."""
    calls = reconcile.plan_reconcile(ALICE_WRITER, [ALICE_READER, BOB_READER], PROTECTED)
    assert calls == [Call(REMOVE, ALICE_READER), Call(REMOVE, BOB_READER), Call(ADD, ALICE_WRITER)]


def test_release_removes_applied_and_intent() -> None:
    calls = reconcile.plan_release([ALICE_READER, ALICE_WRITER], "Delete", PROTECTED)
    assert calls == [Call(REMOVE, ALICE_READER), Call(REMOVE, ALICE_WRITER)]


class WantedBy:
    """SharedGrants where fixed bindings hold some pairs, or are about to add them."""

    def __init__(
        self,
        holders: dict[RolePair, tuple[str, ...]],
        adding: dict[RolePair, tuple[str, ...]] | None = None,
    ) -> None:
        self.holders, self.about_to_add = holders, adding or {}

    def serialized(self, pair: RolePair) -> AbstractAsyncContextManager[object]:
        return contextlib.nullcontext()

    async def caught_up(self) -> None:
        pass

    def sharers(self, pair: RolePair) -> Sharers:
        return Sharers(self.holders.get(pair, ()), self.about_to_add.get(pair, ()))

    def adding(self, pair: RolePair) -> None:
        pass


def test_removal_still_wanted_elsewhere_is_skipped_and_forgotten() -> None:
    shared = WantedBy({ALICE_READER: ("team-b/alice-reader",)})
    calls = reconcile.plan_reconcile(ALICE_WRITER, [ALICE_READER], PROTECTED)
    progress, log = run_plan(calls, ALICE_READER, [Outcome.SUCCESS], shared=shared)
    assert [call for _, call in log] == [Call(ADD, ALICE_WRITER)]  # no RemoveUserFromRole made
    assert progress.kept == [Call(REMOVE, ALICE_READER, ("team-b/alice-reader",))]
    assert progress.applied == ALICE_WRITER


def test_a_removal_waits_for_a_binding_about_to_add_the_same_grant() -> None:
    shared = WantedBy({}, adding={ALICE_READER: ("team-b/new",)})
    calls = reconcile.plan_release([ALICE_READER], "Delete", PROTECTED)
    progress, log = run_plan(calls, ALICE_READER, [], shared=shared)
    assert log == []  # neither removed now (a gap) nor skipped (it may never add it)
    assert progress.waiting
    assert progress.applied == ALICE_READER
    assert progress.readiness is not None
    assert progress.readiness.reason is Reason.SHARED_GRANT_PENDING
    assert "waits for team-b/new" in progress.readiness.message
    assert reconcile.retry_delay(None, 7, 1, 60, 30, waiting=True) == 0.5


def test_a_kept_removal_needs_no_usable_connection() -> None:
    shared = WantedBy({ALICE_READER: ("team-b/alice-reader",)})
    calls = reconcile.plan_release([ALICE_READER], "Delete", PROTECTED)
    progress, log = run_plan(
        calls, ALICE_READER, [], missing_connections=frozenset({"milvus"}), shared=shared
    )
    assert log == []
    assert progress.done
    assert progress.applied is None


class GatedMilvus:
    """One Milvus holding real grants, whose answers wait until the test opens a gate.

    Calls that overlap could land in either order on a real Milvus: `most_at_once` counts them.
    """

    def __init__(self) -> None:
        self.grants: set[tuple[str, str]] = set()
        self.calls: list[tuple[Operation, str]] = []
        self.gate, self.called = asyncio.Event(), asyncio.Event()
        self.at_once = self.most_at_once = 0

    async def _call(self, operation: Operation, username: str, role_name: str) -> ResStatus:
        self.calls.append((operation, username))
        self.called.set()
        self.at_once += 1
        self.most_at_once = max(self.most_at_once, self.at_once)
        await self.gate.wait()
        await asyncio.sleep(0)  # let any other call that is in flight arrive meanwhile
        self.at_once -= 1
        if operation is ADD:
            self.grants.add((username, role_name))
        else:
            self.grants.discard((username, role_name))
        pair = RolePair(ConnectionRef("milvus"), username, role_name)
        return answer(operation, pair, Outcome.SUCCESS)

    async def add_user_to_role(
        self, username: str, role_name: str, timeout: float | None = None
    ) -> ResStatus:
        return await self._call(ADD, username, role_name)

    async def remove_user_from_role(
        self, username: str, role_name: str, timeout: float | None = None
    ) -> ResStatus:
        return await self._call(REMOVE, username, role_name)


def shared_pair_race(add_first: bool) -> tuple[GatedMilvus, reconcile.Progress]:
    """`leaving` (applied ALICE_READER) is deleted while `arriving`, newly created with the same
    pair, adds it. The watch has not shown `arriving`'s intent or status (its own worker is busy
    adding), and when the removal goes first not even `arriving` itself: only the pair's lock and
    the note of the add stand between them."""
    live = LiveObjects()
    live.connection_endpoints[("ns", "milvus")] = "http://milvus.db:19530/"
    live.put_binding(
        BindingRecord("ns", "leaving", "u1", 1, ALICE_READER, ALICE_READER, True, True)
    )
    arriving_record = BindingRecord("ns", "arriving", "u2", 1, ALICE_READER, None, False, False)
    locks, milvus = PairLocks(), GatedMilvus()
    milvus.grants.add(("alice", "reader"))

    async def client_for(connection: ConnectionRef) -> GatedMilvus:
        return milvus

    async def race() -> reconcile.Progress:
        arriving = reconcile.execute(
            [Call(ADD, ALICE_READER)],
            None,
            client_for,
            None,
            shared=LiveSharing(locks, live, "ns", "u2"),
        )
        leaving = reconcile.execute(
            reconcile.plan_release([ALICE_READER], "Delete", PROTECTED),
            ALICE_READER,
            client_for,
            None,
            shared=LiveSharing(locks, live, "ns", "u1"),
        )
        first, second = (arriving, leaving) if add_first else (leaving, arriving)
        if add_first:
            live.put_binding(arriving_record)  # its worker tracks it, then adds
        first_task = asyncio.create_task(first)
        await milvus.called.wait()  # the first call is made and waits for Milvus, lock held
        if not add_first:
            live.put_binding(arriving_record)
        second_task = asyncio.create_task(second)
        await asyncio.sleep(0)
        milvus.gate.set()
        results = await asyncio.gather(first_task, second_task)
        assert len(locks) == 0  # no lock outlives its calls
        return results[1] if add_first else results[0]

    return milvus, asyncio.run(race())


def test_a_removal_waits_for_an_add_of_the_same_pair_and_then_keeps_it() -> None:
    milvus, leaving = shared_pair_race(add_first=True)
    assert milvus.calls == [(ADD, "alice")]  # no RemoveUserFromRole after the add
    assert milvus.most_at_once == 1
    assert leaving.kept == [Call(REMOVE, ALICE_READER, ("ns/arriving",))]
    assert milvus.grants == {("alice", "reader")}


def test_an_add_waits_for_a_removal_of_the_same_pair_in_flight() -> None:
    milvus, leaving = shared_pair_race(add_first=False)
    assert milvus.calls == [(REMOVE, "alice"), (ADD, "alice")]  # the add lands last
    assert milvus.most_at_once == 1  # never both in flight, whatever order Milvus would pick
    assert leaving.kept == []
    assert milvus.grants == {("alice", "reader")}


def test_a_removal_sees_a_binding_whose_event_reaches_the_live_view_a_few_cycles_later() -> None:
    """A rename: the new binding's event was received first, but its worker starts later."""
    live = LiveObjects()
    live.put_binding(BindingRecord("ns", "old", "u1", 1, ALICE_READER, ALICE_READER, True, True))
    milvus = GatedMilvus()
    milvus.gate.set()

    async def client_for(connection: ConnectionRef) -> GatedMilvus:
        return milvus

    async def new_binding_worker() -> None:
        for _ in range(3):  # the scheduler, the task start, the queue
            await asyncio.sleep(0)
        live.put_binding(BindingRecord("ns", "new", "u2", 1, ALICE_READER, None, False, False))

    async def rename() -> reconcile.Progress:
        worker = asyncio.create_task(new_binding_worker())
        progress = await reconcile.execute(
            reconcile.plan_release([ALICE_READER], "Delete", PROTECTED),
            ALICE_READER,
            client_for,
            None,
            shared=LiveSharing(PairLocks(), live, "ns", "u1"),
        )
        await worker
        return progress

    progress = asyncio.run(rename())
    assert milvus.calls == []
    assert progress.waiting
    assert progress.readiness is not None
    assert "waits for ns/new" in progress.readiness.message


def test_calls_on_different_grants_do_not_wait_for_each_other() -> None:
    locks = PairLocks()

    async def both() -> None:
        async with locks.hold(("m", "alice", "reader")):
            await asyncio.wait_for(_enter(locks, ("m", "bob", "reader")), timeout=1)

    asyncio.run(both())
    assert len(locks) == 0


async def _enter(locks: PairLocks, site: tuple[str, str, str]) -> None:
    async with locks.hold(site):
        pass


def test_intent_is_recorded_right_before_the_add_and_only_then() -> None:
    recorded: list[RolePair] = []
    log: list[tuple[str, Call]] = []

    async def client_for(connection: str) -> ScriptedMilvus:
        return ScriptedMilvus(connection, [Outcome.SUCCESS, Outcome.SUCCESS], log)

    async def before_add(pair: RolePair) -> None:
        recorded.append(pair)
        assert [call.operation for _, call in log] == [REMOVE]  # after the removal, before add

    calls = reconcile.plan_reconcile(ALICE_WRITER, [ALICE_READER], PROTECTED)
    asyncio.run(reconcile.execute(calls, ALICE_READER, client_for, None, before_add))
    assert recorded == [ALICE_WRITER]


def test_no_intent_is_recorded_when_the_connection_is_unusable() -> None:
    recorded: list[RolePair] = []

    async def client_for(connection: str) -> ScriptedMilvus:
        raise UnusableConnectionError(Readiness(False, Reason.SECRET_NOT_FOUND, "gone"))

    async def before_add(pair: RolePair) -> None:
        recorded.append(pair)

    asyncio.run(reconcile.execute([Call(ADD, ALICE_READER)], None, client_for, None, before_add))
    assert recorded == []


@pytest.mark.parametrize(
    ("claimed", "ready", "observed", "expected"),
    [
        pytest.param([ALICE_READER], True, 2, True, id="granted for this generation"),
        pytest.param([ALICE_READER], True, 1, False, id="spec changed while down"),
        pytest.param([ALICE_READER], False, 2, False, id="not ready"),
        pytest.param([ALICE_WRITER, ALICE_READER], True, 2, False, id="an older pair claimed"),
        pytest.param([], True, 2, False, id="nothing applied"),
    ],
)
def test_a_resume_trusts_status_only_when_it_shows_this_spec_granted(
    claimed: list[RolePair], ready: bool, observed: int, expected: bool
) -> None:
    assert reconcile.already_in_place(ALICE_READER, claimed, ready, observed, 2) is expected


def test_a_removal_stops_waiting_for_a_binding_that_never_gets_reconciled() -> None:
    live = LiveObjects()
    live.put_binding(BindingRecord("ns", "stuck", "u2", 1, ALICE_READER, None, False, False))
    patient = LiveSharing(PairLocks(), live, "ns", "u1", retry=0)
    exhausted = LiveSharing(PairLocks(), live, "ns", "u1", retry=reconcile.SHARED_GRANT_MAX_WAITS)
    assert patient.sharers(ALICE_READER) == Sharers(adding=("ns/stuck",))
    assert exhausted.sharers(ALICE_READER) == Sharers()
    assert reconcile.SHARED_GRANT_MAX_WAITS * reconcile.SHARED_GRANT_WAIT_SECONDS <= 30


def test_the_admission_intent_of_a_binding_whose_connection_never_existed_is_dropped() -> None:
    """Deleting a binding that names no usable connection: no call was ever possible."""
    calls = reconcile.plan_release([ALICE_READER], "Delete", PROTECTED, provisional=ALICE_READER)
    assert calls == [Call(REMOVE, ALICE_READER, provisional=True)]
    progress, log = run_plan(calls, None, [], missing_connections=frozenset({"milvus"}))
    assert log == []
    assert progress.done
    assert progress.dropped == calls


def test_a_recorded_claim_through_an_unusable_connection_still_holds_the_release() -> None:
    calls = reconcile.plan_release([ALICE_READER], "Delete", PROTECTED)
    progress, log = run_plan(calls, ALICE_READER, [], missing_connections=frozenset({"milvus"}))
    assert log == []
    assert not progress.done
    assert progress.readiness is not None
    assert progress.readiness.reason is Reason.CONNECTION_NOT_FOUND
    assert progress.dropped == []


def test_the_admission_intent_is_removed_when_its_connection_can_be_used() -> None:
    """Created and deleted before its first reconcile: the operator may have added it."""
    calls = reconcile.plan_release([ALICE_READER], "Delete", PROTECTED, provisional=ALICE_READER)
    progress, log = run_plan(calls, None, [Outcome.SUCCESS])
    assert [call for _, call in log] == [Call(REMOVE, ALICE_READER)]
    assert progress.done
    assert progress.dropped == []


def test_a_spec_changed_before_the_first_add_goes_on_past_an_unusable_old_connection() -> None:
    calls = reconcile.plan_reconcile(
        ALICE_READER_ELSEWHERE, [ALICE_READER], PROTECTED, provisional=ALICE_READER
    )
    assert calls == [
        Call(REMOVE, ALICE_READER, provisional=True),
        Call(ADD, ALICE_READER_ELSEWHERE),
    ]
    progress, log = run_plan(
        calls, None, [Outcome.SUCCESS], missing_connections=frozenset({"milvus"})
    )
    assert [call for _, call in log] == [Call(ADD, ALICE_READER_ELSEWHERE)]
    assert progress.applied == ALICE_READER_ELSEWHERE


def test_only_the_provisional_pair_is_marked() -> None:
    calls = reconcile.plan_reconcile(
        ALICE_WRITER, [ALICE_READER, BOB_READER], PROTECTED, provisional=BOB_READER
    )
    assert [call.provisional for call in calls] == [False, True, False]
