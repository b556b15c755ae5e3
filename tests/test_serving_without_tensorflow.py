"""The serving image installs requirements-serving.txt only: the API must serve without TensorFlow, and what
needs TensorFlow must say so. Here the training libraries are hidden from every process (server, model
process, training job) by an import hook; scripts/container-check.sh checks the real image."""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
from conftest import AUTH, MNIST_SMALL, ROOT, SAMPLES, TOKEN
from servers import running_server

TRAINING_LIBRARIES = ("tensorflow", "keras", "tf2onnx", "onnx")

HIDE_TRAINING_LIBRARIES = f"""
import sys

class HideTrainingLibraries:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in {TRAINING_LIBRARIES!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None

sys.meta_path.insert(0, HideTrainingLibraries())
"""


def without_training_libraries(folder: Path, model_dir: Path) -> dict[str, str]:
    """Settings of a process (and its children) that cannot import TensorFlow, Keras or ONNX's exporter."""
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(HIDE_TRAINING_LIBRARIES)
    return {
        "PYTHONPATH": str(folder),
        "MODEL_DIR": str(model_dir),
        "MNIST_DATA": str(MNIST_SMALL),
        "ADMIN_TOKEN": TOKEN,
        "DECODE_PROCESSES": "0",
    }


def test_the_api_serves_both_models_without_tensorflow_and_a_retraining_job_says_what_is_missing(
    tmp_path: Path, trained_store: Path
) -> None:
    model_dir = tmp_path / "store"
    shutil.copytree(trained_store, model_dir)
    env = without_training_libraries(tmp_path / "hide", model_dir)
    with running_server(env, tmp_path / "server.log", ready_timeout=60) as server:
        penguin = httpx.get(f"{server.url}/predict", params={"bill_length_mm": 40.3, "flipper_length_mm": 195})
        assert penguin.status_code == 200, penguin.text
        assert penguin.json()["result"] == "Adelie"
        image = (SAMPLES / "test_img0.png").read_bytes()
        digit = httpx.post(f"{server.url}/predict-image", files={"file": ("test_img0.png", image, "image/png")})
        assert digit.status_code == 200, digit.text
        assert digit.json()["model_version"] == 1

        upload = (SAMPLES / "retrain_img.zip").read_bytes()
        accepted = httpx.post(
            f"{server.url}/upload-images", files={"file": ("retrain.zip", upload, "application/zip")}, headers=AUTH
        )
        assert accepted.status_code == 202, accepted.text
        job_url = f"{server.url}/jobs/{accepted.json()['job_id']}"
        deadline = time.monotonic() + 120
        while (job := httpx.get(job_url).json())["status"] in ("queued", "running") and time.monotonic() < deadline:
            time.sleep(0.2)
        assert job["status"] == "failed", job
        assert "training needs TensorFlow (Keras), which is not installed here" in job["error"], job
        assert "the worker image" in job["error"], job
        # Still serving what it had.
        assert httpx.get(f"{server.url}/health/ready").status_code == 200


def test_training_a_first_version_without_tensorflow_fails_with_the_fix(tmp_path: Path) -> None:
    env = without_training_libraries(tmp_path / "hide", tmp_path / "store")
    result = subprocess.run(
        [sys.executable, "-m", "prediction_service", "train", "mnist"],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1, result
    assert "mnist: unavailable (training needs TensorFlow (Keras), which is not installed here" in result.stdout
    assert "fix: train where requirements.txt is installed: the worker image" in result.stderr


def requirement_names(path: Path) -> dict[str, str]:
    """Each pinned requirement's name and its line; fails on a line that is not pinned with ==."""
    pinned = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-r "):
            continue
        name, separator, _ = line.partition("==")
        assert separator, f"{path.name}: {line!r} is not pinned"
        pinned[name.strip().lower()] = line
    return pinned


def test_requirements_split_serving_from_training() -> None:
    serving = requirement_names(ROOT / "requirements-serving.txt")
    everything = requirement_names(ROOT / "requirements.txt")
    # `pip install -r requirements.txt` installs everything, serving included.
    assert "-r requirements-serving.txt" in (ROOT / "requirements.txt").read_text().splitlines()
    assert not set(serving) & set(everything), "a library pinned in both files"
    for library in ("tensorflow", "tensorflow-cpu", "keras", "tf2onnx", "onnx"):
        assert library not in serving
    assert {"tensorflow-cpu", "keras", "tf2onnx", "onnx"} <= set(everything)
    assert {"onnxruntime", "fastapi", "scikit-learn"} <= set(serving)
