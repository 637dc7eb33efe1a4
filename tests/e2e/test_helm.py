"""The Helm chart: linted, rendered over a matrix of values, and installed with a real helm.

helm is built from the pinned Go module in hack/helm. Rendered manifests pass a server-side
dry-run against a real kube-apiserver; install, upgrade and uninstall run against a control
plane of their own, so that the chart owns the CRDs there (the session's cluster has them from
kubectl, which Helm refuses to adopt). There is no kubelet: pods never run, so the tests check
the objects, what the chart's ServiceAccount may do, and the operator itself run as a process
with the Deployment's environment under that ServiceAccount's token.
"""

from __future__ import annotations

import copy
import itertools
import json
import shutil
import subprocess
import sys
import tomllib
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from pymilvus import MilvusClient

from milvus_rbac_operator.devenv import REPO_ROOT, install_crds, processes
from milvus_rbac_operator.devenv.controlplane import ControlPlane
from milvus_rbac_operator.devenv.helm import ensure_binary, run_helm
from milvus_rbac_operator.devenv.milvus_server import ROOT_PASSWORD, ROOT_USERNAME, EmbeddedMilvus
from milvus_rbac_operator.devenv.monitoring_crds import ensure_servicemonitor_crd
from tests.conftest import roles_of
from tests.e2e.conftest import (
    Cluster,
    OperatorProcess,
    binding,
    connection,
    dump,
    eventually,
    secret,
    wait_reason,
)

# A first run builds helm (about 5 minutes on 2 cores) in the first test that needs it, unless
# `python -m milvus_rbac_operator.devenv prepare` already did.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

CHART = REPO_ROOT / "deploy" / "helm" / "milvus-rbac-operator"
CRDS = REPO_ROOT / "deploy" / "crds"
ADMISSION = REPO_ROOT / "deploy" / "admission"
# What a 1.36+ cluster serves and `helm template` does not assume: the admission policy renders.
SERVES_ADMISSION_POLICIES = "--api-versions=admissionregistration.k8s.io/v1/MutatingAdmissionPolicy"
RBAC = REPO_ROOT / "deploy" / "rbac"
RELEASE, RELEASE_NAMESPACE = "mrbo", "mrbo-system"
FULLNAME = f"{RELEASE}-milvus-rbac-operator"
WATCHED = ("team-a", "team-b")
UNWATCHED = "team-c"
SHIPPED = "milvus-rbac-operator"  # the name deploy/rbac gives every object
# The annotation and labels the chart adds to each CRD; everything else equals deploy/crds.
KEEP = "helm.sh/resource-policy"
CHART_LABELS = (
    "helm.sh/chart",
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/part-of",
)
Manifest = dict[str, Any]

# Every case must lint, render and pass the API server's dry-run.
MATRIX: dict[str, dict[str, Any]] = {
    "defaults": {},
    "watch-namespaces": {"watchNamespaces": list(WATCHED)},
    "replicas-3": {"replicas": 3},
    "servicemonitor-and-pdb": {
        "replicas": 2,
        "serviceMonitor": {"enabled": True, "interval": "1m", "labels": {"release": "prom"}},
        "podDisruptionBudget": {"enabled": True, "maxUnavailable": 1},
    },
    "no-crds": {"crds": {"install": False}},
    "bring-your-own-identity": {
        "serviceAccount": {"create": False, "name": "platform-operator"},
        "rbac": {"create": False},
    },
    "extra-env": {
        "extraEnv": [
            {"name": "MRBO_RETRY_MAX_SECONDS", "value": "30"},
            {"name": "MRBO_LOG_LEVEL", "value": "DEBUG"},
            {
                "name": "MRBO_TIMEOUT_SECONDS",
                "valueFrom": {"configMapKeyRef": {"name": "mrbo", "key": "timeout"}},
            },
        ]
    },
    "everything-set": {
        "image": {"repository": "registry.example/mrbo", "digest": "sha256:" + "a" * 64},
        "imagePullSecrets": [{"name": "pull"}],
        "leaderElection": {"enabled": True},
        "allowedHosts": ["milvus.db.svc.cluster.local:19530", "*.milvus.svc"],
        "protectedUsers": ["admin", "svc_backup"],
        "driftIntervalSeconds": 600,
        "logLevel": "WARNING",
        "logFormat": "plain",
        "serviceAccount": {"annotations": {"example.com/role": "mrbo"}},
        "terminationGracePeriodSeconds": 60,
        "resources": {"requests": {"cpu": "100m", "memory": "200Mi"}, "limits": {"cpu": 1}},
        "podAnnotations": {"example.com/scrape": "true"},
        "podLabels": {"team": "platform"},
        "priorityClassName": "system-cluster-critical",
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ops"}],
        "affinity": {
            "podAntiAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "weight": 100,
                        "podAffinityTerm": {
                            "topologyKey": "kubernetes.io/hostname",
                            "labelSelector": {"matchLabels": {"app": "x"}},
                        },
                    }
                ]
            }
        },
        "service": {"port": 9090, "annotations": {"example.com/team": "platform"}},
        "podDisruptionBudget": {"enabled": True, "minAvailable": "50%"},
    },
}

