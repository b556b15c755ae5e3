"""Prometheus metrics of the service (prometheus-client).

Per process by default. With several workers, set PROMETHEUS_MULTIPROCESS_DIR to an empty folder
before starting the server: every worker then writes its numbers there and `/metrics` sums them.
"""

import functools
import os

from prometheus_client import REGISTRY as DEFAULT_REGISTRY
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

REQUESTS = Counter("http_requests_total", "HTTP requests answered.", ["method", "route", "status"])
LATENCY = Histogram(
    "http_request_duration_seconds",
    "Time to answer an HTTP request.",
    ["method", "route", "status"],
    buckets=LATENCY_BUCKETS,
)
PREDICTIONS = Counter("predictions_total", "Predictions made.", ["model", "version", "result"])
SERVING_VERSION = Gauge(
    "model_serving_version", "The version each model serves in this process.", ["model"], multiprocess_mode="max"
)
JOBS = Counter("retraining_jobs_total", "Retraining jobs ended, by outcome.", ["outcome"])
JOB_DURATION = Histogram(
    "retraining_job_duration_seconds",
    "Time from a job's start to its end, by outcome.",
    ["outcome"],
    buckets=(5, 10, 30, 60, 120, 300, 600, 1800, 3600),
)
BATCH_SIZE = Histogram(
    "inference_batch_size", "Images per mnist-model inference call.", buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256)
)
PREDICTION_LOG_DROPPED = Counter(
    "prediction_log_dropped_total",
    "Predictions answered but not kept in the prediction log (its writer fell behind or failed).",
)
QUEUE_DEPTH = Gauge("inference_queue_depth", "Images waiting for the mnist model.", multiprocess_mode="livesum")


def count_prediction(model: str, version: int, result: object) -> None:
    _prediction_counter(model, version, str(result)).inc()


@functools.cache
def _prediction_counter(model: str, version: int, result: str) -> Counter:
    """The labelled child, looked up once (a label lookup costs more than the increment)."""
    return PREDICTIONS.labels(model, version, result)


def exposition(*shared: Collector) -> bytes:
    """The metrics in Prometheus's text format (summed over worker processes in multiprocess mode), then those of
    `shared` collectors, which read figures every process shares (e.g. from a database) at each scrape."""
    if os.environ.get("PROMETHEUS_MULTIPROCESS_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = DEFAULT_REGISTRY
    extra = CollectorRegistry(auto_describe=False)
    for collector in shared:
        extra.register(collector)
    return generate_latest(registry) + generate_latest(extra)
