# syntax=docker/dockerfile:1
# Ferry's image: the sidecar in a virtual environment on a slim Python 3.11 base, run as a fixed
# non-root user, with nothing written outside its write-ahead log volume (a read-only root
# filesystem works). `make image` builds it on machines that cannot pull the official base (see
# the README's "Container image").
#
# BASE_IMAGE is any image with Python 3.11 as `python3` on PATH, its `venv` module, a shell and
# groupadd/useradd: the official slim image, or the Debian stand-in built by
# tools/build_base_image.sh (its python3 is /usr/bin/python3, the official one's
# /usr/local/bin/python3; the venv links to whichever the base has, and both stages share it).
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_CONFIG_FILE=/run/secrets/pip.conf \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# The build machine's pip settings (index, CA bundle) come in as the optional secrets pip.conf
# and pip-cert, never into a layer: without them pip uses its defaults.
COPY pyproject.toml constraints.txt ./
# Dependencies first, pinned by constraints.txt, in a layer that source changes leave cached.
RUN --mount=type=secret,id=pip.conf --mount=type=secret,id=pip-cert \
    python3 -m venv /opt/ferry \
 && python3 -c 'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"], sep="\n")' \
      > /src/requirements.txt \
 && /opt/ferry/bin/pip install --requirement /src/requirements.txt --constraint constraints.txt
COPY README.md ./
COPY sidecar ./sidecar
# Ferry as a wheel (hatchling, pinned by constraints.txt through PIP_CONSTRAINT also inside the
# isolated build environment), installed without its dependencies (all installed above); then
# pip and setuptools leave the venv, which the final stage copies as it is.
RUN --mount=type=secret,id=pip.conf --mount=type=secret,id=pip-cert \
    PIP_CONSTRAINT=/src/constraints.txt /opt/ferry/bin/pip wheel --no-deps --wheel-dir /wheels . \
 && /opt/ferry/bin/pip install --no-deps /wheels/ferry_sidecar-*.whl \
 && /opt/ferry/bin/pip check \
 && /opt/ferry/bin/pip uninstall --yes pip setuptools

FROM ${BASE_IMAGE}
# Numeric IDs, so that Kubernetes' runAsNonRoot can verify them without reading /etc/passwd.
ARG UID=10001
ARG GID=10001
RUN groupadd --gid "${GID}" ferry \
 && useradd --uid "${UID}" --gid "${GID}" --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin ferry \
 && mkdir -p /var/lib/ferry \
 && chown "${UID}:${GID}" /var/lib/ferry \
 && chmod 0700 /var/lib/ferry
COPY --from=builder /opt/ferry /opt/ferry
# Python writes no bytecode at run time (the venv's was compiled when pip installed it, the
# base's stdlib comes compiled), so the root filesystem may be read-only; logs go to stdout and
# stderr unbuffered; the write-ahead log lives in the volume.
# FERRY_LISTEN is loopback, Ferry's own default: the application in the pod reaches it there,
# and Ferry refuses a non-loopback address without TLS unless told --insecure-bind-all. A
# deployment whose kubelet probes Ferry over gRPC (the probe connects to the pod IP) sets
# FERRY_LISTEN=0.0.0.0:50051 and FERRY_INSECURE_BIND_ALL=true, or probes another way.
ENV PATH=/opt/ferry/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    FERRY_DATA_DIR=/var/lib/ferry \
    FERRY_LISTEN=127.0.0.1:50051
VOLUME ["/var/lib/ferry"]
EXPOSE 50051
USER ${UID}:${GID}
WORKDIR /var/lib/ferry
# Exec form: Ferry is PID 1 and gets SIGTERM itself (it drains, then exits 0).
STOPSIGNAL SIGTERM
ENTRYPOINT ["ferry", "serve"]

ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="Ferry" \
      org.opencontainers.image.description="gRPC sidecar for reliable, at-least-once publish and subscribe on Apache Kafka" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}"
