"""Digit predictions for uploaded images: decode, normalise, and infer in shared batches."""

from dataclasses import dataclass

import numpy as np

from prediction_service import metrics
from prediction_service.batching import MicroBatcher
from prediction_service.catalog import MNIST
from prediction_service.errors import ServiceError
from prediction_service.ml.images import ImageLimits, decode_digit, decode_digits
from prediction_service.registry import Registry
from prediction_service.settings import Settings

# Small files decode in the batch thread with their batch; big ones in a thread of their
# own first, so that one large photo does not hold up a batch of small digits.
DECODE_WITH_BATCH_BYTES = 64 * 1024


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
    data: bytes | None
    image: np.ndarray | None
    name: str


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

    def start(self) -> None:
        self.batcher.start()

    def _observe_batch(self, size: int) -> None:
        metrics.BATCH_SIZE.observe(size)
        metrics.QUEUE_DEPTH.set(self.batcher.depth())

    async def stop(self) -> None:
        await self.batcher.stop()

    def check_available(self) -> None:
        self.registry.get(MNIST)  # raises ModelUnavailable with the reason and the fix

    def needs_own_thread(self, data: bytes) -> bool:
        return len(data) > DECODE_WITH_BATCH_BYTES

    def decode(self, data: bytes, name: str) -> np.ndarray:
        return decode_digit(data, self.limits, name)

    async def predict(self, data: bytes, name: str, image: np.ndarray | None = None) -> DigitResult:
        """`image`: already decoded (for big files); otherwise `data` is decoded with the batch."""
        self.check_available()
        return await self.batcher.submit(_Upload(None if image is not None else data, image, name))

    def _run_batch(self, uploads: list[_Upload]) -> list[DigitResult | BaseException]:
        # A stat: so that right after a job publishes, no batch here answers with the old version.
        self.registry.refresh_model(MNIST)
        served = self.registry.get(MNIST)
        outcomes: list[DigitResult | BaseException | None] = [None] * len(uploads)
        images: list[np.ndarray | None] = [upload.image for upload in uploads]
        undecoded = [position for position, upload in enumerate(uploads) if upload.image is None]
        files = [(uploads[position].name, uploads[position].data or b"") for position in undecoded]
        for position, outcome in zip(undecoded, decode_digits(files, self.limits), strict=True):
            if isinstance(outcome, ServiceError):
                outcomes[position] = outcome
            else:
                images[position] = outcome
        ready = [position for position, image in enumerate(images) if image is not None and outcomes[position] is None]
        if ready:
            probabilities = served.predictor.probabilities(np.stack([images[position] for position in ready]))
            for position, row in zip(ready, probabilities, strict=True):
                values = [round(float(p), 6) for p in row]
                outcomes[position] = DigitResult(int(np.argmax(row)), values, served.version)
        return outcomes  # type: ignore[return-value]
