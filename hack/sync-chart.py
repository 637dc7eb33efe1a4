#!/usr/bin/env python3
"""Copy deploy/crds/, deploy/admission/ and deploy/rbac/operator.yaml into the Helm chart.

Helm templates cannot read outside the chart, so the chart keeps copies of these single
sources under files/. Run this after changing any of them; tests/e2e/test_helm.py fails while a
copy differs. `--check` only reports (exit 1) and changes nothing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "deploy" / "helm" / "milvus-rbac-operator"
# source directory -> (copy directory, file names); deploy/rbac's bindings are rendered by the
# chart's own templates, only the rules are copied.
COPIES = {
    ROOT / "deploy" / "crds": (CHART / "files" / "crds", None),
    ROOT / "deploy" / "admission": (CHART / "files" / "admission", None),
    ROOT / "deploy" / "rbac": (CHART / "files" / "rbac", ("operator.yaml",)),
}


def plan() -> list[tuple[Path, Path | None]]:
    """(copy, source) pairs: write source over copy; a source of None: remove the stale copy."""
    changes: list[tuple[Path, Path | None]] = []
    for source_dir, (copy_dir, names) in COPIES.items():
        wanted = sorted(names or (p.name for p in source_dir.glob("*.yaml")))
        for name in wanted:
            source, copy = source_dir / name, copy_dir / name
            if not copy.exists() or copy.read_bytes() != source.read_bytes():
                changes.append((copy, source))
        for stale in sorted(copy_dir.glob("*.yaml")):
            if stale.name not in wanted:
                changes.append((stale, None))
    return changes


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="report differences, change nothing")
    args = parser.parse_args(argv)
    changes = plan()
    for copy, source in changes:
        relative = copy.relative_to(ROOT)
        if args.check:
            print(f"out of date: {relative}" if source else f"stale: {relative}")
        elif source is None:
            copy.unlink()
            print(f"removed {relative}")
        else:
            copy.parent.mkdir(parents=True, exist_ok=True)
            copy.write_bytes(source.read_bytes())
            print(f"copied {source.relative_to(ROOT)} -> {relative}")
    if args.check and changes:
        print("run: python3 hack/sync-chart.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
