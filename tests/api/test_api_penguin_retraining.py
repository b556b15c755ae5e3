"""POST /upload-penguins: labelled rows retrain the penguin model, gated on its hold-out set; bad files are refused."""

import io
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import AUTH, ROOT, dead_process_owner, make_settings, wait_for_job
from fastapi.testclient import TestClient

from prediction_service.api.app import create_app
from prediction_service.core.ids import new_prediction_id
from prediction_service.models.penguins.knn import PenguinClassifier
from prediction_service.retraining.intake import training_params
from prediction_service.retraining.penguin_rows import CsvLimits, read_penguin_rows
from prediction_service.storage.jobs import JobStore
from prediction_service.storage.layout import Layout
from prediction_service.storage.predictions import LoggedPrediction, PredictionLog
from prediction_service.storage.uploads import UploadStore

PENGUINS_CSV = ROOT / "penguins.csv"
SPECIES = ["Adelie", "Chinstrap", "Gentoo"]


def penguin_rows(mislabel: bool = False, seed: int = 0) -> bytes:
    """Every complete row of penguins.csv, measured again (a little noise), its columns in another order."""
    data = pd.read_csv(PENGUINS_CSV).dropna()
    rng = np.random.default_rng(seed)
    species = data["species"].map(lambda name: SPECIES[(SPECIES.index(name) + 1) % 3]) if mislabel else data["species"]
    frame = pd.DataFrame(
        {
            "island": data["island"],
            "flipper_length_mm": (data["flipper_length_mm"] + rng.normal(0, 1.0, len(data))).round(0),
            "bill_length_mm": (data["bill_length_mm"] + rng.normal(0, 0.3, len(data))).round(1),
            "species": species,
        }
    )
    return frame.to_csv(index=False).encode()


def upload(client: TestClient, data: bytes, filename: str = "penguins.csv", headers: dict[str, str] | None = None):
    return client.post(
        "/upload-penguins", files={"file": (filename, data, "text/csv")}, headers=AUTH if headers is None else headers
    )


def penguin_version(client: TestClient) -> int:
    return client.get("/predict", params={"bill_length_mm": 40.3, "flipper_length_mm": 195}).json()["model_version"]


def holdout_accuracy(model_dir: Path, version: int) -> float:
    """A version's accuracy on the store's hold-out set, measured here with what serves (the fast path)."""
    with np.load(model_dir / "penguins" / "holdout.npz") as holdout:
        features, labels = holdout["x"], holdout["y"]
    classifier = PenguinClassifier.load(model_dir / "penguins" / str(version))
    return float((classifier.probabilities(features).argmax(axis=1) == labels).mean())


def nothing_stored(client: TestClient, model_dir: Path) -> bool:
    uploads = model_dir / "uploads"
    return client.get("/jobs").json()["jobs"] == [] and (not uploads.exists() or not list(uploads.iterdir()))


def test_correctly_labelled_rows_publish_a_new_version_that_serves(client: TestClient, model_dir: Path) -> None:
    response = upload(client, penguin_rows())
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert (accepted["model"], accepted["status"]) == ("penguins", "queued")
    assert response.headers["location"] == f"/jobs/{accepted['job_id']}"
    assert accepted["upload"]["rows"] == 333
    assert accepted["upload"]["label_counts"] == {"Adelie": 146, "Chinstrap": 68, "Gentoo": 119}

    job = wait_for_job(client, accepted["job_id"])
    assert job["status"] == "succeeded", job
    result = job["result"]
    assert (result["version"], result["published"], result["serving_version"]) == (2, True, 1)
    # All the parent learned (the 249 rows of the first training split) is replayed, not a sample.
    assert (result["upload_rows"], result["replay_rows"]) == (333, 249)
    # Scored on the hold-out set of the first training: the figures are the versions' true ones.
    assert result["serving_accuracy"] == pytest.approx(holdout_accuracy(model_dir, 1), abs=1e-4)
    assert result["holdout_accuracy"] == pytest.approx(holdout_accuracy(model_dir, 2), abs=1e-4)
    assert penguin_version(client) == 2
    models = {model["name"]: model for model in client.get("/models").json()["models"]}
    assert models["penguins"]["serving_version"] == 2
    version = models["penguins"]["versions"][-1]
    assert (version["version"], version["job_id"], version["gate"]["passed"]) == (2, accepted["job_id"], True)
    assert version["metrics"]["holdout_accuracy"] == result["holdout_accuracy"]
    manifest = json.loads((model_dir / "penguins" / "2" / "manifest.json").read_text())
    assert manifest["classes"] == SPECIES
    assert manifest["training_data"]["replay_pool"] == {"rows": 249, "sources": ["initial"]}

    # A second upload learns on top: its pool is the first split plus the first upload, all of it.
    second = wait_for_job(client, upload(client, penguin_rows(seed=1)).json()["job_id"])
    assert second["status"] == "succeeded", second
    assert (second["result"]["upload_rows"], second["result"]["replay_rows"]) == (333, 249 + 333)
    assert penguin_version(client) == 3

    # Rollback, like the digit model's.
    rolled_back = client.post("/models/penguins/versions/1/activate", headers=AUTH)
    assert rolled_back.status_code == 200
    assert penguin_version(client) == 1
    assert client.post("/models/penguins/versions/3/activate", headers=AUTH).status_code == 200
    assert penguin_version(client) == 3


