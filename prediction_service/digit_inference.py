"""Digit predictions for uploaded images: batched, and computed in the digit model's own process.

The event loop only parses HTTP and queues the uploaded bytes; batches go to the
inference process (inference_worker), which decodes, normalises and runs the
model. A big image is decoded here first, in a thread (a few at a time, so
memory stays bounded), so that it does not hold up a batch of small ones.
"""

import asyncio
from dataclasses import dataclass

import numpy as np
from starlette.concurrency import run_in_threadpool

from prediction_service import metrics
from prediction_service.batching import MicroBatcher
from prediction_service.catalog import MNIST, RemoteDigitModel
from prediction_service.errors import error_for_status
from prediction_service.inference_process import InferenceProcess
from prediction_service.ml.images import ImageLimits, decode_digit
from prediction_service.registry import Registry
from prediction_service.settings import Settings

DECODE_HERE_BYTES = 64 * 1024  # bigger files are decoded in this process, in a thread
BIG_DECODES_AT_ONCE = 2


@dataclass(frozen=True)
class DigitResult:
    digit: int
    probabilities: list[float]
    model_version: int

    @property
    def confidence(self) -> float:
        return self.probabilities[self.digit]


@dataclass(frozen=True)
class _Upload:
    name: str
    data: bytes | None = None
    image: np.ndarray | None = None  # decoded already (big files)


class DigitInference:
    def __init__(self, registry: Registry, inference: InferenceProcess, settings: Settings) -> None:
        self.registry = registry
        self.inference = inference
        self.limits = ImageLimits(settings.max_image_bytes, settings.max_image_pixels)
        self.batcher: MicroBatcher[_Upload, DigitResult] = MicroBatcher(
            self._run_batch,
            max_batch=settings.batch_max_size,
            max_wait=settings.batch_max_wait_ms / 1000,
            max_queue=settings.batch_queue_size,
            name="digit-batcher",
            on_batch=self._observe_batch,
        )
        self._big_decodes = asyncio.Semaphore(BIG_DECODES_AT_ONCE)

    def start(self) -> None:
        self.batcher.start()

    async def stop(self) -> None:
        await self.batcher.stop()

    def check_available(self) -> None:
        self.registry.get(MNIST)  # raises ModelUnavailable with the reason and the fix

    async def predict(self, data: bytes, name: str) -> DigitResult:
        """The digit in an uploaded file; a ServiceError (4xx) if the file is no usable image."""
        self.check_available()
        if len(data) <= DECODE_HERE_BYTES:
            return await self.batcher.submit(_Upload(name, data=data))
        async with self._big_decodes:
            image = await run_in_threadpool(decode_digit, data, self.limits, name)
        return await self.batcher.submit(_Upload(name, image=image))

    async def predict_array(self, image: np.ndarray, name: str) -> DigitResult:
        """The digit in a 28x28 uint8 image already in the model's form (MNIST-style); no decoding."""
        self.check_available()
        return await self.batcher.submit(_Upload(name, image=image))

    def _observe_batch(self, size: int) -> None:
        metrics.BATCH_SIZE.observe(size)
        metrics.QUEUE_DEPTH.set(self.batcher.depth())

    async def _run_batch(self, uploads: list[_Upload]) -> list[DigitResult | BaseException]:
        if self.registry.pointer_changed(MNIST):
            # Right after a job publishes, no batch here answers with the old version.
            await asyncio.to_thread(self.registry.refresh_model, MNIST)
        served = self.registry.get(MNIST)
        model: RemoteDigitModel = served.predictor
        outcomes = await self.inference.call(
            ("predict", model.version, str(model.onnx_path), [(u.name, u.data, u.image) for u in uploads])
        )
        results: list[DigitResult | BaseException] = []
        for outcome in outcomes:
            if outcome[0] == "digit":
                row = outcome[1]
                digit = max(range(len(row)), key=row.__getitem__)
                results.append(DigitResult(digit, [round(p, 6) for p in row], model.version))
            else:
                results.append(error_for_status(outcome[1], outcome[2]))
        return results
