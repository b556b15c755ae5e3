from pathlib import Path

import numpy as np
import pytest
from conftest import MNIST_SMALL

from prediction_service.models.mnist import dataset as mnist_data
from prediction_service.models.mnist.dataset import MnistUnavailable, load_mnist


def test_a_local_file_in_keras_layout(mnist_arrays: dict[str, np.ndarray]) -> None:
    data = load_mnist(MNIST_SMALL)
    assert data.x_train.shape == (8000, 28, 28)
    assert data.x_test.shape == (2000, 28, 28)
    assert (data.y_test == mnist_arrays["y_test"]).all()
    assert "mnist-sample.npz" in data.describe()["description"]


def test_train_size_limits_only_the_training_images() -> None:
    data = load_mnist(MNIST_SMALL, train_size=300)
    assert (len(data.x_train), len(data.y_train), len(data.x_test)) == (300, 300, 2000)
    assert data.describe()["train_images"] == 300


def test_a_missing_file_says_how_to_fix_it(tmp_path: Path) -> None:
    with pytest.raises(MnistUnavailable) as raised:
        load_mnist(tmp_path / "nowhere.npz")
    assert "set MNIST_DATA to a local mnist.npz" in raised.value.detail
    assert raised.value.status_code == 503


def test_a_file_without_the_keras_arrays_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.npz"
    np.savez(path, images=np.zeros((3, 28, 28)))
    with pytest.raises(MnistUnavailable, match="lacks the arrays x_train"):
        load_mnist(path)


def test_without_a_file_keras_downloads_it(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def fake_load_data() -> tuple:
        calls.append(1)
        return (np.zeros((4, 28, 28), np.uint8), np.zeros(4, np.uint8)), (
            np.zeros((2, 28, 28), np.uint8),
            np.zeros(2, np.uint8),
        )

    import keras

    monkeypatch.setattr(keras.datasets.mnist, "load_data", fake_load_data)
    data = load_mnist(None)
    assert calls == [1]
    assert data.source == "keras.datasets.mnist"


def test_offline_the_bundled_sample_is_used_with_one_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, mnist_arrays: dict[str, np.ndarray]
) -> None:
    import keras

    def offline() -> None:
        raise OSError("Name or service not known")

    monkeypatch.setattr(keras.datasets.mnist, "load_data", offline)
    with caplog.at_level("WARNING", logger="prediction_service.models.mnist.dataset"):
        data = load_mnist(None)
    assert (data.y_train == mnist_arrays["y_train"]).all()
    assert (data.x_test == mnist_arrays["x_test"]).all()
    assert data.describe()["source"] == "the bundled sample mnist-sample.npz"
    warnings = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    assert len(warnings) == 1
    assert "downloading MNIST failed" in warnings[0]
    assert "set MNIST_DATA to a local mnist.npz" in warnings[0]


def test_offline_without_the_bundled_sample_mnist_is_unavailable_with_the_fix(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import keras

    def offline() -> None:
        raise OSError("Name or service not known")

    monkeypatch.setattr(keras.datasets.mnist, "load_data", offline)
    monkeypatch.setattr(mnist_data, "BUNDLED_SAMPLE", tmp_path / "deleted.npz")
    with pytest.raises(MnistUnavailable) as raised:
        mnist_data.load_mnist(None)
    assert "downloading MNIST failed" in raised.value.reason
    assert raised.value.fix.startswith("set MNIST_DATA to a local mnist.npz")
