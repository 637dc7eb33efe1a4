"""Who claims which pair on which Milvus, and what drifted: derived from the live objects."""

from __future__ import annotations

from typing import Any

import pytest

from milvus_rbac_operator import inventory
from milvus_rbac_operator.inventory import BindingRecord
from milvus_rbac_operator.model import ConnectionRef, RolePair

PAIR = RolePair(ConnectionRef("milvus"), "alice", "reader")


def record(
    namespace: str,
    name: str,
    desired: RolePair | None,
    *,
    applied: RolePair | None = None,
    deleting: bool = False,
    ready: bool = True,
    observed: int = 1,
) -> BindingRecord:
    return BindingRecord(
        namespace,
        name,
        f"uid-{name}",
        1,
        desired,
        applied,
        deleting,
        ready,
        observed_generation=observed,
    )


ENDPOINTS = {
    ("team-a", "milvus"): "http://milvus.db:19530/",
    ("team-b", "prod"): "http://milvus.db:19530/",
    ("team-c", "milvus"): "http://other.db:19530/",
}


def holding(namespace: str, name: str, pair: RolePair, *, deleting: bool = False) -> BindingRecord:
    """A binding whose status shows the pair it wants as applied."""
    return record(namespace, name, pair, applied=pair, deleting=deleting)


@pytest.mark.parametrize(
    ("other", "expected"),
    [
        pytest.param(holding("team-a", "twin", PAIR), ("team-a/twin",), id="same namespace"),
        pytest.param(
            holding("team-b", "twin", RolePair(ConnectionRef("prod"), "alice", "reader")),
            ("team-b/twin",),
            id="other namespace, same Milvus",
        ),
        pytest.param(holding("team-c", "twin", PAIR), (), id="other Milvus"),
        pytest.param(holding("team-a", "twin", PAIR, deleting=True), (), id="being deleted"),
        pytest.param(
            holding("team-a", "twin", RolePair(ConnectionRef("milvus"), "alice", "writer")),
            (),
            id="other role",
        ),
        pytest.param(record("team-a", "twin", None), (), id="unreadable spec"),
        pytest.param(holding("team-a", "me", PAIR), (), id="itself"),
        pytest.param(
            record("team-a", "twin", PAIR),
            (),
            id="wants it, reconciled without adding it (connection unusable, say)",
        ),
        pytest.param(
            BindingRecord("team-a", "twin", "uid-twin", 1, PAIR, None, False, False, intent=PAIR),
            ("team-a/twin",),
            id="about to add it (intent)",
        ),
        pytest.param(
            record(
                "team-a", "twin", RolePair(ConnectionRef("milvus"), "alice", "writer"), applied=PAIR
            ),
            (),
            id="moving away from it",
        ),
    ],
)
def test_holders(other: BindingRecord, expected: tuple[str, ...]) -> None:
    found = inventory.sharers(PAIR, "team-a", "uid-me", [other], ENDPOINTS)
    assert found.holding == expected
    assert found.adding == ()


@pytest.mark.parametrize(
    "other",
    [
        pytest.param(record("team-a", "new", PAIR, ready=False, observed=0), id="just created"),
        pytest.param(
            BindingRecord(
                "team-a", "new", "uid-new", 2, PAIR, None, False, True, observed_generation=1
            ),
            id="just edited to want it",
        ),
    ],
)
def test_a_binding_about_to_add_the_pair_makes_the_removal_wait(other: BindingRecord) -> None:
    found = inventory.sharers(PAIR, "team-a", "uid-me", [other], ENDPOINTS)
    assert found == inventory.Sharers(holding=(), adding=("team-a/new",))


def test_a_binding_created_again_under_the_same_name_is_another_sharer() -> None:
    # The old one was deleted at once (a DELETE raced its finalizer) and is being released.
    again = BindingRecord("team-a", "me", "uid-me-again", 1, PAIR, PAIR, False, True)
    found = inventory.sharers(PAIR, "team-a", "uid-me", [again], ENDPOINTS)
    assert found.holding == ("team-a/me",)


def test_a_binding_this_process_is_adding_for_holds_the_pair_before_the_watch_shows_it() -> None:
    wanting = record("team-a", "twin", PAIR)
    adding = {"uid-twin": PAIR}
    found = inventory.sharers(PAIR, "team-a", "uid-me", [wanting], ENDPOINTS, adding=adding)
    assert found.holding == ("team-a/twin",)


