"""Automatic retraining on collected feedback: at the threshold or at the scheduled times, once per model."""

import asyncio
import json
import threading
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import numpy as np
import pytest
from conftest import AUTH, make_settings, wait_for_job
from fastapi.testclient import TestClient
from test_notifications import Receiver

from prediction_service.api.app import create_app
from prediction_service.core.ids import new_prediction_id
from prediction_service.models.mnist.model import normalize_all
from prediction_service.retraining.collected import CollectedExamples
from prediction_service.retraining.runner import AUTOMATIC_MAX_ATTEMPTS, JobRunner
from prediction_service.retraining.triggers import AutomaticRetraining
from prediction_service.storage.examples import FEEDBACK, ExampleStore
from prediction_service.storage.jobs import AUTOMATIC, INTERRUPTED, QUEUED, REJECTED, JobStore
from prediction_service.storage.layout import Layout
from prediction_service.storage.predictions import LoggedPrediction, PredictionLog
from prediction_service.storage.uploads import UploadStore
from prediction_service.storage.versions import ModelStore

T = TypeVar("T")
DIGITS = [str(digit) for digit in range(10)]


def predict_and_correct(
    client: TestClient, model_dir: Path, mnist_arrays: dict[str, np.ndarray], indices: range
) -> list[dict]:
    """Held-out digits (the first training never saw them) as logged predictions, then their true labels."""
    images = normalize_all(mnist_arrays["x_test"][indices])
    labels = mnist_arrays["y_test"][indices]
    logged = [LoggedPrediction(new_prediction_id(), "mnist", 1, "0", image, time.time()) for image in images]
    PredictionLog(Layout(model_dir).learning, 10_000).append(logged)
    answers = []
    for prediction, label in zip(logged, labels, strict=True):
        response = client.post(f"/predictions/{prediction.id}/feedback", json={"label": str(label)}, headers=AUTH)
        assert response.status_code == 201, response.text
        answers.append(response.json())
    return answers


def automatic_jobs(client: TestClient) -> list[dict]:
    return [job for job in client.get("/jobs").json()["jobs"] if job["trigger"] == AUTOMATIC]


def wait_for(condition: Callable[[], T], timeout: float = 30.0) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout} s")


def test_feedback_reaching_the_threshold_retrains_and_serves_a_new_version_without_an_upload(
    model_dir: Path, mnist_arrays: dict[str, np.ndarray]
) -> None:
    receiver = Receiver()
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    settings = make_settings(
        model_dir, retrain_min_examples=40, webhook_urls=[receiver.url], webhook_backoff_seconds=0.05
    )
    with TestClient(create_app(settings)) as client:
        predict_and_correct(client, model_dir, mnist_arrays, range(39))
        assert client.get("/models/mnist/examples").json()["automatic_retraining"]["new_examples"] == 39
        assert automatic_jobs(client) == []
        last = predict_and_correct(client, model_dir, mnist_arrays, range(39, 40))[-1]
        (job,) = wait_for(lambda: automatic_jobs(client))
        finished = wait_for_job(client, job["job_id"], timeout=300)
        models = client.get("/models").json()["models"]
        examples = client.get("/models/mnist/examples").json()
        wait_for(lambda: receiver.received)  # announced as a manual job is
    receiver.shutdown()
    receiver.server_close()
    announced = json.loads(receiver.received[0][1])
    assert (announced["job_id"], announced["trigger"], announced["status"]) == (job["job_id"], AUTOMATIC, "succeeded")
    assert finished["trigger"] == AUTOMATIC
    assert finished["status"] == "succeeded", finished
    assert finished["result"]["published"] is True
    assert finished["upload"]["images"] == 40
    assert finished["upload"]["examples_watermark"] == last["example_id"]
    assert finished["upload"]["label_counts"] == {
        label: int(n) for label, n in zip(DIGITS, np.bincount(mnist_arrays["y_test"][:40], minlength=10), strict=True)
    }
    (mnist,) = [model for model in models if model["name"] == "mnist"]
    assert mnist["serving_version"] == 2
    assert mnist["versions"][-1]["training_data"]["examples_watermark"] == last["example_id"]
    # The new version has learned them: nothing is new to it.
    assert examples["serving_version"] == 2
    assert (examples["total"], examples["automatic_retraining"]["new_examples"]) == (0, 0)
    assert examples["since_example_id"] == last["example_id"]


