"""A worker's lease: kept alive while the job runs, lost once another worker has it; local dead owners noticed."""

import threading
import time
from pathlib import Path

from conftest import dead_process_owner

from prediction_service.retraining.lease import LeaseKeeper, owner_gone, worker_id
from prediction_service.storage.jobs import JobStore, new_job_id


def test_a_kept_lease_outlives_its_length_and_its_loss_is_reported(tmp_path: Path) -> None:
    jobs = JobStore(tmp_path / "jobs.sqlite3")
    job_id = new_job_id()
    jobs.create(job_id, "mnist", {"id": job_id}, {})
    jobs.claim_next("worker a", 0.3)
    lost = threading.Event()
    with LeaseKeeper(jobs, job_id, "worker a", 0.3, lost.set) as keeper:
        time.sleep(1.0)  # three lease lengths: only the renewals keep it
        assert jobs.claim_next("worker b", 60) is None
        jobs.expire_lease(job_id, "worker a")  # as a stalled renewal would leave it
        assert jobs.claim_next("worker b", 60) is not None
        assert lost.wait(5)
        assert keeper.lost
    assert jobs.get(job_id).lease_owner == "worker b"


def test_only_owners_of_this_host_whose_process_is_gone_are_gone() -> None:
    assert not owner_gone(worker_id())  # this process
    assert owner_gone(dead_process_owner())
    _, pid, nonce = dead_process_owner().rsplit(":", 2)
    assert not owner_gone(f"another-host/1:{pid}:{nonce}")  # left to its lease
    assert not owner_gone("a worker")
    assert not owner_gone(None)
