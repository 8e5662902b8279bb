# entitled: one image for every process, chosen by the command (deploy/entrypoint.sh):
#   web (ingest), worker, api, migrate; anything else is run as given.
# Plain Dockerfile syntax (no BuildKit-only features), so the classic builder builds it too.
ARG BASE=python:3.11-slim

# --- build: a virtualenv holding the service and its runtime dependencies only -------------
FROM ${BASE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
RUN python3 -m venv /opt/entitled && /opt/entitled/bin/pip install --upgrade pip
WORKDIR /src
# The wheel's own files only: no fakestripe/, tests/, bench/ or docs/ (see .dockerignore).
COPY pyproject.toml README.md LICENSE ./
COPY shared ./shared
COPY ingest ./ingest
COPY worker ./worker
COPY api ./api
# A wheel, not an editable install: the run stage gets no source tree. `otel` adds tracing
# (off unless OTEL_EXPORTER_OTLP_ENDPOINT is set); no dev, demo or embedded extras.
RUN /opt/entitled/bin/pip install '.[otel]' \
    && /opt/entitled/bin/pip uninstall --yes pip \
    && /opt/entitled/bin/python -m compileall -q /opt/entitled/lib

# --- run ------------------------------------------------------------------------------------
FROM ${BASE}
# A system user without a login shell or a writable home: the service writes nothing locally.
RUN useradd --system --uid 10001 --user-group --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin entitled
COPY --from=build /opt/entitled /opt/entitled
COPY deploy/entrypoint.sh /usr/local/bin/entitled-entrypoint
COPY deploy/healthcheck.py /usr/local/lib/entitled-healthcheck.py
ENV PATH=/opt/entitled/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    LOG_FORMAT=json \
    HOST=0.0.0.0
USER entitled:entitled
WORKDIR /nonexistent
EXPOSE 8080 8081
# Asks the process's own /healthz: ingest on PORT, api on API_PORT, a worker on its metrics
# port (WORKER_METRICS_PORT; healthy without it, as a worker serves nothing then).
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["/opt/entitled/bin/python", "/usr/local/lib/entitled-healthcheck.py"]
ENTRYPOINT ["/usr/local/bin/entitled-entrypoint"]
CMD ["web"]
