import contextlib
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import AUTH, SAMPLES, dead_process_owner, labelled_zip, make_settings, wait_for_job
from fastapi.testclient import TestClient

from prediction_service.api.app import create_app
from prediction_service.models.mnist.onnx_runtime import OnnxDigitClassifier
from prediction_service.retraining.archive import LabelledImages
from prediction_service.retraining.intake import training_params
from prediction_service.retraining.runner import JobRunner
from prediction_service.storage.jobs import JobStore
from prediction_service.storage.uploads import UploadStore

SAMPLE_ZIP = SAMPLES / "retrain_img.zip"


def upload(client: TestClient, data: bytes, headers: dict[str, str] | None = None):
    return client.post(
        "/upload-images", files={"file": ("upload.zip", data)}, headers=AUTH if headers is None else headers
    )


def digit_version(client: TestClient) -> int:
    response = client.post("/predict-image", files={"file": (SAMPLES / "test_img0.png").read_bytes()})
    return response.json()["model_version"]


@pytest.fixture
def mislabelled_zip(mnist_arrays: dict[str, np.ndarray]) -> bytes:
    images, labels = mnist_arrays["x_train"][:1000], mnist_arrays["y_train"][:1000]
    return labelled_zip(images, (labels + 1) % 10)


# The job scores with Keras, this test with the served ONNX export: they may disagree on a few near-ties
# (10 of the 2,000 hold-out digits at most; a mislabelled model has many near-ties between two classes).
NEAR_TIES = 0.005


def holdout_accuracy(model_dir: Path, version: int, mnist_arrays: dict[str, np.ndarray]) -> float:
    """A stored version's accuracy on the data's own hold-out digits and labels, measured here."""
    model = OnnxDigitClassifier.load(model_dir / "mnist" / str(version))
    return float((model.probabilities(mnist_arrays["x_test"]).argmax(axis=1) == mnist_arrays["y_test"]).mean())


def test_the_sample_zip_retrains_to_a_new_serving_version(
    client: TestClient, model_dir: Path, mnist_arrays: dict[str, np.ndarray]
) -> None:
    response = upload(client, SAMPLE_ZIP.read_bytes())
    assert response.status_code == 202
    accepted = response.json()
    assert accepted["status"] == "queued"
    assert accepted["status_url"] == f"/jobs/{accepted['job_id']}"
    assert response.headers["location"] == accepted["status_url"]
    assert accepted["upload"]["images"] == 1000
    assert accepted["upload"]["layout"] == "labels file"

    job = wait_for_job(client, accepted["job_id"])
    assert job["status"] == "succeeded", job
    assert [entry["epoch"] for entry in job["history"]] == [1, 2]
    result = job["result"]
    assert result["version"] == 2
    assert result["published"] is True
    assert result["serving_version"] == 1
    # The reported accuracies are the versions' true ones, and correct labels keep the model good.
    assert result["serving_accuracy"] == pytest.approx(holdout_accuracy(model_dir, 1, mnist_arrays), abs=NEAR_TIES)
    assert result["holdout_accuracy"] == pytest.approx(holdout_accuracy(model_dir, 2, mnist_arrays), abs=NEAR_TIES)
    assert result["holdout_accuracy"] >= 0.9
    models = {model["name"]: model for model in client.get("/models").json()["models"]}
    assert models["mnist"]["serving_version"] == 2
    version = models["mnist"]["versions"][-1]
    assert version["gate"]["passed"] is True
    assert version["job_id"] == accepted["job_id"]
    assert digit_version(client) == 2
    assert client.get("/jobs").json()["jobs"][0]["job_id"] == accepted["job_id"]


def test_a_mislabelled_upload_is_rejected_and_nothing_changes(
    client: TestClient, model_dir: Path, mnist_arrays: dict[str, np.ndarray], mislabelled_zip: bytes
) -> None:
    job = wait_for_job(client, upload(client, mislabelled_zip).json()["job_id"])
    assert job["status"] == "rejected", job
    # Measured here: the candidate learned shifted labels and is clearly worse than version 1.
    serving, candidate = holdout_accuracy(model_dir, 1, mnist_arrays), holdout_accuracy(model_dir, 2, mnist_arrays)
    assert job["result"]["serving_accuracy"] == pytest.approx(serving, abs=NEAR_TIES)
    assert job["result"]["holdout_accuracy"] == pytest.approx(candidate, abs=NEAR_TIES)
    # Worse than the gate's margin (0.01) allows, by more than Keras and ONNX disagree on near-ties; replay's
    # correct images soften the damage (0.87 to 0.94 against 0.97 in runs so far).
    assert candidate < serving - 0.01 - NEAR_TIES
    assert job["result"]["published"] is False
    models = {model["name"]: model for model in client.get("/models").json()["models"]}
    assert models["mnist"]["serving_version"] == 1
    candidate = models["mnist"]["versions"][-1]
    assert (candidate["version"], candidate["published"], candidate["gate"]["passed"]) == (2, False, False)
    assert digit_version(client) == 1


