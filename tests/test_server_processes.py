"""The service as real processes: several workers, restarts, and a SIGKILL in the middle of a job."""

import contextlib
import json
import os
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from conftest import AUTH, MNIST_SMALL, SAMPLES, TOKEN
from servers import process_group, running_server

from prediction_service.storage.jobs import JobStore
from prediction_service.storage.versions import ModelStore

pytestmark = pytest.mark.e2e


def quick_env(model_dir: Path, **extra: str) -> dict[str, str]:
    return {
        "MODEL_DIR": str(model_dir),
        "MNIST_DATA": str(MNIST_SMALL),
        "MNIST_TRAIN_SIZE": "1000",
        "MNIST_EPOCHS": "1",
        "ADMIN_TOKEN": TOKEN,
        "DECODE_PROCESSES": "0",
        "RETRAIN_LEARNING_RATE": "0.001",
        **extra,
    }


def test_two_workers_on_an_empty_store_train_once_and_switch_versions_together(tmp_path: Path) -> None:
    model_dir = tmp_path / "store"
    image = (SAMPLES / "test_img0.png").read_bytes()
    with running_server(quick_env(model_dir), tmp_path / "server.log", workers=2, command="fastapi") as server:
        assert set(versions_of_each_worker(server.url, image).values()) == {1}
        log = server.log_text()
    for model in ("penguins", "mnist"):
        assert sorted(p.name for p in (model_dir / model).iterdir() if p.name.isdigit()) == ["1"], model
    assert log.count("training mnist on 1000 images") == 1

    store = ModelStore(model_dir)
    first = store.read_version("mnist", 1)

    def copy_first(folder: Path) -> None:  # version 2: the same model under another version number
        for name in first.manifest["files"]:
            shutil.copy(first.path / name, folder / name)

    made_by_store = ("name", "version", "created_at", "files")
    kept = {key: value for key, value in first.manifest.items() if key not in made_by_store}
    assert store.add_version("mnist", copy_first, {**kept, "source": "test"}).version == 2

    with running_server(quick_env(model_dir), tmp_path / "again.log", workers=2, command="fastapi") as server:
        workers = versions_of_each_worker(server.url, image)
        assert set(workers.values()) == {1}
        assert "training mnist" not in server.log_text()  # loads what the store has, no training

        activated = httpx.post(f"{server.url}/models/mnist/versions/2/activate", headers=AUTH, timeout=60)
        assert activated.status_code == 200, activated.text
        switched: set[str] = set()
        deadline = time.monotonic() + 60  # reload_interval is 0.5 s; the bound only guards a hang
        while switched != set(workers) and time.monotonic() < deadline:
            worker, version = digit_answer(server.url, image)
            assert worker in workers, f"a third worker {worker} answered"
            if version == 2:
                switched.add(worker)
            else:
                assert version == 1, version
                assert worker not in switched, f"worker {worker} went back to version 1"
        assert switched == set(workers), f"workers {sorted(set(workers) - switched)} still serve version 1"


def digit_answer(url: str, image: bytes) -> tuple[str, int]:
    """One prediction on a new connection (so either worker may take it): who answered, with which version."""
    response = httpx.post(f"{url}/predict-image", files={"file": ("d.png", image)}, timeout=30)
    assert response.status_code == 200, response.text
    return response.headers["x-worker"], response.json()["model_version"]


def versions_of_each_worker(url: str, image: bytes, workers: int = 2) -> dict[str, int]:
    """Ask until `workers` distinct workers have answered; the version each served."""
    seen: dict[str, int] = {}
    deadline = time.monotonic() + 60  # both answer within a second or two; the bound only guards a hang
    while len(seen) < workers and time.monotonic() < deadline:
        worker, version = digit_answer(url, image)
        seen[worker] = version
    assert len(seen) == workers, f"only workers {sorted(seen)} answered"
    return seen


