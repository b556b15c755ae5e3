"""Where the MNIST arrays come from: a local .npz in Keras's layout, Keras's download, or the bundled sample."""

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from prediction_service.models.interface import Unavailable

log = logging.getLogger(__name__)

KERAS_KEYS = ("x_train", "y_train", "x_test", "y_test")
# The official MNIST test set in Keras's layout, shipped with the repository (see data/README.md):
# what a first start trains on when the full MNIST cannot be downloaded.
BUNDLED_SAMPLE = Path(__file__).resolve().parents[3] / "data" / "mnist-sample.npz"
FIX = "set MNIST_DATA to a local mnist.npz (Keras's layout: x_train, y_train, x_test, y_test)"


class MnistUnavailable(Unavailable):
    """MNIST could be neither read nor downloaded; the mnist model cannot be trained."""

    def __init__(self, reason: str) -> None:
        super().__init__("mnist", reason, FIX)


@dataclass(frozen=True)
class MnistData:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str

    def describe(self) -> dict:
        digest = hashlib.sha256()
        digest.update(np.ascontiguousarray(self.x_train).tobytes())
        digest.update(np.ascontiguousarray(self.y_train).tobytes())
        return {
            "description": f"MNIST from {self.source}: {len(self.x_train)} training images",
            "source": self.source,
            "sha256": digest.hexdigest(),
            "train_images": len(self.x_train),
            "holdout_images": len(self.x_test),
        }


def load_mnist(path: Path | None, train_size: int | None = None) -> MnistData:
    """MNIST from `path`, else from `keras.datasets.mnist.load_data()` (a download), else the bundled sample."""
    if path is not None:
        arrays = _read_npz(path)
        source = path.name
    else:
        try:
            arrays = _download()
            source = "keras.datasets.mnist"
        except MnistUnavailable as error:
            if not BUNDLED_SAMPLE.is_file():
                raise
            log.warning(
                "%s: training on the bundled sample %s instead (8,000 images, a less accurate model); for the full "
                "MNIST, start once with internet access or set MNIST_DATA to a local mnist.npz",
                error.reason,
                BUNDLED_SAMPLE.name,
            )
            arrays = _read_npz(BUNDLED_SAMPLE)
            source = f"the bundled sample {BUNDLED_SAMPLE.name}"
    x_train, y_train, x_test, y_test = arrays
    if train_size is not None:
        x_train, y_train = x_train[:train_size], y_train[:train_size]
        source += f" (first {len(x_train)} training images)"
    return MnistData(x_train, y_train, x_test, y_test, source)


def _read_npz(path: Path) -> tuple[np.ndarray, ...]:
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [key for key in KERAS_KEYS if key not in data.files]
            if missing:
                raise MnistUnavailable(f"{path} lacks the arrays {', '.join(missing)}")
            arrays = tuple(np.asarray(data[key]) for key in KERAS_KEYS)
    except MnistUnavailable:
        raise
    except (OSError, ValueError) as error:
        raise MnistUnavailable(f"cannot read MNIST_DATA={path} ({error})") from error
    _check_shapes(path, *arrays)
    return arrays


def _check_shapes(path: Path, x_train, y_train, x_test, y_test) -> None:
    for images, labels, split in ((x_train, y_train, "train"), (x_test, y_test, "test")):
        if images.ndim != 3 or images.shape[1:] != (28, 28) or len(images) != len(labels) or len(images) == 0:
            raise MnistUnavailable(
                f"{path}: x_{split} must be N x 28 x 28 with one label per image, got {images.shape} "
                f"images and {labels.shape} labels"
            )


def _download() -> tuple[np.ndarray, ...]:
    import keras  # heavy: only when there is no local file

    try:
        (x_train, y_train), (x_test, y_test) = keras.datasets.mnist.load_data()
    except Exception as error:
        raise MnistUnavailable(f"MNIST_DATA is not set and downloading MNIST failed ({error})") from error
    return x_train, y_train, x_test, y_test
