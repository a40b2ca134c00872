# One image for every convmesh service. Pick the service with the SERVICE build
# argument (its default command) or with the container command, e.g.
#   docker build --build-arg SERVICE=dedupe -t convmesh-dedupe .
#   docker run convmesh python -m services.attribute
FROM python:3.11-slim

ARG SERVICE=ingest
ENV SERVICE=${SERVICE} \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    CONVMESH_DATA_DIR=/data \
    CONVMESH_WEB_HOST=0.0.0.0

WORKDIR /app
# Dependencies first (pinned by requirements.lock) so code edits reuse this layer:
# install the project once against empty packages to get its runtime deps only.
COPY pyproject.toml requirements.lock ./
RUN mkdir -p shared services \
 && touch shared/__init__.py services/__init__.py \
 && pip install --no-cache-dir -c requirements.lock . \
 && pip uninstall -y convmesh
COPY topics.yaml ./
COPY shared ./shared
COPY services ./services
# Editable: the code finds topics.yaml next to itself, in /app.
RUN pip install --no-cache-dir --no-deps -e . \
 && useradd --create-home --uid 10001 convmesh \
 && mkdir -p /data && chown convmesh /data
USER convmesh
VOLUME ["/data"]

CMD ["sh", "-c", "exec python -m services.${SERVICE}"]
