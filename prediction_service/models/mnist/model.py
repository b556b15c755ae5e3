"""The mnist model as the service sees it: first training, the fixed hold-out set, loading (see models.interface).

A version serves from the model's own process (serving.model_host), through ONNX Runtime: the
server loads neither TensorFlow nor the model itself.
"""

import io
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from prediction_service.core import tf_runtime
from prediction_service.core.provenance import library_versions
from prediction_service.core.settings import Settings
from prediction_service.inference_protocol.signature import ModelSignature
from prediction_service.models.interface import ModelContext, ProgressCallback, ShadowAnswers, final_epoch
from prediction_service.models.mnist import MNIST
from prediction_service.models.mnist.dataset import load_mnist
from prediction_service.models.mnist.images import normalize_digit
from prediction_service.models.mnist.onnx_runtime import ONNX_ARTIFACT
from prediction_service.models.mnist.predictor import MnistVersion
from prediction_service.models.mnist.signature import protocol_signature
from prediction_service.retraining import replay
from prediction_service.serving.messages import LoadModel, ModelProcessFailed
from prediction_service.storage.layout import HOLDOUT
from prediction_service.storage.versions import CorruptVersion, ModelStore, StoredVersion

if TYPE_CHECKING:
    import keras

    from prediction_service.services import Serving

log = logging.getLogger(__name__)


class MnistCandidate:
    """A retrained CNN, not yet stored. (`cnn` imports TensorFlow: imported only where training happens.)"""

    def __init__(self, model: "keras.Model", history: list[dict[str, float]]) -> None:
        self.model = model
        self.history = history

    def score(self, holdout: tuple[np.ndarray, np.ndarray]) -> float:
        from prediction_service.models.mnist import cnn

        return cnn.accuracy(self.model, *holdout)

    def refusal(self, holdout: tuple[np.ndarray, np.ndarray]) -> None:
        return None  # the gate's score is all that decides

    def save(self, folder: Path) -> None:
        from prediction_service.models.mnist import cnn

        cnn.save(self.model, folder)


class MnistRetrainingRecipe:
    """Fine-tuning the serving CNN on uploaded images, scored on the hold-out set of the first training."""

    gate_metric = "holdout_accuracy"
    unit = "images"

    def params(self, settings: Settings) -> dict[str, Any]:
        return {
            "epochs": settings.retrain_epochs,
            "batch_size": settings.retrain_batch_size,
            "validation_split": settings.retrain_validation_split,
            "learning_rate": settings.retrain_learning_rate,
            "replay_size": settings.retrain_replay_size,
            "gate_margin": settings.retrain_gate_margin,
        }

    def set_up_process(self, threads: int) -> None:
        from prediction_service.models.mnist import cnn  # noqa: F401  (first: where TensorFlow is missing, says so)

        tf_runtime.limit_threads(threads, 1)

    def holdout(self, store: ModelStore) -> tuple[np.ndarray, np.ndarray]:
        return load_holdout(store)

    def score(self, version: StoredVersion, holdout: tuple[np.ndarray, np.ndarray]) -> float:
        from prediction_service.models.mnist import cnn

        return cnn.accuracy(cnn.load_model(version.path), *holdout)

    def fine_tune(
        self,
        parent: StoredVersion,
        data: tuple[np.ndarray, np.ndarray],
        params: dict[str, Any],
        seed: int,
        on_epoch: ProgressCallback,
    ) -> MnistCandidate:
        from prediction_service.models.mnist import cnn  # TensorFlow: in the training job only

        model = cnn.load_model(parent.path)
        images, labels = data
        history = cnn.fit(
            model,
            images,
            labels,
            epochs=params["epochs"],
            batch_size=params["batch_size"],
            validation_split=params["validation_split"],
            learning_rate=params.get("learning_rate", 0.001),
            seed=seed,
            on_epoch=on_epoch,
        )
        return MnistCandidate(model, history)


class MnistModel:
    name = MNIST
    description = "the handwritten digit in an image (CNN), retrained from uploaded, labelled images"
    retraining = MnistRetrainingRecipe()

    def __init__(self, context: ModelContext) -> None:
        self.settings = context.settings
        # Where a version is loaded before the registry swaps to it (None: nothing serves here, e.g. the CLI).
        self.model_process = context.model_process

    def train_first_version(self, store: ModelStore) -> StoredVersion:
        from prediction_service.models.mnist import cnn  # TensorFlow: only once there is something to train

        data = load_mnist(self.settings.mnist_data, self.settings.mnist_train_size)
        # The same preprocessing as every uploaded image, so training matches serving.
        images = normalize_all(data.x_train)
        holdout = save_holdout(store, normalize_all(data.x_test), data.y_test)
        replay.save_initial(store, self.name, images, data.y_train)
        model = cnn.build_cnn()
        log.info("training %s on %d images for %d epochs", self.name, len(images), self.settings.mnist_epochs)
        history = cnn.fit(model, images, data.y_train, epochs=self.settings.mnist_epochs, seed=0)
        holdout_accuracy = cnn.accuracy(model, *holdout)
        log.info("trained %s: hold-out accuracy %.4f", self.name, holdout_accuracy)
        manifest = {
            "source": "initial training",
            "training_data": data.describe(),
            "parameters": {"epochs": self.settings.mnist_epochs, "batch_size": 128, "validation_split": 0.1},
            "metrics": {"holdout_accuracy": round(holdout_accuracy, 4), **final_epoch(history)},
            "history": history,
            "libraries": library_versions(),
        }
        return store.add_version(self.name, lambda folder: cnn.save(model, folder), manifest)

    def protocol_signature(self, serving: "Serving") -> ModelSignature:
        return protocol_signature(serving.mnist, serving.recorder, serving.shadow)

    def shadow_answers(self, serving: "Serving") -> ShadowAnswers:
        return serving.mnist.answers_when_idle

    def labels(self, manifest: dict[str, Any]) -> list[str]:
        return [str(digit) for digit in range(10)]

    def load(self, stored: StoredVersion) -> MnistVersion:
        loaded = MnistVersion(stored.version, stored.path / ONNX_ARTIFACT)
        if self.model_process is not None:
            try:
                self.model_process.call_from_thread(LoadModel(loaded.version, str(loaded.onnx_path)))
            except ModelProcessFailed as error:  # e.g. an unreadable model file: this version cannot serve
                raise CorruptVersion(f"mnist version {loaded.version} cannot be loaded: {error}") from error
        return loaded


def normalize_all(images: np.ndarray) -> np.ndarray:
    out = np.empty((len(images), 28, 28), dtype=np.uint8)
    for index, image in enumerate(images):
        out[index] = normalize_digit(image)
    return out


def save_holdout(store: ModelStore, images: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Keep the hold-out set beside the versions; every later model is scored on it."""
    if store.shared_file(MNIST, HOLDOUT) is not None:
        return load_holdout(store)
    buffer = io.BytesIO()
    np.savez(buffer, x=images, y=np.asarray(labels, dtype=np.uint8))
    store.write_shared(MNIST, HOLDOUT, buffer.getvalue())
    return images, labels


def load_holdout(store: ModelStore) -> tuple[np.ndarray, np.ndarray]:
    path = store.shared_file(MNIST, HOLDOUT)
    if path is None:
        raise RuntimeError(f"the {MNIST} hold-out set ({HOLDOUT}) is missing from the model store")
    with np.load(path, allow_pickle=False) as data:
        return data["x"], data["y"]
