"""Automatic retraining on collected feedback: at the threshold or at the scheduled times, once per model."""

import asyncio
import json
import os
import shutil
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
from prediction_service.retraining import collected, runner
from prediction_service.retraining.collected import CollectedExamples
from prediction_service.retraining.runner import JobRunner
from prediction_service.retraining.triggers import AutomaticRetraining
from prediction_service.storage.examples import FEEDBACK, ExampleStore
from prediction_service.storage.jobs import AUTOMATIC, FAILED, MAX_ATTEMPTS, QUEUED, REJECTED, SUCCEEDED, JobStore
from prediction_service.storage.layout import MANIFEST, Layout
from prediction_service.storage.predictions import LoggedPrediction, PredictionLog
from prediction_service.storage.uploads import ORPHAN_AGE_SECONDS, UploadStore
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


def collect(trigger: AutomaticRetraining, count: int, label: str | None = None) -> None:
    for n in range(count):
        image = np.full((28, 28), n, np.uint8)
        trigger.examples.record("mnist", FEEDBACK, new_prediction_id(), label or str(n % 10), image)


def test_a_rejected_jobs_examples_come_back_only_with_enough_new_ones(model_dir: Path) -> None:
    trigger = automatic_retraining(model_dir, min_examples=3)
    collect(trigger, 3)
    first = trigger.check("mnist")
    assert first is not None
    assert first.upload["examples_watermark"] == 3
    trigger.jobs.claim_next("a worker", 60)
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


