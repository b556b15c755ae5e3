from pathlib import Path

import numpy as np

from prediction_service.retraining.penguin_rows import LabelledRows
from prediction_service.storage.uploads import UploadStore


def test_uploads_keep_inputs_of_any_shape(tmp_path: Path) -> None:
    uploads = UploadStore(tmp_path)
    rows = LabelledRows(np.array([[39.1, 181.0], [46.5, 195.0]]), np.array([0, 1], np.uint8), ["Adelie", "Chinstrap"])
    uploads.save("a" * 32, rows, {"id": "a" * 32})
    inputs, labels = uploads.load("a" * 32)
    assert inputs.tolist() == [[39.1, 181.0], [46.5, 195.0]]
    assert inputs.dtype == np.float64
    assert labels.tolist() == [0, 1]


def test_uploads_stored_before_uploads_were_generic_are_still_read(tmp_path: Path) -> None:
    """Their dataset.npz names the inputs `images`: a job retried after the upgrade must find them."""
    folder = tmp_path / ("b" * 32)
    folder.mkdir()
    images = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    np.savez(folder / "dataset.npz", images=images, labels=np.array([3, 4], np.uint8))
    inputs, labels = UploadStore(tmp_path).load("b" * 32)
    assert np.array_equal(inputs, images)
    assert labels.tolist() == [3, 4]
