"""A first start without MNIST_DATA and without internet trains on the bundled sample and says so."""

from pathlib import Path

import pytest
from conftest import SAMPLES, make_settings
from fastapi.testclient import TestClient

from prediction_service.api.app import create_app


def test_offline_first_start_serves_a_digit_model_trained_on_the_bundled_sample(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import keras

    def offline() -> None:
        raise OSError("Name or service not known")

    monkeypatch.setattr(keras.datasets.mnist, "load_data", offline)
    settings = make_settings(tmp_path / "store", mnist_data=None, mnist_train_size=500, mnist_epochs=1)
    with TestClient(create_app(settings)) as client:
        assert client.get("/health/ready").status_code == 200
        models = {model["name"]: model for model in client.get("/models").json()["models"]}
        [version] = models["mnist"]["versions"]
        assert version["training_data"]["source"] == "the bundled sample mnist-sample.npz (first 500 training images)"
        assert "bundled sample" in version["training_data"]["description"]
        answer = client.post("/predict-image", files={"file": (SAMPLES / "test_img0.png").read_bytes()})
        assert answer.status_code == 200
        assert answer.json()["model_version"] == 1