def test_a_job_whose_workers_keep_dying_runs_at_most_max_attempts_times_then_fails(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trigger = automatic_retraining(model_dir, min_examples=2)
    collect(trigger, 2)
    job = trigger.check("mnist")
    assert job is not None
    for attempt in range(1, MAX_ATTEMPTS + 1):
        # A worker claims it, then dies: its lease (0 s here) expires without a renewal.
        claimed = trigger.jobs.claim_next(f"worker {attempt}", 0)
        assert claimed is not None
        assert (claimed.id, claimed.attempts) == (job.id, attempt)
        lost = claimed.progress["lease_expired"] if attempt > 1 else None  # type: ignore[index]
        assert lost is None or (lost["owner"], lost["attempts"]) == (f"worker {attempt - 1}", attempt - 1)

    async def never_started(*args: object, **options: object) -> None:
        raise AssertionError("a job past its attempts was trained again")

    monkeypatch.setattr(runner, "start_child", never_started)

    async def next_worker() -> None:
        jobs = JobRunner(trigger.jobs, ModelStore(model_dir), trigger.uploads, make_settings(model_dir))
        await jobs.kick()
        await asyncio.wait_for(jobs._task, 30)  # type: ignore[arg-type]

    asyncio.run(next_worker())
    failed = trigger.jobs.get(job.id)
    assert (failed.status, failed.attempts) == (FAILED, MAX_ATTEMPTS)
    assert f"stopped renewing its lease {MAX_ATTEMPTS} times" in (failed.error or "")
    assert f"POST /jobs/{job.id}/retry" in (failed.error or "")
    assert ModelStore(model_dir).version_numbers("mnist") == [1]
    assert len(trigger.jobs.recent()) == 1  # the same job, never a copy


@pytest.mark.parametrize("schedule", ["every day", "* * * *", "0 25 * * *"])
def test_a_wrong_schedule_is_refused_at_start_with_what_to_write(tmp_path: Path, schedule: str) -> None:
    with pytest.raises(ValueError, match="cron expression of 5 fields"):
        make_settings(tmp_path, retrain_schedule=schedule)


def test_at_most_the_newest_examples_go_into_a_job(model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(collected, "MAX_SNAPSHOT_EXAMPLES", 3)
    trigger = automatic_retraining(model_dir, min_examples=5)
    collect(trigger, 5)
    job = trigger.check("mnist")
    assert job is not None
    images, labels = trigger.uploads.load(job.id)
    assert labels.tolist() == [2, 3, 4]  # the newest three
    assert images[:, 0, 0].tolist() == [2, 3, 4]
    assert (job.upload["images"], job.upload["examples_from"], job.upload["examples_watermark"]) == (3, 2, 5)
    assert job.upload["filename"] == "feedback examples 3-5"


def test_examples_without_a_label_of_the_model_start_no_job(model_dir: Path) -> None:
    trigger = automatic_retraining(model_dir, min_examples=2)
    collect(trigger, 2, label="a label the serving version lacks")
    assert trigger.check("mnist") is None
    assert trigger.jobs.recent() == []
    assert not Layout(model_dir).uploads.exists() or list(Layout(model_dir).uploads.iterdir()) == []


def test_recovery_removes_collected_examples_saved_by_a_process_killed_before_it_recorded_their_job(
    model_dir: Path,
) -> None:
    trigger = automatic_retraining(model_dir, min_examples=2)
    collect(trigger, 2)
    job = trigger.check("mnist")
    assert job is not None
    snapshot = trigger.collected.snapshot("mnist", "killed-before-its-job", 0, 2, DIGITS)
    assert snapshot is not None
    for upload_id in ("killed-before-its-job", "another-process-saving-now"):
        trigger.uploads.save(upload_id, snapshot, snapshot.manifest)
    long_ago = time.time() - ORPHAN_AGE_SECONDS - 60
    for upload_id in (job.id, "killed-before-its-job"):
        os.utime(Layout(model_dir).uploads / upload_id, (long_ago, long_ago))
    JobRunner(trigger.jobs, ModelStore(model_dir), trigger.uploads, make_settings(model_dir)).recover()
    kept = sorted(entry.name for entry in Layout(model_dir).uploads.iterdir())
    # A job's upload stays, however old; so does one that a running intake may be about to record.
    assert kept == sorted([job.id, "another-process-saving-now"])


class StoppedChild:
    """The training process as a stop finds it: whatever it got as far as, the SIGTERM ends it before its verdict."""

    def __init__(self) -> None:
        self.returncode: int | None = None
        self.terminated = asyncio.Event()

    def terminate(self) -> None:
        self.terminated.set()

    async def wait(self) -> int:
        await self.terminated.wait()
        self.returncode = -15
        return self.returncode


def store_candidate(store: ModelStore, job_id: str, passed: bool) -> int:
    """What a training job stores: a version of the job (the serving one's files), serving if it passed the gate."""
    serving = store.read_version("mnist", 1)

    def copy(folder: Path) -> None:
        for entry in serving.path.iterdir():
            if entry.is_file() and entry.name != MANIFEST:
                shutil.copy(entry, folder / entry.name)

    gate = {"passed": passed, "candidate_accuracy": 0.9, "serving_version": 1, "serving_accuracy": 0.9}
    manifest = {"source": "retraining", "job_id": job_id, "parent_version": 1, "gate": gate, "training_data": {}}
    version = store.add_version("mnist", copy, manifest).version
    if passed:
        store.set_serving("mnist", version)
    return version


@pytest.mark.parametrize(
    ("stored", "expected"),
    [("published", SUCCEEDED), ("rejected by the gate", REJECTED), ("nothing", QUEUED)],
)
def test_a_job_stopped_after_it_stored_its_version_ends_with_it_and_never_runs_again(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch, stored: str, expected: str
) -> None:
    trigger = automatic_retraining(model_dir, min_examples=2)
    collect(trigger, 2)
    job = trigger.check("mnist")
    assert job is not None
    store = ModelStore(model_dir)

    async def stop_during_the_job() -> None:
        child = StoppedChild()
        started = asyncio.Event()

        async def start_child(*args: object, **options: object) -> StoppedChild:
            if stored != "nothing":
                await asyncio.to_thread(store_candidate, store, job.id, passed=stored == "published")
            started.set()
            return child

        monkeypatch.setattr(runner, "start_child", start_child)
        jobs = JobRunner(trigger.jobs, store, trigger.uploads, make_settings(model_dir))
        await jobs.kick()
        async with asyncio.timeout(30):
            await started.wait()
            await jobs.stop()  # the graceful stop's SIGTERM

    asyncio.run(stop_during_the_job())
    settled = trigger.jobs.get(job.id)
    assert settled.status == expected
    if stored == "nothing":  # an automatic job is queued again: nobody is there to retry it
        assert store.version_numbers("mnist") == [1]
    else:  # final: it must not run again and store a second version from the same examples
        assert store.version_numbers("mnist") == [1, 2]
        assert settled.result is not None
        assert (settled.result["version"], settled.result["published"]) == (2, stored == "published")
        assert not trigger.jobs.has_queued()


def correct_penguins(client: TestClient, model_dir: Path, count: int) -> None:
    """Logged penguin predictions, then their species."""
    rows = [np.array([39.0 + n, 190.0 + n]) for n in range(count)]
    logged = [LoggedPrediction(new_prediction_id(), "penguins", 1, "Adelie", row, time.time()) for row in rows]
    PredictionLog(Layout(model_dir).learning, 10_000).append(logged)
    for prediction in logged:
        response = client.post(f"/predictions/{prediction.id}/feedback", json={"label": "Adelie"}, headers=AUTH)
        assert response.status_code == 201, response.text


def test_examples_that_reach_the_threshold_while_a_job_runs_start_the_next_job_when_it_ends(model_dir: Path) -> None:
    settings = make_settings(model_dir, retrain_min_examples=2)
    # Another worker trains a penguin job: the first automatic job waits its turn (one job per model).
    jobs = JobStore(Layout(model_dir).jobs)
    blocker = {"id": "f" * 32, "rows": 1, "layout": "csv", "label_counts": {}, "received_at": "now"}
    jobs.create("f" * 32, "penguins", blocker, {})
    assert jobs.claim_next("another worker", 600) is not None
    with TestClient(create_app(settings)) as client:
        correct_penguins(client, model_dir, 2)
        (first,) = wait_for(lambda: automatic_jobs(client))
        correct_penguins(client, model_dir, 2)  # the threshold again, while the first job is there
        assert client.get(f"/jobs/{first['job_id']}").json()["status"] == "queued"
        jobs.finish("f" * 32, FAILED, owner="another worker")
        first = wait_for_job(client, first["job_id"])
        # No more feedback: the first job's end starts the second.
        second = wait_for(lambda: [job for job in automatic_jobs(client) if job["job_id"] != first["job_id"]])[0]
    assert (first["upload"]["rows"], first["upload"]["images"]) == (2, None)  # rows, as a CSV upload's
    learned = first["status"] == "succeeded"  # the new version's watermark: its examples are no longer new
    assert (first["upload"]["examples_watermark"], second["upload"]["examples_watermark"]) == (2, 4)
    assert second["upload"]["rows"] == (2 if learned else 4)
