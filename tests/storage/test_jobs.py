from pathlib import Path

import pytest

from prediction_service.core.errors import Conflict, NotFound
from prediction_service.storage.jobs import FAILED, INTERRUPTED, QUEUED, RUNNING, SUCCEEDED, JobStore, new_job_id


def make_job(store: JobStore) -> str:
    job_id = new_job_id()
    store.create(job_id, "mnist", {"id": job_id, "images": 3}, {"epochs": 1})
    return job_id


def test_jobs_are_claimed_oldest_first_and_listed_newest_first(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.sqlite3")
    first, second = make_job(store), make_job(store)
    assert [job.id for job in store.recent()] == [second, first]
    claimed = store.claim_next()
    assert claimed is not None
    assert (claimed.id, claimed.status, claimed.attempts) == (first, RUNNING, 1)
    assert store.get(second).status == QUEUED


def test_progress_history_and_outcome(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.sqlite3")
    job_id = make_job(store)
    store.claim_next()
    store.set_progress(job_id, {"stage": "training", "epoch": 1}, {"epoch": 1, "loss": 0.5})
    store.set_progress(job_id, {"stage": "training", "epoch": 2}, {"epoch": 2, "loss": 0.4})
    job = store.get(job_id)
    assert job.progress == {"stage": "training", "epoch": 2}
    assert [entry["loss"] for entry in job.history] == [0.5, 0.4]
    store.record_outcome(job_id, SUCCEEDED, {"version": 2}, None)
    assert store.get(job_id).status == RUNNING  # final only once the runner has swapped models
    store.finish(job_id, SUCCEEDED, {"version": 2})
    assert store.get(job_id).result == {"version": 2}


def test_a_second_process_sees_the_same_records(tmp_path: Path) -> None:
    job_id = make_job(JobStore(tmp_path / "jobs.sqlite3"))
    assert JobStore(tmp_path / "jobs.sqlite3").get(job_id).status == QUEUED


def test_only_failed_or_interrupted_jobs_can_be_retried(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.sqlite3")
    job_id = make_job(store)
    with pytest.raises(Conflict, match="only failed or interrupted"):
        store.retry(job_id)
    store.claim_next()
    store.finish(job_id, INTERRUPTED, error="server stopped")
    assert store.retry(job_id).status == QUEUED
    store.claim_next()
    store.finish(job_id, FAILED, error="boom")
    assert store.retry(job_id).status == QUEUED
    with pytest.raises(NotFound):
        store.retry(new_job_id())
