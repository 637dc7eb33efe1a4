"""kopf's settings: its bookkeeping must not see the operator's own intent annotation as a
change, and what it holds per object stays small."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator
from typing import Any

import kopf
import pytest
from kopf._cogs.clients import watching
from kopf._core.reactor import queueing

from milvus_rbac_operator import kopfconfig
from milvus_rbac_operator.inventory import INTENT_ANNOTATION
from milvus_rbac_operator.kopfconfig import (
    EssenceWithoutIntent,
    kopf_settings_for,
    watch_without_managed_fields,
)
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
    assert configured.posting.enabled is False  # the operator posts its own Events


def test_kopf_lists_in_pages_so_it_never_holds_every_binding_at_once() -> None:
    configured = kopf_settings_for(Settings())
    assert configured.watching.chunk_size == LIST_PAGE_SIZE
    assert 0 < LIST_PAGE_SIZE <= 500


def test_watched_objects_reach_kopf_without_their_managed_fields(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sent: list[Any] = [
        {"type": "ADDED", "object": {"metadata": {"name": "b", "managedFields": [{"m": 1}]}}},
        {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "7"}}},
        watching.Bookmark.LISTED,
    ]

    async def kopf_stream(**_: Any) -> AsyncIterator[Any]:
        for raw_event in sent:
            yield raw_event

    async def received() -> list[Any]:
        return [raw_event async for raw_event in watching.infinite_watch()]  # type: ignore[call-arg]

    monkeypatch.setattr(kopfconfig, "_kopf_infinite_watch", kopf_stream)
    monkeypatch.setattr(watching, "infinite_watch", watching.infinite_watch)
    watch_without_managed_fields()
    assert asyncio.run(received()) == [
        {"type": "ADDED", "object": {"metadata": {"name": "b"}}},
        {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "7"}}},
        watching.Bookmark.LISTED,
    ]


def test_kopfs_watcher_reads_the_stream_without_managed_fields(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # kopf's watcher looks the stream up on the module at each (re)connect; if a kopf upgrade
    # imported it by name instead, the wrapper would silently stop applying.
    monkeypatch.setattr(watching, "infinite_watch", watching.infinite_watch)
    watch_without_managed_fields()
    assert queueing.watching is watching
    assert "watching.infinite_watch(" in inspect.getsource(queueing.watcher)
    assert watching.infinite_watch is kopfconfig._infinite_watch_without_managed_fields
