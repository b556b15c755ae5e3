"""The service's parts, made whole once per process; `start` and `stop` do only their I/O.

Serving answers predictions (the models, their process, the registry, batching); retraining
accepts uploads and runs the jobs that make new versions. Each part has its own dependencies.
"""

import asyncio
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from datetime import datetime

from prediction_service.core import memory, metrics
from prediction_service.core.admin_token import AdminToken
from prediction_service.core.errors import DependencyUnavailable
from prediction_service.core.feedback_tokens import FeedbackTokens
from prediction_service.core.settings import Settings
from prediction_service.inference_protocol.signature import ModelSignature
from prediction_service.models.catalog import build_models, retrainable_model_names
from prediction_service.models.interface import ModelContext
from prediction_service.models.mnist.images import ImageLimits, warm_up
from prediction_service.models.mnist.predictor import MnistPredictor
from prediction_service.models.registry import Registry
from prediction_service.retraining.archive import ArchiveLimits
from prediction_service.retraining.collected import CollectedExamples
from prediction_service.retraining.feedback import Feedback
from prediction_service.retraining.intake import Intake
from prediction_service.retraining.notifications import Notifier
from prediction_service.retraining.runner import JobRunner
from prediction_service.retraining.triggers import AutomaticRetraining
from prediction_service.serving.decode_pool import DecodePool
from prediction_service.serving.model_process import ModelProcess
from prediction_service.serving.prediction_recorder import PredictionRecorder
from prediction_service.serving.shadow import ShadowRunner
from prediction_service.storage.backends import model_store, postgres
from prediction_service.storage.examples import ExampleStore
from prediction_service.storage.jobs import Job, JobStore
from prediction_service.storage.layout import Layout
from prediction_service.storage.pointer_listener import PointerListener
from prediction_service.storage.postgres import Postgres
from prediction_service.storage.predictions import PredictionLog
from prediction_service.storage.shadows import ShadowRecords
from prediction_service.storage.uploads import UploadStore
from prediction_service.storage.versions import ModelStore

log = logging.getLogger(__name__)


class Serving:
    def __init__(self, settings: Settings, store: ModelStore, postgres: Postgres | None = None) -> None:
        """`postgres`: where the prediction log and the shadows' figures live (None: MODEL_DIR's SQLite)."""
        self.model_process = ModelProcess(settings)
        models = build_models(ModelContext(settings, self.model_process))
        self.registry = Registry(
            store, models, after_swap=memory.freeze_long_lived, train_first_versions=settings.run_training
        )
        self.mnist = MnistPredictor(self.registry, self.model_process, settings)
        learning = postgres or Layout(settings.model_dir).learning
        self.prediction_log = PredictionLog(learning, settings.prediction_log_max)
        self.recorder = PredictionRecorder(self.prediction_log)
        self.shadow = ShadowRunner(
            self.registry,
            ShadowRecords(learning, settings.prediction_log_max),
            {name: answers for name, model in self.registry.models.items() if (answers := model.shadow_answers(self))},
            settings.shadow_sample_rate,
        )

    async def start(self) -> None:
        await self.model_process.start()
        await asyncio.gather(asyncio.to_thread(self.registry.start), asyncio.to_thread(warm_up))
        self.mnist.start()
        self.recorder.start()
        self.shadow.start()

    async def stop(self) -> None:
        await self.shadow.stop()
        await self.mnist.stop()
        await self.recorder.stop()  # after the last answers: they are all written
        await self.model_process.stop()

    async def refresh(self) -> None:
        """Serve what the store's pointers name now (a stat per model when nothing changed)."""
        await asyncio.to_thread(self.registry.refresh)

    def protocol_signatures(self) -> dict[str, ModelSignature]:
        """Every model served under /v2, by name."""
        signatures = (model.protocol_signature(self) for model in self.registry.models.values())
        return {signature.name: signature for signature in signatures if signature is not None}


class Retraining:
    def __init__(
        self,
        settings: Settings,
        store: ModelStore,
        on_outcome: Callable[[], Awaitable[None]],
        labels: Callable[[str], list[str]],
        postgres: Postgres | None = None,
    ) -> None:
        """`labels`: the labels of a model's serving version (the class indices of collected examples); `postgres`:
        where the jobs and the collected examples live (None: MODEL_DIR's SQLite)."""
        layout = Layout(settings.model_dir)
        self.jobs = JobStore(postgres or layout.jobs)
        self.uploads = UploadStore(layout.uploads, store.objects)
        image_limits = ImageLimits(settings.max_image_bytes, settings.max_image_pixels)
        self.decode_pool = DecodePool(settings.decode_processes, image_limits)
        archive_limits = ArchiveLimits(
            max_entries=settings.max_zip_entries,
            max_uncompressed_bytes=settings.max_zip_uncompressed_bytes,
            max_compression_ratio=settings.max_zip_compression_ratio,
            image=image_limits,
        )
        self.intake = Intake(self.jobs, self.uploads, archive_limits, settings, self.decode_pool.decode_chunks)
        self.notifier = Notifier(settings)
        self.runner = JobRunner(
            self.jobs, store, self.uploads, settings, on_outcome=on_outcome, on_finished=self._job_finished
        )
        self.examples = ExampleStore(postgres or layout.learning)
        self.collected = CollectedExamples(self.examples, self.jobs, store)
        self.automatic = AutomaticRetraining(
            settings, self.collected, self.jobs, self.uploads, retrainable_model_names(), labels, self.runner.kick
        )

    async def start(self) -> None:
        await asyncio.to_thread(self.decode_pool.start)

    async def recover(self) -> None:
        """End the leases of this host's dead processes, clear what they half-wrote (blocking I/O, in a thread)."""
        ended = await asyncio.to_thread(self.runner.recover)
        if ended:
            log.warning("jobs whose process is gone run again: %s", ", ".join(ended))

    async def resume(self) -> None:
        """Run the jobs that wait (once the models serve: a job's outcome swaps them), with RUN_TRAINING."""
        self.runner.start()
        await self.automatic.start()

    async def stop(self) -> None:
        await self.automatic.stop()
        await self.runner.stop()
        await self.notifier.stop()
        self.decode_pool.stop()

    async def _job_finished(self, job: Job) -> None:
        self.notifier.job_ended(job)
        self.automatic.job_ended(job.model)
        metrics.JOBS.labels(job.status).inc()
        if job.started_at and job.finished_at:
            elapsed = datetime.fromisoformat(job.finished_at) - datetime.fromisoformat(job.started_at)
            metrics.JOB_DURATION.labels(job.status).observe(elapsed.total_seconds())