# Each must be refused by values.schema.json (or the chart) before anything is rendered.
INVALID: dict[str, tuple[dict[str, Any], str]] = {
    "typo-top-level": ({"replica": 2}, "additional properties 'replica' not allowed"),
    "typo-nested": ({"image": {"tga": "1.0"}}, "additional properties 'tga' not allowed"),
    "typo-in-servicemonitor": (
        {"serviceMonitor": {"enable": True}},
        "additional properties 'enable' not allowed",
    ),
    "replicas-as-string": ({"replicas": "3"}, "got string, want integer"),
    "watch-namespaces-as-string": ({"watchNamespaces": "team-a"}, "got string, want array"),
    "invalid-namespace-name": ({"watchNamespaces": ["Team_A"]}, "does not match pattern"),
    "log-format-unknown": ({"logFormat": "xml"}, "value must be one of"),
    "crds-install-as-string": ({"crds": {"install": "yes"}}, "got string, want boolean"),
    "extra-env-without-name": ({"extraEnv": [{"value": "1"}]}, "missing property 'name'"),
    "grace-below-the-operator-shutdown": (
        {"terminationGracePeriodSeconds": 5},
        "minimum",
    ),
    "pdb-min-and-max": (
        {"podDisruptionBudget": {"enabled": True, "minAvailable": 1, "maxUnavailable": 1}},
        "at '/podDisruptionBudget': 'not' failed",
    ),
    "watch-namespaces-repeated": (
        {"watchNamespaces": ["team-a", "team-a"]},
        "items at 0 and 1 are equal",
    ),
}