@pytest.mark.parametrize(
    ("spec", "key"),
    [
        ({"uri": "http://Milvus.DB:19530"}, "http://milvus.db:19530/"),
        ({"uri": "http://milvus.db"}, "http://milvus.db:19530/"),
        ({"uri": "tcp://milvus.db:19530/"}, "http://milvus.db:19530/"),
        ({"uri": "https://milvus.db"}, "https://milvus.db:443/"),
        ({"uri": "http://localhost:1234", "database": "d"}, "http://127.0.0.1:1234/d"),
    ],
)
def test_endpoint_key_normalises_the_uri(spec: dict[str, Any], key: str) -> None:
    assert inventory.endpoint_key(spec) == key


def test_drifted_lists_ready_bindings_whose_grant_is_missing() -> None:
    writer = RolePair(ConnectionRef("milvus"), "bob", "writer")
    records = [
        record("ns", "present", PAIR, applied=PAIR),
        record("ns", "missing", writer, applied=writer),
        record("ns", "not-ready", writer, applied=writer, ready=False),
        record("ns", "moving", PAIR, applied=writer),
        record("ns", "deleting", writer, applied=writer, deleting=True),
    ]
    granted = {"alice": frozenset({"reader"}), "bob": frozenset()}
    assert [r.name for r in inventory.drifted(records, granted)] == ["missing"]


def test_a_binding_already_asked_to_re_add_is_not_asked_again() -> None:
    pending = BindingRecord(
        "ns", "asked", "uid", 1, PAIR, PAIR, False, True, drift_requested="t2", drift_handled="t1"
    )
    handled = BindingRecord(
        "ns", "acted", "uid", 1, PAIR, PAIR, False, True, drift_requested="t2", drift_handled="t2"
    )
    assert pending.drift_pending
    assert not handled.drift_pending
    nothing_granted: dict[str, frozenset[str]] = {}
    assert [r.name for r in inventory.drifted([pending, handled], nothing_granted)] == ["acted"]


def test_record_reads_the_drift_request_and_what_was_acted_on() -> None:
    meta = {"uid": "u", "generation": 2, "annotations": {inventory.DRIFT_ANNOTATION: "t2"}}
    spec = {"connectionRef": {"name": "milvus"}, "username": "alice", "roleName": "reader"}
    rec = inventory.binding_record("ns", "b", meta, spec, {"driftCheck": "t1"})
    assert (rec.drift_requested, rec.drift_handled, rec.drift_pending) == ("t2", "t1", True)


def test_intent_round_trips_through_the_annotation() -> None:
    annotations = {inventory.INTENT_ANNOTATION: inventory.intent_annotation(PAIR)}
    assert inventory.intent_from(annotations) == PAIR
    assert inventory.intent_from({inventory.INTENT_ANNOTATION: "{not json"}) is None
    assert inventory.intent_from(None) is None


FINALIZER = "rbac.milvus.io/finalizer"
INTENT = {inventory.INTENT_ANNOTATION: inventory.intent_annotation(PAIR)}


@pytest.mark.parametrize(
    ("meta", "status", "holds"),
    [
        ({}, {}, False),  # nothing added yet: kopf adds no finalizer of its own
        ({"annotations": INTENT, "finalizers": [FINALIZER]}, {}, True),
        ({"annotations": INTENT}, {}, True),
        ({}, {"applied": PAIR.to_status()}, True),
        # The intent stripped by hand or by a tool: the finalizer alone still holds the release.
        ({"finalizers": [FINALIZER]}, {}, True),
        ({"finalizers": ["other.example/finalizer"]}, {}, False),
    ],
)
def test_a_binding_that_may_hold_a_grant_waits_for_its_release(
    meta: dict[str, Any], status: dict[str, Any], holds: bool
) -> None:
    assert inventory.may_hold_grant(meta, status, FINALIZER) is holds


@pytest.mark.parametrize(
    ("meta", "unreleased"),
    [
        # A normal deletion: marked first, released by finalize (the last copy may still list
        # the finalizer).
        ({"finalizers": [FINALIZER], "deletionTimestamp": "2026-12-04T06:23:00Z"}, False),
        ({"deletionTimestamp": "2026-12-04T06:23:00Z"}, False),
        ({}, False),  # never claimed anything: deleted at once, nothing to remove
        # Gone at once although the finalizer was there: a DELETE raced its write.
        ({"finalizers": [FINALIZER]}, True),
        ({"finalizers": ["other.example/finalizer"]}, False),
    ],
)
def test_a_binding_gone_with_its_finalizer_and_no_deletion_mark_was_not_released(
    meta: dict[str, Any], unreleased: bool
) -> None:
    assert inventory.deleted_unreleased(meta, FINALIZER) is unreleased


