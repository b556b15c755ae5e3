from pathlib import Path

import numpy as np
from conftest import SAMPLES

from prediction_service.core.errors import ServiceError
from prediction_service.models.mnist.images import ImageLimits
from prediction_service.models.mnist.onnx_runtime import ONNX_ARTIFACT
from prediction_service.serving.messages import ImageUpload, LoadModel, Predict, Reply
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
    assert isinstance(reply.outcomes[0], list)
    assert abs(sum(reply.outcomes[0]) - 1) < 1e-3
    assert int(np.argmax(reply.outcomes[0])) == 4  # test_img0.png shows a 4
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
    assert [type(outcome) for outcome in outcomes][::2] == [list, list]
    error = outcomes[1]
    assert isinstance(error, ServiceError)
    assert error.status_code == 415
    assert "notes.txt" in error.detail
