# The prediction service in a container.
#   docker build -t prediction-service .                        # models train at first start
#   docker build --build-arg TRAIN_MODELS=true -t prediction-service .   # ready in seconds
#   docker run -p 8000:8000 -v models:/app/model_store prediction-service
# Without internet access the first training uses the bundled sample (data/mnist-sample.npz); to choose another
# local MNIST: --build-arg MNIST_DATA=<path inside the build context>.

# --- build stage: a virtual environment with the pinned dependencies ---
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
COPY requirements.txt /tmp/requirements.txt
# Dependencies first, in a layer of their own: code changes do not reinstall them.
RUN /opt/venv/bin/pip install --no-cache-dir -r /tmp/requirements.txt \
    && find /opt/venv -name "__pycache__" -type d -prune -exec rm -rf {} + \
    && rm -rf /opt/venv/lib/python3.11/site-packages/*/tests /opt/venv/lib/python3.11/site-packages/tensorflow/include

# --- runtime stage: no compilers, no pip cache, a non-root user ---
FROM python:3.11-slim
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    ORT_DISABLE_TELEMETRY=1 \
    MODEL_DIR=/app/model_store \
    PORT=8000 \
    WORKERS=1
RUN groupadd --system --gid 10001 service \
    && useradd --system --uid 10001 --gid service --home-dir /app --shell /usr/sbin/nologin service \
    && mkdir -p /app/model_store \
    && chown service:service /app/model_store
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY --chown=service:service main.py penguins.csv ./
COPY --chown=service:service data/ ./data/
COPY --chown=service:service prediction_service/ ./prediction_service/
USER 10001:10001

# Optionally train the first model versions now, so that a container is ready in seconds.
ARG TRAIN_MODELS=false
ARG MNIST_DATA=""
ARG MNIST_EPOCHS=15
RUN --mount=type=bind,target=/build-context \
    if [ "$TRAIN_MODELS" = "true" ]; then \
        MNIST_DATA="${MNIST_DATA:+/build-context/$MNIST_DATA}" MNIST_EPOCHS="$MNIST_EPOCHS" \
        python -m prediction_service train; \
    fi

# Model versions, uploads and job records outlive the container (declared after training:
# a volume starts with what the image holds at this path).
VOLUME ["/app/model_store"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ.get('PORT', '8000')}/health/live\", timeout=4)"]
CMD ["sh", "-c", "exec fastapi run main.py --host 0.0.0.0 --port \"$PORT\" --workers \"$WORKERS\""]