def test_with_a_schedule_the_threshold_is_checked_only_at_the_scheduled_times(
    model_dir: Path, mnist_arrays: dict[str, np.ndarray]
) -> None:
    at_second = (datetime.now(UTC).second + 5) % 60  # the next check: in 5 s, then every minute
    settings = make_settings(model_dir, retrain_min_examples=3, retrain_schedule=f"* * * * * {at_second}")
    with TestClient(create_app(settings)) as client:
        predict_and_correct(client, model_dir, mnist_arrays, range(5))
        automatic = client.get("/models/mnist/examples").json()["automatic_retraining"]
        assert automatic_jobs(client) == []  # over the threshold, but not yet the time
        next_check = datetime.fromisoformat(automatic["next_check"])
        assert next_check.second == at_second
        (job,) = wait_for(lambda: automatic_jobs(client), timeout=15)
    assert datetime.fromisoformat(job["created_at"]) >= next_check
    assert job["upload"]["images"] == 5


async def no_kick() -> None:
    pass


def automatic_retraining(
    model_dir: Path, min_examples: int, kick: Callable[[], Awaitable[None]] = no_kick
) -> AutomaticRetraining:
    """The trigger as a process makes it, on the stores of `model_dir`; `kick` would run the jobs."""
    layout = Layout(model_dir)
    jobs = JobStore(layout.jobs)
    collected = CollectedExamples(ExampleStore(layout.learning), jobs, ModelStore(model_dir))
    settings = make_settings(model_dir, retrain_min_examples=min_examples)
    return AutomaticRetraining(
        settings, collected, jobs, UploadStore(layout.uploads), ["mnist"], lambda _: DIGITS, kick
    )


def collect(trigger: AutomaticRetraining, count: int) -> None:
    for n in range(count):
        trigger.examples.record("mnist", FEEDBACK, new_prediction_id(), str(n % 10), np.full((28, 28), n, np.uint8))


def test_a_rejected_jobs_examples_come_back_only_with_enough_new_ones(model_dir: Path) -> None:
    trigger = automatic_retraining(model_dir, min_examples=3)
    collect(trigger, 3)
    first = trigger.check("mnist")
    assert first is not None
    assert first.upload["examples_watermark"] == 3
    trigger.jobs.claim_next()
    trigger.jobs.finish(first.id, REJECTED)
    assert trigger.check("mnist") is None  # the same examples again: no
    collect(trigger, 2)
    assert trigger.check("mnist") is None  # two new ones: not enough
    collect(trigger, 1)
    second = trigger.check("mnist")
    assert second is not None
    # All that the serving version has not learned: the rejected job's examples with the new ones.
    images, labels = trigger.uploads.load(second.id)
    assert (second.upload["examples_from"], second.upload["examples_watermark"]) == (0, 6)
    assert labels.tolist() == [0, 1, 2, 0, 1, 0]
    assert images.shape == (6, 28, 28)
    assert images[3:, 0, 0].tolist() == [0, 1, 0]


def test_one_automatic_job_at_a_time_and_examples_left_at_start_up_are_checked(model_dir: Path) -> None:
    trigger = automatic_retraining(model_dir, min_examples=2)
    collect(trigger, 2)

    async def start_up() -> None:
        kicked = asyncio.Event()

        async def kick() -> None:
            kicked.set()

        other = automatic_retraining(model_dir, min_examples=2, kick=kick)  # a process starting
        await other.start()  # no schedule: it checks once at start-up, off the start's path
        async with asyncio.timeout(10):
            await kicked.wait()  # told its job runner that a job waits
        await other.stop()

    asyncio.run(start_up())
    (job,) = trigger.jobs.recent()
    assert job.trigger == AUTOMATIC
    collect(trigger, 5)
    assert trigger.check("mnist") is None  # one is queued: no second one
    assert len(trigger.jobs.recent()) == 1


def test_an_automatic_job_interrupted_by_a_kill_is_queued_again_a_bounded_number_of_times(model_dir: Path) -> None:
    trigger = automatic_retraining(model_dir, min_examples=2)
    collect(trigger, 2)
    job = trigger.check("mnist")
    assert job is not None
    runner = JobRunner(trigger.jobs, ModelStore(model_dir), trigger.uploads, make_settings(model_dir))
    for attempt in range(1, AUTOMATIC_MAX_ATTEMPTS + 1):
        claimed = trigger.jobs.claim_next()  # running; then the process is killed
        assert claimed is not None
        assert (claimed.id, claimed.attempts) == (job.id, attempt)
        assert runner.recover() == ([] if attempt < AUTOMATIC_MAX_ATTEMPTS else [job.id])
        expected = QUEUED if attempt < AUTOMATIC_MAX_ATTEMPTS else INTERRUPTED
        assert trigger.jobs.get(job.id).status == expected
    assert len(trigger.jobs.recent()) == 1  # the same job, never a copy


@pytest.mark.parametrize("schedule", ["every day", "* * * *", "0 25 * * *"])
def test_a_wrong_schedule_is_refused_at_start_with_what_to_write(tmp_path: Path, schedule: str) -> None:
    with pytest.raises(ValueError, match="cron expression of 5 fields"):
        make_settings(tmp_path, retrain_schedule=schedule)
