# Two images from one file:
#   --target service (the default): one image for every convmesh service, with
#     `shared/` and `services/` only. Pick the service with the SERVICE build
#     argument (its default command) or with the container command, e.g.
#       docker build --build-arg SERVICE=dedupe -t convmesh-dedupe .
#       docker run convmesh python -m services.attribute
#   --target ops: the operator tooling (`convmesh` CLI: topics, tokens, ...),
#     which the services never need; compose's one-shot `topics` job uses it.
FROM python:3.11-slim AS base

ENV PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    CONVMESH_DATA_DIR=/data \
    CONVMESH_WEB_HOST=0.0.0.0

WORKDIR /app
# Dependencies first (pinned by requirements.lock) so code edits reuse this layer:
# install the project once against empty packages to get its runtime deps only.
COPY pyproject.toml requirements.lock ./
RUN mkdir -p shared services ops \
 && touch shared/__init__.py services/__init__.py ops/__init__.py \
 && pip install --no-cache-dir -c requirements.lock . \
 && pip uninstall -y convmesh \
 && rm -rf shared services ops
COPY topics.yaml ./
COPY shared ./shared
COPY services ./services
RUN useradd --create-home --uid 10001 convmesh \
 && mkdir -p /data && chown convmesh /data

FROM base AS ops
COPY ops ./ops
# Editable: the code finds topics.yaml next to itself, in /app.
RUN pip install --no-cache-dir --no-deps -e .
USER convmesh
CMD ["convmesh", "--help"]

FROM base AS service
ARG SERVICE=ingest
ENV SERVICE=${SERVICE} PYTHONPATH=/app
USER convmesh
VOLUME ["/data"]
CMD ["sh", "-c", "exec python -m services.${SERVICE}"]
