"""The learning loop as real processes: feedback to two workers, a SIGKILL during the automatic job, a restart."""

import contextlib
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import AUTH, MNIST_SMALL, TOKEN
from servers import running_server

from prediction_service.core.ids import new_prediction_id
from prediction_service.models.mnist.model import normalize_all
from prediction_service.storage.examples import ExampleStore
from prediction_service.storage.layout import Layout
from prediction_service.storage.predictions import LoggedPrediction, PredictionLog

pytestmark = pytest.mark.e2e

THRESHOLD = 30


def logged_predictions(model_dir: Path, count: int) -> list[tuple[str, int]]:
    """Held-out digits as predictions in the store's log (as the service keeps them); (id, true label)."""
    with np.load(MNIST_SMALL) as data:
        images, labels = normalize_all(data["x_test"][:count]), data["y_test"][:count]
    logged = [LoggedPrediction(new_prediction_id(), "mnist", 1, "0", image, time.time()) for image in images]
    PredictionLog(Layout(model_dir).learning, 10_000).append(logged)
    return [(prediction.id, int(label)) for prediction, label in zip(logged, labels, strict=True)]


def send(url: str, prediction_id: str, label: int) -> int:
    try:
        response = httpx.post(f"{url}/predictions/{prediction_id}/feedback", json={"label": str(label)}, headers=AUTH)
    except httpx.HTTPError:
        return 0  # the server died under it
    return response.status_code


def automatic_jobs(url: str) -> list[dict]:
    return [job for job in httpx.get(f"{url}/jobs").json()["jobs"] if job["trigger"] == "automatic"]


def test_a_sigkill_during_feedback_and_the_automatic_job_loses_no_label_and_runs_the_job_once(
    tmp_path: Path, trained_store: Path
) -> None:
    model_dir = tmp_path / "store"
    shutil.copytree(trained_store, model_dir)
    predictions = logged_predictions(model_dir, THRESHOLD + 20)
    env = {
        "MODEL_DIR": str(model_dir),
        "MNIST_DATA": str(MNIST_SMALL),
        "ADMIN_TOKEN": TOKEN,
        "DECODE_PROCESSES": "0",
        "RETRAIN_EPOCHS": "2",
        "RETRAIN_LEARNING_RATE": "0.001",
        "RETRAIN_MIN_EXAMPLES": str(THRESHOLD),
    }
    confirmed: list[str] = []
    with running_server(env, tmp_path / "server.log", workers=2) as server:
        group = server.process.pid
        try:
            for prediction_id, label in predictions[:THRESHOLD]:  # both workers answer, both check the threshold
                assert send(server.url, prediction_id, label) == 201
                confirmed.append(prediction_id)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not [
                j for j in automatic_jobs(server.url) if j["status"] == "running"
            ]:
                time.sleep(0.1)
            (job,) = automatic_jobs(server.url)
            assert job["status"] == "running", job

            def more_feedback() -> None:  # still arriving when the server dies
                for prediction_id, label in predictions[THRESHOLD:]:
                    if send(server.url, prediction_id, label) != 201:
                        return
                    confirmed.append(prediction_id)

            sender = threading.Thread(target=more_feedback)
            sender.start()
            while len(confirmed) < THRESHOLD + 5 and sender.is_alive():
                time.sleep(0.01)
            server.kill()
            sender.join()
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)

    kept = {example.prediction_id for example in ExampleStore(Layout(model_dir).learning).between("mnist", 0, 10**9)}
    assert set(confirmed) <= kept  # every 201 survived the kill
    assert len(confirmed) >= THRESHOLD + 5

    with running_server(env, tmp_path / "restart.log", workers=2) as server:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            (again,) = automatic_jobs(server.url)  # the same job, queued again: never a second one
            if again["status"] not in ("queued", "running"):
                break
            time.sleep(0.3)
        assert again["job_id"] == job["job_id"]
        assert again["status"] == "succeeded", again
        assert again["attempts"] == 2
        assert httpx.get(f"{server.url}/").json()["models"]["mnist"]["serving_version"] == 2


def test_feedback_right_after_an_answer_finds_it_whichever_worker_answered(tmp_path: Path, trained_store: Path) -> None:
    """Two workers, each with its own buffer of the prediction log: feedback sent the moment the answer came may
    reach the other worker, which finds the prediction once the answering one has written its buffer."""
    model_dir = tmp_path / "store"
    shutil.copytree(trained_store, model_dir)
    env = {"MODEL_DIR": str(model_dir), "MNIST_DATA": str(MNIST_SMALL), "ADMIN_TOKEN": TOKEN, "DECODE_PROCESSES": "0"}
    with running_server(env, tmp_path / "server.log", workers=2) as server:
        statuses = []
        for n in range(30):  # a new connection each: the kernel spreads them over both workers
            answer = httpx.get(
                f"{server.url}/predict", params={"bill_length_mm": 40 + n / 10, "flipper_length_mm": 195}
            )
            feedback = httpx.post(
                f"{server.url}/predictions/{answer.json()['prediction_id']}/feedback",
                json={"label": answer.json()["result"]},
                headers=AUTH,
            )
            statuses.append(feedback.status_code)
    assert statuses == [201] * 30, server.log_text()[-3000:]
