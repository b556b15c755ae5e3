import sqlite3
import threading
from pathlib import Path

import pytest

from prediction_service.core.errors import Conflict, NotFound
from prediction_service.storage.jobs import (
    AUTOMATIC,
    FAILED,
    INTERRUPTED,
    QUEUED,
    REJECTED,
    RUNNING,
    SCHEMA,
    SUCCEEDED,
    UPLOAD,
    Job,
    JobStore,
    new_job_id,
)
from prediction_service.storage.postgres import Postgres

OWNER = "a worker"


def make_job(store: JobStore) -> str:
    job_id = new_job_id()
    store.create(job_id, "mnist", {"id": job_id, "images": 3}, {"epochs": 1})
    return job_id


def test_jobs_are_claimed_oldest_first_and_listed_newest_first(records_home: Path | Postgres) -> None:
    store = JobStore(records_home)
    first, second = make_job(store), make_job(store)
    assert [job.id for job in store.recent()] == [second, first]
    claimed = store.claim_next(OWNER, 60)
    assert claimed is not None
    assert (claimed.id, claimed.status, claimed.attempts) == (first, RUNNING, 1)
    assert store.get(second).status == QUEUED


def test_progress_history_and_outcome(records_home: Path | Postgres) -> None:
    store = JobStore(records_home)
    job_id = make_job(store)
    store.claim_next(OWNER, 60)
    store.set_progress(job_id, {"stage": "training", "epoch": 1}, {"epoch": 1, "loss": 0.5})
    store.set_progress(job_id, {"stage": "training", "epoch": 2}, {"epoch": 2, "loss": 0.4})
    job = store.get(job_id)
    assert job.progress == {"stage": "training", "epoch": 2}
    assert [entry["loss"] for entry in job.history] == [0.5, 0.4]
    store.record_outcome(job_id, SUCCEEDED, {"version": 2}, None)
    assert store.get(job_id).status == RUNNING  # final only once the runner has swapped models
    store.finish(job_id, SUCCEEDED, {"version": 2})
    assert store.get(job_id).result == {"version": 2}


def test_a_second_process_sees_the_same_records(records_home: Path | Postgres) -> None:
    job_id = make_job(JobStore(records_home))
    assert JobStore(records_home).get(job_id).status == QUEUED


def test_only_failed_or_interrupted_jobs_can_be_retried(records_home: Path | Postgres) -> None:
    store = JobStore(records_home)
    job_id = make_job(store)
    with pytest.raises(Conflict, match="only failed or interrupted"):
        store.retry(job_id)
    store.claim_next(OWNER, 60)
    store.finish(job_id, INTERRUPTED, error="server stopped")
    assert store.retry(job_id).status == QUEUED
    store.claim_next(OWNER, 60)
    store.finish(job_id, FAILED, error="boom")
    assert store.retry(job_id).status == QUEUED
    with pytest.raises(NotFound):
        store.retry(new_job_id())


