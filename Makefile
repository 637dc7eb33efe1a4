# The README's two commands: `make dev` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
UV_VERSION := 0.13.8
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: install prepare prepare-tests dev test lint typecheck unit integration e2e image sync-chart bench clean

install: $(VENV)/.installed

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"

# Exactly what uv.lock pins; fails if pyproject.toml and uv.lock disagree.
$(VENV)/.installed: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --python $(PYTHON)
	touch $@

# kube-apiserver + etcd from hack/controlplane (built once, cached outside the checkout) and
# the Milvus server unpacked from its wheel.
prepare: install
	$(BIN)/python -m milvus_rbac_operator.devenv prepare

# What only the tests need on top: kstatus, helm and the ServiceMonitor CRD (built once, cached).
prepare-tests: install
	$(BIN)/python -m milvus_rbac_operator.devenv prepare --tests

# Local control plane + embedded Milvus + the operator in the foreground. Ctrl-C stops it all.
dev: prepare
	$(BIN)/milvus-rbac-operator dev

lint: install
	$(BIN)/ruff check operator tests bench
	$(BIN)/ruff format --check operator tests bench
	$(BIN)/hadolint Dockerfile

typecheck: install
	$(BIN)/mypy

unit: install
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

integration: prepare-tests
	$(BIN)/pytest tests/integration $(PYTEST_ARGS)

e2e: prepare-tests
	$(BIN)/pytest tests/e2e $(PYTEST_ARGS)

# Everything CI runs: lint, types, then unit, integration and e2e tests in one pytest session.
test: lint typecheck prepare-tests
	$(BIN)/pytest tests $(PYTEST_ARGS)

# Copy deploy/crds/, deploy/admission/ and deploy/rbac/operator.yaml into the Helm chart (tests fail
# while they differ).
sync-chart:
	$(PYTHON) hack/sync-chart.py

# The performance benchmark (bench/README.md): prints a table, writes bench/results/<timestamp>.json.
BENCH_ARGS ?=
bench: prepare
	$(BIN)/python -m bench.run $(BENCH_ARGS)

# The container image: buildah on a local Debian base (hack/image), no registry needed.
image: install
	$(BIN)/python -m milvus_rbac_operator.devenv.image

clean:
	rm -rf $(VENV) $(TOOLS) .mypy_cache .ruff_cache .pytest_cache