class Services:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        configured = settings.admin_token.get_secret_value() if settings.admin_token else None
        self.admin_token = AdminToken(configured, Layout(settings.model_dir).admin_token)
        # DATABASE_URL: one pool for every store of this process (None: SQLite and files in MODEL_DIR).
        self.postgres = postgres(settings)
        store = model_store(settings, self.postgres)
        self.serving = Serving(settings, store, self.postgres)
        self.retraining = Retraining(
            settings,
            store,
            on_outcome=self.serving.refresh,
            labels=self.serving.registry.labels,
            postgres=self.postgres,
        )
        self.feedback_tokens = FeedbackTokens(
            [token.get_secret_value() for token in settings.feedback_tokens], self.admin_token
        )
        self.feedback = Feedback(
            self.retraining.examples,
            # The one place feedback reads the prediction log.
            find_prediction=self.serving.recorder.find,  # writes this process's buffer first
            labels=self.serving.registry.labels,
            log_max=settings.prediction_log_max,
            on_recorded=self.retraining.automatic.examples_added,
            score_shadow=self.serving.shadow.record_label,
        )
        self._watcher: asyncio.Task[None] | None = None
        # DATABASE_URL: pointer moves are notified, so every process follows within moments, not at its next check.
        self._listener = (
            None if self.postgres is None else PointerListener(self.postgres.url, self.serving.registry.pointer_moved)
        )

    async def start(self) -> None:
        self.settings.model_dir.mkdir(parents=True, exist_ok=True)
        self.admin_token.ensure()
        if self.postgres is not None:
            await asyncio.to_thread(wait_for_database, self.postgres)
        await asyncio.gather(self.serving.start(), self.retraining.start())
        await self.retraining.recover()  # after any first training: it removes half-written versions
        await asyncio.to_thread(memory.freeze_long_lived)
        self._watcher = asyncio.create_task(self._follow_serving_pointers(), name="serving-pointer-watcher")
        if self._listener is not None:
            self._listener.start()
        await self.retraining.resume()

    async def stop(self) -> None:
        if self._listener is not None:
            await asyncio.to_thread(self._listener.stop)
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
        await self.retraining.stop()
        await self.serving.stop()
        if self.postgres is not None:
            await asyncio.to_thread(self.postgres.close)

    async def _follow_serving_pointers(self) -> None:
        """Pick up versions that another process published or activated."""
        database_away = False
        while True:
            await asyncio.sleep(self.settings.reload_interval)
            try:
                await self.serving.refresh()
            except DependencyUnavailable as error:  # said once per outage, not at every check
                if not database_away:
                    log.warning("%s; serving the versions loaded until it is back", error.detail)
                database_away = True
            except Exception:
                log.exception("checking for new serving versions failed; will retry")
            else:
                if database_away:
                    log.info("the database is back; following the serving pointers again")
                database_away = False


class Worker:
    """`python -m prediction_service worker`: retraining without HTTP. It trains missing first versions (as
    `train` does), then runs the jobs that any process queued, whatever RUN_TRAINING says (that setting is for
    API replicas), until SIGTERM or SIGINT; the job it holds then goes back to the queue."""

    def __init__(self, settings: Settings) -> None:
        settings = settings.model_copy(update={"run_training": True})
        self.postgres = postgres(settings)
        store = model_store(settings, self.postgres)
        # No model process: the registry here only trains first versions and knows the serving versions' labels.
        self.registry = Registry(store, build_models(ModelContext(settings)))
        self.retraining = Retraining(
            settings, store, on_outcome=self._refresh, labels=self.registry.labels, postgres=self.postgres
        )

    async def _refresh(self) -> None:
        await asyncio.to_thread(self.registry.refresh)

    async def run(self) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signal_number in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signal_number, stop.set)
        if self.postgres is not None:
            await asyncio.to_thread(wait_for_database, self.postgres)
        await asyncio.to_thread(self.registry.start)
        await self.retraining.recover()
        await self.retraining.resume()
        log.info("worker %s runs retraining jobs", self.retraining.runner.owner)
        await stop.wait()
        log.info("worker %s stopping", self.retraining.runner.owner)
        await self.retraining.stop()
        if self.postgres is not None:
            await asyncio.to_thread(self.postgres.close)


def wait_for_database(server: Postgres) -> None:
    """Start once the database answers (nothing can be served or trained without the pointers it keeps)."""
    attempts = 0
    while not server.reachable():
        if attempts % 30 == 0:
            log.warning("waiting for the database (DATABASE_URL); retrying every second")
        attempts += 1
        time.sleep(1)
