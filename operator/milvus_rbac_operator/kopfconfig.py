"""kopf's settings: where it keeps its bookkeeping, how it batches, posts and reconnects."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import Any, cast

import kopf
from kopf._cogs.clients import watching

from milvus_rbac_operator.inventory import INTENT_ANNOTATION
from milvus_rbac_operator.kubeclient import LIST_PAGE_SIZE
from milvus_rbac_operator.settings import Settings


class EssenceWithoutIntent(kopf.StatusDiffBaseStorage):
    """What kopf compares to tell a change, minus the intent annotation (operator, admission).

    Otherwise recording the intent would look like a change to kopf, which would then spend one
    more status write per grant storing its "last handled" copy.
    """

    def build(
        self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None
    ) -> kopf.BodyEssence:
        essence = super().build(body=body, extra_fields=extra_fields)
        annotations = essence.get("metadata", {}).get("annotations", {})
        annotations.pop(INTENT_ANNOTATION, None)
        self.remove_empty_stanzas(essence)
        return essence


_kopf_infinite_watch = watching.infinite_watch


async def _infinite_watch_without_managed_fields(
    **kwargs: Any,
) -> AsyncIterator[watching.Bookmark | kopf.RawEvent]:
    async for raw_event in _kopf_infinite_watch(**kwargs):
        if isinstance(raw_event, dict):
            raw_object = cast(dict[str, Any], raw_event.get("object", {}))
            raw_object.get("metadata", {}).pop("managedFields", None)
        yield raw_event


def watch_without_managed_fields() -> None:
    """Drop `metadata.managedFields` from every object kopf watches, as each event arrives.

    kopf keeps the body of every event until the object's worker has handled it: after a burst of
    thousands of bindings, that is thousands of bodies, and managedFields are most of each one.
    Nothing in the operator or in kopf reads them, and no patch ever sends them back. kopf has no
    public hook here, so this wraps the stream its watcher reads (kopf is pinned in the lock).
    """
    watching.infinite_watch = _infinite_watch_without_managed_fields


def kopf_settings_for(settings: Settings) -> kopf.OperatorSettings:
    """kopf's knobs, chosen deliberately (see README, "Performance")."""
    kopf_settings = kopf.OperatorSettings()
    kopf_settings.persistence.finalizer = settings.finalizer
    # Progress and the last-handled spec live in status.kopf, not in annotations: one status
    # write carries the outcome and kopf's bookkeeping together.
    kopf_settings.persistence.progress_storage = kopf.StatusProgressStorage(
        field="status.kopf.progress"
    )
    kopf_settings.persistence.diffbase_storage = EssenceWithoutIntent(
        field="status.kopf.lastHandledConfiguration"
    )
    # kopf posts no Events: not its log lines, and the operator posts its own (one per Milvus
    # call) through kubeclient.EventPoster, behind the status writes.
    kopf_settings.posting.enabled = False
    kopf_settings.posting.loggers = False
    # Reconnect quickly when the API server restarts or drops the watch.
    kopf_settings.watching.server_timeout = 300
    kopf_settings.watching.client_timeout = 330
    kopf_settings.watching.connect_timeout = 10
    kopf_settings.networking.error_backoffs = [1, 2, 4, 8]
    # kopf LISTs again at every watch reconnect and keeps the last page it parsed until the next
    # one: unpaged, that is every binding twice over (about 11 KB each as Python objects).
    kopf_settings.watching.chunk_size = LIST_PAGE_SIZE
    # After patching, kopf ignores older events until its own patch comes back, for this long
    # (default 5 s). At thousands of bindings the watch lags more than that, and kopf would
    # reconcile some bindings twice from the stale copy.
    kopf_settings.persistence.consistency_timeout = 30.0
    # On SIGTERM, calls in flight finish and write their status (kopf's default is 2 s).
    kopf_settings.queueing.exit_timeout = settings.shutdown_grace_seconds
    return kopf_settings
