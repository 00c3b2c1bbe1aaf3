# syntax=docker/dockerfile:1
# The backfill image: `docker build -t backfill:0.1.0 .` (docs/deploy.md). Two stages: a builder with a C
# compiler makes wheels of the project (with its compiled scanner, backfill/decode/_fastlogs.c) and of every
# dependency; the runtime installs them from that folder alone, with no compiler and no index.
# The image works against a ClickHouse server (CLICKHOUSE_URL): the embedded chDB engine is for one machine.
# Pin the base by digest too in production: --build-arg PYTHON_IMAGE=python:3.12.11-slim-bookworm@sha256:...
ARG PYTHON_IMAGE=python:3.12.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py ./
COPY backfill ./backfill
COPY workers ./workers
COPY monitor ./monitor
# setup.py marks the extension optional (a checkout without a compiler still installs, and its wheel is still
# tagged for the platform); here it must build, so a wheel without the compiled module stops the build instead of
# shipping the slow path unnoticed. The runtime stage checks it again by importing it.
RUN pip wheel --no-cache-dir --disable-pip-version-check --wheel-dir /wheels . \
    && python -c "import glob, sys, zipfile; names = zipfile.ZipFile(glob.glob('/wheels/backfill-*.whl')[0]).namelist(); \
sys.exit(0 if any(n.startswith('backfill/decode/_fastlogs.') and n.endswith('.so') for n in names) \
else 'the compiled scanner backfill/decode/_fastlogs.c did not build')"

FROM ${PYTHON_IMAGE} AS runtime
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="backfill" \
      org.opencontainers.image.description="Copies ERC-20 / ERC-1155 transfer history from EVM JSON-RPC endpoints into ClickHouse" \
      org.opencontainers.image.version="${VERSION}"
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    BACKFILL_DATA_DIR=/var/lib/backfill
# tini as PID 1: forwards TERM to backfill (a Python process as PID 1 ignores a signal it has no handler for)
# and reaps any orphaned child of the supervisor's workers.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/*
# The wheels are mounted for this step only, so none of them stays in a layer.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links /wheels "backfill==${VERSION}" \
    && python -c "import backfill.decode._fastlogs" \
    && backfill --version
# A fixed UID, so Kubernetes' runAsNonRoot / runAsUser can check it (deploy/k8s runs it as 10001).
RUN groupadd --system --gid 10001 backfill \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/backfill --no-create-home \
       --shell /usr/sbin/nologin backfill \
    && install -d -o 10001 -g 10001 -m 0750 /var/lib/backfill
WORKDIR /var/lib/backfill
USER 10001:10001
# /metrics, /healthz, /readyz of a supervisor with BACKFILL_METRICS_ADDR=0.0.0.0:9464
EXPOSE 9464
ENTRYPOINT ["/usr/bin/tini", "--", "backfill"]
CMD ["--help"]