@dataclass
class Helm:
    binary: Path
    home: Path
    workdir: Path

    def __post_init__(self) -> None:
        self._files = itertools.count()

    def run(
        self, *args: str, kubeconfig: Path | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return run_helm(
            args, kubeconfig=kubeconfig, home=self.home, check=check, binary=self.binary
        )

    def values_file(self, values: dict[str, Any]) -> Path:
        path = self.workdir / f"values-{next(self._files)}.yaml"
        path.write_text(yaml.safe_dump(values))
        return path

    def template_text(
        self, values: dict[str, Any], chart: Path = CHART, *flags: str, check: bool = True
    ) -> str:
        """Rendered as for a cluster that serves MutatingAdmissionPolicy, unless `flags` say."""
        result = self.run(
            "template",
            RELEASE,
            str(chart),
            f"--namespace={RELEASE_NAMESPACE}",
            f"--values={self.values_file(values)}",
            *(flags or (SERVES_ADMISSION_POLICIES,)),
            check=check,
        )
        return result.stdout if result.returncode == 0 else result.stderr

    def template(self, values: dict[str, Any], chart: Path = CHART, *flags: str) -> list[Manifest]:
        text = self.template_text(values, chart, *flags)
        return [doc for doc in yaml.safe_load_all(text) if doc]


@pytest.fixture(scope="module")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    workdir = tmp_path_factory.mktemp("helm")
    return Helm(ensure_binary(say=lambda line: print(f"[helm] {line}")), workdir / "home", workdir)


@pytest.fixture(scope="module")
def helm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A control plane of its own, with no CRDs but the Prometheus Operator's ServiceMonitor."""
    controlplane = ControlPlane(
        tmp_path_factory.mktemp("helm-controlplane"), say=lambda line: print(f"[helm] {line}")
    )
    try:
        controlplane.start()
        cluster = Cluster(controlplane.kubeconfig)
        for name in (RELEASE_NAMESPACE, *WATCHED, UNWATCHED):
            cluster.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
        servicemonitor = ensure_servicemonitor_crd(say=lambda line: print(f"[helm] {line}"))
        install_crds(controlplane.kubeconfig, servicemonitor)
        yield cluster
    finally:
        controlplane.stop()


def by_kind(manifests: list[Manifest], kind: str) -> list[Manifest]:
    return [m for m in manifests if m["kind"] == kind]


def one(manifests: list[Manifest], kind: str, name: str | None = None) -> Manifest:
    found = [m for m in by_kind(manifests, kind) if name is None or m["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {dump(found)}"
    return found[0]


def container(manifests: list[Manifest]) -> dict[str, Any]:
    pod = one(manifests, "Deployment")["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["containers"]] == ["operator"]
    return dict(pod["containers"][0])


def env_of(container_spec: dict[str, Any]) -> dict[str, Any]:
    names = [e["name"] for e in container_spec["env"]]
    assert len(names) == len(set(names)), f"duplicate env names: {names}"
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container_spec["env"]}


def source_documents(path: Path) -> list[Manifest]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def shipped_rbac(namespaces: tuple[str, ...]) -> list[Manifest]:
    """deploy/rbac as the chart must render it: names release-prefixed, bound as documented."""
    text = (RBAC / "operator.yaml").read_text()
    if namespaces:
        template = (RBAC / "namespaced.yaml").read_text()
        text += "".join(
            "\n---\n" + template.replace("namespace: team-a", f"namespace: {ns}")
            for ns in namespaces
        )
    else:
        text += "\n---\n" + (RBAC / "all-namespaces.yaml").read_text()
    text = text.replace(f"namespace: {SHIPPED}", f"namespace: {RELEASE_NAMESPACE}")
    return [doc for doc in yaml.safe_load_all(text.replace(SHIPPED, FULLNAME)) if doc]


RBAC_KINDS = ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")


def rbac_shape(manifests: list[Manifest]) -> list[tuple[str, str, str, str]]:
    """Each RBAC object as (kind, namespace, name, its rules or roleRef+subjects): no labels."""
    shape = []
    for m in manifests:
        if m["kind"] not in RBAC_KINDS:
            continue
        body = {key: m[key] for key in ("rules", "roleRef", "subjects") if key in m}
        meta = m["metadata"]
        shape.append(
            (m["kind"], meta.get("namespace", ""), meta["name"], json.dumps(body, sort_keys=True))
        )
    return sorted(shape)


def without_chart_metadata(crd: Manifest) -> Manifest:
    crd = copy.deepcopy(crd)
    meta = crd["metadata"]
    assert meta.get("annotations", {}).pop(KEEP) == "keep", dump(meta)
    for label in CHART_LABELS:
        meta.get("labels", {}).pop(label)
    for key in ("annotations", "labels"):
        if key in meta and not meta[key]:
            del meta[key]
    return crd


# --- the copies of deploy/ inside the chart ---------------------------------------------------


def test_chart_copies_are_byte_identical_to_deploy_sources() -> None:
    """files/ must be what hack/sync-chart.py copies: a stale copy would ship old CRDs or rules."""
    copies = sorted(p.name for p in (CHART / "files" / "crds").iterdir())
    assert copies == sorted(p.name for p in CRDS.glob("*.yaml")), "run hack/sync-chart.py"
    for name in copies:
        copied, source = CHART / "files" / "crds" / name, CRDS / name
        assert copied.read_bytes() == source.read_bytes(), f"{copied} differs: hack/sync-chart.py"
    admission = sorted(p.name for p in (CHART / "files" / "admission").iterdir())
    assert admission == sorted(p.name for p in ADMISSION.glob("*.yaml")), "run hack/sync-chart.py"
    for name in admission:
        copied, source = CHART / "files" / "admission" / name, ADMISSION / name
        assert copied.read_bytes() == source.read_bytes(), f"{copied} differs: hack/sync-chart.py"
    rules = CHART / "files" / "rbac" / "operator.yaml"
    assert sorted(p.name for p in rules.parent.iterdir()) == ["operator.yaml"]
    assert rules.read_bytes() == (RBAC / "operator.yaml").read_bytes(), "run hack/sync-chart.py"


def test_sync_script_reports_and_repairs_a_stale_copy(tmp_path: Path) -> None:
    tree = tmp_path / "repo"
    shutil.copytree(REPO_ROOT / "deploy", tree / "deploy")
    (tree / "hack").mkdir()
    shutil.copy(REPO_ROOT / "hack" / "sync-chart.py", tree / "hack")
    files = tree / "deploy" / "helm" / "milvus-rbac-operator" / "files"
    stale = files / "crds" / "rbac.milvus.io_milvusrolebindings.yaml"
    stale.write_text(stale.read_text().replace("shortNames: [mrb]", "shortNames: [old]"))
    extra = files / "crds" / "rbac.milvus.io_gone.yaml"
    extra.write_text("kind: CustomResourceDefinition\n")
    script = [sys.executable, str(tree / "hack" / "sync-chart.py")]

    check = subprocess.run([*script, "--check"], capture_output=True, text=True, check=False)
    assert check.returncode == 1, check
    assert f"out of date: {stale.relative_to(tree)}" in check.stdout
    assert f"stale: {extra.relative_to(tree)}" in check.stdout

    subprocess.run(script, capture_output=True, text=True, check=True)
    assert stale.read_bytes() == (tree / "deploy" / "crds" / stale.name).read_bytes()
    assert not extra.exists()
    again = subprocess.run([*script, "--check"], capture_output=True, text=True, check=False)
    assert again.returncode == 0, again


# --- lint and render --------------------------------------------------------------------------


def test_chart_app_version_is_the_operator_version() -> None:
    """appVersion is the default image tag: it must name the release the chart describes."""
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    assert chart["appVersion"] == project["version"]


def test_lint_strict_passes(helm: Helm) -> None:
    result = helm.run("lint", "--strict", str(CHART))
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout, result.stdout


def test_chart_refuses_kubernetes_without_ga_crd_validation_rules(helm: Helm) -> None:
    # The CRDs' x-kubernetes-validations (with fieldPath) need 1.29.
    old = helm.run("template", RELEASE, str(CHART), "--kube-version=1.28.9", check=False)
    assert old.returncode != 0
    assert "incompatible with Kubernetes v1.28.9" in old.stderr, old.stderr
    helm.run("template", RELEASE, str(CHART), "--kube-version=1.29.0")


def test_rendered_crds_equal_deploy_crds(helm: Helm) -> None:
    rendered = {
        c["metadata"]["name"]: c for c in by_kind(helm.template({}), "CustomResourceDefinition")
    }
    sources = [doc for path in sorted(CRDS.glob("*.yaml")) for doc in source_documents(path)]
    assert sorted(rendered) == sorted(s["metadata"]["name"] for s in sources)
    for source in sources:
        assert without_chart_metadata(rendered[source["metadata"]["name"]]) == source


@pytest.mark.parametrize("namespaces", [(), WATCHED], ids=["all-namespaces", "watch-list"])
def test_rendered_rbac_equals_deploy_rbac(helm: Helm, namespaces: tuple[str, ...]) -> None:
    rendered = helm.template({"watchNamespaces": list(namespaces)})
    assert rbac_shape(rendered) == rbac_shape(shipped_rbac(namespaces))


@pytest.mark.parametrize("case", MATRIX)
def test_values_case_lints_renders_and_passes_server_dry_run(
    helm: Helm, helm_cluster: Cluster, case: str
) -> None:
    values = helm.values_file(MATRIX[case])
    lint = helm.run("lint", "--strict", str(CHART), f"--values={values}")
    assert "0 chart(s) failed" in lint.stdout, lint.stdout
    text = helm.template_text(MATRIX[case])
    # Strict field validation: an unknown or misplaced field anywhere fails the dry-run.
    dry_run = helm_cluster.kubectl(
        "apply", "--dry-run=server", "--validate=strict", "-f", "-", stdin=text, check=False
    )
    assert dry_run.returncode == 0, dry_run.stderr
    manifests = [m for m in yaml.safe_load_all(text) if m]
    assert len(dry_run.stdout.strip().splitlines()) == len(manifests), dry_run.stdout
    assert {"Deployment", "Service"} <= {m["kind"] for m in manifests}


def test_server_dry_run_refuses_a_misspelt_field_in_a_template(
    helm: Helm, helm_cluster: Cluster, tmp_path: Path
) -> None:
    """The dry-run above is a real check: a field no API knows fails it, even where helm lints."""
    chart = tmp_path / "milvus-rbac-operator"
    shutil.copytree(CHART, chart)
    service = chart / "templates" / "service.yaml"
    assert "targetPort: http" in service.read_text()
    service.write_text(service.read_text().replace("targetPort: http", "targetPrt: http"))
    assert "0 chart(s) failed" in helm.run("lint", "--strict", str(chart)).stdout
    dry_run = helm_cluster.kubectl(
        "apply",
        "--dry-run=server",
        "--validate=strict",
        "-f",
        "-",
        stdin=helm.template_text({}, chart),
        check=False,
    )
    assert dry_run.returncode != 0
    assert 'unknown field "spec.ports[0].targetPrt"' in dry_run.stderr, dry_run.stderr


@pytest.mark.parametrize("case", INVALID)
def test_invalid_values_are_refused(helm: Helm, case: str) -> None:
    values, message = INVALID[case]
    result = helm.run(
        "template", RELEASE, str(CHART), f"--values={helm.values_file(values)}", check=False
    )
    assert result.returncode != 0, result.stdout[:2000]
    assert message in result.stderr, result.stderr
    lint = helm.run(
        "lint", "--strict", str(CHART), f"--values={helm.values_file(values)}", check=False
    )
    assert lint.returncode != 0, lint.stdout


def test_default_deployment_runs_the_entrypoint_hardened_with_the_chart_settings(
    helm: Helm,
) -> None:
    rendered = helm.template({})
    deployment = one(rendered, "Deployment", FULLNAME)
    pod = deployment["spec"]["template"]["spec"]
    operator = container(rendered)
    assert operator["image"] == "milvus-rbac-operator:0.1.0"  # the chart's appVersion
    assert operator["args"] == ["run"]
    assert "command" not in operator  # the image's entrypoint, milvus-rbac-operator
    assert env_of(operator) == {
        "MRBO_OPERATOR_NAMESPACE": {"fieldRef": {"fieldPath": "metadata.namespace"}},
        "MRBO_ALLOWED_HOSTS": "*.svc,*.svc.cluster.local",
        "MRBO_DRIFT_INTERVAL_SECONDS": "180",
        "MRBO_LOG_LEVEL": "INFO",
        "MRBO_LOG_FORMAT": "json",
        "MRBO_HEALTH_LISTEN": "0.0.0.0:8080",
        "MRBO_SHUTDOWN_GRACE_SECONDS": "20",
        "MRBO_LEADER_ELECTION": "false",
    }
    assert operator["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert operator["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert operator["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert operator["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 65532,
        "runAsGroup": 65532,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert operator["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    assert pod["volumes"] == [{"name": "tmp", "emptyDir": {"sizeLimit": "16Mi"}}]
    assert pod["terminationGracePeriodSeconds"] == 30
    assert pod["serviceAccountName"] == FULLNAME
    assert deployment["spec"]["replicas"] == 1
    # One active operator at a time even during an update: the old pod stops first.
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()

    service = one(rendered, "Service", FULLNAME)
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 8080, "targetPort": "http", "protocol": "TCP"}
    ]
    assert service["spec"]["selector"] == selector
    assert not by_kind(rendered, "ServiceMonitor")
    assert not by_kind(rendered, "PodDisruptionBudget")


def test_more_than_one_replica_turns_on_leader_election_with_its_own_lease(helm: Helm) -> None:
    rendered = helm.template(MATRIX["replicas-3"])
    deployment = one(rendered, "Deployment")
    assert deployment["spec"]["replicas"] == 3
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    env = env_of(container(rendered))
    assert env["MRBO_LEADER_ELECTION"] == "true"
    assert env["MRBO_LEASE_NAME"] == FULLNAME


def test_watch_namespaces_reach_the_operator_comma_joined(helm: Helm) -> None:
    env = env_of(container(helm.template({"watchNamespaces": ["team-b", "team-a"]})))
    assert env["MRBO_NAMESPACES"] == "team-b,team-a"
    assert "MRBO_NAMESPACES" not in env_of(container(helm.template({})))  # all namespaces


def test_servicemonitor_scrapes_the_metrics_port_and_pdb_guards_the_pods(helm: Helm) -> None:
    rendered = helm.template(MATRIX["servicemonitor-and-pdb"])
    monitor = one(rendered, "ServiceMonitor", FULLNAME)
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["endpoints"] == [
        {"port": "metrics", "path": "/metrics", "interval": "1m"}
    ]
    assert (
        monitor["spec"]["selector"]["matchLabels"] == one(rendered, "Service")["spec"]["selector"]
    )
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [RELEASE_NAMESPACE]}
    pdb = one(rendered, "PodDisruptionBudget", FULLNAME)
    assert pdb["spec"]["maxUnavailable"] == 1
    assert "minAvailable" not in pdb["spec"]
    default_pdb = one(
        helm.template({"podDisruptionBudget": {"enabled": True}}), "PodDisruptionBudget"
    )
    assert default_pdb["spec"]["minAvailable"] == 1


def test_crds_install_false_renders_no_crds(helm: Helm) -> None:
    rendered = helm.template(MATRIX["no-crds"])
    assert not by_kind(rendered, "CustomResourceDefinition")
    assert one(rendered, "Deployment")


POLICY_KINDS = ("MutatingAdmissionPolicy", "MutatingAdmissionPolicyBinding")


def test_admission_policy_is_deploy_admission_named_after_the_release(helm: Helm) -> None:
    rendered = {m["kind"]: m for m in helm.template({}) if m["kind"] in POLICY_KINDS}
    shipped = {m["kind"]: m for m in source_documents(ADMISSION / "milvusrolebinding-intent.yaml")}
    assert sorted(rendered) == sorted(shipped) == sorted(POLICY_KINDS)
    name = f"{FULLNAME}-intent"
    assert rendered["MutatingAdmissionPolicy"]["metadata"]["name"] == name
    assert rendered["MutatingAdmissionPolicy"]["spec"] == shipped["MutatingAdmissionPolicy"]["spec"]
    # Every namespace, as the operator serves every namespace.
    assert rendered["MutatingAdmissionPolicyBinding"]["spec"] == {"policyName": name}


def test_admission_policy_covers_only_the_watched_namespaces(helm: Helm) -> None:
    rendered = helm.template({"watchNamespaces": list(WATCHED)})
    spec = one(rendered, "MutatingAdmissionPolicyBinding")["spec"]
    assert spec["matchResources"] == {
        "namespaceSelector": {
            "matchExpressions": [
                {"key": "kubernetes.io/metadata.name", "operator": "In", "values": list(WATCHED)}
            ]
        }
    }


@pytest.mark.parametrize(
    ("values", "flags"),
    [
        pytest.param({"admissionPolicy": {"install": False}}, (), id="turned off"),
        pytest.param({}, ("--kube-version=1.35.0",), id="not served by the cluster"),
    ],
)
def test_no_admission_policy_is_rendered(
    helm: Helm, values: dict[str, Any], flags: tuple[str, ...]
) -> None:
    rendered = helm.template(values, CHART, *flags)
    assert not [m for m in rendered if m["kind"] in POLICY_KINDS]
    assert by_kind(rendered, "Deployment")


def test_a_changed_finalizer_with_the_admission_policy_is_refused(helm: Helm) -> None:
    values = {"extraEnv": [{"name": "MRBO_FINALIZER", "value": "example.com/finalizer"}]}
    refused = helm.template_text(values, CHART, SERVES_ADMISSION_POLICIES, check=False)
    assert "set admissionPolicy.install=false" in refused
    values["admissionPolicy"] = {"install": False}
    assert by_kind(helm.template(values), "Deployment")


def test_own_identity_renders_no_service_account_or_rbac(helm: Helm) -> None:
    rendered = helm.template(MATRIX["bring-your-own-identity"])
    assert not [m for m in rendered if m["kind"] in RBAC_KINDS]
    pod = one(rendered, "Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "platform-operator"


def test_extra_env_adds_settings_and_replaces_the_charts_own(helm: Helm) -> None:
    env = env_of(container(helm.template(MATRIX["extra-env"])))
    assert env["MRBO_RETRY_MAX_SECONDS"] == "30"
    assert env["MRBO_LOG_LEVEL"] == "DEBUG"  # one entry, extraEnv's, not two
    assert env["MRBO_TIMEOUT_SECONDS"] == {"configMapKeyRef": {"name": "mrbo", "key": "timeout"}}
    assert env["MRBO_LOG_FORMAT"] == "json"


def test_pod_values_reach_the_pod_spec(helm: Helm) -> None:
    values = MATRIX["everything-set"]
    rendered = helm.template(values)
    deployment = one(rendered, "Deployment")
    pod = deployment["spec"]["template"]
    operator = container(rendered)
    assert operator["image"] == f"registry.example/mrbo@sha256:{'a' * 64}"
    assert pod["spec"]["imagePullSecrets"] == [{"name": "pull"}]
    assert pod["spec"]["priorityClassName"] == "system-cluster-critical"
    assert pod["spec"]["nodeSelector"] == values["nodeSelector"]
    assert pod["spec"]["tolerations"] == values["tolerations"]
    assert pod["spec"]["affinity"] == values["affinity"]
    assert pod["spec"]["terminationGracePeriodSeconds"] == 60
    assert pod["metadata"]["annotations"]["example.com/scrape"] == "true"
    assert pod["metadata"]["labels"]["team"] == "platform"
    # Helm merges maps with the defaults: the memory limit stays unless set to null.
    assert operator["resources"] == {
        "requests": {"cpu": "100m", "memory": "200Mi"},
        "limits": {"cpu": 1, "memory": "512Mi"},
    }
    env = env_of(operator)
    assert env["MRBO_ALLOWED_HOSTS"] == "milvus.db.svc.cluster.local:19530,*.milvus.svc"
    assert env["MRBO_PROTECTED_USERS"] == "admin,svc_backup"
    assert env["MRBO_DRIFT_INTERVAL_SECONDS"] == "600"
    assert env["MRBO_SHUTDOWN_GRACE_SECONDS"] == "50"
    assert (env["MRBO_LOG_LEVEL"], env["MRBO_LOG_FORMAT"]) == ("WARNING", "plain")
    # Leader election on with one replica: rolling updates never run two active operators.
    assert env["MRBO_LEADER_ELECTION"] == "true"
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    account = one(rendered, "ServiceAccount")
    assert account["metadata"]["annotations"] == {"example.com/role": "mrbo"}
    assert one(rendered, "Service")["spec"]["ports"][0]["port"] == 9090
    assert one(rendered, "PodDisruptionBudget")["spec"]["minAvailable"] == "50%"


# --- install, upgrade, uninstall --------------------------------------------------------------


def install(
    helm: Helm,
    cluster: Cluster,
    values: dict[str, Any],
    chart: Path = CHART,
    *flags: str,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """`helm upgrade --install` with exactly `values` over the chart's defaults.

    --reset-values: without it, an upgrade given no values reuses the previous release's. No
    --wait: without a kubelet no pod ever becomes ready.
    """
    result = helm.run(
        "upgrade",
        "--install",
        "--reset-values",
        RELEASE,
        str(chart),
        f"--namespace={RELEASE_NAMESPACE}",
        f"--values={helm.values_file(values)}",
        *flags,
        kubeconfig=cluster.kubeconfig,
        check=check,
    )
    return result


def live(cluster: Cluster, kind: str, name: str, namespace: str = "") -> Manifest | None:
    where = [f"--namespace={namespace}"] if namespace else []
    result = cluster.kubectl("get", kind, name, *where, "-o", "json", check=False)
    if result.returncode != 0:
        assert "NotFound" in result.stderr, result.stderr
        return None
    found: Manifest = json.loads(result.stdout)
    return found


def can_i(cluster: Cluster, verb: str, resource: str, namespace: str) -> bool:
    account = f"system:serviceaccount:{RELEASE_NAMESPACE}:{FULLNAME}"
    where = [f"--namespace={namespace}"] if namespace else []
    result = cluster.kubectl(
        "auth", "can-i", verb, resource, *where, f"--as={account}", check=False
    )
    return result.stdout.strip() == "yes"


CRD_NAMES = sorted(
    doc["metadata"]["name"] for p in CRDS.glob("*.yaml") for doc in source_documents(p)
)


def test_install_creates_the_operator_objects_and_owns_the_crds(
    helm: Helm, helm_cluster: Cluster
) -> None:
    notes = install(helm, helm_cluster, {}).stdout
    assert "kubectl -n default create secret generic milvus-admin" in notes
    assert "kubectl -n default get mrb" in notes
    # The objects NOTES.txt tells the user to apply are valid for the installed CRDs.
    snippets = [block.split("\nYAML")[0] for block in notes.split("<<'YAML'\n")[1:]]
    assert [yaml.safe_load(s)["kind"] for s in snippets] == [
        "MilvusConnection",
        "MilvusRoleBinding",
    ]
    for snippet in snippets:
        # Right after the CRDs are created, the admission policy needs a moment to have their
        # schema: until then a create is answered 503 "There can be a delay ...".
        eventually(
            lambda snippet=snippet: (
                helm_cluster.kubectl(
                    "apply",
                    "--dry-run=server",
                    "--validate=strict",
                    "--namespace=default",
                    "-f",
                    "-",
                    stdin=snippet,
                    check=False,
                ).returncode
                == 0
            ),
            f"a dry-run of {snippet.splitlines()[1]}",
            30,
        )
    deployment = live(helm_cluster, "deployment", FULLNAME, RELEASE_NAMESPACE)
    assert deployment is not None
    rendered = helm.template({})
    # The API server adds the fieldRef's apiVersion; otherwise the env is what was rendered.
    env = env_of(deployment["spec"]["template"]["spec"]["containers"][0])
    assert env.pop("MRBO_OPERATOR_NAMESPACE") == {
        "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}
    }
    expected = env_of(container(rendered))
    del expected["MRBO_OPERATOR_NAMESPACE"]
    assert env == expected
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    service = live(helm_cluster, "service", FULLNAME, RELEASE_NAMESPACE)
    assert service is not None
    assert service["spec"]["ports"][0]["name"] == "metrics"
    assert live(helm_cluster, "serviceaccount", FULLNAME, RELEASE_NAMESPACE) is not None
    for kind, name in [
        ("clusterrole", f"{FULLNAME}-cluster"),
        ("clusterrole", f"{FULLNAME}-namespaced"),
        ("role", FULLNAME),
    ]:
        obj = live(helm_cluster, kind, name, RELEASE_NAMESPACE if kind == "role" else "")
        assert obj is not None, (kind, name)
        assert obj["rules"] == one(rendered, obj["kind"], name)["rules"]
    assert live(helm_cluster, "clusterrolebinding", f"{FULLNAME}-namespaced") is not None
    # The cluster serves MutatingAdmissionPolicy (1.37): the chart installed one.
    for kind in ("mutatingadmissionpolicy", "mutatingadmissionpolicybinding"):
        assert live(helm_cluster, kind, f"{FULLNAME}-intent") is not None, kind
    for name in CRD_NAMES:
        crd = live(helm_cluster, "crd", name)
        assert crd is not None, name
        assert crd["metadata"]["annotations"][KEEP] == "keep"
        assert crd["metadata"]["annotations"]["meta.helm.sh/release-name"] == RELEASE
        conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
        assert conditions.get("Established") == "True", dump(crd["status"])


def test_installed_service_account_may_do_what_the_operator_needs_and_no_more(
    helm: Helm, helm_cluster: Cluster
) -> None:
    install(helm, helm_cluster, {})
    for namespace in (*WATCHED, UNWATCHED):
        assert can_i(helm_cluster, "patch", "milvusrolebindings.rbac.milvus.io/status", namespace)
        assert can_i(helm_cluster, "get", "secrets", namespace)
        assert not can_i(helm_cluster, "create", "milvusrolebindings.rbac.milvus.io", namespace)
        assert not can_i(helm_cluster, "list", "secrets", namespace)
        assert not can_i(helm_cluster, "update", "secrets", namespace)
    assert can_i(helm_cluster, "update", "leases.coordination.k8s.io", RELEASE_NAMESPACE)
    assert not can_i(helm_cluster, "update", "leases.coordination.k8s.io", "team-a")
    assert can_i(helm_cluster, "watch", "clustermilvusconnections.rbac.milvus.io", "")
    assert not can_i(helm_cluster, "delete", "clustermilvusconnections.rbac.milvus.io", "")


def test_upgrade_to_two_replicas_turns_on_leader_election(
    helm: Helm, helm_cluster: Cluster
) -> None:
    install(helm, helm_cluster, {})
    install(helm, helm_cluster, {"replicas": 2})
    deployment = live(helm_cluster, "deployment", FULLNAME, RELEASE_NAMESPACE)
    assert deployment is not None
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    env = env_of(deployment["spec"]["template"]["spec"]["containers"][0])
    assert env["MRBO_LEADER_ELECTION"] == "true"
    assert env["MRBO_LEASE_NAME"] == FULLNAME
    install(helm, helm_cluster, {})
    deployment = live(helm_cluster, "deployment", FULLNAME, RELEASE_NAMESPACE)
    assert deployment is not None
    env = env_of(deployment["spec"]["template"]["spec"]["containers"][0])
    assert env["MRBO_LEADER_ELECTION"] == "false"
    assert "MRBO_LEASE_NAME" not in env


def test_upgrade_to_watch_namespaces_swaps_the_cluster_binding_for_role_bindings(
    helm: Helm, helm_cluster: Cluster
) -> None:
    install(helm, helm_cluster, {})
    assert live(helm_cluster, "clusterrolebinding", f"{FULLNAME}-namespaced") is not None
    assert can_i(helm_cluster, "get", "secrets", UNWATCHED)

    install(helm, helm_cluster, {"watchNamespaces": list(WATCHED)})
    assert live(helm_cluster, "clusterrolebinding", f"{FULLNAME}-namespaced") is None
    for namespace in WATCHED:
        role_binding = live(helm_cluster, "rolebinding", f"{FULLNAME}-namespaced", namespace)
        assert role_binding is not None, namespace
        assert role_binding["roleRef"]["name"] == f"{FULLNAME}-namespaced"
        assert can_i(helm_cluster, "get", "secrets", namespace)
    assert live(helm_cluster, "rolebinding", f"{FULLNAME}-namespaced", UNWATCHED) is None
    assert not can_i(helm_cluster, "get", "secrets", UNWATCHED)
    # The operator's own namespace keeps its Role: leases and ClusterMilvusConnection Secrets.
    assert can_i(helm_cluster, "get", "secrets", RELEASE_NAMESPACE)
    deployment = live(helm_cluster, "deployment", FULLNAME, RELEASE_NAMESPACE)
    assert deployment is not None
    env = env_of(deployment["spec"]["template"]["spec"]["containers"][0])
    assert env["MRBO_NAMESPACES"] == ",".join(WATCHED)

    install(helm, helm_cluster, {})
    assert live(helm_cluster, "clusterrolebinding", f"{FULLNAME}-namespaced") is not None
    assert all(
        live(helm_cluster, "rolebinding", f"{FULLNAME}-namespaced", ns) is None for ns in WATCHED
    )


def test_upgrade_applies_a_changed_crd(helm: Helm, helm_cluster: Cluster, tmp_path: Path) -> None:
    """Helm never upgrades crds/; the chart's CRDs are templates, so an upgrade changes them."""
    install(helm, helm_cluster, {})
    chart = tmp_path / "milvus-rbac-operator"
    shutil.copytree(CHART, chart)
    crd_file = chart / "files" / "crds" / "rbac.milvus.io_milvusrolebindings.yaml"
    age = "        - {name: Age, type: date, jsonPath: .metadata.creationTimestamp}\n"
    policy = "        - {name: Policy, type: string, jsonPath: .spec.deletionPolicy}\n"
    assert age in crd_file.read_text()
    crd_file.write_text(crd_file.read_text().replace(age, policy + age))
    chart_yaml = chart / "Chart.yaml"
    chart_yaml.write_text(chart_yaml.read_text().replace("version: 0.1.0", "version: 0.1.1"))

    def columns() -> list[str]:
        crd = live(helm_cluster, "crd", "milvusrolebindings.rbac.milvus.io")
        assert crd is not None
        return [c["name"] for c in crd["spec"]["versions"][0]["additionalPrinterColumns"]]

    assert "Policy" not in columns()
    install(helm, helm_cluster, {}, chart)
    assert columns()[-2:] == ["Policy", "Age"]
    helm_cluster.apply(binding("team-a", "printed", "alice", "reader", deletionPolicy="Orphan"))
    table = helm_cluster.kubectl("get", "mrb", "printed", "--namespace=team-a").stdout
    assert table.split("\n")[0].split()[-2:] == ["POLICY", "AGE"], table
    assert "Orphan" in table.split("\n")[1], table
    # Back to the shipped chart: the column goes again.
    install(helm, helm_cluster, {})
    assert "Policy" not in columns()
    helm_cluster.kubectl("delete", "mrb", "printed", "--namespace=team-a", "--wait=false")


def test_uninstall_keeps_the_crds_and_bindings_and_removes_the_rest(
    helm: Helm, helm_cluster: Cluster
) -> None:
    install(
        helm, helm_cluster, {"watchNamespaces": ["team-a"], "serviceMonitor": {"enabled": True}}
    )
    helm_cluster.apply(binding("team-a", "survivor", "alice", "reader"))
    result = helm.run(
        "uninstall", RELEASE, f"--namespace={RELEASE_NAMESPACE}", kubeconfig=helm_cluster.kubeconfig
    )
    for name in CRD_NAMES:
        assert name in result.stdout, result.stdout  # helm lists what it kept
        assert live(helm_cluster, "crd", name) is not None, name
    assert helm_cluster.binding("team-a", "survivor") is not None
    gone = [
        ("deployment", FULLNAME, RELEASE_NAMESPACE),
        ("service", FULLNAME, RELEASE_NAMESPACE),
        ("servicemonitor", FULLNAME, RELEASE_NAMESPACE),
        ("serviceaccount", FULLNAME, RELEASE_NAMESPACE),
        ("role", FULLNAME, RELEASE_NAMESPACE),
        ("rolebinding", FULLNAME, RELEASE_NAMESPACE),
        ("rolebinding", f"{FULLNAME}-namespaced", "team-a"),
        ("clusterrole", f"{FULLNAME}-cluster", ""),
        ("clusterrole", f"{FULLNAME}-namespaced", ""),
        ("clusterrolebinding", f"{FULLNAME}-cluster", ""),
        ("mutatingadmissionpolicy", f"{FULLNAME}-intent", ""),
        ("mutatingadmissionpolicybinding", f"{FULLNAME}-intent", ""),
    ]
    for kind, name, namespace in gone:
        assert live(helm_cluster, kind, name, namespace) is None, (kind, name)
    listed = helm.run("list", "--all-namespaces", "-q", kubeconfig=helm_cluster.kubeconfig)
    assert RELEASE not in listed.stdout.split()

    # Installing again under the same name adopts the kept CRDs; the binding is still there.
    install(helm, helm_cluster, {})
    assert live(helm_cluster, "deployment", FULLNAME, RELEASE_NAMESPACE) is not None
    assert helm_cluster.binding("team-a", "survivor") is not None
    helm_cluster.kubectl("delete", "mrb", "survivor", "--namespace=team-a", "--wait=false")


# --- the operator itself, with what the chart gives its pod -----------------------------------


def token_kubeconfig(cluster: Cluster, path: Path) -> Path:
    """A kubeconfig holding a token of the chart's ServiceAccount, as the pod would have."""
    token = cluster.kubectl(
        "create", "token", FULLNAME, f"--namespace={RELEASE_NAMESPACE}", "--duration=1h"
    ).stdout.strip()
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    entry = admin["clusters"][0]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [entry],
        "users": [{"name": FULLNAME, "user": {"token": token}}],
        "contexts": [{"name": "pod", "context": {"cluster": entry["name"], "user": FULLNAME}}],
        "current-context": "pod",
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def pod_environment(deployment: Manifest, health: str) -> dict[str, str]:
    """The container's env as the kubelet would resolve it (the downward API: its namespace)."""
    env: dict[str, str] = {}
    for entry in deployment["spec"]["template"]["spec"]["containers"][0]["env"]:
        if "value" in entry:
            env[entry["name"]] = entry["value"]
        else:
            assert entry["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace", entry
            env[entry["name"]] = deployment["metadata"]["namespace"]
    assert env["MRBO_HEALTH_LISTEN"] == "0.0.0.0:8080"
    env["MRBO_HEALTH_LISTEN"] = health  # servers here listen on 127.0.0.1 only
    return env


def test_operator_with_the_charts_identity_and_environment_grants_a_binding(
    helm: Helm,
    helm_cluster: Cluster,
    milvus: EmbeddedMilvus,
    milvus_admin: MilvusClient,
    make_user: Callable[[], str],
    make_role: Callable[[], str],
    tmp_path: Path,
) -> None:
    """What the chart's Deployment and RBAC give the pod is enough for the operator to work."""
    milvus.start()
    # The local Milvus is on loopback, not a cluster Service.
    install(helm, helm_cluster, {"watchNamespaces": ["team-a"], "allowedHosts": ["127.0.0.1"]})
    deployment = live(helm_cluster, "deployment", FULLNAME, RELEASE_NAMESPACE)
    assert deployment is not None
    health = f"127.0.0.1:{processes.free_port()}"
    env = pod_environment(deployment, health)
    assert env["MRBO_LOG_FORMAT"] == "json"
    operator = OperatorProcess(
        token_kubeconfig(helm_cluster, tmp_path / "kubeconfig"), tmp_path / "operator.log", env
    )
    user, role = make_user(), make_role()
    helm_cluster.apply(
        secret("team-a", "milvus-admin", username=ROOT_USERNAME, password=ROOT_PASSWORD),
        connection("team-a", "milvus", milvus.uri, "milvus-admin"),
        binding("team-a", "chart-binding", user, role),
    )
    operator.start()
    try:
        wait_reason(helm_cluster, "milvusrolebindings", "team-a", "chart-binding", "Granted")
        assert roles_of(milvus_admin, user) == {role}
        with urllib.request.urlopen(f"http://{health}/readyz", timeout=5) as ready:
            assert ready.status == 200
        # JSON logs, as the chart sets: every line a JSON object.
        first = operator.log_text().splitlines()[0]
        assert json.loads(first), first
        helm_cluster.kubectl("delete", "mrb", "chart-binding", "--namespace=team-a", "--wait=false")
        eventually(
            lambda: helm_cluster.binding("team-a", "chart-binding") is None,
            "the binding to be released after RemoveUserFromRole",
        )
        assert roles_of(milvus_admin, user) == set()
    finally:
        operator.stop()
    assert "Forbidden" not in operator.log_text(), operator.log_text()[-3000:]


def test_install_over_crds_applied_by_kubectl_needs_take_ownership(
    helm: Helm, helm_cluster: Cluster
) -> None:
    """CRDs applied from deploy/crds/ before the chart: Helm adopts them only when told to."""
    install(helm, helm_cluster, {})
    helm.run(
        "uninstall", RELEASE, f"--namespace={RELEASE_NAMESPACE}", kubeconfig=helm_cluster.kubeconfig
    )
    # What `kubectl apply -f deploy/crds/` leaves: the CRDs without Helm's ownership metadata.
    for name in CRD_NAMES:
        helm_cluster.kubectl(
            "annotate", "crd", name, "meta.helm.sh/release-name-", "meta.helm.sh/release-namespace-"
        )
        helm_cluster.kubectl("label", "crd", name, "app.kubernetes.io/managed-by-")
    helm_cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRDS))

    refused = install(helm, helm_cluster, {}, check=False)
    assert refused.returncode != 0
    assert "cannot be imported into the current release" in refused.stderr, refused.stderr
    assert live(helm_cluster, "deployment", FULLNAME, RELEASE_NAMESPACE) is None

    install(helm, helm_cluster, {}, CHART, "--take-ownership")
    for name in CRD_NAMES:
        crd = live(helm_cluster, "crd", name)
        assert crd is not None
        assert crd["metadata"]["annotations"]["meta.helm.sh/release-name"] == RELEASE
        assert crd["metadata"]["annotations"][KEEP] == "keep"
    assert live(helm_cluster, "deployment", FULLNAME, RELEASE_NAMESPACE) is not None
