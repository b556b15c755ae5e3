"""The service's parts, wired together once per process, with their start and stop."""

import asyncio
import logging

from prediction_service.auth import AdminToken
from prediction_service.catalog import model_kinds
from prediction_service.digit_inference import DigitInference
from prediction_service.ml import tf_runtime
from prediction_service.registry import Registry
from prediction_service.settings import Settings
from prediction_service.store import ModelStore

log = logging.getLogger(__name__)


class Services:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = ModelStore(settings.model_dir)
        self.registry = Registry(self.store, model_kinds(settings))
        self.digits = DigitInference(self.registry, settings)
        configured = settings.admin_token.get_secret_value() if settings.admin_token else None
        self.admin_token = AdminToken(configured, settings.model_dir)
        self._watcher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.settings.model_dir.mkdir(parents=True, exist_ok=True)
        self.admin_token.ensure()
        tf_runtime.limit_threads(self.settings.inference_threads)
        await asyncio.to_thread(self.registry.start)
        self.digits.start()
        self._watcher = asyncio.create_task(self._follow_serving_pointers(), name="serving-pointer-watcher")

    async def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
        await self.digits.stop()

    async def _follow_serving_pointers(self) -> None:
        """Pick up versions that another process published or activated."""
        while True:
            await asyncio.sleep(self.settings.reload_interval)
            try:
                await asyncio.to_thread(self.registry.refresh)
            except Exception:
                log.exception("checking for new serving versions failed; will retry")