def test_claimed_pairs_deduplicates_in_order() -> None:
    other = RolePair(ConnectionRef("milvus"), "bob", "reader")
    assert inventory.claimed_pairs(PAIR, PAIR) == [PAIR]
    assert inventory.claimed_pairs(PAIR, other) == [PAIR, other]
    assert inventory.claimed_pairs(None, None) == []


def test_record_from_a_binding_body() -> None:
    status = {
        "applied": PAIR.to_status(),
        "conditions": [{"type": "Ready", "status": "True", "reason": "Granted"}],
    }
    spec = {"connectionRef": {"name": "milvus"}, "username": "alice", "roleName": "reader"}
    old = RolePair(ConnectionRef("old"), "alice", "reader")
    meta = {
        "uid": "u",
        "generation": 3,
        "annotations": {inventory.INTENT_ANNOTATION: inventory.intent_annotation(old)},
    }
    rec = inventory.binding_record("ns", "b", meta, spec, status)
    assert (rec.desired, rec.applied, rec.ready, rec.deleting, rec.generation) == (
        PAIR,
        PAIR,
        True,
        False,
        3,
    )
    assert inventory.pair_keys(rec) == {("alice", "reader")}
    assert rec.intent == old
    assert inventory.connections_used(rec) == {("ns", "milvus"), ("ns", "old")}


def test_a_record_keeps_one_copy_of_the_pair_its_spec_status_and_intent_all_name() -> None:
    # Thousands of records live as long as their bindings: one pair object each, not three.
    spec = {"connectionRef": {"name": "milvus"}, "username": "alice", "roleName": "reader"}
    meta = {
        "uid": "u",
        "annotations": {inventory.INTENT_ANNOTATION: inventory.intent_annotation(PAIR)},
    }
    rec = inventory.binding_record("ns", "b", meta, spec, {"applied": PAIR.to_status()})
    assert rec.desired == PAIR
    assert rec.applied is rec.desired
    assert rec.intent is rec.desired


def live_record(name: str, pair: RolePair, namespace: str = "ns", **fields: Any) -> BindingRecord:
    return BindingRecord(namespace, name, f"uid-{name}", 1, pair, pair, False, True, **fields)


def test_live_objects_file_each_binding_under_its_pair_and_connections() -> None:
    live = inventory.LiveObjects()
    live.connection_endpoints[("ns", "milvus")] = "http://milvus.db:19530/"
    live.connection_endpoints[("other", "milvus")] = "http://milvus.db:19530/"
    live.put_binding(live_record("a", PAIR))
    live.put_binding(live_record("b", PAIR, namespace="other"))
    assert {r.name for r in live.users_of(("ns", "milvus"))} == {"a"}
    assert live.sharers(PAIR, "ns", "uid-a").holding == ("other/b",)
    assert live.readiness_counts() == {"true": 2, "false": 0, "unknown": 0}


def test_a_changed_binding_is_refiled_and_a_deleted_one_forgotten() -> None:
    live = inventory.LiveObjects()
    writer = RolePair(ConnectionRef("prod"), "alice", "writer")
    live.put_binding(live_record("a", PAIR))
    live.put_binding(live_record("a", writer))  # same uid, new spec
    assert live.users_of(("ns", "milvus")) == []
    assert [r.name for r in live.users_of(("ns", "prod"))] == ["a"]
    assert live.sharers(PAIR, "ns", "uid-other").holding == ()
    live.drop_binding("uid-a")
    assert live.users_of(("ns", "prod")) == []
    assert live.readiness_counts()["true"] == 0


def test_the_note_of_an_add_lasts_until_the_watch_shows_the_claim() -> None:
    live = inventory.LiveObjects()
    live.put_binding(record("ns", "b", PAIR))  # wants PAIR, status not written yet
    assert live.sharers(PAIR, "ns", "uid-a").holding == ()
    live.note_adding("uid-b", PAIR)
    assert live.sharers(PAIR, "ns", "uid-a").holding == ("ns/b",)
    live.put_binding(record("ns", "b", PAIR, applied=PAIR))  # the status write, seen
    assert live.sharers(PAIR, "ns", "uid-a").holding == ("ns/b",)
    live.put_binding(record("ns", "b", PAIR))  # the note is gone: only the record counts now
    assert live.sharers(PAIR, "ns", "uid-a").holding == ()


