"""The service with MODEL_STORE_URL set: first versions, uploads, retraining jobs and their versions in a real
S3-compatible store (SeaweedFS); MODEL_DIR keeps only the pointers, the databases and the verified cache."""

import shutil
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
from conftest import AUTH, SAMPLES, labelled_zip, make_settings, wait_for_job
from fastapi.testclient import TestClient
from seaweedfs import SeaweedFS, start_seaweedfs

from prediction_service.api.app import create_app
from prediction_service.storage.layout import HOLDOUT, MANIFEST, POINTER, REPLAY_INITIAL
from prediction_service.storage.objects import ObjectStore
from prediction_service.storage.versions import ModelStore

PENGUIN_ROWS = (SAMPLES / "penguin_rows.csv").read_bytes()


def served_version(client: TestClient, name: str) -> int:
    return {model["name"]: model for model in client.get("/models").json()["models"]}[name]["serving_version"]


def test_uploads_train_new_versions_into_the_object_store(
    tmp_path: Path, s3_url: str, mnist_arrays: dict[str, np.ndarray], trained_store: Path
) -> None:
    model_dir = tmp_path / "replica-a"
    objects = ObjectStore(s3_url)
    seed_from(trained_store, ModelStore(model_dir, objects), ["mnist"])  # penguins train their first version here
    settings = make_settings(
        model_dir,
        model_store_url=s3_url,
        retrain_epochs=1,
        retrain_replay_size=200,
        retrain_gate_margin=1.0,  # this test is about where versions go, not about what they learned
    )
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


def seed_from(local_dir: Path, store: ModelStore, names: Sequence[str] = ("mnist", "penguins")) -> None:
    """Put the session's trained versions into the object store (quicker than training them again)."""
    local = ModelStore(local_dir)
    for name in names:
        stored = local.read_version(name, 1)
        described = {key: value for key, value in stored.manifest.items() if key not in ("name", "version", "files")}

        def copy(folder: Path, source: Path = stored.path) -> None:
            for path in source.iterdir():
                if path.name != MANIFEST:
                    shutil.copy(path, folder / path.name)

        assert store.add_version(name, copy, described).version == 1
        for filename in (HOLDOUT, REPLAY_INITIAL):
            store.write_shared(name, filename, (local.model_path(name) / filename).read_bytes())
        shutil.copy(local.model_path(name) / POINTER, store.model_path(name) / POINTER)


@pytest.fixture
def own_seaweedfs(seaweedfs: SeaweedFS, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SeaweedFS]:
    """A SeaweedFS of this test's own (after the session's one, which tells whether `weed` is there): it stops."""
    server = start_seaweedfs(tmp_path / "seaweedfs")
    for name, value in server.env().items():
        monkeypatch.setenv(name, value)
    try:
        yield server
    finally:
        server.kill()


def test_with_the_store_down_predictions_go_on_and_uploads_get_a_503_until_it_is_back(
    tmp_path: Path, own_seaweedfs: SeaweedFS, trained_store: Path
) -> None:
    s3_url = f"s3://{own_seaweedfs.create_bucket()}/store"
    model_dir = tmp_path / "model_store"
    seed_from(trained_store, ModelStore(model_dir, ObjectStore(s3_url)))
    image = (SAMPLES / "test_img0.png").read_bytes()
    penguin = {"bill_length_mm": 40.3, "flipper_length_mm": 195}
    settings = make_settings(model_dir, model_store_url=s3_url, reload_interval=0.1)

    def store_is_down_yet_it_serves(client: TestClient) -> None:
        for _ in range(20):  # what is loaded keeps answering
            assert client.get("/predict", params=penguin).status_code == 200
            assert client.post("/predict-image", files={"file": image}).status_code == 200
        refused = client.post("/upload-penguins", files={"file": ("rows.csv", PENGUIN_ROWS)}, headers=AUTH)
        assert refused.status_code == 503, refused.text
        assert int(refused.headers["Retry-After"]) > 0
        assert "model store" in refused.json()["detail"]
        assert "retry later" in refused.json()["detail"]
        assert client.get("/jobs").json()["jobs"] == []  # nothing half-written became a job
        assert client.get("/health/ready").status_code == 200

    with TestClient(create_app(settings)) as client:
        assert client.get("/health/ready").status_code == 200
        own_seaweedfs.kill()
        store_is_down_yet_it_serves(client)

    with TestClient(create_app(settings)) as client:  # a restart while the store is away: it serves its cache
        store_is_down_yet_it_serves(client)
        own_seaweedfs.restart()
        deadline = time.monotonic() + 30  # recovers by itself: the same request, later, is accepted
        while (
            accepted := client.post("/upload-penguins", files={"file": ("rows.csv", PENGUIN_ROWS)}, headers=AUTH)
        ).status_code == 503 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert accepted.status_code == 202, accepted.text
        job = wait_for_job(client, accepted.json()["job_id"])
        assert job["status"] == "succeeded", job
        assert client.get("/predict", params=penguin).json()["model_version"] == 2
