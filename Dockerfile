# The prediction service in two images from this one file:
#   serving: the API (FastAPI + ONNX Runtime, no TensorFlow); RUN_TRAINING=false: it only enqueues jobs.
#   worker:  everything, TensorFlow included; runs `python -m prediction_service worker` (training jobs).
#
#   docker build --target serving -t prediction-service .
#   docker build --target worker -t prediction-service-worker .
#   docker run --rm -v models:/app/model_store prediction-service-worker python -m prediction_service train
#   docker run -p 8000:8000 -v models:/app/model_store prediction-service
#
# Without internet access `train` uses the bundled sample (data/mnist-sample.npz); mount a local MNIST and set
# MNIST_DATA to choose other data. compose.yaml runs the distributed set-up (PostgreSQL, S3, replicas, a worker).

# --- the virtual environments: pinned dependencies in layers of their own (code changes reinstall nothing) ---
FROM python:3.11-slim AS venv-serving
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv --without-pip /opt/venv
COPY scripts/install-venv.sh /usr/local/bin/install-venv
COPY requirements-serving.txt /tmp/
RUN install-venv /tmp/requirements-serving.txt

# The worker's venv adds the training libraries to the serving one.
FROM venv-serving AS venv-worker
COPY requirements.txt /tmp/
RUN install-venv /tmp/requirements.txt

# --- what both images share: no compilers, no pip cache, a non-root user ---
FROM python:3.11-slim AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    ORT_DISABLE_TELEMETRY=1 \
    MODEL_DIR=/app/model_store
RUN groupadd --system --gid 10001 service \
    && useradd --system --uid 10001 --gid service --home-dir /app --shell /usr/sbin/nologin service \
    && mkdir -p /app/model_store \
    && chown service:service /app/model_store
WORKDIR /app

# --- the worker: trains (jobs from the queue; `train` for missing first versions) ---
FROM runtime AS worker
COPY --from=venv-worker /opt/venv /opt/venv
COPY --chown=service:service main.py penguins.csv ./
COPY --chown=service:service data/ ./data/
COPY --chown=service:service prediction_service/ ./prediction_service/
USER 10001:10001
VOLUME ["/app/model_store"]
# Healthy while its settings reach the model store (MODEL_DIR, or the database and object store): the
# command lists every version, without loading TensorFlow.
HEALTHCHECK --interval=60s --timeout=20s --start-period=30s --retries=3 \
    CMD ["python", "-m", "prediction_service", "versions"]
CMD ["python", "-m", "prediction_service", "worker"]

# --- the API replicas (the default target) ---
FROM runtime AS serving
ENV PORT=8000 \
    WORKERS=1 \
    RUN_TRAINING=false
COPY --from=venv-serving /opt/venv /opt/venv
COPY --chown=service:service main.py penguins.csv ./
COPY --chown=service:service prediction_service/ ./prediction_service/
USER 10001:10001
# Model versions, uploads and job records outlive the container (embedded mode: shared with the worker).
VOLUME ["/app/model_store"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ.get('PORT', '8000')}/health/live\", timeout=4)"]
CMD ["sh", "-c", "exec fastapi run main.py --host 0.0.0.0 --port \"$PORT\" --workers \"$WORKERS\""]