def test_the_note_of_an_add_goes_when_the_spec_moves_on_or_the_binding_goes() -> None:
    live = inventory.LiveObjects()
    writer = RolePair(ConnectionRef("milvus"), "alice", "writer")
    live.put_binding(record("ns", "b", PAIR))
    live.note_adding("uid-b", PAIR)
    live.put_binding(record("ns", "b", writer))
    live.put_binding(record("ns", "b", PAIR))  # back again, but not added for it this time
    assert live.sharers(PAIR, "ns", "uid-a").holding == ()
    live.note_adding("uid-b", PAIR)
    live.drop_binding("uid-b")
    live.put_binding(record("ns", "b", PAIR))  # the same uid seen again after a DELETED
    assert live.sharers(PAIR, "ns", "uid-a").holding == ()


def test_grant_site_names_the_milvus_however_the_connection_is_called() -> None:
    live = inventory.LiveObjects()
    live.connection_endpoints[("ns", "milvus")] = "http://milvus.db:19530/"
    live.connection_endpoints[("other", "prod")] = "http://milvus.db:19530/"
    there = RolePair(ConnectionRef("prod"), "alice", "reader")
    assert live.grant_site(PAIR, "ns") == live.grant_site(there, "other")
    assert live.grant_site(PAIR, "unknown") == ("unknown/milvus", "alice", "reader")


ADMITTED = {
    inventory.INTENT_ANNOTATION: (
        '{"by":"admission","connection":"milvus","roleName":"reader","username":"alice"}'
    )
}
GRANTED = {"applied": PAIR.to_status(), "resStatus": {"operation": "AddUserToRole", "code": 0}}


def test_the_admission_policy_writes_an_intent_the_operator_reads() -> None:
    assert inventory.intent_from(ADMITTED) == PAIR


@pytest.mark.parametrize(
    ("annotations", "status", "provisional"),
    [
        pytest.param(ADMITTED, {}, True, id="admitted, nothing done yet"),
        pytest.param(ADMITTED, {"observedGeneration": 1}, True, id="admitted, no call made"),
        pytest.param(ADMITTED, GRANTED, False, id="admitted, then granted"),
        pytest.param(
            ADMITTED,
            {"resStatus": {"operation": "AddUserToRole", "code": 65535}},
            False,
            id="admitted, then a call that failed (it may have reached Milvus)",
        ),
        pytest.param(INTENT, {}, False, id="written by the operator before its add"),
        pytest.param({}, {}, False, id="no intent"),
    ],
)
def test_an_admitted_intent_is_provisional_until_a_call_is_on_record(
    annotations: dict[str, str], status: dict[str, Any], provisional: bool
) -> None:
    assert inventory.provisional_intent(annotations, status) is provisional


def test_a_binding_with_a_provisional_intent_holds_neither_the_pair_nor_its_connection() -> None:
    spec = {"connectionRef": {"name": "milvus"}, "username": "alice", "roleName": "reader"}
    meta = {"uid": "u1", "generation": 1, "annotations": ADMITTED}
    new = inventory.binding_record("team-a", "new", meta, spec, {})
    assert new.intent == PAIR
    assert new.intent_provisional
    assert not new.claims_desired
    assert not inventory.holds_through(new, ("team-a", "milvus"))
    # Not reconciled yet: a removal of the same grant elsewhere waits for its first add.
    found = inventory.sharers(PAIR, "team-a", "uid-me", [new], ENDPOINTS)
    assert found == inventory.Sharers(holding=(), adding=("team-a/new",))

    done = inventory.binding_record("team-a", "new", meta, spec, GRANTED)
    assert not done.intent_provisional
    assert done.claims_desired
    assert inventory.holds_through(done, ("team-a", "milvus"))


OTHER = RolePair(ConnectionRef("shared", "ClusterMilvusConnection"), "bob", "admin")


@pytest.mark.parametrize(
    ("applied", "intent", "forbidden", "provisional", "expected"),
    [
        pytest.param(PAIR, OTHER, False, False, inventory.Claims([PAIR, OTHER]), id="both"),
        pytest.param(
            PAIR, OTHER, True, False, inventory.Claims([PAIR]), id="an intent the policy forbids"
        ),
        pytest.param(
            OTHER, OTHER, True, False, inventory.Claims([OTHER]), id="applied: the operator's own"
        ),
        pytest.param(
            None, PAIR, False, True, inventory.Claims([PAIR], PAIR), id="admitted, nothing done"
        ),
        pytest.param(None, OTHER, True, True, inventory.Claims([]), id="admitted, forbidden"),
        pytest.param(None, None, False, False, inventory.Claims([]), id="nothing"),
    ],
)
def test_what_a_binding_claims(
    applied: RolePair | None,
    intent: RolePair | None,
    forbidden: bool,
    provisional: bool,
    expected: inventory.Claims,
) -> None:
    assert inventory.claims(applied, intent, forbidden, provisional) == expected