def test_mislabelled_rows_are_rejected_by_the_gate(client: TestClient, model_dir: Path) -> None:
    job = wait_for_job(client, upload(client, penguin_rows(mislabel=True)).json()["job_id"])
    assert job["status"] == "rejected", job
    result = job["result"]
    assert result["published"] is False
    assert result["holdout_accuracy"] < result["serving_accuracy"] - 0.01
    assert result["holdout_accuracy"] == pytest.approx(holdout_accuracy(model_dir, 2), abs=1e-4)
    assert penguin_version(client) == 1
    models = {model["name"]: model for model in client.get("/models").json()["models"]}
    assert models["penguins"]["serving_version"] == 1
    assert models["penguins"]["versions"][-1]["published"] is False


def test_a_store_made_before_penguins_retrained_gets_its_hold_out_from_the_csv(model_dir: Path) -> None:
    """Version 1 stored without a hold-out file, a replay file or a `holdout_accuracy`: derived the same way."""
    folder = model_dir / "penguins"
    original = {name: (folder / name).read_bytes() for name in ("holdout.npz", "replay-initial.npz")}
    for name in original:
        (folder / name).unlink()
    manifest_path = folder / "1" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    del manifest["metrics"]["holdout_accuracy"]
    manifest_path.write_text(json.dumps(manifest))
    with TestClient(create_app(make_settings(model_dir))) as client:
        job = wait_for_job(client, upload(client, penguin_rows()).json()["job_id"])
    assert job["status"] == "succeeded", job
    assert job["result"]["serving_accuracy"] == manifest["metrics"]["test_accuracy"]
    assert job["result"]["replay_rows"] == 249
    for name, content in original.items():
        with np.load(io.BytesIO(content)) as before, np.load(folder / name) as after:
            assert before.files == after.files
            assert all(np.array_equal(before[key], after[key]) for key in before.files), name


@pytest.mark.parametrize(
    ("data", "status", "message"),
    [
        (b"species,bill,flipper\nAdelie,39.1,181\n", 422, "the header lacks bill_length_mm, flipper_length_mm"),
        (
            b"species,bill_length_mm,flipper_length_mm\nAdelie,39.1,181\nAdelie,39.1,one hundred\n",
            422,
            "not a finite number: line 3",
        ),
        (
            b"species,bill_length_mm,flipper_length_mm\nEmperor,39.1,181\n",
            422,
            "unknown species (known: Adelie, Chinstrap, Gentoo): line 2",
        ),
        (
            b"species,bill_length_mm,flipper_length_mm\nAdelie,39.1,181\nAdelie,3.91,181\n",
            422,
            "outside the plausible ranges (bill_length_mm 20-80 mm, flipper_length_mm 120-280 mm): line 3",
        ),
        (b"species,bill_length_mm,flipper_length_mm\n", 422, "no rows"),
        (b"", 422, "the CSV is empty"),
        (b"PK\x03\x04\x14\x00", 415, "not a CSV file"),
    ],
)
def test_a_bad_csv_is_refused_with_the_lines_to_fix_and_nothing_stored(
    client: TestClient, model_dir: Path, data: bytes, status: int, message: str
) -> None:
    response = upload(client, data)
    assert response.status_code == status, response.text
    assert message in response.json()["detail"]
    assert nothing_stored(client, model_dir)


