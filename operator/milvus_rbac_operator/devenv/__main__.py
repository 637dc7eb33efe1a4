"""`python -m milvus_rbac_operator.devenv prepare`: build or reuse what the local env needs."""

from __future__ import annotations

import sys

from milvus_rbac_operator.devenv.controlplane import ensure_binaries
from milvus_rbac_operator.devenv.kstatus import ensure_binary as ensure_kstatus
from milvus_rbac_operator.devenv.milvus_server import unpack_binaries


def main(argv: list[str]) -> int:
    if argv != ["prepare"]:
        print("usage: python -m milvus_rbac_operator.devenv prepare", file=sys.stderr)
        return 2
    print(f"control plane binaries: {ensure_binaries()}", flush=True)
    print(f"Milvus server: {unpack_binaries()}", flush=True)
    print(f"kstatus: {ensure_kstatus()}", flush=True)
    return 0


sys.exit(main(sys.argv[1:]))
