from pathlib import Path

import numpy as np
from conftest import SAMPLES

from prediction_service.core.errors import ServiceError
from prediction_service.models.mnist.images import ImageLimits, decode_digit
from prediction_service.models.mnist.onnx_runtime import ONNX_ARTIFACT
from prediction_service.serving.messages import Classified, ImageUpload, LoadModel, Predict, Reply
from prediction_service.serving.model_host import ModelHost


def onnx_model(model_dir: Path) -> str:
    return str(model_dir / "mnist" / "1" / ONNX_ARTIFACT)


def test_an_older_version_can_serve_again_after_newer_ones(model_dir: Path) -> None:
    """Rollback: activating version 1 when 2, 3 and 4 were loaded last must load it, not evict it."""
    host = ModelHost(ImageLimits(1 << 20, 1 << 24), threads=1)
    path = onnx_model(model_dir)
    for version in (2, 3, 4, 1):
        assert host.handle(LoadModel(version, path)) == Reply()
    reply = host.handle(Predict(1, path, [ImageUpload("d.png", (SAMPLES / "test_img0.png").read_bytes())]))
    assert reply.failure is None
    assert reply.outcomes is not None
    outcome = reply.outcomes[0]
    assert isinstance(outcome, Classified)
    assert abs(sum(outcome.probabilities) - 1) < 1e-3
    assert int(np.argmax(outcome.probabilities)) == 4  # test_img0.png shows a 4
    # The three used last: the serving version, the shadow, and one swapped in while requests drain.
    assert list(host.models) == [3, 4, 1]


def test_bad_files_in_a_batch_get_their_own_errors(model_dir: Path) -> None:
    host = ModelHost(ImageLimits(1 << 20, 1 << 24), threads=1)
    uploads = [
        ImageUpload("good.png", data=(SAMPLES / "test_img0.png").read_bytes()),
        ImageUpload("notes.txt", data=b"not an image"),
        ImageUpload("decoded.png", image=np.zeros((28, 28), dtype=np.uint8)),
    ]
    reply = host.handle(Predict(1, onnx_model(model_dir), uploads))
    assert reply.failure is None
    outcomes = reply.outcomes
    assert outcomes is not None
    assert [type(outcome) for outcome in outcomes][::2] == [Classified, Classified]
    error = outcomes[1]
    assert isinstance(error, ServiceError)
    assert error.status_code == 415
    assert "notes.txt" in error.detail


def test_each_outcome_carries_the_normalised_digit_the_model_saw(model_dir: Path) -> None:
    """The prediction log keeps the model's input: the 28x28 uint8 digit after decoding and normalising."""
    data = (SAMPLES / "test_img0.png").read_bytes()
    already_decoded = np.arange(784, dtype=np.uint8).reshape(28, 28)
    host = ModelHost(ImageLimits(1 << 20, 1 << 24), threads=1)
    reply = host.handle(
        Predict(1, onnx_model(model_dir), [ImageUpload("d.png", data=data), ImageUpload("x", image=already_decoded)])
    )
    assert reply.outcomes is not None
    decoded, passed_through = reply.outcomes
    assert isinstance(decoded, Classified)
    assert isinstance(passed_through, Classified)
    expected = decode_digit(data, ImageLimits(1 << 20, 1 << 24))
    assert decoded.image.dtype == np.uint8
    assert decoded.image.shape == (28, 28)
    np.testing.assert_array_equal(decoded.image, expected)
    np.testing.assert_array_equal(passed_through.image, already_decoded)
