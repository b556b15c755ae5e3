"""Training off the API: API processes with RUN_TRAINING=false only queue; `python -m prediction_service worker`
processes run the jobs under leases, and a worker killed mid-job is replaced once its lease expires."""

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import datetime
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import AUTH, ROOT, SAMPLES, make_settings
from servers import Server, launch, running_server, start_server
from test_server_processes import quick_env

from prediction_service.core.settings import Settings
from prediction_service.retraining.archive import LabelledImages
from prediction_service.retraining.intake import training_params
from prediction_service.storage.jobs import RUNNING, Job, JobStore, new_job_id
from prediction_service.storage.uploads import UploadStore
from prediction_service.storage.versions import ModelStore

pytestmark = pytest.mark.e2e

WORKER_READY = "runs retraining jobs"


@contextmanager
def running_worker(env: dict[str, str], log: Path) -> Iterator[Server]:
    """`python -m prediction_service worker`, waited for until it runs jobs; SIGTERM at the end."""
    worker = launch([sys.executable, "-m", "prediction_service", "worker"], "", env, log, name="a worker")
    try:
        wait_until(lambda: log.is_file() and WORKER_READY in worker.log_text(), 180, worker)
        yield worker
    finally:
        worker.stop()


def wait_until(condition: Callable[[], object], timeout: float, process: Server | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process is not None and process.process.poll() is not None:
            raise AssertionError(f"{process.name} exited with {process.process.returncode}:\n{process.log_text()}")
        assert time.monotonic() < deadline, f"not within {timeout} s"
        time.sleep(0.2)


def owner_pid(job: Job) -> int:
    assert job.lease_owner is not None
    return int(job.lease_owner.rsplit(":", 2)[1])


def test_workers_run_the_jobs_an_api_with_run_training_false_queues_one_per_model_at_a_time(
    tmp_path: Path, trained_store: Path
) -> None:
    model_dir = tmp_path / "store"
    shutil.copytree(trained_store, model_dir)
    # The workers read the API replicas' settings, RUN_TRAINING=false included: it does not stop a worker.
    env = quick_env(model_dir, RUN_TRAINING="false")
    rows = (SAMPLES / "penguin_rows.csv").read_bytes()
    with running_server(env, tmp_path / "api.log") as api:
        queued = []
        for n in range(3):
            response = httpx.post(
                f"{api.url}/upload-penguins", files={"file": (f"rows{n}.csv", rows, "text/csv")}, headers=AUTH
            )
            assert response.status_code == 202, response.text
            queued.append(response.json()["job_id"])
        jobs = JobStore(model_dir / "jobs.sqlite3")
        with ExitStack() as workers:
            started = [workers.enter_context(running_worker(env, tmp_path / f"worker{n}.log")) for n in range(2)]
            running_per_model: list[int] = []

            def all_final() -> bool:
                running_per_model.append(sum(job.status == RUNNING for job in jobs.recent()))
                return all(jobs.get(job_id).status not in ("queued", RUNNING) for job_id in queued)

            wait_until(all_final, 120)
            assert max(running_per_model) <= 1  # the three are of one model
            finished = [httpx.get(f"{api.url}/jobs/{job_id}").json() for job_id in queued]
            assert [job["status"] for job in finished] == ["succeeded"] * 3, finished
            # One at a time: each trained on the version the one before published (oldest first).
            parents = [ModelStore(model_dir).read_version("penguins", v).manifest["parent_version"] for v in (2, 3, 4)]
            assert parents == [1, 2, 3]
            assert [job["result"]["version"] for job in finished] == [2, 3, 4]
            # The API process never trained: every job was leased by a worker, and it serves what they published.
            worker_pids = {worker.process.pid for worker in started}
            assert {owner_pid(jobs.get(job_id)) for job_id in queued} <= worker_pids
            answer = httpx.get(f"{api.url}/predict", params={"bill_length_mm": 40.3, "flipper_length_mm": 195})
            assert answer.json()["model_version"] == 4
            for worker in started:  # SIGTERM: an idle worker stops at once, cleanly
                worker.process.send_signal(signal.SIGTERM)
                assert worker.process.wait(30) == 0
    assert "retraining penguins" not in api.log_text()


def test_an_api_with_run_training_false_waits_for_first_versions_trained_elsewhere(tmp_path: Path) -> None:
    model_dir = tmp_path / "store"
    env = quick_env(model_dir, RUN_TRAINING="false")
    api = start_server(env, tmp_path / "api.log")
    try:
        api.wait_until_ready(120, path="/health/live")
        ready = httpx.get(f"{api.url}/health/ready")
        assert ready.status_code == 503
        assert "python -m prediction_service train" in ready.text
        assert "RUN_TRAINING=false" in ready.text
        trained = subprocess.run(
            [sys.executable, "-m", "prediction_service", "train"],
            cwd=ROOT,
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert trained.returncode == 0, trained.stderr[-2000:]
        # No restart: it loads what was published (its pointer check runs every RELOAD_INTERVAL).
        wait_until(lambda: httpx.get(f"{api.url}/health/ready").status_code == 200, 30, api)
        image = (SAMPLES / "test_img0.png").read_bytes()
        answer = httpx.post(f"{api.url}/predict-image", files={"file": ("d.png", image)}, timeout=30)
        assert answer.json()["model_version"] == 1
    finally:
        api.stop()
    assert "training mnist" not in api.log_text()


def queue_mnist_job(model_dir: Path, settings: Settings, mnist_arrays: dict[str, np.ndarray]) -> str:
    job_id = new_job_id()
    images, labels = mnist_arrays["x_train"][:300], mnist_arrays["y_train"][:300]
    UploadStore(model_dir / "uploads").save(job_id, LabelledImages(images, labels, "labels file"), {"id": job_id})
    summary = {"id": job_id, "images": 300, "layout": "labels file", "label_counts": {}, "received_at": "now"}
    JobStore(model_dir / "jobs.sqlite3").create(job_id, "mnist", summary, training_params(settings, "mnist"))
    return job_id


def test_a_worker_killed_mid_job_is_replaced_by_another_once_its_lease_expires(
    tmp_path: Path, trained_store: Path, mnist_arrays: dict[str, np.ndarray]
) -> None:
    model_dir = tmp_path / "store"
    shutil.copytree(trained_store, model_dir)
    env = quick_env(model_dir, JOB_LEASE_SECONDS="3")
    job_id = queue_mnist_job(model_dir, make_settings(model_dir, retrain_epochs=6), mnist_arrays)
    jobs = JobStore(model_dir / "jobs.sqlite3")
    with (
        running_worker(env, tmp_path / "worker0.log") as first,
        running_worker(env, tmp_path / "worker1.log") as second,
    ):
        workers = {first.process.pid: first, second.process.pid: second}

        def training() -> bool:
            job = jobs.get(job_id)
            return job.status == RUNNING and (job.progress or {}).get("stage") == "training"

        wait_until(training, 120)
        victim = workers.pop(owner_pid(jobs.get(job_id)))
        (survivor,) = workers.values()
        killed_at = time.time()
        victim.kill()  # the worker and its training process, as a host that vanishes
        wait_until(lambda: jobs.get(job_id).status not in ("queued", RUNNING), 180, survivor)
        job = jobs.get(job_id)
    assert job.status in ("succeeded", "rejected"), job
    assert job.attempts == 2
    assert owner_pid(job) == survivor.process.pid
    # The survivor took it over only once the lease (3 s, renewed every second until the kill) had expired.
    assert job.started_at is not None
    assert datetime.fromisoformat(job.started_at).timestamp() >= killed_at + 1  # whole seconds: expiry >= kill + 2
    store = ModelStore(model_dir)
    assert store.version_numbers("mnist") == [1, 2]  # exactly one new version
    assert store.read_version("mnist", 2).manifest["job_id"] == job_id
    assert job.result is not None
    assert job.result["version"] == 2
