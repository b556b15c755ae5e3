from pathlib import Path

import numpy as np
from conftest import SAMPLES

from prediction_service.inference_worker import Worker
from prediction_service.ml.digit_runtime import ONNX_ARTIFACT
from prediction_service.ml.images import ImageLimits


def onnx_model(model_dir: Path) -> str:
    return str(model_dir / "mnist" / "1" / ONNX_ARTIFACT)


def test_an_older_version_can_serve_again_after_newer_ones(model_dir: Path) -> None:
    """Rollback: activating version 1 when 2 and 3 were loaded last must load it, not evict it."""
    worker = Worker(ImageLimits(1 << 20, 1 << 24), threads=1)
    path = onnx_model(model_dir)
    for version in (2, 3, 1):
        assert worker.handle(("load", version, path)) == ("ok", None)
    status, outcomes = worker.handle(("predict", 1, path, [("d.png", (SAMPLES / "test_img0.png").read_bytes(), None)]))
    assert status == "ok"
    assert outcomes[0][0] == "digit"
    assert abs(sum(outcomes[0][1]) - 1) < 1e-3
    assert int(np.argmax(outcomes[0][1])) == 4  # test_img0.png shows a 4
    assert list(worker.models) == [3, 1]  # the two used last


def test_bad_files_in_a_batch_get_their_own_errors(model_dir: Path) -> None:
    worker = Worker(ImageLimits(1 << 20, 1 << 24), threads=1)
    uploads = [
        ("good.png", (SAMPLES / "test_img0.png").read_bytes(), None),
        ("notes.txt", b"not an image", None),
        ("decoded.png", None, np.zeros((28, 28), dtype=np.uint8)),
    ]
    status, outcomes = worker.handle(("predict", 1, onnx_model(model_dir), uploads))
    assert status == "ok"
    assert [outcome[0] for outcome in outcomes] == ["digit", "error", "digit"]
    assert outcomes[1][1] == 415
    assert "notes.txt" in outcomes[1][2]
