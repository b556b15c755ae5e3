"""Runs queued retraining jobs one at a time across every process sharing MODEL_DIR.

A file lock (released by the OS if its holder dies) decides which process
trains; it holds the lock while its training subprocess runs. So a job found
`running` while nobody holds the lock belongs to a process that died: it is
marked `interrupted` and its upload stays on disk for `POST /jobs/{id}/retry`.
"""

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from prediction_service.core.child_process import start_child
from prediction_service.core.settings import Settings
from prediction_service.models.catalog import model_names
from prediction_service.storage.jobs import (
    AUTOMATIC,
    FAILED,
    INTERRUPTED,
    REJECTED,
    SUCCEEDED,
    Job,
    JobStore,
    job_result,
)
from prediction_service.storage.layout import Layout
from prediction_service.storage.uploads import UploadStore
from prediction_service.storage.versions import ModelStore

log = logging.getLogger(__name__)

LOCK_POLL_SECONDS = 0.5
# An automatic job that a server stop interrupted is queued again (nobody is there to retry it), this many runs at most.
AUTOMATIC_MAX_ATTEMPTS = 3
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
        self._model_dir = Path(settings.model_dir).resolve()
        self._lock = FileLock(Layout(self._model_dir).training_lock, thread_local=False)
        self._task: asyncio.Task[None] | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._stopping = False

    # Start-up

    def recover(self) -> list[str]:
        """Mark jobs of dead processes interrupted and clear half-written files (blocking)."""
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            return []  # another process is training: its jobs are alive
        try:
            interrupted = [self._settle_orphan(job) for job in self.jobs.running()]
            for name in model_names():
                with self.store.lock(name):
                    self.store.remove_partial_versions(name)
            self.uploads.remove_partial()
            removed = self.uploads.remove_orphans(self._referenced_uploads())
            if removed:
                log.warning("removed uploads that no job names (saved by a process that died): %s", ", ".join(removed))
        finally:
            self._lock.release()
        return [job_id for job_id in interrupted if job_id]

    def _referenced_uploads(self) -> set[str]:
        """Uploads that a job or a stored version names (versions too: replay reads them if a job row is gone)."""
        referenced = self.jobs.upload_ids()
        for name in model_names():
            for version in self.store.list_versions(name):
                upload_id = version.manifest.get("training_data", {}).get("upload_id")
                if upload_id:
                    referenced.add(upload_id)
        return referenced

    def _settle_orphan(self, job: Job) -> str | None:
        """A job whose process died: settled as `_settlement` says; its id if it was interrupted."""
        settlement = self._settlement(job)
        if settlement is None:
            return None
        status, result, error = settlement
        self.jobs.finish(job.id, status, result, error)
        if status != INTERRUPTED:
            return None
        log.warning("job %s was interrupted by a server stop", job.id)
        return job.id

    def _settlement(self, job: Job) -> Settlement | None:
        """How a job whose training process was stopped finishes (blocking): final if it got as far as a verdict
        or a stored version (it must not run again and publish a second one), else interrupted; None: it was
        queued again."""
        verdict = self._stored_verdict(job)
        if verdict is not None:
            return verdict
        if self._requeued(job):
            return None
        return INTERRUPTED, None, f"the server stopped while the job was running; POST /jobs/{job.id}/retry"

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

    def _requeued(self, job: Job) -> bool:
        """Queue an interrupted automatic job again, as long as it has attempts left."""
        if job.trigger != AUTOMATIC or job.attempts >= AUTOMATIC_MAX_ATTEMPTS:
            return False
        self.jobs.requeue(job.id)
        log.warning("automatic job %s was interrupted by a server stop; queued again", job.id)
        return True

    # Running

    async def kick(self) -> None:
        """Make sure this process works through the queue (a no-op if it already is)."""
        if self._stopping:
            return
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain(), name="retraining-jobs")

    async def _drain(self) -> None:
        while not self._stopping and await asyncio.to_thread(self.jobs.has_queued):
            if not await self._acquire():
                continue
            try:
                job = await asyncio.to_thread(self.jobs.claim_next)
                if job is not None:
                    await self._train(job)
            finally:
                self._lock.release()

    async def _acquire(self) -> bool:
        try:
            self._lock.acquire(timeout=0)
            return True
        except Timeout:
            await asyncio.sleep(LOCK_POLL_SECONDS)  # another process trains; our turn comes
            return False

    async def _train(self, job: Job) -> None:
        log.info("job %s: retraining %s", job.id, job.model)
        settings = self.settings
        self._process = await start_child(
            "prediction_service.retraining.training_job",
            str(self._model_dir),
            job.id,
            "--niceness",
            str(settings.training_niceness),
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
        settlement: Settlement | None
        if self._stopping:
            settlement = await asyncio.to_thread(self._settlement, job)
            if settlement is None:
                return  # queued again
        else:
            settlement = await asyncio.to_thread(self._stored_verdict, job) or (
                FAILED,
                None,
                f"the training process exited with code {exit_code}",
            )
        if settlement[0] in (SUCCEEDED, REJECTED) and self.on_outcome is not None:
            await self.on_outcome()  # serve a published version here before the job reads final
        await asyncio.to_thread(self.jobs.finish, job.id, *settlement)
        finished = await asyncio.to_thread(self.jobs.get, job.id)
        log.info("job %s %s", job.id, finished.status)
        if self.on_finished is not None:
            await self.on_finished(finished)

    async def stop(self) -> None:
        self._stopping = True
        if self._process is not None and self._process.returncode is None:
            self._process.terminate()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)


def _lower_priority(niceness: int) -> None:
    """In the forked child before it runs Python: one system call, no lock taken (safe with threads)."""
    os.setpriority(os.PRIO_PROCESS, 0, max(niceness, os.getpriority(os.PRIO_PROCESS, 0)))
