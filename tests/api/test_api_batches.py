"""Batch endpoints: many rows or files per request, answered in order, each with its own error."""

import numpy as np
import pytest
from conftest import SAMPLES, make_settings, png_bytes
from fastapi.testclient import TestClient

from prediction_service.api.app import create_app


def test_many_penguins_in_order_with_per_row_errors(client: TestClient) -> None:
    rows = [
        {"bill_length_mm": 40.3, "flipper_length_mm": 195},
        {"bill_length_mm": -1, "flipper_length_mm": 195},
        {"bill_length_mm": 47.5, "flipper_length_mm": 220},
        {"flipper_length_mm": 195},
        "not a penguin",
        {"bill_length_mm": "40_3", "flipper_length_mm": 195},
    ]
    response = client.post("/predict", json=rows)
    assert response.status_code == 200
    answers = response.json()
    assert [answer["result"] for answer in answers] == ["Adelie", None, "Gentoo", None, None, None]
    assert answers[0]["model_version"] == 1
    assert answers[0]["parameters"] == {"bill_length_mm": 40.3, "flipper_length_mm": 195.0}
    assert "row 1" in answers[1]["error"]
    assert "greater than 0" in answers[1]["error"]
    assert "bill_length_mm" in answers[3]["error"]
    assert answers[4]["error"]
    assert "underscore" in answers[5]["error"]
    single = client.get("/predict", params={"bill_length_mm": 47.5, "flipper_length_mm": 220}).json()
    assert answers[2]["probabilities"] == single["probabilities"]


def test_penguin_batch_limits(model_dir) -> None:
    with TestClient(create_app(make_settings(model_dir, max_batch_items=3))) as client:
        too_many = client.post("/predict", json=[{"bill_length_mm": 40, "flipper_length_mm": 190}] * 4)
        assert too_many.status_code == 422
        assert "MAX_BATCH_ITEMS" in too_many.json()["detail"]
        assert client.post("/predict", json=[]).status_code == 422
        assert client.post("/predict", json={"bill_length_mm": 40}).status_code == 422


def test_several_images_in_order_with_per_file_errors(client: TestClient, mnist_arrays: dict) -> None:
    digits = mnist_arrays["x_test"][:3]
    files = [
        ("files", ("a.png", png_bytes(digits[0]))),
        ("files", ("b.txt", b"not an image")),
        ("files", ("c.png", png_bytes(digits[1]))),
        ("files", ("d.jpg", (SAMPLES / "digit_dark_on_light.jpg").read_bytes())),
    ]
    response = client.post("/predict-images", files=files)
    assert response.status_code == 200
    answers = response.json()
    assert [answer["filename"] for answer in answers] == ["a.png", "b.txt", "c.png", "d.jpg"]
    assert [answer["status"] for answer in answers] == [200, 415, 200, 200]
    assert answers[1]["result"] is None
    assert "not a PNG" in answers[1]["error"]
    one = client.post("/predict-image", files={"file": ("a.png", png_bytes(digits[0]))}).json()
    assert [answers[0]["result"], answers[2]["result"]] == [str(label) for label in mnist_arrays["y_test"][:2]]
    assert answers[3]["result"] == str(mnist_arrays["y_test"][1])  # the photo-like sample shows hold-out digit 1
    assert answers[0]["result"] == one["result"]
    assert np.allclose(answers[0]["probabilities"], one["probabilities"], atol=1e-5)


def test_a_batch_of_only_bad_rows_is_answered_row_by_row(client: TestClient) -> None:
    answers = client.post("/predict", json=[{}, {"bill_length_mm": "x"}]).json()
    assert [answer["result"] for answer in answers] == [None, None]
    assert all(answer["error"] for answer in answers)


@pytest.mark.parametrize(
    ("path", "field", "location"),
    [("/predict-images", "files", ["body", "files", 0]), ("/predict-image", "file", ["body", "file"])],
)
def test_an_image_part_without_a_file_name_is_refused_naming_the_field(
    client: TestClient, mnist_arrays: dict, path: str, field: str, location: list
) -> None:
    """A part without a file name is a plain form field (a text value), not an uploaded file."""
    image = png_bytes(mnist_arrays["x_test"][0])
    boundary = "xyz"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"\r\nContent-Type: image/png\r\n\r\n'.encode()
        + image
        + f"\r\n--{boundary}--\r\n".encode()
    )
    response = client.post(path, content=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == location
    assert "plain form field, not a file" in error["msg"]
    assert f'name="{field}"; filename=' in error["msg"]
