# syntax=docker/dockerfile:1
# One image for every Tierwise command: `tierwise operator`, `router`, `eval`, `emulator`, ...
#
#   docker build -t tierwise .                               # base from a registry
#   make image                                               # buildah, on a locally built base
#
# BASE must provide python3 (>= 3.11) with the venv module at the same path in both stages;
# the runtime stage only receives the virtualenv, so build tools never reach the final image.
ARG BASE=docker.io/library/python:3.11-slim-bookworm

FROM ${BASE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore
RUN python3 -m venv /opt/tierwise
# Dependencies first, from pyproject.toml alone: a code change reuses this layer.
COPY pyproject.toml /src/pyproject.toml
RUN python3 -c 'import tomllib; print("\n".join(tomllib.load(open("/src/pyproject.toml", "rb"))["project"]["dependencies"]))' \
      > /tmp/requirements.txt \
 && /opt/tierwise/bin/pip install --quiet -r /tmp/requirements.txt
COPY README.md /src/README.md
COPY operator /src/operator
RUN /opt/tierwise/bin/pip wheel --quiet --no-deps --wheel-dir /tmp/dist /src \
 && /opt/tierwise/bin/pip install --quiet --no-deps /tmp/dist/*.whl \
 && /opt/tierwise/bin/pip uninstall --quiet --yes pip setuptools \
 && /opt/tierwise/bin/python -m compileall -q /opt/tierwise/lib >/dev/null
# Size: the kubernetes distribution carries an asyncio twin of its client (kubernetes.aio,
# about 68 MB) that nothing in Tierwise imports (the image test imports every command).
RUN site="$(/opt/tierwise/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" \
 && rm -rf "$site/kubernetes/aio"

FROM ${BASE}
ARG VERSION=0.0.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="tierwise" \
      org.opencontainers.image.description="Tierwise operator, router sidecar, eval runner and model emulator" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/tierwise/tierwise" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
COPY --from=build /opt/tierwise /opt/tierwise
# Bytecode was compiled at build time; a read-only root filesystem needs no writes at run time.
ENV PATH=/opt/tierwise/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# A numeric UID/GID so Kubernetes' runAsNonRoot can verify it without /etc/passwd lookups.
USER 65532:65532
WORKDIR /tmp
ENTRYPOINT ["tierwise"]
CMD ["--help"]