def test_rollback_and_promoting_a_kept_version(client: TestClient, mislabelled_zip: bytes) -> None:
    job = wait_for_job(client, upload(client, mislabelled_zip).json()["job_id"])
    assert job["status"] == "rejected"
    promoted = client.post("/models/mnist/versions/2/activate", headers=AUTH)
    assert promoted.status_code == 200
    assert promoted.json()["serving_version"] == 2
    assert digit_version(client) == 2
    rolled_back = client.post("/models/mnist/versions/1/activate", headers=AUTH)
    assert rolled_back.json()["serving_version"] == 1
    assert digit_version(client) == 1
    assert client.post("/models/mnist/versions/9/activate", headers=AUTH).status_code == 404
    assert client.post("/models/zebra/versions/1/activate", headers=AUTH).status_code == 404


def test_a_second_upload_waits_its_turn(client: TestClient) -> None:
    data = SAMPLE_ZIP.read_bytes()
    first = upload(client, data).json()["job_id"]
    second = upload(client, data).json()["job_id"]
    assert client.get(f"/jobs/{second}").json()["status"] == "queued"
    assert wait_for_job(client, first)["status"] == "succeeded"
    finished = wait_for_job(client, second)
    assert finished["status"] == "succeeded"
    assert finished["result"]["serving_version"] == 2  # it was gated against the first job's version
    assert finished["result"]["version"] == 3
    jobs = client.get("/jobs").json()["jobs"]
    assert [job["job_id"] for job in jobs[:2]] == [second, first]


@pytest.mark.parametrize(
    ("data", "status", "message"),
    [
        (b"plain text", 415, "not a zip"),
        (labelled_zip(np.zeros((2, 28, 28), np.uint8), [1]), 422, "has 1 labels but the archive has 2 images"),
        (labelled_zip(np.zeros((1, 28, 28), np.uint8), [12]), 422, "line 1: 12 is outside 0-9"),
    ],
)
def test_invalid_uploads_are_refused_before_anything_is_stored(
    client: TestClient, model_dir: Path, data: bytes, status: int, message: str
) -> None:
    response = upload(client, data)
    assert response.status_code == status
    assert message in response.json()["detail"]
    assert client.get("/jobs").json()["jobs"] == []
    assert not (model_dir / "uploads").exists() or list((model_dir / "uploads").iterdir()) == []


def test_an_upload_over_the_size_limit_is_413_before_it_is_read(model_dir: Path) -> None:
    with TestClient(create_app(make_settings(model_dir, max_upload_bytes=100_000))) as client:
        response = upload(client, b"\x00" * 500_000)
        assert response.status_code == 413
        assert "MAX_UPLOAD_BYTES" in response.json()["detail"]


def test_a_job_whose_process_died_runs_again_at_the_restart(model_dir: Path, mnist_arrays: dict) -> None:
    """The state a SIGKILL during training leaves: a `running` record under the lease of a process that is gone."""
    settings = make_settings(model_dir)
    jobs = JobStore(model_dir / "jobs.sqlite3")
    uploads = UploadStore(model_dir / "uploads")
    job_id = "0123456789abcdef0123456789abcdef"
    images, labels = mnist_arrays["x_train"][:300], mnist_arrays["y_train"][:300]
    uploads.save(job_id, LabelledImages(images, labels, "labels file"), {"id": job_id})
    jobs.create(
        job_id,
        "mnist",
        {"id": job_id, "images": 300, "layout": "labels file", "label_counts": {}, "received_at": "now"},
        training_params(settings, "mnist"),
    )
    # Running under a long lease, and then its process "died": this host's restart need not wait for the lease.
    jobs.claim_next(dead_process_owner(), 600)
    (model_dir / "mnist" / ".tmp-halfwritten").mkdir()  # a version being written at the time
    with TestClient(create_app(settings)) as client:
        assert not (model_dir / "mnist" / ".tmp-halfwritten").exists()
        finished = wait_for_job(client, job_id)
        assert finished["status"] in ("succeeded", "rejected")
        assert finished["attempts"] == 2
        assert client.post(f"/jobs/{job_id}/retry", headers=AUTH).status_code == 409


