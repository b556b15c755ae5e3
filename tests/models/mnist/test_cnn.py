import logging

import numpy as np
import pytest

from prediction_service.models.mnist import cnn as digits
from prediction_service.models.mnist.onnx_runtime import OnnxDigitClassifier


def test_the_cnn_is_the_tutorials() -> None:
    model = digits.build_cnn()
    kinds = [layer.__class__.__name__ for layer in model.layers]
    assert kinds == ["Conv2D", "MaxPooling2D", "Conv2D", "MaxPooling2D", "Flatten", "Dropout", "Dense"]
    assert [layer.filters for layer in model.layers if hasattr(layer, "filters")] == [32, 64]
    assert model.layers[-1].units == 10
    assert model.layers[5].rate == 0.5
    assert model.output_shape == (None, 10)


def test_training_logs_one_line_per_epoch_not_a_progress_bar(
    mnist_arrays: dict[str, np.ndarray], caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    model = digits.build_cnn()
    epochs_seen = []
    with caplog.at_level(logging.INFO, logger="prediction_service.models.mnist.cnn"):
        history = digits.fit(
            model, mnist_arrays["x_train"][:256], mnist_arrays["y_train"][:256], epochs=2, on_epoch=epochs_seen.append
        )
    lines = [record.getMessage() for record in caplog.records if record.getMessage().startswith("epoch ")]
    assert len(lines) == 2
    assert lines[0].startswith("epoch 1/2: ")
    for word in ("loss", "accuracy", " s, ETA "):
        assert word in lines[1]
    assert [entry["epoch"] for entry in history] == [1, 2]
    assert epochs_seen == history
    assert "━" not in capsys.readouterr().out  # no Keras progress bar


def test_the_served_onnx_export_matches_keras(mnist_arrays: dict[str, np.ndarray], tmp_path) -> None:
    model = digits.build_cnn()
    digits.fit(model, mnist_arrays["x_train"][:256], mnist_arrays["y_train"][:256], epochs=1)
    digits.save(model, tmp_path)
    assert {path.name for path in tmp_path.iterdir()} == {"model.keras", "model.onnx"}
    images = mnist_arrays["x_test"][:64]
    expected = model.predict(digits.as_model_input(images), verbose=0)
    served = OnnxDigitClassifier.load(tmp_path)
    np.testing.assert_allclose(served.probabilities(images), expected, rtol=1e-4, atol=1e-5)
    assert served.probabilities(images[:1]).shape == (1, 10)  # any batch size
    reloaded = digits.load_model(tmp_path)
    np.testing.assert_allclose(reloaded.predict(digits.as_model_input(images), verbose=0), expected, atol=1e-6)
