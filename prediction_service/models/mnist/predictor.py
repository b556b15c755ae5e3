"""mnist predictions for uploaded images: batched, and computed in the model's own process.

The event loop only parses HTTP and queues the uploaded bytes; batches go to the
model's process (serving.model_host), which decodes, normalises and runs the
model. A big image is decoded here first, in a thread (a few at a time, so
memory stays bounded), so that it does not hold up a batch of small ones.
"""

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from prediction_service.core import metrics
from prediction_service.core.settings import Settings
from prediction_service.models.mnist import MNIST
from prediction_service.models.mnist.images import ImageLimits, decode_digit
from prediction_service.models.registry import Registry
from prediction_service.serving.batching import MicroBatcher
from prediction_service.serving.messages import ImageUpload, Predict, Reply
from prediction_service.serving.model_process import ModelProcess

DECODE_HERE_BYTES = 64 * 1024  # bigger files are decoded in this process, in a thread
BIG_DECODES_AT_ONCE = 2
IDLE_POLL = 0.002  # seconds between looks for a pause in live batches (the shadow's turn)
IDLE_CALL = 16  # images per call in such a pause: a live batch that arrives then waits for little


@dataclass(frozen=True)
class MnistVersion:
    """A version of the mnist model, loaded in the model's own process (serving.model_host)."""

    version: int
    onnx_path: Path


@dataclass(frozen=True)
class DigitResult:
    digit: int
    probabilities: list[float]
    model_version: int
    image: np.ndarray = field(compare=False, repr=False)  # the normalised 28x28 uint8 digit the model saw

    @property
    def confidence(self) -> float:
        return self.probabilities[self.digit]


class MnistPredictor:
    def __init__(self, registry: Registry, model_process: ModelProcess, settings: Settings) -> None:
        self.registry = registry
        self.model_process = model_process
        self.limits = ImageLimits(settings.max_image_bytes, settings.max_image_pixels)
        self.batcher: MicroBatcher[ImageUpload, DigitResult] = MicroBatcher(
            self._run_batch,
            max_batch=settings.batch_max_size,
            max_wait=settings.batch_max_wait_ms / 1000,
            max_queue=settings.batch_queue_size,
            name="mnist-batcher",
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
        return await self.submit(await self.upload_of(data, name))

    async def submit(self, upload: ImageUpload) -> DigitResult:
        """The serving version's digit for an upload, batched with the others."""
        self.check_available()
        return await self.batcher.submit(upload)

    async def upload_of(self, data: bytes, name: str) -> ImageUpload:
        """An uploaded file as the model's process takes it: small ones as they are, big ones decoded here."""
        if len(data) <= DECODE_HERE_BYTES:
            return ImageUpload(name, data=data)
        async with self._big_decodes:
            image = await asyncio.to_thread(decode_digit, data, self.limits, name)
        return ImageUpload(name, image=image)

    async def predict_with(
        self, version: MnistVersion, uploads: list[ImageUpload]
    ) -> list[DigitResult | BaseException]:
        """A version's results for these uploads, computed now in one call, outside the live batches (a request
        addressed to the shadow version)."""
        reply = await self.model_process.call(Predict(version.version, str(version.onnx_path), uploads))
        return _results(version, reply)

    async def answers_when_idle(self, version: MnistVersion, inputs: list[bytes | np.ndarray]) -> list[str]:
        """A version's digits for uploaded files or 28x28 images, computed when no live batch waits (the shadow).

        Low priority: a live batch that arrives meanwhile waits for one small call at most.
        """
        digits = []
        for start in range(0, len(inputs), IDLE_CALL):
            while self.batcher.depth() or self.model_process.busy():  # noqa: ASYNC110 - no event marks a pause
                await asyncio.sleep(IDLE_POLL)
            uploads = [
                ImageUpload("an image", image=item) if isinstance(item, np.ndarray) else ImageUpload("a file", item)
                for item in inputs[start : start + IDLE_CALL]
            ]
            for outcome in await self.predict_with(version, uploads):
                if isinstance(outcome, BaseException):
                    raise outcome
                digits.append(str(outcome.digit))
        return digits

    def _observe_batch(self, size: int) -> None:
        metrics.BATCH_SIZE.observe(size)
        metrics.QUEUE_DEPTH.set(self.batcher.depth())

    async def _run_batch(self, uploads: list[ImageUpload]) -> list[DigitResult | BaseException]:
        if self.registry.pointer_changed(MNIST):
            # Right after a job publishes, no batch here answers with the old version.
            await asyncio.to_thread(self.registry.refresh_model, MNIST)
        model = self.registry.serving(MNIST, MnistVersion).predictor
        reply = await self.model_process.call(Predict(model.version, str(model.onnx_path), uploads))
        return _results(model, reply)


def _results(version: MnistVersion, reply: Reply) -> list[DigitResult | BaseException]:
    assert reply.outcomes is not None
    results: list[DigitResult | BaseException] = []
    for outcome in reply.outcomes:
        if isinstance(outcome, BaseException):
            results.append(outcome)
        else:
            rounded = [round(p, 6) for p in outcome.probabilities]
            results.append(DigitResult(_digit(outcome.probabilities), rounded, version.version, outcome.image))
    return results


def _digit(probabilities: list[float]) -> int:
    return max(range(len(probabilities)), key=probabilities.__getitem__)