def test_a_job_queued_when_the_server_stopped_runs_after_the_restart(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(model_dir)

    async def no_start(self: JobRunner) -> None:  # the server stops before its runner takes the job
        pass

    with monkeypatch.context() as patch:
        patch.setattr(JobRunner, "kick", no_start)
        with TestClient(create_app(settings)) as client:
            job_id = upload(client, SAMPLE_ZIP.read_bytes()).json()["job_id"]
            assert client.get(f"/jobs/{job_id}").json()["status"] == "queued"
    assert JobStore(model_dir / "jobs.sqlite3").get(job_id).status == "queued"
    with TestClient(create_app(settings)) as client:  # nobody retries it: the restart alone must run it
        job = wait_for_job(client, job_id)
        assert (job["status"], job["attempts"]) == ("succeeded", 1)


def test_unknown_jobs(client: TestClient) -> None:
    assert client.get("/jobs/" + "f" * 32).status_code == 404
    assert client.get("/jobs/not-a-job-id").status_code == 422


def test_uploads_are_stored_under_names_the_service_makes(client: TestClient, model_dir: Path) -> None:
    response = client.post(
        "/upload-images", files={"file": ("../../../etc/evil name.zip", SAMPLE_ZIP.read_bytes())}, headers=AUTH
    )
    job_id = response.json()["job_id"]
    wait_for_job(client, job_id)
    assert [path.name for path in (model_dir / "uploads").iterdir()] == [job_id]
    assert sorted(path.name for path in (model_dir / "uploads" / job_id).iterdir()) == ["dataset.npz", "manifest.json"]
    assert not any(path.name.startswith("evil") for path in model_dir.rglob("*"))


def test_training_runs_at_low_priority_from_its_start(model_dir: Path) -> None:
    """The job's process (its seconds of imports included) must not compete with serving."""
    with TestClient(create_app(make_settings(model_dir, training_niceness=17))) as client:
        job_id = upload(client, SAMPLE_ZIP.read_bytes()).json()["job_id"]
        niceness = None
        deadline = time.monotonic() + 60
        while niceness is None and time.monotonic() < deadline:
            for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
                try:
                    if job_id.encode() in cmdline.read_bytes():
                        niceness = int((cmdline.parent / "stat").read_text().rsplit(")", 1)[1].split()[16])
                        break
                except (OSError, IndexError):
                    continue
            time.sleep(0.01)
        assert niceness == 17
        assert wait_for_job(client, job_id)["status"] in ("succeeded", "rejected")


def test_job_events_stream_progress_until_the_end(client: TestClient) -> None:
    """What the dashboard follows: `job` events as the job changes, then `end`; a stream that ends
    before the job (streams are short) is simply opened again, as an EventSource does."""
    job_id = upload(client, SAMPLE_ZIP.read_bytes()).json()["job_id"]
    events: list[tuple[str, str]] = []
    deadline = time.monotonic() + 120
    while not any(name == "end" for name, _ in events) and time.monotonic() < deadline:
        with client.stream("GET", f"/jobs/{job_id}/events") as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            body = response.read().decode()
        assert body.startswith("retry: ")
        for block in body.split("\n\n"):
            lines = dict(line.split(": ", 1) for line in block.splitlines() if line.startswith(("event", "data")))
            if "event" in lines:
                events.append((lines["event"], lines["data"]))
    jobs = [json.loads(data) for name, data in events if name == "job"]
    assert jobs[0]["job_id"] == job_id
    assert jobs[-1]["status"] in ("succeeded", "rejected")
    assert events[-1][0] == "end"
    assert client.get("/jobs/not-a-job/events").status_code in (404, 422)


def test_an_accepted_upload_leaves_no_file_open(client: TestClient) -> None:
    """The received zip is removed after the check; nothing in the server may keep it open (and its disk space)."""
    assert upload(client, SAMPLE_ZIP.read_bytes()).status_code == 202
    open_files = []
    for link in Path("/proc/self/fd").iterdir():
        with contextlib.suppress(FileNotFoundError):  # closed meanwhile (the job runner starts its work)
            open_files.append(os.readlink(link))
    assert not [name for name in open_files if ".incoming-" in name]
