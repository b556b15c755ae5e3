"""Retraining learns from correct data in any order and of any mix of classes, and still refuses wrong data.

The uploads are what people have: folders per class in class order (as `zip -r` writes them), or a few
hundred images of the one digit the model gets wrong. Their labels are MNIST's own, so they are correct.
"""

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import AUTH, make_settings, png_bytes, wait_for_job
from fastapi.testclient import TestClient

from prediction_service.api.app import create_app
from prediction_service.models.mnist.cnn import shuffled_split
from prediction_service.models.mnist.onnx_runtime import OnnxDigitClassifier
from prediction_service.storage.layout import REPLAY_INITIAL as INITIAL_FILE

MARGIN = 0.01  # RETRAIN_GATE_MARGIN's default, which the tests' settings keep


def folders_zip(images: np.ndarray, labels: np.ndarray) -> bytes:
    """Keras's layout, entries in class order: 0/..., 1/..., ..., 9/..."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for index in np.argsort(labels, kind="stable"):
            archive.writestr(f"digits/{labels[index]}/img_{index:05d}.png", png_bytes(images[index]))
    return buffer.getvalue()


def upload(client: TestClient, data: bytes) -> dict:
    response = client.post("/upload-images", files={"file": ("upload.zip", data)}, headers=AUTH)
    assert response.status_code == 202, response.text
    return wait_for_job(client, response.json()["job_id"], timeout=300)


def holdout_accuracy_of(model_dir: Path, version: int, digit: int | None = None) -> float:
    """The version's accuracy on the store's fixed hold-out set, computed here from its served ONNX file."""
    with np.load(model_dir / "mnist" / "holdout.npz") as holdout:
        images, labels = holdout["x"], holdout["y"]
    if digit is not None:
        images, labels = images[labels == digit], labels[labels == digit]
    predicted = OnnxDigitClassifier.load(model_dir / "mnist" / str(version)).probabilities(images).argmax(axis=1)
    return float((predicted == labels).mean())


def manifest(model_dir: Path, version: int) -> dict:
    return json.loads((model_dir / "mnist" / str(version) / "manifest.json").read_text())


def test_the_validation_share_is_shuffled_and_holds_every_class() -> None:
    labels = np.repeat(np.arange(10), 80)  # class-ordered: Keras's split would validate on 9s only
    train, validation = shuffled_split(labels, 0.1, seed=3)
    assert sorted([*train, *validation]) == list(range(800))
    assert np.bincount(labels[validation], minlength=10).tolist() == [8] * 10
    assert set(labels[train[:50]]) != {0}  # training order is shuffled too
    single = np.array([0, 0, 0, 1, 1, 1, 2])  # one example of 2: no stratification, still a split
    train, validation = shuffled_split(single, 0.3, seed=0)
    assert (len(train), len(validation)) == (5, 2)


@pytest.mark.parametrize("replay_size", [2000, 0])
def test_a_class_ordered_upload_in_folders_is_published(
    model_dir: Path, mnist_arrays: dict[str, np.ndarray], replay_size: int
) -> None:
    """With replay off too: the order alone must not decide (unshuffled, the validation rows were all 8s and 9s)."""
    images, labels = mnist_arrays["x_train"][:800], mnist_arrays["y_train"][:800]
    with TestClient(create_app(make_settings(model_dir, retrain_replay_size=replay_size))) as client:
        job = upload(client, folders_zip(images, labels))
        assert client.get("/models").json()["models"][1]["serving_version"] == 2
    assert job["upload"]["layout"] == "folder per class"
    assert job["status"] == "succeeded", job
    assert job["result"]["published"] is True
    assert (job["result"]["upload_images"], job["result"]["replay_images"]) == (800, replay_size)
    assert holdout_accuracy_of(model_dir, 2) >= holdout_accuracy_of(model_dir, 1) - MARGIN


def test_a_few_hundred_images_of_one_digit_are_learned_without_forgetting_the_others(
    client: TestClient, model_dir: Path, mnist_arrays: dict[str, np.ndarray]
) -> None:
    # The digit the serving version reads worst: what someone collecting examples of its mistakes uploads.
    digit = min(range(10), key=lambda label: holdout_accuracy_of(model_dir, 1, label))
    images = mnist_arrays["x_train"][mnist_arrays["y_train"] == digit][:300]
    job = upload(client, folders_zip(images, np.full(len(images), digit, np.uint8)))
    assert job["status"] == "succeeded", job
    assert job["result"]["published"] is True
    assert holdout_accuracy_of(model_dir, 2) >= holdout_accuracy_of(model_dir, 1) - MARGIN
    assert holdout_accuracy_of(model_dir, 2, digit) >= holdout_accuracy_of(model_dir, 1, digit)
    for other in set(range(10)) - {digit}:  # the classes the upload lacks are still read
        assert holdout_accuracy_of(model_dir, 2, other) >= 0.85, other


def test_the_first_training_keeps_a_replay_sample_of_its_data(
    model_dir: Path, mnist_arrays: dict[str, np.ndarray]
) -> None:
    with np.load(model_dir / "mnist" / INITIAL_FILE) as initial:
        images, labels = initial["inputs"], initial["labels"]
    assert len(labels) == 8000  # the whole (small) first training set
    assert np.bincount(labels, minlength=10).tolist() == np.bincount(mnist_arrays["y_train"], minlength=10).tolist()
    assert images.shape == (8000, 28, 28)


def test_without_replay_a_one_digit_upload_forgets_and_is_rejected(
    model_dir: Path, mnist_arrays: dict[str, np.ndarray]
) -> None:
    """The defect replay fixes, shown with RETRAIN_REPLAY_SIZE=0: the gate must still catch it."""
    images = mnist_arrays["x_train"][mnist_arrays["y_train"] == 8][:300]
    with TestClient(create_app(make_settings(model_dir, retrain_replay_size=0))) as client:
        job = upload(client, folders_zip(images, np.full(len(images), 8, np.uint8)))
    assert job["status"] == "rejected", job
    assert job["result"]["replay_images"] == 0
    assert holdout_accuracy_of(model_dir, 2) < holdout_accuracy_of(model_dir, 1) - MARGIN


def test_a_restart_between_two_jobs_keeps_the_replay_pool(model_dir: Path, mnist_arrays: dict[str, np.ndarray]) -> None:
    first_images, first_labels = mnist_arrays["x_train"][:500], mnist_arrays["y_train"][:500]
    settings = make_settings(model_dir)
    with TestClient(create_app(settings)) as client:
        first = upload(client, folders_zip(first_images, first_labels))
    assert first["status"] == "succeeded", first
    with TestClient(create_app(settings)) as client:  # a new process: nothing but the store is kept
        second = upload(client, folders_zip(mnist_arrays["x_train"][500:800], mnist_arrays["y_train"][500:800]))
    assert second["status"] == "succeeded", second
    pool = manifest(model_dir, 3)["training_data"]["replay_pool"]
    assert pool == {"images": 8000 + 500, "sources": ["initial", first["job_id"]]}
    assert manifest(model_dir, 3)["parent_version"] == 2
