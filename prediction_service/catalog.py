"""The models this service serves: how to train each one's first version and how to load it."""

import io
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from prediction_service.fsutil import write_atomic
from prediction_service.ml import penguins
from prediction_service.ml.digit_runtime import ONNX_ARTIFACT
from prediction_service.ml.images import normalize_digit
from prediction_service.ml.mnist_data import load_mnist
from prediction_service.provenance import library_versions
from prediction_service.retraining import replay
from prediction_service.settings import Settings
from prediction_service.store import ModelStore, StoredVersion

log = logging.getLogger(__name__)

PENGUINS = "penguins"
MNIST = "mnist"
HOLDOUT_FILE = "holdout.npz"


class ModelKind(Protocol):
    name: str

    def train_first_version(self, store: ModelStore) -> StoredVersion: ...

    def load(self, stored: StoredVersion) -> Any: ...


class PenguinsKind:
    name = PENGUINS

    def __init__(self, csv_path: Path) -> None:
        self.csv_path = csv_path

    def train_first_version(self, store: ModelStore) -> StoredVersion:
        trained = penguins.train(self.csv_path)
        log.info("trained %s: test accuracy %.4f", self.name, trained.test_accuracy)
        manifest = {"source": "initial training", **trained.manifest(self.csv_path), "libraries": library_versions()}
        return store.add_version(self.name, trained.save, manifest)

    def load(self, stored: StoredVersion) -> penguins.PenguinClassifier:
        return penguins.PenguinClassifier.load(stored.path)


@dataclass(frozen=True)
class RemoteDigitModel:
    """A version of the digit model, loaded in the digit model's own process (inference_worker)."""

    version: int
    onnx_path: Path


class DigitsKind:
    name = MNIST

    def __init__(self, settings: Settings, prepare: Callable[[int, Path], None] | None = None) -> None:
        self.settings = settings
        # Loads a version into the process that serves it (before the registry swaps to it).
        self.prepare = prepare

    def train_first_version(self, store: ModelStore) -> StoredVersion:
        from prediction_service.ml import digits  # TensorFlow: only once there is something to train

        data = load_mnist(self.settings.mnist_data, self.settings.mnist_train_size)
        # The same preprocessing as every uploaded image, so training matches serving.
        images = normalize_all(data.x_train)
        holdout = save_holdout(store, normalize_all(data.x_test), data.y_test)
        replay.save_initial(store, self.name, images, data.y_train)
        model = digits.build_cnn()
        log.info("training %s on %d images for %d epochs", self.name, len(images), self.settings.mnist_epochs)
        history = digits.fit(model, images, data.y_train, epochs=self.settings.mnist_epochs, seed=0)
        holdout_accuracy = digits.accuracy(model, *holdout)
        log.info("trained %s: hold-out accuracy %.4f", self.name, holdout_accuracy)
        manifest = {
            "source": "initial training",
            "training_data": data.describe(),
            "parameters": {"epochs": self.settings.mnist_epochs, "batch_size": 128, "validation_split": 0.1},
            "metrics": {"holdout_accuracy": round(holdout_accuracy, 4), **final_epoch(history)},
            "history": history,
            "libraries": library_versions(),
        }
        return store.add_version(self.name, lambda folder: digits.save(model, folder), manifest)

    def load(self, stored: StoredVersion) -> RemoteDigitModel:
        model = RemoteDigitModel(stored.version, stored.path / ONNX_ARTIFACT)
        if self.prepare is not None:
            self.prepare(model.version, model.onnx_path)
        return model


def normalize_all(images: np.ndarray) -> np.ndarray:
    out = np.empty((len(images), 28, 28), dtype=np.uint8)
    for index, image in enumerate(images):
        out[index] = normalize_digit(image)
    return out


def final_epoch(history: list[dict[str, float]]) -> dict[str, float]:
    if not history:
        return {}
    last = history[-1]
    return {key: last[key] for key in ("loss", "accuracy", "val_loss", "val_accuracy") if key in last}


def save_holdout(store: ModelStore, images: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Keep the hold-out set beside the versions; every later model is scored on it."""
    path = store.shared_file(MNIST, HOLDOUT_FILE)
    if path.exists():
        return load_holdout(store)
    buffer = io.BytesIO()
    np.savez(buffer, x=images, y=np.asarray(labels, dtype=np.uint8))
    write_atomic(path, buffer.getvalue())
    return images, labels


def load_holdout(store: ModelStore) -> tuple[np.ndarray, np.ndarray]:
    with np.load(store.shared_file(MNIST, HOLDOUT_FILE), allow_pickle=False) as data:
        return data["x"], data["y"]


def model_kinds(settings: Settings, prepare_digits: Callable[[int, Path], None] | None = None) -> list[ModelKind]:
    return [PenguinsKind(settings.penguins_csv), DigitsKind(settings, prepare_digits)]
