"""The service with MODEL_STORE_URL set: first versions, uploads, retraining jobs and their versions in a real
S3-compatible store (SeaweedFS); MODEL_DIR keeps only the pointers, the databases and the verified cache."""

from pathlib import Path

import numpy as np
from conftest import AUTH, SAMPLES, labelled_zip, make_settings, wait_for_job
from fastapi.testclient import TestClient

from prediction_service.api.app import create_app
from prediction_service.storage.objects import ObjectStore
from prediction_service.storage.versions import ModelStore

PENGUIN_ROWS = (SAMPLES / "penguin_rows.csv").read_bytes()


def served_version(client: TestClient, name: str) -> int:
    return {model["name"]: model for model in client.get("/models").json()["models"]}[name]["serving_version"]


def test_uploads_train_new_versions_into_the_object_store(
    tmp_path: Path, s3_url: str, mnist_arrays: dict[str, np.ndarray]
) -> None:
    model_dir = tmp_path / "replica-a"
    settings = make_settings(
        model_dir,
        model_store_url=s3_url,
        mnist_train_size=1000,
        mnist_epochs=1,
        retrain_epochs=1,
        retrain_replay_size=200,
        retrain_gate_margin=1.0,  # this test is about where versions go, not about what they learned
    )
    objects = ObjectStore(s3_url)
    with TestClient(create_app(settings)) as client:
        assert client.get("/health/ready").status_code == 200
        first_keys = objects.keys("")
        for name in ("mnist", "penguins"):  # the first versions, their hold-out sets and replay pools
            assert f"{name}/versions/1.json" in first_keys
            assert f"{name}/shared/holdout.npz" in first_keys
            assert f"{name}/shared/replay-initial.npz" in first_keys

        digits = client.post(
            "/upload-images",
            files={"file": ("digits.zip", labelled_zip(mnist_arrays["x_train"][:60], mnist_arrays["y_train"][:60]))},
            headers=AUTH,
        )
        assert digits.status_code == 202, digits.text
        job = wait_for_job(client, digits.json()["job_id"])
        assert job["status"] == "succeeded", job
        assert job["result"]["version"] == 2
        assert served_version(client, "mnist") == 2
        image = (SAMPLES / "test_img0.png").read_bytes()
        assert client.post("/predict-image", files={"file": image}).json()["model_version"] == 2

        rows = client.post("/upload-penguins", files={"file": ("rows.csv", PENGUIN_ROWS)}, headers=AUTH)
        assert rows.status_code == 202, rows.text
        job = wait_for_job(client, rows.json()["job_id"])
        assert job["status"] == "succeeded", job
        assert served_version(client, "penguins") == 2
        prediction = client.get("/predict", params={"bill_length_mm": 40.3, "flipper_length_mm": 195}).json()
        assert prediction["model_version"] == 2

        keys = objects.keys("")
        assert {"mnist/versions/2.json", "penguins/versions/2.json"} <= set(keys)
        for job_id in (digits.json()["job_id"], rows.json()["job_id"]):  # the uploads stay, for replay and retry
            assert f"uploads/{job_id}/dataset.npz" in keys
    assert not (model_dir / "uploads").exists() or not any((model_dir / "uploads").iterdir())

    # Another host, with an empty cache, reads the new versions from the store and checks every file.
    other = ModelStore(tmp_path / "replica-b", ObjectStore(s3_url))
    assert other.version_numbers("mnist") == [1, 2]
    pulled = other.read_version("mnist", 2)
    assert pulled.manifest["training_data"]["upload_id"] == digits.json()["job_id"]
    assert sorted(path.name for path in pulled.path.iterdir()) == sorted([*pulled.manifest["files"], "manifest.json"])
