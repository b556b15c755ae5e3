"""The handwritten-digit CNN: the tutorial's architecture, training, and fast inference."""

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.model_selection import train_test_split

from prediction_service.models.interface import TrainingLibrariesMissing
from prediction_service.models.mnist import MNIST
from prediction_service.models.mnist.onnx_runtime import ONNX_ARTIFACT, as_model_input

try:
    import keras
except ImportError as error:  # the serving image: this module is imported only where training happens
    raise TrainingLibrariesMissing(MNIST, "TensorFlow (Keras)") from error

log = logging.getLogger(__name__)

CLASSES = 10
INPUT_SHAPE = (28, 28, 1)
ARTIFACT = "model.keras"

ProgressCallback = Callable[[dict[str, Any]], None]


def build_cnn() -> keras.Model:
    """Conv2D 32, MaxPool, Conv2D 64, MaxPool, Flatten, Dropout 0.5, Dense 10 softmax."""
    layers = keras.layers
    return keras.Sequential(
        [
            keras.Input(shape=INPUT_SHAPE),
            layers.Conv2D(32, kernel_size=(3, 3), activation="relu"),
            layers.MaxPooling2D(pool_size=(2, 2)),
            layers.Conv2D(64, kernel_size=(3, 3), activation="relu"),
            layers.MaxPooling2D(pool_size=(2, 2)),
            layers.Flatten(),
            layers.Dropout(0.5),
            layers.Dense(CLASSES, activation="softmax"),
        ]
    )


def fit(
    model: keras.Model,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    epochs: int,
    batch_size: int = 128,
    validation_split: float = 0.1,
    on_epoch: ProgressCallback | None = None,
    seed: int = 0,
    learning_rate: float = 0.001,
) -> list[dict[str, float]]:
    """Train `model` in place (Adam, categorical cross-entropy) and return per-epoch metrics.

    The order of `images` does not matter: they are shuffled with `seed`, and the validation share is
    held out per class (Keras's own `validation_split` takes the last rows, all 9s in a class-ordered upload).
    """
    keras.utils.set_random_seed(seed)
    optimizer = keras.optimizers.Adam(learning_rate=learning_rate)
    model.compile(loss="categorical_crossentropy", optimizer=optimizer, metrics=["accuracy"])
    logger = EpochLogger(epochs, on_epoch)
    train, validation = shuffled_split(np.asarray(labels), validation_split, seed)
    targets = keras.utils.to_categorical(labels, CLASSES)
    model.fit(
        as_model_input(images[train]),
        targets[train],
        batch_size=batch_size,
        epochs=epochs,
        validation_data=(as_model_input(images[validation]), targets[validation]) if len(validation) else None,
        shuffle=True,
        verbose=0,
        callbacks=[logger],
    )
    return logger.history


def shuffled_split(labels: np.ndarray, share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Shuffled indices of the training rows and of a validation share stratified by label.

    A label with a single example cannot be in both parts: it stays in training and the split is plain.
    """
    indices = np.random.default_rng(seed).permutation(len(labels))
    held_out = round(len(labels) * share)
    if held_out < 1 or held_out >= len(labels):
        return indices, indices[:0]
    _, counts = np.unique(labels, return_counts=True)
    can_stratify = counts.min() >= 2 and min(held_out, len(labels) - held_out) >= len(counts)
    stratify = labels[indices] if can_stratify else None
    train, validation = train_test_split(indices, test_size=held_out, random_state=seed, stratify=stratify)
    return np.asarray(train), np.asarray(validation)


def accuracy(model: keras.Model, images: np.ndarray, labels: np.ndarray) -> float:
    """Share of `images` classified as `labels` (one bulk `predict`: fine for evaluation, not per request)."""
    predictions = model.predict(as_model_input(images), batch_size=1024, verbose=0).argmax(axis=1)
    return float((predictions == np.asarray(labels)).mean())


def save(model: keras.Model, folder: Path) -> None:
    """`model.keras` to fine-tune later, and `model.onnx` to serve."""
    model.save(folder / ARTIFACT)
    model.export(str(folder / ONNX_ARTIFACT), format="onnx", verbose=False)


def load_model(folder: Path) -> keras.Model:
    return keras.saving.load_model(folder / ARTIFACT, compile=False)


class EpochLogger(keras.callbacks.Callback):
    """One log line per epoch (loss, accuracy, time, ETA) instead of a progress bar."""

    def __init__(self, epochs: int, on_epoch: ProgressCallback | None = None) -> None:
        super().__init__()
        self.epochs = epochs
        self.on_epoch = on_epoch
        self.history: list[dict[str, float]] = []
        self._started = self._epoch_started = time.monotonic()

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._started = time.monotonic()

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch_started = time.monotonic()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        now = time.monotonic()
        done = epoch + 1
        eta = (now - self._started) / done * (self.epochs - done)
        metrics = {key: round(float(value), 4) for key, value in (logs or {}).items() if key != "learning_rate"}
        entry = {
            "epoch": done,
            "epochs": self.epochs,
            **metrics,
            "seconds": round(now - self._epoch_started, 2),
            "eta_seconds": round(eta, 1),
        }
        self.history.append(entry)
        shown = ", ".join(f"{key} {value:.4f}" for key, value in metrics.items())
        log.info("epoch %d/%d: %s, %.1f s, ETA %.0f s", done, self.epochs, shown, entry["seconds"], eta)
        if self.on_epoch is not None:
            self.on_epoch(entry)
