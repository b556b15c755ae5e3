"""What an operator sees: Prometheus metrics, request ids, one log line per request."""

import io
import json
import logging

import pytest
from conftest import AUTH, SAMPLES, TOKEN
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from prediction_service.core import logs
from prediction_service.core.logs import JsonFormatter


def samples(client: TestClient) -> dict[str, list]:
    families = text_string_to_metric_families(client.get("/metrics").text)
    found: dict[str, list] = {}
    for family in families:
        for sample in family.samples:
            found.setdefault(sample.name, []).append(sample)
    return found


def value(found: dict[str, list], name: str, **labels: str) -> float:
    matching = [s.value for s in found.get(name, []) if all(s.labels.get(k) == v for k, v in labels.items())]
    assert matching, (name, labels)
    return sum(matching)


def test_metrics_parse_and_count_what_happened(client: TestClient) -> None:
    before = samples(client)
    for _ in range(3):
        client.get("/predict", params={"bill_length_mm": 40.3, "flipper_length_mm": 195})
    client.get("/predict", params={"bill_length_mm": -1, "flipper_length_mm": 195})
    client.post("/predict-image", files={"file": (SAMPLES / "test_img0.png").read_bytes()})
    after = samples(client)

    def grew(name: str, **labels: str) -> float:
        old = sum(s.value for s in before.get(name, []) if all(s.labels.get(k) == v for k, v in labels.items()))
        return value(after, name, **labels) - old

    assert grew("http_requests_total", method="GET", route="/predict", status="200") == 3
    assert grew("http_requests_total", method="GET", route="/predict", status="422") == 1
    assert grew("http_request_duration_seconds_count", route="/predict", status="200") == 3
    assert grew("predictions_total", model="penguins", version="1", result="Adelie") == 3
    assert grew("predictions_total", model="mnist", version="1") == 1
    assert value(after, "model_serving_version", model="mnist") == 1
    assert value(after, "model_serving_version", model="penguins") == 1
    assert grew("inference_batch_size_count") >= 1
    assert "inference_queue_depth" in after


def test_request_ids_are_returned_and_accepted(client: TestClient) -> None:
    generated = client.get("/health/live").headers["x-request-id"]
    assert len(generated) == 32
    assert client.get("/health/live", headers={"X-Request-ID": "abc-123"}).headers["x-request-id"] == "abc-123"
    assert client.get("/health/live", headers={"X-Request-ID": "bad id\n"}).headers["x-request-id"] != "bad id\n"


def test_one_log_line_per_request_with_id_status_latency_and_version(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="prediction_service.requests"):
        client.get(
            "/predict", params={"bill_length_mm": 40.3, "flipper_length_mm": 195}, headers={"X-Request-ID": "req-42"}
        )
    [record] = [r for r in caplog.records if r.name == "prediction_service.requests"]
    fields = record.fields  # type: ignore[attr-defined]
    assert fields["request_id"] == "req-42"
    assert fields["status"] == 200
    assert fields["route"] == "/predict"
    assert fields["model_version"] == 1
    assert fields["duration_ms"] > 0
    entry = json.loads(JsonFormatter().format(record))
    assert entry["request_id"] == "req-42"
    assert entry["message"].startswith("GET /predict 200")


def test_the_token_never_appears_in_logs_or_errors(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        client.post("/models/mnist/versions/1/activate", headers=AUTH)
        wrong = client.post("/models/mnist/versions/1/activate", headers={"Authorization": f"Bearer {TOKEN}-wrong"})
        client.post("/upload-images", files={"file": b"not a zip"}, headers=AUTH)
    assert TOKEN not in caplog.text
    assert TOKEN not in wrong.text


@pytest.mark.parametrize("json_lines", [False, True])
def test_request_lines_written_directly_match_the_log_format(json_lines: bool) -> None:
    """The request line skips logging's machinery when only the service's handler listens: it must
    read exactly as a line that went through logging."""
    logs.configure("INFO", json_lines)
    handler = logs._handler
    assert handler is not None
    original, handler.stream = handler.stream, io.StringIO()
    try:
        fields = {"request_id": "req-7", "status": 200, "route": "/predict", "model_version": 3}
        logs.log_request("GET /predict 200 0.3 ms", fields)
        logging.getLogger("prediction_service.requests").info("%s", "GET /predict 200 0.3 ms", extra={"fields": fields})
        direct, through_logging = handler.stream.getvalue().splitlines()
    finally:
        handler.stream = original
        logs.configure("INFO", False)
    if json_lines:
        direct_entry, logged_entry = json.loads(direct), json.loads(through_logging)
        assert direct_entry.keys() == logged_entry.keys()
        assert direct_entry["request_id"] == "req-7"
        assert direct_entry["message"] == logged_entry["message"]
    else:
        assert direct.split(" ", 2)[2] == through_logging.split(" ", 2)[2]  # all but the time
        assert "request_id=req-7" in direct
