# The training worker on a CUDA base (GPU nodes; it runs on the CPU too).
#   docker build -f deploy/docker/worker.Dockerfile -t ganforge-worker:0.1.0-cuda .
# For a CPU-only image use --build-arg BASE=python:3.11-slim and tag it 0.1.0-cpu.
ARG BASE=nvidia/cuda:13.0.0-cudnn-runtime-ubuntu24.04
FROM ${BASE}
ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1
RUN if ! command -v python3.11 >/dev/null; then \
      apt-get update && apt-get install -y --no-install-recommends software-properties-common \
      && add-apt-repository -y ppa:deadsnakes/ppa && apt-get update \
      && apt-get install -y --no-install-recommends python3.11 python3.11-venv \
      && rm -rf /var/lib/apt/lists/*; fi \
    && python3.11 -m venv /opt/ganforge
WORKDIR /app
COPY pyproject.toml README.md ./
COPY ganforge ganforge
COPY models models
COPY trainer trainer
COPY services services
RUN /opt/ganforge/bin/pip install '.[train]' && useradd --uid 10001 --create-home ganforge
USER 10001
ENV PATH=/opt/ganforge/bin:$PATH
ENTRYPOINT ["ganforge"]
CMD ["worker"]