def test_too_many_rows_or_bytes_are_refused_and_nothing_stored(model_dir: Path) -> None:
    rows = b"species,bill_length_mm,flipper_length_mm\n" + b"Adelie,39.1,181\n" * 11
    with TestClient(create_app(make_settings(model_dir, max_csv_rows=10, max_csv_bytes=1000))) as client:
        too_many = upload(client, rows)
        assert too_many.status_code == 413
        assert "more than 10 rows (MAX_CSV_ROWS)" in too_many.json()["detail"]
        too_big = upload(client, rows[:42] + b"Adelie,39.1,181\n" * 70)
        assert too_big.status_code == 413
        assert "MAX_CSV_BYTES" in too_big.json()["detail"]
        # Far over the limit: refused by the body limit before the route reads it.
        far_too_big = upload(client, b"x" * 200_000)
        assert far_too_big.status_code == 413
        assert "MAX_CSV_BYTES" in far_too_big.json()["detail"]
        assert nothing_stored(client, model_dir)


def test_uploading_rows_needs_the_admin_token(client: TestClient, model_dir: Path) -> None:
    assert upload(client, penguin_rows(), headers={}).status_code == 401
    assert upload(client, penguin_rows(), headers={"Authorization": "Bearer wrong"}).status_code in (401, 403)
    assert nothing_stored(client, model_dir)


def test_a_penguin_job_whose_process_died_runs_again_on_its_own_model(model_dir: Path) -> None:
    """The state a SIGKILL during a penguin job leaves: `running`, its process gone; the restart runs it again."""
    settings = make_settings(model_dir)
    job_id = "0123456789abcdef0123456789abcdef"
    rows = read_penguin_rows(penguin_rows(), SPECIES, CsvLimits(settings.max_csv_rows, settings.max_csv_bytes))
    UploadStore(model_dir / "uploads").save(job_id, rows, {"id": job_id})
    jobs = JobStore(model_dir / "jobs.sqlite3")
    summary = {"id": job_id, "rows": len(rows.labels), "layout": "csv", "label_counts": {}, "received_at": "now"}
    jobs.create(job_id, "penguins", summary, training_params(settings, "penguins"))
    jobs.claim_next(dead_process_owner(), 600)  # then its process died
    with TestClient(create_app(settings)) as client:
        job = wait_for_job(client, job_id)  # the restart runs it again
        assert (job["status"], job["attempts"], job["model"]) == ("succeeded", 2, "penguins")
        assert penguin_version(client) == 2


def test_feedback_on_penguins_reaching_the_threshold_publishes_a_new_version(model_dir: Path) -> None:
    """The learning loop for penguins: logged predictions, their true species as feedback, an automatic job."""
    data = pd.read_csv(PENGUINS_CSV).dropna().sample(30, random_state=3)
    logged = [
        LoggedPrediction(new_prediction_id(), "penguins", 1, "Adelie", np.array([bill, flipper]), time.time())
        for bill, flipper in data[["bill_length_mm", "flipper_length_mm"]].to_numpy()
    ]
    PredictionLog(Layout(model_dir).learning, 1000).append(logged)
    with TestClient(create_app(make_settings(model_dir, retrain_min_examples=30))) as client:
        for prediction, species in zip(logged, data["species"], strict=True):
            response = client.post(f"/predictions/{prediction.id}/feedback", json={"label": species}, headers=AUTH)
            assert response.status_code == 201, response.text
        deadline = time.monotonic() + 60
        while not (jobs := client.get("/jobs").json()["jobs"]) and time.monotonic() < deadline:
            time.sleep(0.1)
        (job,) = jobs
        finished = wait_for_job(client, job["job_id"])
        assert (finished["model"], finished["status"]) == ("penguins", "succeeded"), finished
        assert (finished["result"]["upload_rows"], finished["result"]["replay_rows"]) == (30, 249)
        assert penguin_version(client) == 2
