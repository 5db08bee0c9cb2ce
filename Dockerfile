# executor as a container: the wheel installed into a slim Python image, run as a non-root user.
#
#   docker build -t executor .
#   docker run -p 8420:8420 -e EXECUTOR_API_TOKEN=change-me -v executor-data:/var/lib/executor executor
#
# The default command is `executor run`; any other subcommand works too
# (`docker run --rm executor config`, `... migrate`). Settings are EXECUTOR_* variables
# (`config/executor.env.example`); `config/docker-compose.yml` runs PostgreSQL and two replicas.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
# Any other base works if it has `python` and `pip` on PATH and lets pip install system-wide, like
# the test's Debian base (tests/image/run.py). PIP_INDEX_URL (each stage) points pip at a mirror.

# -- build: the wheel (migrations and built-in plugins are packaged into it by pyproject.toml) ----
FROM ${PYTHON_IMAGE} AS build
ARG PIP_INDEX_URL
WORKDIR /src
COPY pyproject.toml README.md ./
COPY executor ./executor
COPY migrations ./migrations
COPY plugins ./plugins
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /dist .

# -- run -----------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}
ARG PIP_INDEX_URL

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN groupadd --system --gid 10001 executor \
    && useradd --system --uid 10001 --gid executor --home-dir /var/lib/executor \
        --shell /usr/sbin/nologin executor \
    && mkdir -p /var/lib/executor \
    && chown executor:executor /var/lib/executor

# The package from the wheel only (no source tree in the image), with the PostgreSQL driver.
COPY --from=build /dist/ /tmp/dist/
RUN pip install --no-cache-dir "$(find /tmp/dist -name 'executor-*.whl')[postgres]" \
    && rm -rf /tmp/dist

# Plugins are a mount point: the built-ins are here so that the image runs as it is; mount a
# directory of your own over /plugins (read-only is enough), with the built-ins copied in if you
# want them.
COPY plugins/ /plugins/

ENV EXECUTOR_DATABASE_URL=sqlite+aiosqlite:////var/lib/executor/executor.db \
    EXECUTOR_PLUGINS_DIR=/plugins \
    EXECUTOR_HTTP_ADDR=0.0.0.0:8420 \
    EXECUTOR_LOG_FORMAT=json

WORKDIR /var/lib/executor
VOLUME ["/var/lib/executor"]
EXPOSE 8420
USER 10001:10001

# SIGTERM (docker stop) finishes the round under way, hands back leases and exits 0 within
# EXECUTOR_SHUTDOWN_GRACE (30s by default): give `docker stop` a longer timeout than that.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-m", "executor.http.probe", "/healthz"]

ENTRYPOINT ["executor"]
CMD ["run"]
