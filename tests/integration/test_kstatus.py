"""What kstatus (sigs.k8s.io/cli-utils, as Flux uses it) makes of the operator's status.

The real library, through hack/kstatus's binary; no server: status.Compute reads the object alone.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from milvus_rbac_operator.devenv import kstatus
from tests.health_cases import CASES, READY, Case, binding

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def kstatus_binary() -> Path:
    return kstatus.ensure_binary(say=lambda line: print(f"[kstatus] {line}"))


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_kstatus_follows_the_operator_conditions(case: Case, kstatus_binary: Path) -> None:
    result = kstatus.compute(case.obj, kstatus_binary)
    assert result.status == case.kstatus
    if case.kstatus_message is not None:
        assert result.message == case.kstatus_message


def test_kstatus_reports_a_binding_without_status_as_current(kstatus_binary: Path) -> None:
    # kstatus's known gap: with no observedGeneration and no conditions it assumes the object
    # needs no controller. Flux would call a just-created binding ready before the operator ran.
    assert kstatus.compute(binding(), kstatus_binary).status == "Current"


def test_a_status_defaulted_to_observed_generation_zero_reads_as_in_progress(
    kstatus_binary: Path,
) -> None:
    # What a CRD default of status.observedGeneration: 0 would show before the first reconcile.
    result = kstatus.compute(binding({"observedGeneration": 0}), kstatus_binary)
    assert result.status == "InProgress"
    assert (
        result.message == "MilvusRoleBinding generation is 1, but latest observed generation is 0"
    )


def test_a_ready_binding_is_current_whatever_its_other_fields(kstatus_binary: Path) -> None:
    # applied, resStatus and kopf's own bookkeeping do not disturb the computation.
    state = {**READY, "kopf": {"progress": {}}}
    assert kstatus.compute(binding(state), kstatus_binary).status == "Current"


def test_the_cached_binary_is_keyed_by_the_pin(tmp_path: Path) -> None:
    module = tmp_path / "kstatus"
    shutil.copytree(kstatus.module_dir(), module)
    pinned = kstatus.binary_path(module)
    go_mod = module / "go.mod"
    version = kstatus.cli_utils_version(go_mod.read_text())
    assert pinned.parent.name.startswith(f"{version}-")
    go_mod.write_text(go_mod.read_text().replace(version, "v0.0.1"))
    bumped = kstatus.binary_path(module)
    assert bumped != pinned
    assert bumped.parent.name.startswith("v0.0.1-")


def test_a_broken_object_is_an_error_not_a_status(kstatus_binary: Path) -> None:
    obj = binding(READY)
    obj["metadata"]["generation"] = "one"
    with pytest.raises(RuntimeError, match="generation"):
        kstatus.compute(obj, kstatus_binary)
