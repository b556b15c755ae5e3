"""The service's parts, wired together once per process, with their start and stop."""

import asyncio
import logging
from datetime import datetime
from pathlib import Path

from prediction_service.core import memory, metrics
from prediction_service.core.admin_token import AdminToken
from prediction_service.core.settings import Settings
from prediction_service.models.catalog import MNIST, model_kinds
from prediction_service.models.mnist.images import ImageLimits, warm_up
from prediction_service.models.mnist.inference import DigitInference
from prediction_service.models.registry import Registry
from prediction_service.retraining.archive import ArchiveLimits
from prediction_service.retraining.intake import Intake
from prediction_service.retraining.notifications import Notifier
from prediction_service.retraining.runner import JobRunner
from prediction_service.retraining.training_job import JOBS_FILE, UPLOADS_DIR
from prediction_service.serving.decode_pool import DecodePool
from prediction_service.serving.model_process import InferenceProcess, ModelProcessFailed
from prediction_service.storage.jobs import Job, JobStore
from prediction_service.storage.uploads import UploadStore
from prediction_service.storage.versions import CorruptVersion, ModelStore

log = logging.getLogger(__name__)


class Services:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        model_dir = settings.model_dir
        self.store = ModelStore(model_dir)
        self.inference = InferenceProcess(settings)
        kinds = model_kinds(settings, prepare_digits=self._load_in_inference_process)
        self.registry = Registry(self.store, kinds, after_swap=memory.freeze_long_lived)
        self.digits = DigitInference(self.registry, self.inference, settings)
        configured = settings.admin_token.get_secret_value() if settings.admin_token else None
        self.admin_token = AdminToken(configured, model_dir)
        image_limits = ImageLimits(settings.max_image_bytes, settings.max_image_pixels)
        self.decode_pool = DecodePool(settings.decode_processes, image_limits)
        self.jobs: JobStore | None = None
        self.uploads = UploadStore(model_dir / UPLOADS_DIR)
        self.archive_limits = ArchiveLimits(
            max_entries=settings.max_zip_entries,
            max_uncompressed_bytes=settings.max_zip_uncompressed_bytes,
            max_compression_ratio=settings.max_zip_compression_ratio,
            image=image_limits,
        )
        self.notifier = Notifier(settings)
        self.intake: Intake | None = None
        self.runner: JobRunner | None = None
        self._watcher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        settings = self.settings
        settings.model_dir.mkdir(parents=True, exist_ok=True)
        self.admin_token.ensure()
        self.jobs = JobStore(settings.model_dir / JOBS_FILE)
        self.intake = Intake(self.jobs, self.uploads, self.archive_limits, settings, self.decode_pool.decode_chunks)
        await self.inference.start()
        self.runner = JobRunner(
            self.jobs,
            self.store,
            self.uploads,
            settings,
            on_outcome=self.refresh_models,
            on_finished=self._job_finished,
        )
        await asyncio.gather(
            asyncio.to_thread(self.registry.start),
            asyncio.to_thread(self.decode_pool.start),
            asyncio.to_thread(warm_up),
        )
        interrupted = await asyncio.to_thread(self.runner.recover)
        if interrupted:
            log.warning("jobs interrupted by the last stop: %s (POST /jobs/{id}/retry)", ", ".join(interrupted))
        self.digits.start()
        await asyncio.to_thread(memory.freeze_long_lived)
        self._watcher = asyncio.create_task(self._follow_serving_pointers(), name="serving-pointer-watcher")
        if await asyncio.to_thread(self.jobs.has_queued):
            await self.runner.kick()

    async def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
        if self.runner is not None:
            await self.runner.stop()
        await self.digits.stop()
        await self.inference.stop()
        await self.notifier.stop()
        self.decode_pool.stop()

    def retraining_ready(self) -> tuple[Intake, JobRunner, JobStore]:
        if self.intake is None or self.runner is None or self.jobs is None:
            raise RuntimeError("the services have not started")
        self.registry.get(MNIST)  # retraining needs a model to start from: 503 with the reason otherwise
        return self.intake, self.runner, self.jobs

    def _load_in_inference_process(self, version: int, onnx_path: Path) -> None:
        try:
            self.inference.call_from_thread(("load", version, str(onnx_path)))
        except ModelProcessFailed as error:  # e.g. an unreadable model file: this version cannot serve
            raise CorruptVersion(f"mnist version {version} cannot be loaded: {error}") from error

    def job_store(self) -> JobStore:
        assert self.jobs is not None, "not started"
        return self.jobs

    async def refresh_models(self) -> None:
        """Serve what the store's pointers name now (a stat per model when nothing changed)."""
        await asyncio.to_thread(self.registry.refresh)

    async def _job_finished(self, job: Job) -> None:
        self.notifier.job_ended(job)
        metrics.JOBS.labels(job.status).inc()
        if job.started_at and job.finished_at:
            elapsed = datetime.fromisoformat(job.finished_at) - datetime.fromisoformat(job.started_at)
            metrics.JOB_DURATION.labels(job.status).observe(elapsed.total_seconds())

    async def _follow_serving_pointers(self) -> None:
        """Pick up versions that another process published or activated."""
        while True:
            await asyncio.sleep(self.settings.reload_interval)
            try:
                await asyncio.to_thread(self.registry.refresh)
            except Exception:
                log.exception("checking for new serving versions failed; will retry")
