"""Runs retraining jobs: claims one at a time from the job store, trains it in a subprocess, settles it.

Any number of processes (API replicas with RUN_TRAINING, `python -m prediction_service worker`) may run one on
the same store. Each job is held under a lease that a thread renews while it trains; a job whose worker died is
claimed again once its lease expires (at once, by a process of the same host that finds its owner gone), up to
MAX_ATTEMPTS runs. The database lets one job per model run at a time.
"""

import asyncio
import dataclasses
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from prediction_service.core.child_process import start_child
from prediction_service.core.settings import Settings
from prediction_service.models.catalog import model_names
from prediction_service.retraining import lease
from prediction_service.storage.jobs import (
    FAILED,
    INTERRUPTED,
    MAX_ATTEMPTS,
    REJECTED,
    SUCCEEDED,
    Job,
    JobStore,
    job_result,
)
from prediction_service.storage.objects import StoreUnavailable
from prediction_service.storage.uploads import UploadStore
from prediction_service.storage.versions import ModelStore

log = logging.getLogger(__name__)

# How often a process that runs jobs looks for claimable ones (queued elsewhere, or left by a dead worker).
POLL_SECONDS = 1.0
# How a job ends: its status, result and error (JobStore.finish's arguments).
Settlement = tuple[str, dict[str, Any] | None, str | None]


