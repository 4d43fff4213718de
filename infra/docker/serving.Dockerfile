# syntax=docker/dockerfile:1.7
# The inference service: CPU torch and ONNX Runtime, the gradus core, the service and its CLI; no training,
# validation, orchestration or drift code. The model is pulled from the registry at start, never baked in.
#   docker build -f infra/docker/serving.Dockerfile -t gradus-serving:0.1.0 .
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/venv && /opt/venv/bin/pip install "pip==26.3"
COPY constraints.txt infra/docker/serving-requirements.txt /tmp/
# The CPU build of torch (the PyPI default is the CUDA build with several GB of CUDA libraries).
RUN /opt/venv/bin/pip install --extra-index-url https://download.pytorch.org/whl/cpu \
      -c /tmp/constraints.txt -r /tmp/serving-requirements.txt
WORKDIR /opt/gradus
COPY pyproject.toml README.md params.yaml ./
COPY gradus/ gradus/
COPY serving/ serving/
COPY cli/ cli/
RUN /opt/venv/bin/pip install --no-deps . && rm -rf build *.egg-info

FROM ${PYTHON_IMAGE}
RUN groupadd --gid 10001 gradus && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin gradus
COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/gradus/params.yaml /opt/gradus/params.yaml
ENV PATH=/opt/venv/bin:$PATH HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 HF_HOME=/tmp/hf
WORKDIR /opt/gradus
USER 10001:10001
EXPOSE 8000
ENTRYPOINT ["gradus"]
CMD ["serve", "--host=0.0.0.0", "--port=8000", "--params=/opt/gradus/params.yaml"]
