# syntax=docker/dockerfile:1
# milvus-rbac-operator: `docker build -t milvus-rbac-operator .`
#
# The base is pinned by digest for real builds. Any Debian-like image with python3 >= 3.11 and
# the venv module works as well: `--build-arg BASE_IMAGE=...` (hack/image builds a local one
# from Debian packages where no registry is reachable: `make image`).
ARG BASE_IMAGE=docker.io/library/python:3.11-slim-bookworm@sha256:2e32f7d302adc1c37428355c1e646897c0c53f4fd60b6a551245fb90ee129f91

FROM ${BASE_IMAGE} AS builder
ARG UV_VERSION=0.13.8
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
# The installers live in a venv of their own, which stays in this stage: uv only turns uv.lock
# into a hashed requirements file, pip installs it into /opt/venv (made without pip).
RUN python3 -m venv /opt/tools && /opt/tools/bin/pip install "uv==${UV_VERSION}"
WORKDIR /src
COPY pyproject.toml uv.lock ./
# The runtime dependencies exactly as locked, versions and hashes checked: no dev group, no
# extras (the devenv extra is for `make dev` and the tests only). Then out go files nothing
# imports at run time: the test suites inside numpy, pandas and others (70 MB), and
# kubernetes.aio (68 MB), the client's second, asyncio copy (kopf talks to the API server
# through aiohttp itself). This layer, and its copy in the image, are reused until
# pyproject.toml or uv.lock change.
RUN /opt/tools/bin/uv export --quiet --frozen --no-dev --no-emit-project \
        --format requirements-txt --output-file /tmp/requirements.txt \
    && python3 -m venv --without-pip /opt/venv \
    && /opt/tools/bin/pip --python /opt/venv/bin/python install \
        --no-deps --require-hashes --requirement /tmp/requirements.txt \
    && find /opt/venv/lib/python3*/site-packages -depth -type d -name tests -exec rm -rf {} + \
    && rm -rf /opt/venv/lib/python3*/site-packages/kubernetes/aio \
    && /opt/venv/bin/python -m compileall -q /opt/venv/lib
COPY README.md ./
COPY operator ./operator
# The project alone, staged under /opt/project (its files at their final paths), so that a
# change to the code makes a small layer and leaves the dependencies' layer as it was.
RUN /opt/tools/bin/pip --python /opt/venv/bin/python install \
        --no-deps --root /opt/project /src

FROM ${BASE_IMAGE}
COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /opt/project/ /
# The user is a bare number (as Kubernetes' runAsUser may be) with no passwd entry. The operator
# gives kopf its own identity; USER is still what getpass.getuser() falls back on for anything
# else that asks, HOME what `~` expands to.
ENV PATH=/opt/venv/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    USER=nonroot \
    HOME=/tmp
USER 65532:65532
ENTRYPOINT ["milvus-rbac-operator"]
CMD ["run"]
# Last, so that a new revision changes no layer that holds files.
ARG BASE_IMAGE
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="milvus-rbac-operator" \
      org.opencontainers.image.description="Kubernetes operator that makes Milvus RBAC declarative: MilvusRoleBinding -> AddUserToRole / RemoveUserFromRole" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.base.name="${BASE_IMAGE}"
