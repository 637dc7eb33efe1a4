"""deploy/argocd/health.lua in the real Lua 5.1 interpreter, on objects built by status.py.

Argo CD runs the script with gopher-lua (Lua 5.1) and only the base and table libraries open;
the harness gives the script the same: no string library, no string methods, no io.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from milvus_rbac_operator.devenv import REPO_ROOT
from milvus_rbac_operator.devenv.controlplane import kubectl
from tests.health_cases import CASES, READY, Case, binding

ARGOCD = REPO_ROOT / "deploy" / "argocd"
SCRIPT = ARGOCD / "health.lua"
# Every kind the operator serves, from its CRDs: a new CRD without a health key fails below.
KINDS = sorted(
    doc["spec"]["names"]["kind"]
    for crd in (REPO_ROOT / "deploy" / "crds").glob("*.yaml")
    for doc in yaml.safe_load_all(crd.read_text())
    if doc and doc["spec"]["group"] == "rbac.milvus.io"
)
HEALTH_STATUSES = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}

# Runs the script as Argo CD does (a chunk whose `return` is the answer) with `obj` as its only
# input. The string metatable loses its methods: gopher-lua without the string library has none.
HARNESS = """
local env = {obj = OBJECT, table = table}
for _, name in ipairs({"assert", "error", "ipairs", "next", "pairs", "pcall", "rawequal",
    "rawget", "rawset", "select", "setmetatable", "getmetatable", "tonumber", "tostring",
    "type", "unpack", "xpcall"}) do
  env[name] = _G[name]
end
local out = io.stdout
getmetatable("").__index = nil
local chunk = assert(loadfile(SCRIPT))
setfenv(chunk, env)
local ok, hs = pcall(chunk)
if not ok then
  out:write("error\\0", tostring(hs))
  os.exit(2)
