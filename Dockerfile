# hpcgw gateway image: Debian's own Python, no other base image. Two stages: the builder makes
# the wheels (hpcgw's and its dependencies'), the runtime installs them; no compiler, no source
# tree and no editable install in the image.
#   scripts/build-image.sh                    (buildah, no Docker engine; see docs/operations.md)
#   docker build -t hpcgw .                   (where there is one)
# Migrations are their own command, run once per upgrade, before the replicas start:
#   podman run --rm --env-file hpcgw.env hpcgw db upgrade
#   podman run -d -p 8000:8000 --env-file hpcgw.env hpcgw
# `serve` refuses to start until `db upgrade` has brought the schema to head.
ARG BASE=debian:bookworm-slim

FROM ${BASE} AS builder
ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md alembic.ini ./
COPY alembic ./alembic
COPY gateway ./gateway
COPY consortium ./consortium
COPY quotas ./quotas
COPY schedulers ./schedulers
# The build backend (setuptools>=77, as pyproject.toml requires) in build's isolated environment.
# The secret `build_ca` (optional): the authorities pip trusts here, e.g. the build host's bundle
# behind an intercepting proxy (scripts/build-image.sh passes it); never part of an image.
RUN --mount=type=secret,id=build_ca \
    if [ -s /run/secrets/build_ca ]; then export PIP_CERT=/run/secrets/build_ca; fi \
    && python3 -m venv /opt/build \
    && /opt/build/bin/pip install "pip>=24" "build>=1.2" \
    && /opt/build/bin/python -m build --wheel --outdir /wheels . \
    && /opt/build/bin/pip wheel --wheel-dir /wheels /wheels/hpcgw-*.whl

# Python, as the runtime has it
FROM ${BASE} AS python
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/*

# The runtime's venv, installed from the builder's wheels only (--no-index): what was built is
# what runs. A stage of its own whose venv is copied, for COPY is keyed on what it copies: a RUN
# that bind-mounts the builder's wheels instead is reused by buildah's layer cache after the
# wheels changed (an earlier build ran; containers/buildah issue 6609), or cannot mount them
# when the builder stage itself came from the cache (issue 4375).
FROM python AS venv
COPY --from=builder /wheels /wheels
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-index --find-links /wheels hpcgw \
    && /opt/venv/bin/python -m compileall -q /opt/venv/lib

FROM python
RUN useradd --system --user-group --home-dir /var/lib/hpcgw --create-home \
        --shell /usr/sbin/nologin hpcgw
COPY --from=venv /opt/venv /opt/venv

USER hpcgw
WORKDIR /var/lib/hpcgw
ENV PATH=/opt/venv/bin:$PATH \
    HPCGW_HOST=0.0.0.0 \
    HPCGW_PORT=8000 \
    HPCGW_DATA_DIR=/var/lib/hpcgw \
    HPCGW_LOG_JSON=true
VOLUME /var/lib/hpcgw
EXPOSE 8000

# readiness, not liveness: a replica whose database does not answer is unhealthy
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('HPCGW_PORT', '8000'), timeout=4)"]

ENTRYPOINT ["hpcgw"]
CMD ["serve"]
