# One image per role, from one file:
#   docker build --target agent -t fleetbench-agent .        # LiteRT + OpenVINO + Celery; no TensorFlow
#   docker build --target controller -t fleetbench-controller .   # API, converter worker, CLI (TensorFlow, NNCF)
#   docker build --target dashboard -t fleetbench-dashboard .     # Streamlit dashboard (no TensorFlow)
# docker-compose.yml builds all three.
FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN useradd --create-home --uid 1000 fleetbench
WORKDIR /src
COPY pyproject.toml README.md ./
COPY protocol ./protocol
COPY agent ./agent
COPY controller ./controller
COPY dashboard ./dashboard

FROM base AS agent
RUN pip install ".[agent]" && rm -rf /src
USER fleetbench
WORKDIR /home/fleetbench
CMD ["fleetbench-agent", "--help"]

FROM base AS controller
# tf-keras and tfmot (quantization-aware training) and apache-otava (change points) without their declared
# dependencies: see the Makefile's QAT_PKGS and OTAVA_PKG
RUN pip install ".[controller]" dm-tree six \
    && pip install --no-deps "tf-keras==$(python -c 'from importlib.metadata import version; print(".".join(version("tensorflow-cpu").split(".")[:2]))').*" \
       tensorflow-model-optimization==0.8.1 apache-otava==0.8.0 \
    && rm -rf /src && mkdir -p /data && chown fleetbench /data
USER fleetbench
WORKDIR /home/fleetbench
CMD ["fleetbench", "--help"]

FROM base AS dashboard
RUN pip install ".[dashboard]" && pip install --no-deps apache-otava==0.8.0 && rm -rf /src && mkdir -p /data && chown fleetbench /data
USER fleetbench
WORKDIR /home/fleetbench
EXPOSE 8501
CMD ["fleetbench", "dashboard", "--host", "0.0.0.0"]
