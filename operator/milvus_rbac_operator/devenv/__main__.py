"""`python -m milvus_rbac_operator.devenv prepare [--tests]`: build or reuse what is needed."""

from __future__ import annotations

import sys

from milvus_rbac_operator.devenv.controlplane import ensure_binaries
from milvus_rbac_operator.devenv.helm import ensure_binary as ensure_helm
from milvus_rbac_operator.devenv.kstatus import ensure_binary as ensure_kstatus
from milvus_rbac_operator.devenv.milvus_server import unpack_binaries
from milvus_rbac_operator.devenv.monitoring_crds import ensure_servicemonitor_crd


def main(argv: list[str]) -> int:
    if argv not in (["prepare"], ["prepare", "--tests"]):
        print("usage: python -m milvus_rbac_operator.devenv prepare [--tests]", file=sys.stderr)
        return 2
    print(f"control plane binaries: {ensure_binaries()}", flush=True)
    print(f"Milvus server: {unpack_binaries()}", flush=True)
    if "--tests" in argv:  # only the tests use these; `make dev` need not wait for them
        print(f"kstatus: {ensure_kstatus()}", flush=True)
        print(f"helm: {ensure_helm()}", flush=True)
        print(f"ServiceMonitor CRD: {ensure_servicemonitor_crd()}", flush=True)
    return 0


sys.exit(main(sys.argv[1:]))
