"""Digit predictions for uploaded images: decode and normalise, then infer in shared batches.

Where each step runs was measured (bench/): small images are decoded in the
batch thread, all of a batch together (vectorised, and PIL releases the GIL
while it inflates), so the event loop only parses HTTP; a big image is decoded
first in a thread of its own (a few at a time, so memory stays bounded) so
that it does not hold up a batch of small ones.
"""

import asyncio
from dataclasses import dataclass

import numpy as np
from starlette.concurrency import run_in_threadpool

from prediction_service import metrics
from prediction_service.batching import MicroBatcher
from prediction_service.catalog import MNIST
from prediction_service.errors import ServiceError
from prediction_service.ml.images import ImageLimits, decode_digit, decode_digits
from prediction_service.registry import Registry
from prediction_service.settings import Settings

DECODE_WITH_BATCH_BYTES = 64 * 1024
BIG_DECODES_AT_ONCE = 2


@dataclass(frozen=True)
class DigitResult:
    digit: int
    probabilities: list[float]
    model_version: int

    @property
    def confidence(self) -> float:
        return self.probabilities[self.digit]


_PENDING = RuntimeError("not predicted")


@dataclass(frozen=True)
class _Upload:
    name: str
    data: bytes = b""
    image: np.ndarray | None = None  # decoded already (big files)


class DigitInference:
    def __init__(self, registry: Registry, settings: Settings) -> None:
        self.registry = registry
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
        if len(data) <= DECODE_WITH_BATCH_BYTES:
            return await self.batcher.submit(_Upload(name, data))
        async with self._big_decodes:
            image = await run_in_threadpool(decode_digit, data, self.limits, name)
        return await self.batcher.submit(_Upload(name, image=image))

    def _observe_batch(self, size: int) -> None:
        metrics.BATCH_SIZE.observe(size)
        metrics.QUEUE_DEPTH.set(self.batcher.depth())

    def _run_batch(self, uploads: list[_Upload]) -> list[DigitResult | BaseException]:
        # A stat: so that right after a job publishes, no batch here answers with the old version.
        self.registry.refresh_model(MNIST)
        served = self.registry.get(MNIST)
        images: list[np.ndarray | ServiceError | None] = [upload.image for upload in uploads]
        undecoded = [position for position, upload in enumerate(uploads) if upload.image is None]
        files = [(uploads[position].name, uploads[position].data) for position in undecoded]
        for position, outcome in zip(undecoded, decode_digits(files, self.limits), strict=True):
            images[position] = outcome
        outcomes: list[DigitResult | BaseException] = [
            image if isinstance(image, ServiceError) else _PENDING for image in images
        ]
        ready = [position for position, image in enumerate(images) if isinstance(image, np.ndarray)]
        if ready:
            probabilities = served.predictor.probabilities(np.stack([images[position] for position in ready]))
            for position, row in zip(ready, probabilities.tolist(), strict=True):
                digit = max(range(len(row)), key=row.__getitem__)
                outcomes[position] = DigitResult(digit, [round(p, 6) for p in row], served.version)
        return outcomes