end
out:write(tostring(hs.status), "\\0", tostring(hs.message))
"""


def lua_literal(value: Any) -> str:
    """A Lua 5.1 expression for a JSON value (Lua has no JSON decoder of its own)."""
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        assert math.isfinite(value)
        return repr(value)
    if isinstance(value, str):
        return lua_string(value)
    if isinstance(value, list):
        return "{" + ", ".join(lua_literal(item) for item in value) + "}"
    if isinstance(value, dict):
        items = (f"[{lua_string(k)}] = {lua_literal(v)}" for k, v in value.items())
        return "{" + ", ".join(items) + "}"
    raise TypeError(f"not a JSON value: {value!r}")


def lua_string(text: str) -> str:
    # Decimal escapes for every byte outside printable ASCII: valid in any Lua 5.1 string.
    escaped = "".join(
        chr(b) if 32 <= b < 127 and chr(b) not in '"\\' else f"\\{b}" for b in text.encode("utf-8")
    )
    return f'"{escaped}"'


def run_health(obj: Any, script: Path = SCRIPT) -> tuple[str, str]:
    lua = shutil.which("lua5.1")
    assert lua is not None, "lua5.1 is needed (apt-get install lua5.1)"
    program = HARNESS.replace("OBJECT", lua_literal(obj)).replace("SCRIPT", lua_string(str(script)))
    result = subprocess.run(
        [lua, "-"], input=program.encode(), capture_output=True, check=False, timeout=30
    )
    assert result.returncode == 0, (result.stdout + result.stderr).decode(errors="replace")
    health, message = result.stdout.decode().split("\0", 1)
    return health, message


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_health_follows_the_operator_conditions(case: Case) -> None:
    health, message = run_health(case.obj)
    assert (health, message) == (case.argo, case.argo_message)


def test_lua_literal_round_trips_awkward_text(tmp_path: Path) -> None:
    text = 'quote " backslash \\ newline \n tab \t NUL \0 é ✓ ]] [['
    obj = binding(READY)
    obj["status"]["conditions"][0]["message"] = text
    health, message = run_health(obj)
    assert (health, message) == ("Healthy", text)


def test_a_script_using_the_string_library_fails_in_the_harness(tmp_path: Path) -> None:
    # Guards the harness: Argo CD would fail such a script, so the tests must too.
    script = tmp_path / "uses-string.lua"
    script.write_text('return {status = "Healthy", message = ("x"):upper()}\n')
    with pytest.raises(AssertionError, match="error"):
        run_health(binding(READY), script)


def test_every_answer_is_a_health_status_argo_cd_accepts() -> None:
    assert {c.argo for c in CASES} <= HEALTH_STATUSES
    assert {c.argo for c in CASES} == {"Healthy", "Progressing", "Degraded"}


def _patch() -> Any:
    return yaml.safe_load((ARGOCD / "argocd-cm-patch.yaml").read_text())


@pytest.mark.parametrize("kind", KINDS)
def test_argocd_cm_patch_embeds_the_script_for_each_kind(kind: str) -> None:
    patch = _patch()
    assert (patch["kind"], patch["metadata"]["name"]) == ("ConfigMap", "argocd-cm")
    key = f"resource.customizations.health.rbac.milvus.io_{kind}"
    assert patch["data"][key] == SCRIPT.read_text(), f"re-embed health.lua under {key}"


def test_argocd_cm_patch_has_no_key_for_an_unknown_kind() -> None:
    prefix = "resource.customizations.health.rbac.milvus.io_"
    assert sorted(key.removeprefix(prefix) for key in _patch()["data"]) == KINDS


def test_argocd_cm_patch_merges_into_an_existing_argocd_cm(tmp_path: Path) -> None:
    # kubectl's own strategic merge, offline: the settings already there are kept.
    existing = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "argocd-cm", "namespace": "argocd"},
        "data": {"url": "https://argocd.example.com", "timeout.reconciliation": "180s"},
    }
    base = tmp_path / "argocd-cm.yaml"
    base.write_text(yaml.safe_dump(existing))
    merged = json.loads(
        _kubectl(
            "patch",
            "--local",
            "-f",
            str(base),
            "--type=strategic",
            "--patch-file",
            str(ARGOCD / "argocd-cm-patch.yaml"),
            "-o",
            "json",
        )
    )
    assert merged["data"] == {**existing["data"], **_patch()["data"]}


def test_example_orders_connection_before_bindings() -> None:
    rendered = list(yaml.safe_load_all(_kubectl("kustomize", str(ARGOCD / "example"))))
    waves = {
        (doc["kind"], doc["metadata"]["name"]): doc["metadata"]["annotations"][
            "argocd.argoproj.io/sync-wave"
        ]
        for doc in rendered
    }
    assert waves[("Secret", "milvus-root")] == "-1"
    assert waves[("MilvusConnection", "milvus")] == "-1"
    bindings = {name: wave for (kind, name), wave in waves.items() if kind == "MilvusRoleBinding"}
    assert set(bindings.values()) == {"0"}
    assert sorted(bindings) == ["alice-reader", "bob-writer"]
    connections = {
        d["spec"]["connectionRef"]["name"] for d in rendered if "connectionRef" in d.get("spec", {})
    }
    assert connections == {"milvus"}


def test_example_applications_point_at_the_crds_and_the_example() -> None:
    apps = list(yaml.safe_load_all((ARGOCD / "application.yaml").read_text()))
    paths = {app["metadata"]["name"]: app["spec"]["source"]["path"] for app in apps}
    assert paths == {"milvus-rbac-operator": "deploy/crds", "milvus-rbac": "deploy/argocd/example"}
    for path in paths.values():
        assert (REPO_ROOT / path).is_dir()


def _kubectl(*args: str) -> str:
    result = subprocess.run(
        [kubectl(), *args], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_a_ready_condition_older_than_its_status_is_progressing() -> None:
    # The operator writes both in one patch; a status edited by hand may not.
    state = {**READY, "observedGeneration": 2}
    health, message = run_health(binding(state, generation=2))
    assert (health, message) == ("Progressing", "generation 2 not reconciled yet (observed 1)")
