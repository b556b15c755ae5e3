import io
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import SAMPLES, make_settings, png_bytes
from fastapi.testclient import TestClient
from PIL import Image

from prediction_service.api.app import create_app


def post_image(client: TestClient, data: bytes, name: str = "digit.png", path: str = "/predict-image"):
    return client.post(path, files={"file": (name, data)})


def test_the_tutorial_sample(client: TestClient, mnist_arrays: dict[str, np.ndarray]) -> None:
    # samples/test_img0.png is the sample's first hold-out digit (scripts/make_samples.py): a 4.
    assert int(mnist_arrays["y_test"][0]) == 4
    response = post_image(client, (SAMPLES / "test_img0.png").read_bytes(), "test_img0.png")
    assert response.status_code == 200
    body = response.json()
    assert body["filename"] == "test_img0.png"
    assert body["result"] == "4"
    assert len(body["probabilities"]) == 10
    assert sum(body["probabilities"]) == pytest.approx(1, abs=1e-3)
    assert body["confidence"] == max(body["probabilities"])
    assert body["probabilities"].index(body["confidence"]) == 4
    assert body["model_version"] == 1


def test_real_world_forms_are_read_as_the_digit_they_show(
    client: TestClient, mnist_arrays: dict[str, np.ndarray]
) -> None:
    # Made from the hold-out digits 1 and 2 (scripts/make_samples.py): compared with their true labels,
    # not with the model's answer for the clean digit (a constant model would match that).
    for sample, index in (("digit_dark_on_light.jpg", 1), ("digit_rgba.png", 2)):
        real = post_image(client, (SAMPLES / sample).read_bytes(), sample).json()
        assert real["result"] == str(mnist_arrays["y_test"][index]), sample


def test_palette_and_16_bit_images(client: TestClient, mnist_arrays: dict[str, np.ndarray]) -> None:
    digit, label = mnist_arrays["x_test"][3], str(mnist_arrays["y_test"][3])
    assert post_image(client, png_bytes(digit)).json()["result"] == label
    palette = io.BytesIO()
    Image.fromarray(255 - digit).convert("P").save(palette, format="GIF")
    assert post_image(client, palette.getvalue(), "d.gif").json()["result"] == label
    assert post_image(client, png_bytes(digit.astype(np.uint16) * 257)).json()["result"] == label


@pytest.mark.parametrize(
    ("data", "status", "message"),
    [
        (b"", 422, "empty"),
        (b"%PDF-1.4 not an image", 415, "not a PNG, JPEG, GIF, BMP or WebP image"),
        ((SAMPLES / "digit_rgba.png").read_bytes()[:800], 422, "truncated or corrupt"),
    ],
)
def test_bad_files_say_what_is_wrong(client: TestClient, data: bytes, status: int, message: str) -> None:
    response = post_image(client, data, "upload.bin")
    assert response.status_code == status
    assert message in response.json()["detail"]
    assert client.get("/health/ready").status_code == 200


def test_a_missing_file_field_is_422(client: TestClient) -> None:
    response = client.post("/predict-image", data={"other": "x"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "file"]


def test_limits_are_413(model_dir: Path) -> None:
    settings = make_settings(model_dir, max_image_bytes=20_000, max_image_pixels=250_000)
    with TestClient(create_app(settings)) as client:
        over_bytes = post_image(client, b"\x89PNG" + b"\x00" * 200_000)
        assert over_bytes.status_code == 413
        assert "MAX_IMAGE_BYTES" in over_bytes.json()["detail"]
        big = io.BytesIO()
        Image.new("L", (600, 600), 255).save(big, format="PNG")
        over_pixels = post_image(client, big.getvalue())
        assert over_pixels.status_code == 413
        assert "pixels" in over_pixels.json()["detail"]


def test_without_mnist_the_service_serves_penguins_and_says_how_to_fix_it(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "store", mnist_data=tmp_path / "missing.npz")
    with TestClient(create_app(settings)) as client:
        assert client.get("/predict", params={"bill_length_mm": 40.3, "flipper_length_mm": 195}).status_code == 200
        ready = client.get("/health/ready")
        assert ready.status_code == 503
        mnist = ready.json()["models"]["mnist"]
        assert mnist["state"] == "unavailable"
        assert "missing.npz" in mnist["reason"]
        assert mnist["fix"].startswith("set MNIST_DATA to a local mnist.npz")
        prediction = post_image(client, (SAMPLES / "test_img0.png").read_bytes())
        assert prediction.status_code == 503
        assert "set MNIST_DATA to a local mnist.npz" in prediction.json()["detail"]
        models = {model["name"]: model for model in client.get("/models").json()["models"]}
        assert models["mnist"]["state"] == "unavailable"
        assert models["mnist"]["fix"].startswith("set MNIST_DATA")


def test_a_warm_start_loads_the_cnn_without_training_or_data(model_dir: Path, tmp_path: Path) -> None:
    versions_before = sorted(path.name for path in (model_dir / "mnist").iterdir())
    settings = make_settings(model_dir, mnist_data=tmp_path / "no-data-needed.npz")
    with TestClient(create_app(settings)) as client:
        assert client.get("/health/ready").status_code == 200
        assert post_image(client, (SAMPLES / "test_img0.png").read_bytes()).json()["model_version"] == 1
    assert sorted(path.name for path in (model_dir / "mnist").iterdir()) == versions_before


def test_if_the_model_process_dies_the_service_restarts_it(client: TestClient) -> None:
    """A crash of the digit model's process costs at most the requests in flight (503), never the service."""
    sample = (SAMPLES / "test_img0.png").read_bytes()
    inference = client.app.state.services.serving.model_process  # type: ignore[attr-defined]
    first_pid = inference._process.pid
    before = client.post("/predict-image", files={"file": ("d.png", sample, "image/png")}).json()
    os.kill(first_pid, signal.SIGKILL)
    wait_until_gone(first_pid)  # dead before the next request: its answer is then certainly the 503
    answers = [client.post("/predict-image", files={"file": ("d.png", sample, "image/png")}) for _ in range(3)]
    assert [answer.status_code for answer in answers] == [503, 200, 200]
    assert answers[0].headers["Retry-After"] == "1"
    assert "restarted" in answers[0].json()["detail"]
    assert answers[-1].json()["probabilities"] == before["probabilities"]
    assert inference._process.pid != first_pid


def wait_until_gone(pid: int, timeout: float = 30) -> None:
    """Until `pid` has exited (gone, or a zombie not yet reaped); the bound only guards against a hang."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return
        if state in ("Z", "X"):
            return
        time.sleep(0.01)
    raise AssertionError(f"process {pid} still runs {timeout} s after SIGKILL")


def test_the_digit_model_process_sends_no_telemetry(client: TestClient) -> None:
    """ONNX Runtime phones home on Linux unless told not to: the process that runs it is told not to."""
    inference = client.app.state.services.serving.model_process  # type: ignore[attr-defined]
    environment = Path(f"/proc/{inference._process.pid}/environ").read_bytes().split(b"\0")
    assert b"ORT_DISABLE_TELEMETRY=1" in environment