def test_a_store_made_before_automatic_jobs_gets_the_trigger_column(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(SCHEMA.split("    error TEXT,")[0] + "    error TEXT\n);")  # the table as it was
    db.execute(
        "INSERT INTO jobs (id, model, status, created_at, upload, params) VALUES ('a', 'mnist', 'succeeded', "
        "'2026-01-01T00:00:00+00:00', '{}', '{}')"
    )
    db.commit()
    db.close()
    store = JobStore(path)
    assert store.get("a").trigger == UPLOAD
    assert store.create_automatic(new_job_id(), "mnist", {"examples_watermark": 5}, {}, last_watermark=0) is not None
    assert store.last_automatic_watermark("mnist") == 5


def test_one_automatic_job_per_model_at_a_time(records_home: Path | Postgres) -> None:
    store = JobStore(records_home)
    first = store.create_automatic(new_job_id(), "mnist", {"examples_watermark": 10}, {}, last_watermark=0)
    assert first is not None
    assert first.trigger == AUTOMATIC
    # Another attempt was made since the caller looked: refused.
    assert store.create_automatic(new_job_id(), "mnist", {"examples_watermark": 20}, {}, last_watermark=0) is None
    # The first still waits: refused too, even for a caller that saw it.
    assert store.create_automatic(new_job_id(), "mnist", {"examples_watermark": 20}, {}, last_watermark=10) is None
    assert store.create_automatic(new_job_id(), "penguins", {"examples_watermark": 3}, {}, last_watermark=0)
    store.claim_next(OWNER, 60)
    store.finish(first.id, FAILED)
    second = store.create_automatic(new_job_id(), "mnist", {"examples_watermark": 20}, {}, last_watermark=10)
    assert second is not None
    assert store.active_automatic("mnist") == second
    with pytest.raises(Conflict, match="another automatic job"):  # the failed one may not run beside it
        store.retry(first.id)


def test_processes_racing_to_create_the_automatic_job_create_one(records_home: Path | Postgres) -> None:
    for _ in range(5):
        last = JobStore(records_home).last_automatic_watermark("mnist")
        barrier = threading.Barrier(4)
        created: list[Job | None] = []

        def race(n: int, last: int = last, barrier: threading.Barrier = barrier, created: list = created) -> None:
            store = JobStore(records_home)  # its own connections, as another process has
            barrier.wait()
            created.append(
                store.create_automatic(new_job_id(), "mnist", {"examples_watermark": last + 10 + n}, {}, last)
            )

        threads = [threading.Thread(target=race, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        winners = [job for job in created if job is not None]
        assert len(created) == 4
        assert len(winners) == 1, created
        store = JobStore(records_home)
        claimed = store.claim_next(OWNER, 60)
        assert claimed is not None
        assert claimed.id == winners[0].id
        store.finish(winners[0].id, REJECTED)
    assert len(JobStore(records_home).recent()) == 5


def test_one_job_per_model_runs_at_a_time_whichever_worker_claims(records_home: Path | Postgres) -> None:
    store = JobStore(records_home)
    first, second = make_job(store), make_job(store)
    penguins = new_job_id()
    store.create(penguins, "penguins", {"id": penguins}, {})
    assert store.claim_next("worker a", 60).id == first  # type: ignore[union-attr]
    assert store.claim_next("worker b", 60).id == penguins  # type: ignore[union-attr]  # mnist is busy
    assert store.claim_next("worker c", 60) is None
    with pytest.raises(store.database.dialect.integrity_errors), store.database.transaction() as db:
        db.execute("UPDATE jobs SET status = 'running' WHERE id = ?", (second,))  # the database itself refuses
    store.finish(first, SUCCEEDED, owner="worker a")
    assert store.claim_next("worker c", 60).id == second  # type: ignore[union-attr]


def test_a_lease_renewed_in_time_keeps_the_job_and_an_expired_one_loses_it(records_home: Path | Postgres) -> None:
    store = JobStore(records_home)
    job_id = make_job(store)
    store.claim_next("worker a", 0.5)
    assert store.renew(job_id, "worker a", 60)
    assert store.claim_next("worker b", 60) is None
    assert not store.renew(job_id, "worker b", 60)  # not its lease
    store.set_progress(job_id, {"stage": "training", "epoch": 3})
    store.expire_lease(job_id, "worker a")  # as if worker a had stopped renewing

    again = store.claim_next("worker b", 60)
    assert again is not None
    assert (again.id, again.attempts, again.lease_owner) == (job_id, 2, "worker b")
    lost = again.progress["lease_expired"]  # type: ignore[index]
    assert lost == {"owner": "worker a", "attempts": 1, "progress": {"stage": "training", "epoch": 3}}

    # Worker a, still alive somewhere, can neither renew, publish, record a verdict nor end the job.
    published: list[str] = []
    assert not store.renew(job_id, "worker a", 60)
    assert not store.record_outcome(job_id, SUCCEEDED, {"version": 2}, None, "worker a", lambda: published.append("a"))
    store.finish(job_id, FAILED, error="a's end", owner="worker a")
    assert (published, store.get(job_id).status) == ([], RUNNING)
    assert store.record_outcome(job_id, SUCCEEDED, {"version": 2}, None, "worker b", lambda: published.append("b"))
    assert published == ["b"]
    assert store.get(job_id).progress["outcome"]["status"] == SUCCEEDED  # type: ignore[index]


def test_a_publication_that_fails_records_no_verdict(records_home: Path | Postgres) -> None:
    store = JobStore(records_home)
    job_id = make_job(store)
    store.claim_next(OWNER, 60)

    def publish() -> None:
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        store.record_outcome(job_id, SUCCEEDED, {"version": 2}, None, OWNER, publish)
    assert "outcome" not in store.get(job_id).progress  # type: ignore[operator]


def test_a_released_job_is_queued_again_and_that_run_is_not_counted(records_home: Path | Postgres) -> None:
    store = JobStore(records_home)
    job_id = make_job(store)
    store.claim_next(OWNER, 60)
    store.release(job_id, "another worker")  # not its job: nothing changes
    assert store.get(job_id).status == RUNNING
    store.release(job_id, OWNER)
    released = store.get(job_id)
    assert (released.status, released.attempts, released.lease_owner) == (QUEUED, 0, None)
    assert store.claim_next(OWNER, 60).attempts == 1  # type: ignore[union-attr]


def test_a_store_made_before_leases_gets_them_and_its_running_jobs_are_claimed_again(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(SCHEMA.split("    lease_owner TEXT,")[0].rstrip().rstrip(",") + "\n);")  # the table as it was
    for job_id in ("old", "new"):  # two running mnist jobs: possible when a process died before leases
        db.execute(
            "INSERT INTO jobs (id, model, status, created_at, upload, params, attempts) VALUES (?, 'mnist', "
            "'running', '2026-01-01T00:00:00+00:00', '{}', '{}', 1)",
            (job_id,),
        )
    db.commit()
    db.close()
    store = JobStore(path)
    assert store.get("old").status == INTERRUPTED
    claimed = store.claim_next(OWNER, 60)
    assert claimed is not None
    assert (claimed.id, claimed.attempts) == ("new", 2)
