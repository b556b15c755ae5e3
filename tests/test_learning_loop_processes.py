"""The learning loop as real processes: predictions of held-out digits, their true labels as feedback to two
workers, the automatic job at the threshold, a SIGKILL during it and while feedback arrives, a restart."""

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
from conftest import AUTH, MNIST_SMALL, ROOT, png_bytes, wait_for_job
from servers import running_server
from test_server_processes import quick_env

from prediction_service.storage.examples import ExampleStore
from prediction_service.storage.layout import Layout

pytestmark = pytest.mark.e2e

THRESHOLD = 30


def predicted(url: str, count: int) -> list[tuple[str, int]]:
    """Held-out digits (the sample's test set, which the store did not train on) sent to POST /predict-image:
    (prediction id, true label) of each answer."""
    with np.load(MNIST_SMALL) as data:
        images, labels = data["x_test"][:count], data["y_test"][:count]
    answers = []
    for index, (image, label) in enumerate(zip(images, labels, strict=True)):
        files = {"file": (f"held-out-{index}.png", png_bytes(image), "image/png")}
        response = httpx.post(f"{url}/predict-image", files=files, timeout=30)
        assert response.status_code == 200, response.text
        answers.append((response.json()["prediction_id"], int(label)))
    return answers


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
    env = quick_env(model_dir, RETRAIN_EPOCHS="2", RETRAIN_MIN_EXAMPLES=str(THRESHOLD))
    confirmed: list[str] = []
    with running_server(env, tmp_path / "server.log", workers=2) as server:
        group = server.process.pid
        try:
            predictions = predicted(server.url, THRESHOLD + 20)
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
    env = quick_env(model_dir)
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


def test_penguins_learn_from_feedback_and_from_a_csv(tmp_path: Path, trained_store: Path) -> None:
    """Real server: penguins predicted, their true species sent as feedback, the automatic job at the threshold
    publishes a version that serves; then a CSV of labelled rows does the same."""
    model_dir = tmp_path / "store"
    shutil.copytree(trained_store, model_dir)
    env = quick_env(model_dir, RETRAIN_MIN_EXAMPLES=str(THRESHOLD))
    rows = [line.split(",") for line in (ROOT / "penguins.csv").read_text().splitlines()[1:]]
    measured = [(row[0], row[2], row[4]) for row in rows if "NA" not in (row[2], row[4])][::7][:THRESHOLD]
    with running_server(env, tmp_path / "server.log") as server, httpx.Client(base_url=server.url) as client:
        for species, bill, flipper in measured:
            answer = httpx.get(f"{server.url}/predict", params={"bill_length_mm": bill, "flipper_length_mm": flipper})
            feedback = httpx.post(
                f"{server.url}/predictions/{answer.json()['prediction_id']}/feedback",
                json={"label": species},
                headers=AUTH,
            )
            assert feedback.status_code == 201, feedback.text
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not automatic_jobs(server.url):
            time.sleep(0.1)
        (job,) = automatic_jobs(server.url)
        assert job["model"] == "penguins"
        finished = wait_for_job(client, job["job_id"])
        assert finished["status"] == "succeeded", finished
        assert finished["result"]["published"] is True
        answer = httpx.get(f"{server.url}/predict", params={"bill_length_mm": 40.3, "flipper_length_mm": 195})
        assert answer.json()["model_version"] == finished["result"]["version"] == 2

        csv = (ROOT / "samples" / "penguin_rows.csv").read_bytes()
        upload = httpx.post(
            f"{server.url}/upload-penguins", files={"file": ("rows.csv", csv, "text/csv")}, headers=AUTH
        )
        assert upload.status_code == 202, upload.text
        finished = wait_for_job(client, upload.json()["job_id"])
        assert finished["status"] == "succeeded", finished
        answer = httpx.get(f"{server.url}/predict", params={"bill_length_mm": 40.3, "flipper_length_mm": 195})
        assert answer.json()["model_version"] == finished["result"]["version"] == 3
