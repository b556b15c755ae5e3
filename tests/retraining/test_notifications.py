"""Job notifications, received by a real HTTP server and a real SMTP server on loopback."""

import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from conftest import AUTH, SAMPLES, make_settings, wait_for_job
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from servers import free_port

from prediction_service.api.app import create_app

SECRET = "webhook-secret"


class Receiver(ThreadingHTTPServer):
    """Answers the first POST with 503 (so the service must retry), then 200; keeps what it got."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.attempts = 0
        super().__init__(("127.0.0.1", 0), ReceiverHandler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hooks/jobs"


class ReceiverHandler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.attempts += 1
        if self.server.attempts == 1:
            self.send_response(503)
        else:
            self.server.received.append((dict(self.headers), body))
            self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[str] = []

    async def handle_DATA(self, server, session, envelope) -> str:
        self.messages.append(envelope.content.decode())
        return "250 OK"


@pytest.fixture
def receiver():
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def mailbox():
    box = Mailbox()
    controller = Controller(box, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield box, controller.port
    controller.stop()


def wait_until(condition, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError("timed out")


def test_a_finished_job_is_announced_by_signed_webhook_and_email(
    model_dir: Path, receiver: Receiver, mailbox: tuple[Mailbox, int]
) -> None:
    box, smtp_port = mailbox
    dead_url = f"http://127.0.0.1:{free_port()}/nobody-listens"
    settings = make_settings(
        model_dir,
        webhook_urls=[receiver.url, dead_url],
        webhook_secret=SECRET,
        webhook_backoff_seconds=0.05,
        smtp_host="127.0.0.1",
        smtp_port=smtp_port,
        notify_email_to=["ops@example.com"],
    )
    with TestClient(create_app(settings)) as client:
        upload = client.post("/upload-images", files={"file": (SAMPLES / "retrain_img.zip").read_bytes()}, headers=AUTH)
        job = wait_for_job(client, upload.json()["job_id"])  # a dead receiver does not hold the job up
        assert job["status"] == "succeeded"
        wait_until(lambda: receiver.received and box.messages)

    headers, body = receiver.received[0]
    assert receiver.attempts == 2  # retried after the 503
    payload = json.loads(body)
    assert payload["job_id"] == job["job_id"]
    assert payload["status"] == "succeeded"
    assert payload["new_version"] == 2
    assert payload["serving_version"] == 1
    assert payload["new_accuracy"] == job["result"]["holdout_accuracy"]
    assert payload["serving_accuracy"] == job["result"]["serving_accuracy"]
    expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["X-Signature-SHA256"], expected)
    [message] = box.messages
    assert "Subject: Retraining job" in message
    assert "succeeded" in message
    assert job["job_id"] in message


def jobs_ended(client: TestClient) -> float:
    """How many jobs this process has seen end; counted right after the notifier was told of the job."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(client.get("/metrics").text)
        for sample in family.samples
        if sample.name == "retraining_jobs_total"
    )


def run_job_until_announced(client: TestClient, headers: dict[str, str] | None = None, **form: str) -> dict:
    """Upload the sample and wait until the job ended and the notifier has been handed it."""
    before = jobs_ended(client)
    upload = client.post(
        "/upload-images",
        files={"file": (SAMPLES / "retrain_img.zip").read_bytes()},
        data=form,
        headers={**AUTH, **(headers or {})},
    )
    job = wait_for_job(client, upload.json()["job_id"])
    wait_until(lambda: jobs_ended(client) > before)
    return job


def test_without_settings_nothing_is_sent(model_dir: Path, receiver: Receiver, mailbox: tuple[Mailbox, int]) -> None:
    box, smtp_port = mailbox
    # Configured, the same receivers get the job's news: they are reachable and would see a delivery.
    configured = make_settings(
        model_dir,
        webhook_urls=[receiver.url],
        webhook_backoff_seconds=0.05,
        smtp_host="127.0.0.1",
        smtp_port=smtp_port,
        notify_email_to=["ops@example.com"],
    )
    with TestClient(create_app(configured)) as client:
        assert run_job_until_announced(client)["status"] == "succeeded"
        wait_until(lambda: receiver.received and box.messages)
    attempts, messages = receiver.attempts, len(box.messages)

    # The same store restarted without those settings (the SMTP port alone is no address to write to);
    # the upload itself names the receiver every way a careless service might take it from a request.
    bare = make_settings(model_dir, smtp_port=smtp_port, webhook_backoff_seconds=0.05)
    with TestClient(create_app(bare)) as client:
        job = run_job_until_announced(
            client, {"X-Callback-URL": receiver.url, "X-Webhook-URL": receiver.url}, callback_url=receiver.url
        )
        assert job["status"] == "succeeded"
    # Leaving the block stopped the notifier, which first waits for deliveries in flight: none was started.
    assert receiver.attempts == attempts
    assert len(box.messages) == messages
