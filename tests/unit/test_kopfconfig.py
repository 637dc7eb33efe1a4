"""kopf's bookkeeping must not see the operator's own intent annotation as a change."""

from __future__ import annotations

import kopf

from milvus_rbac_operator.inventory import INTENT_ANNOTATION
from milvus_rbac_operator.kopfconfig import EssenceWithoutIntent, kopf_settings_for
from milvus_rbac_operator.kubeclient import LIST_PAGE_SIZE
from milvus_rbac_operator.settings import Settings


def body(annotations: dict[str, str]) -> kopf.Body:
    raw = {
        "apiVersion": "rbac.milvus.io/v1alpha1",
        "kind": "MilvusRoleBinding",
        "metadata": {"name": "b", "annotations": annotations},
        "spec": {"username": "alice", "roleName": "reader"},
    }
    return kopf.Body(raw)  # type: ignore[arg-type]


def test_recording_the_intent_leaves_the_essence_unchanged() -> None:
    storage = EssenceWithoutIntent(field="status.kopf.lastHandledConfiguration")
    before = storage.build(body=body({}))
    after = storage.build(body=body({INTENT_ANNOTATION: '{"connection":"milvus"}'}))
    assert before == after == {"spec": {"username": "alice", "roleName": "reader"}}


def test_other_annotations_are_still_a_change() -> None:
    storage = EssenceWithoutIntent(field="status.kopf.lastHandledConfiguration")
    essence = storage.build(
        body=body({INTENT_ANNOTATION: "{}", "rbac.milvus.io/policy-check": "d"})
    )
    assert essence["metadata"]["annotations"] == {"rbac.milvus.io/policy-check": "d"}


def test_operator_settings_keep_bookkeeping_in_status_and_wait_for_calls_in_flight() -> None:
    configured = kopf_settings_for(Settings(shutdown_grace_seconds=7))
    assert isinstance(configured.persistence.diffbase_storage, EssenceWithoutIntent)
    assert isinstance(configured.persistence.progress_storage, kopf.StatusProgressStorage)
    assert configured.queueing.exit_timeout == 7
    assert configured.posting.loggers is False


def test_kopf_lists_in_pages_so_it_never_holds_every_binding_at_once() -> None:
    configured = kopf_settings_for(Settings())
    assert configured.watching.chunk_size == LIST_PAGE_SIZE
    assert 0 < LIST_PAGE_SIZE <= 500