def processes_running(pattern: str) -> list[int]:
    """Live (not zombie) processes whose command line holds `pattern`."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if pattern.encode() in cmdline.read_bytes() and process_state(int(cmdline.parent.name)) not in "ZX":
                found.append(int(cmdline.parent.name))
        except (OSError, IndexError):
            continue
    return found


def process_state(pid: int) -> str:
    return (Path(f"/proc/{pid}/stat")).read_text().rsplit(")", 1)[1].split()[0]


def test_a_sigkill_of_the_server_alone_during_training_loses_nothing(tmp_path: Path, trained_store: Path) -> None:
    model_dir = tmp_path / "store"
    shutil.copytree(trained_store, model_dir)
    # Far more epochs than it ever runs: a trainer that outlived its server would still be training.
    env = quick_env(model_dir, RETRAIN_EPOCHS="1000")
    with running_server(env, tmp_path / "server.log") as server:
        response = httpx.post(
            f"{server.url}/upload-images",
            files={"file": ("retrain_img.zip", (SAMPLES / "retrain_img.zip").read_bytes())},
            headers=AUTH,
            timeout=30,
        )
        job_id = response.json()["job_id"]
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            job = httpx.get(f"{server.url}/jobs/{job_id}").json()
            if job["status"] == "running" and (job["progress"] or {}).get("epoch", 0) >= 1:
                break
            time.sleep(0.2)
        assert job["status"] == "running", job
        [trainer] = processes_running(job_id)
        group = server.process.pid
        try:
            # Only the server's pid, not its process group: the trainer must notice on its own.
            server.kill_alone()
            deadline = time.monotonic() + 30  # generous: it dies at once; the bound only guards against a hang
            while processes_running(job_id) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert processes_running(job_id) == [], "the training subprocess outlived its server"
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)  # whatever a failing run left behind
    assert trainer not in processes_running(job_id)
    # Nothing was published, and nothing half-written is mistaken for a version.
    assert sorted(p.name for p in (model_dir / "mnist").iterdir() if p.name.isdigit()) == ["1"]
    assert json.loads((model_dir / "mnist" / "serving.json").read_text())["version"] == 1

    with running_server(env, tmp_path / "restart.log") as server:
        # Its lease's owner is gone from this host: the restart runs it again at once, not at the lease's expiry.
        job = wait_for_status(server.url, job_id, lambda job: job["attempts"] == 2)
        assert job["status"] == "running"
        assert (model_dir / "uploads" / job_id / "dataset.npz").is_file()
        assert httpx.get(f"{server.url}/").json()["models"]["mnist"]["serving_version"] == 1
        assert not [p for p in (model_dir / "mnist").iterdir() if p.name.startswith(".tmp")]
        pointer = json.loads((model_dir / "mnist" / "serving.json").read_text())
        assert pointer["version"] == 1
    # A graceful stop gives the job back to the queue, that run uncounted, for the next process that runs jobs.
    released = JobStore(model_dir / "jobs.sqlite3").get(job_id)
    assert (released.status, released.attempts) == ("queued", 1)
    assert processes_running(job_id) == []


def wait_for_status(url: str, job_id: str, condition: Callable[[dict], bool], timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while not condition(job := httpx.get(f"{url}/jobs/{job_id}").json()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert condition(job), job
    return job


def test_helper_processes_end_when_the_server_is_killed_alone(tmp_path: Path, trained_store: Path) -> None:
    """The OOM killer takes the server and nothing else: its digit-model and decoding processes must
    not live on as orphans holding memory."""
    model_dir = tmp_path / "store"
    shutil.copytree(trained_store, model_dir)
    with running_server(quick_env(model_dir, DECODE_PROCESSES="2"), tmp_path / "server.log") as server:
        group = server.process.pid  # started in a session of its own: helpers share its group id
        assert len(process_group(group)) >= 4  # server, digit-model process, forkserver, decoders
        server.kill_alone()
        deadline = time.monotonic() + 10
        while process_group(group) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert process_group(group) == []
