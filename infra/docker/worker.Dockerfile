# syntax=docker/dockerfile:1.7
# Flow runs and the Prefect worker: the whole pinned stack with CUDA torch (training on GPU nodes, CPU
# elsewhere) and the Kubernetes worker. Runs use the project at /opt/gradus (`gradus deploy --pool-type
# kubernetes` registers deployments that run from there).
#   docker build -f infra/docker/worker.Dockerfile -t gradus-worker:0.1.0 .
# Base: the slim Python image, not nvidia/cuda: torch's CUDA wheels carry the CUDA runtime libraries
# (cuBLAS, cuDNN, NCCL) themselves; a GPU node needs only its driver and the NVIDIA device plugin.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN apt-get update && apt-get install -y --no-install-recommends git && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/venv && /opt/venv/bin/pip install "pip==26.3"
WORKDIR /opt/gradus
COPY . .
RUN /opt/venv/bin/pip install -c constraints.txt ".[kubernetes]"

FROM ${PYTHON_IMAGE}
RUN apt-get update && apt-get install -y --no-install-recommends git && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 gradus && useradd --uid 10001 --gid 10001 --create-home gradus
COPY --from=build /opt/venv /opt/venv
COPY --from=build --chown=10001:10001 /opt/gradus /opt/gradus
ENV PATH=/opt/venv/bin:$PATH HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1 \
    DVC_NO_ANALYTICS=1 PREFECT_SERVER_ANALYTICS_ENABLED=false
WORKDIR /opt/gradus
USER 10001:10001
ENTRYPOINT ["prefect"]
CMD ["worker", "start", "--pool", "gradus-kubernetes", "--type", "kubernetes"]
