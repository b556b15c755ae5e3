"""Automatic retraining: a job on the collected examples once RETRAIN_MIN_EXAMPLES new ones are there.

Without RETRAIN_SCHEDULE the threshold is checked after each feedback (off the request's path), when a job
ends (examples may have reached it meanwhile; a published version moves the watermark) and at start-up; with it,
only at the times it names. "New" means above both the serving version's watermark and
the last automatic attempt's, so the examples of a rejected job come back only with enough new ones. The
job is an ordinary one (replay, gate, notifications), marked automatic; the job store lets only one
automatic job per model wait or run, whichever process or restart asks (storage.jobs.create_automatic).
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from prediction_service.core.schedule import next_time
from prediction_service.core.settings import Settings
from prediction_service.retraining.collected import CollectedExamples
from prediction_service.retraining.intake import training_params
from prediction_service.storage.jobs import Job, JobStore, new_job_id
from prediction_service.storage.uploads import UploadStore

log = logging.getLogger(__name__)


class AutomaticRetraining:
    def __init__(
        self,
        settings: Settings,
        collected: CollectedExamples,
        jobs: JobStore,
        uploads: UploadStore,
        models: list[str],
        labels: Callable[[str], list[str]],
        kick: Callable[[], Awaitable[None]],
    ) -> None:
        """`models`: those that can be retrained; `labels`: a model's labels (class indices); `kick`: run jobs."""
        self.settings = settings
        self.collected = collected
        self.examples = collected.examples
        self.jobs = jobs
        self.uploads = uploads
        self.models = models
        self.labels = labels
        self.kick = kick
        self.schedule = settings.retrain_schedule
        self.min_examples = settings.retrain_min_examples
        self._pending: set[str] = set()
        self._checks: asyncio.Task[None] | None = None
        self._scheduler: asyncio.Task[None] | None = None
        self._stopped = False

    # When

    async def start(self) -> None:
        if self.schedule is None:
            self._check_soon(self.models)  # examples may have reached the threshold while the service was down
        else:
            self._scheduler = asyncio.create_task(self._follow_schedule(), name="retraining-schedule")

    def next_check(self) -> datetime | None:
        """With a schedule, when it checks next; None: it checks as soon as examples arrive."""
        return None if self.schedule is None else next_time(self.schedule, datetime.now(UTC))

    def examples_added(self, model: str) -> None:
        """Feedback was recorded: check now, off the caller's path (with a schedule: at the next check)."""
        if self.schedule is None and model in self.models and not self._stopped:
            self._check_soon([model])

    def job_ended(self, model: str) -> None:
        """A job of `model` ended: examples that reached the threshold while it ran wait no more (with a
        schedule: at the next check)."""
        self.examples_added(model)

    async def stop(self) -> None:
        self._stopped = True  # a job that a stop ends starts no check
        for task in (self._scheduler, self._checks):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    def _check_soon(self, models: list[str]) -> None:
        # One check at a time per process; a burst of feedback becomes one more check, not one per label.
        self._pending.update(models)
        if self._checks is None or self._checks.done():
            self._checks = asyncio.create_task(self._run_checks(), name="retraining-threshold")

    async def _run_checks(self) -> None:
        while self._pending:
            model = self._pending.pop()
            try:
                job = await asyncio.to_thread(self.check, model)
            except Exception:
                log.exception("checking whether to retrain %s failed; the next feedback checks again", model)
                continue
            if job is not None:
                await self.kick()

    async def _follow_schedule(self) -> None:
        assert self.schedule is not None
        while True:
            now = datetime.now(UTC)
            await asyncio.sleep((next_time(self.schedule, now) - now).total_seconds())
            self._check_soon(self.models)

    # Whether, and the job

    def new_examples(self, model: str) -> int:
        """Examples newer than the serving version and the last automatic attempt: what the threshold counts."""
        return self._new_examples(model)[2]

    def _new_examples(self, model: str) -> tuple[int, int, int]:
        """The serving version's watermark, the last automatic attempt's, and the count of examples above both."""
        watermark, last_attempt = self.collected.watermark(model), self.jobs.last_automatic_watermark(model)
        return watermark, last_attempt, self.examples.count(model, max(watermark, last_attempt))

    def check(self, model: str) -> Job | None:
        """Start an automatic job if the threshold is reached and none is waiting or running (blocking)."""
        watermark, last_attempt, new = self._new_examples(model)
        if new < self.min_examples:
            return None
        if self.jobs.active_automatic(model) is not None:
            return None  # its end checks again (job_ended)
        job_id = new_job_id()
        # Everything the serving version has not learned: a rejected attempt's examples too, with the new ones.
        snapshot = self.collected.snapshot(model, job_id, watermark, self.examples.last_id(model), self.labels(model))
        if snapshot is None:
            return None  # none with a label the model has
        self.uploads.save(job_id, snapshot, snapshot.manifest)
        params = training_params(self.settings, model)
        job = self.jobs.create_automatic(job_id, model, snapshot.manifest, params, last_attempt)
        if job is None:  # another process got there first
            self.uploads.remove(job_id)
            return None
        log.info("automatic retraining of %s: job %s on %d collected examples", model, job.id, len(snapshot.labels))
        return job