class JobRunner:
    def __init__(
        self,
        jobs: JobStore,
        store: ModelStore,
        uploads: UploadStore,
        settings: Settings,
        on_outcome: Callable[[], Awaitable[None]] | None = None,
        on_finished: Callable[[Job], Awaitable[None]] | None = None,
    ) -> None:
        self.jobs = jobs
        self.store = store
        self.uploads = uploads
        self.settings = settings
        self.on_outcome = on_outcome
        self.on_finished = on_finished
        self.owner = lease.worker_id()
        self._model_dir = Path(settings.model_dir).resolve()
        self._task: asyncio.Task[None] | None = None
        self._poller: asyncio.Task[None] | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._stopping = False

    # Start-up

    def recover(self) -> list[str]:
        """End the leases of this host's processes that are gone (a restart after a kill need not wait for them
        to expire), and clear half-written files that no live job is writing (blocking); the ids of those jobs."""
        ended = []
        for job in self.jobs.running():
            if job.lease_owner is not None and lease.owner_gone(job.lease_owner):
                self.jobs.expire_lease(job.id, job.lease_owner)
                ended.append(job.id)
        now = time.time()
        writing = {job.model for job in self.jobs.running() if (job.lease_expires or 0) > now}
        try:
            for name in model_names():
                if name not in writing:
                    with self.store.lock(name):
                        self.store.remove_partial_versions(name)
            self.uploads.remove_partial()
            removed = self.uploads.remove_orphans(self._referenced_uploads())
            if removed:
                log.warning("removed uploads that no job names (saved by a process that died): %s", ", ".join(removed))
        except StoreUnavailable as error:  # serving starts from its cache; the next start cleans up
            log.warning("clean-up of half-written files postponed: %s", error.detail)
        return ended

    def _referenced_uploads(self) -> set[str]:
        """Uploads that a job or a stored version names (versions too: replay reads them if a job row is gone)."""
        referenced = self.jobs.upload_ids()
        for name in model_names():
            for version in self.store.list_versions(name):
                upload_id = version.manifest.get("training_data", {}).get("upload_id")
                if upload_id:
                    referenced.add(upload_id)
        return referenced

    def _expired_run_settlement(self, job: Job) -> Settlement | None:
        """A job claimed again after its worker's lease expired: the verdict its lost run got as far as, or a
        failure once it has had MAX_ATTEMPTS runs (blocking); None: run it again."""
        lost = (job.progress or {}).get("lease_expired")
        if lost is None:
            return None
        verdict = self._stored_verdict(dataclasses.replace(job, progress=lost["progress"]))
        if verdict is not None or lost["attempts"] < MAX_ATTEMPTS:
            return verdict
        return (
            FAILED,
            None,
            f"its worker stopped renewing its lease {lost['attempts']} times (it died or lost its host); "
            f"POST /jobs/{job.id}/retry runs it again",
        )

    def _stored_verdict(self, job: Job) -> Settlement | None:
        """The verdict its process recorded, or else what the version it stored says (blocking); None: neither."""
        outcome = (job.progress or {}).get("outcome")
        if outcome is not None:
            return outcome["status"], outcome["result"], outcome["error"]
        stored = [v for v in self.store.list_versions(job.model) if v.manifest.get("job_id") == job.id]
        if not stored:
            return None
        version = stored[-1]
        pointer = self.store.serving(job.model)
        published = version.version in (set() if pointer is None else pointer.published())
        result = job_result(version, published)
        if published:
            return SUCCEEDED, result, None
        if not version.manifest.get("gate", {}).get("passed", False):
            return REJECTED, result, None
        note = f"candidate version {version.version} was stored but not published (activate it, or retry)"
        return INTERRUPTED, None, f"the job's process ended before it finished: {note}; POST /jobs/{job.id}/retry"

    # Running

    def start(self) -> None:
        """Follow the queue: jobs queued by other processes, and jobs whose worker's lease expired."""
        if self.settings.run_training and self._poller is None:
            self._poller = asyncio.create_task(self._follow_queue(), name="retraining-queue")

    async def _follow_queue(self) -> None:
        while True:
            await self.kick()
            await asyncio.sleep(POLL_SECONDS)

    async def kick(self) -> None:
        """Make sure this process works through the queue (a no-op if it already is, or runs no jobs)."""
        if self._stopping or not self.settings.run_training:
            return
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain(), name="retraining-jobs")

    async def _drain(self) -> None:
        lease_seconds = self.settings.job_lease_seconds
        loop = asyncio.get_running_loop()

        def lease_lost() -> None:  # in the keeper's thread
            loop.call_soon_threadsafe(self._lease_lost)

        while not self._stopping:
            try:
                job = await asyncio.to_thread(self.jobs.claim_next, self.owner, lease_seconds)
                if job is None:
                    return
                with lease.LeaseKeeper(self.jobs, job.id, self.owner, lease_seconds, lease_lost) as keeper:
                    settlement = await asyncio.to_thread(self._expired_run_settlement, job)
                    if settlement is None:
                        settlement = await self._train(job)
                    if settlement is not None and not keeper.lost:
                        await self._end(job, settlement)
            except Exception:  # e.g. the database is away: a job it held is left to its lease
                log.exception("running retraining jobs failed; the next look at the queue tries again")
                return

    def _lease_lost(self) -> None:
        if self._process is not None and self._process.returncode is None:
            self._process.terminate()  # it could not publish anyway (record_outcome checks the lease)

    async def _train(self, job: Job) -> Settlement | None:
        """Run the training process; how the job ends (None: it went back to the queue)."""
        log.info("job %s: retraining %s", job.id, job.model)
        settings = self.settings
        self._process = await start_child(
            "prediction_service.retraining.training_job",
            str(self._model_dir),
            job.id,
            "--niceness",
            str(settings.training_niceness),
            "--lease-owner",
            self.owner,
            *(["--store-url", settings.model_store_url] if settings.model_store_url else []),
            settings=settings,
            threads=settings.training_threads,
            env={
                **os.environ,
                "TF_NUM_INTRAOP_THREADS": str(settings.training_threads),
                "TF_NUM_INTEROP_THREADS": "1",
                # The job's records and pointers where this process keeps them ("": SQLite in MODEL_DIR).
                "DATABASE_URL": settings.database_url.get_secret_value() if settings.database_url else "",
            },
            # Low priority from its first instruction: its imports (seconds of CPU) must not slow serving either.
            preexec_fn=lambda: _lower_priority(settings.training_niceness),
        )
        exit_code = await self._process.wait()
        self._process = None
        job = await asyncio.to_thread(self.jobs.get, job.id)
        # Its verdict, or (ended before it recorded one: a stop, a crash, the OOM killer) what it stored: the end
        # may come after it published.
        verdict = await asyncio.to_thread(self._stored_verdict, job)
        # Stopped (by this process's stop, or a SIGTERM to the whole process group) rather than failed.
        if verdict is None and (self._stopping or exit_code in (-signal.SIGTERM, -signal.SIGINT)):
            await asyncio.to_thread(self.jobs.release, job.id, self.owner)
            log.info("job %s: back in the queue (this process stops)", job.id)
            return None
        return verdict or (FAILED, None, f"the training process exited with code {exit_code}")

    async def _end(self, job: Job, settlement: Settlement) -> None:
        if settlement[0] in (SUCCEEDED, REJECTED) and self.on_outcome is not None:
            await self.on_outcome()  # serve a published version here before the job reads final
        await asyncio.to_thread(self.jobs.finish, job.id, *settlement, self.owner)
        finished = await asyncio.to_thread(self.jobs.get, job.id)
        log.info("job %s %s", job.id, finished.status)
        if self.on_finished is not None:
            await self.on_finished(finished)

    async def stop(self) -> None:
        self._stopping = True
        if self._poller is not None:
            self._poller.cancel()
            await asyncio.gather(self._poller, return_exceptions=True)
        if self._process is not None and self._process.returncode is None:
            self._process.terminate()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)


def _lower_priority(niceness: int) -> None:
    """In the forked child before it runs Python: one system call, no lock taken (safe with threads)."""
    os.setpriority(os.PRIO_PROCESS, 0, max(niceness, os.getpriority(os.PRIO_PROCESS, 0)))
