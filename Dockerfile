# hpcgw gateway image: Debian's own Python, no other base image.
#   docker build -t hpcgw .
#   docker run --rm -e HPCGW_SECRET_KEY=... -e HPCGW_DATABASE_URL=postgresql+psycopg://... hpcgw db upgrade
#   docker run -d -p 8000:8000 -e HPCGW_SECRET_KEY=... -e HPCGW_DATABASE_URL=... hpcgw
# `serve` refuses to start until `db upgrade` has brought the schema to head.
FROM debian:bookworm-slim

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/*

RUN useradd --system --user-group --home-dir /var/lib/hpcgw --create-home \
        --shell /usr/sbin/nologin hpcgw

WORKDIR /opt/hpcgw
# dependencies first: this layer is rebuilt only when pyproject.toml changes
COPY pyproject.toml README.md ./
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install "setuptools>=69" \
    && /opt/venv/bin/python -c 'import tomllib; d = tomllib.load(open("pyproject.toml", "rb")); print("\n".join(d["project"]["dependencies"]))' >/tmp/requirements.txt \
    && /opt/venv/bin/pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

COPY alembic.ini ./
COPY alembic ./alembic
COPY gateway ./gateway
COPY consortium ./consortium
COPY quotas ./quotas
COPY schedulers ./schedulers
# editable: the migrations (alembic/, alembic.ini) are found next to the packages
# (gateway/migrations.py), so the code stays in /opt/hpcgw, read-only for the service user
RUN /opt/venv/bin/pip install --no-deps --no-build-isolation -e . \
    && /opt/venv/bin/python -m compileall -q /opt/hpcgw

USER hpcgw
ENV PATH=/opt/venv/bin:$PATH \
    HPCGW_HOST=0.0.0.0 \
    HPCGW_PORT=8000 \
    HPCGW_DATA_DIR=/var/lib/hpcgw \
    HPCGW_LOG_JSON=true
VOLUME /var/lib/hpcgw
EXPOSE 8000

HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('HPCGW_PORT', '8000'), timeout=4)"]

ENTRYPOINT ["hpcgw"]
CMD ["serve"]
