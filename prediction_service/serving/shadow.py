"""The shadow: another version of a model answers beside the serving one, off the request's path, to be compared.

A prediction route offers each answer it gave (`offer`: one dictionary lookup while no shadow is
set). A sample of them (SHADOW_SAMPLE_RATE) waits in a bounded queue of this process; a background
task has the shadow answer them in batches and counts how often the two agree. A shadow that is
slow or stuck (e.g. the digit model's process, which answers it only between live batches) holds up
only that task: the queue fills, and further offers are dropped and counted. A shadow that fails is
counted too. (Not a thread: its handoffs, and its contention for the interpreter's lock, cost the
answers more than the penguin shadow's ~10 us a row.) The figures go to MODEL_DIR/learning.sqlite3
in batches (storage.shadows), so they are the same whichever process answers; a label sent later
(`record_label`) scores both versions on that prediction.
"""

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from prediction_service.core.errors import Conflict, DependencyUnavailable
from prediction_service.models.interface import ShadowAnswers
from prediction_service.models.registry import Registry
from prediction_service.storage.shadows import ShadowAnswer, ShadowCounts, ShadowRecords

log = logging.getLogger(__name__)

QUEUE_ITEMS = 1024  # offers waiting per process; beyond: dropped
QUEUE_BYTES = 32 * 1024 * 1024  # their inputs' bytes (uploaded images), so that memory stays bounded
BATCH = 32  # inputs per call of the shadow: the event loop is back to the answers within a fraction of a ms
GATHER = 0.05  # seconds offers gather before the shadow answers them: a wake-up a batch, not a request
FLUSH_INTERVAL = 2.0  # seconds between writes of the figures: big batches of answers are cheaper a row
FAILURE_LOG_INTERVAL = 60.0  # seconds between logged failures of a shadow


class _Offer(NamedTuple):
    model: str
    version: int
    prediction_id: str
    input: Any
    answer: str
    size: int


@dataclass(frozen=True)
class ShadowReport:
    """A model's shadow, as /models shows it: its figures, summed over every process."""

    version: int
    sample_rate: float
    shadow_requests_compared: int
    shadow_agreements: int
    shadow_agreement: float | None  # share of the compared requests answered alike; None before any
    shadow_failures: int
    shadow_dropped: int
    feedback_labels: int  # compared requests whose true label arrived (feedback)
    shadow_feedback_accuracy: float | None
    serving_feedback_accuracy: float | None  # the serving version's, on the same labelled requests


def _nbytes(features: Any) -> int:
    """What an input holds in memory, roughly: the bytes of an image or an uploaded file; 0 for a few numbers."""
    if isinstance(features, np.ndarray):
        return features.nbytes
    return len(features) if isinstance(features, bytes) else 0


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


class ShadowRunner:
    def __init__(
        self, registry: Registry, records: ShadowRecords, answers: dict[str, ShadowAnswers], sample_rate: float
    ) -> None:
        self.registry = registry
        self.records = records
        self.answers = answers  # by model: how its shadow answers
        self.sample_rate = sample_rate
        self.max_items = QUEUE_ITEMS
        self._shadows = registry.shadows  # the registry's dict itself: one lookup per offer
        self._queue: deque[_Offer] = deque()
        self._queued_bytes = 0
        self._work = asyncio.Event()
        self._counts: dict[tuple[str, int], ShadowCounts] = {}
        self._answered: list[ShadowAnswer] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._failure_logged: dict[str, float] = {}

    # The request path

    def offer(self, model: str, prediction_id: str, features: Any, answer: str) -> None:
        """After an answer: have the shadow, if any, answer the same input later (never raises, never waits)."""
        shadow = self._shadows.get(model)
        if shadow is None:
            return
        if self.sample_rate < 1.0 and random.random() >= self.sample_rate:
            return
        size = _nbytes(features)
        if len(self._queue) >= self.max_items or self._queued_bytes + size > QUEUE_BYTES:
            self._count(model, shadow.version).dropped += 1
            return
        self._queue.append(_Offer(model, shadow.version, prediction_id, features, answer, size))
        self._queued_bytes += size
        self._work.set()

    # Starting and ending a shadow (model management)

    async def start_shadow(self, name: str, version: int) -> None:
        if name not in self.answers:
            self.registry.versions(name)  # 404 for an unknown model
            raise Conflict(f"model {name!r} cannot run a shadow version")
        await asyncio.to_thread(self.registry.set_shadow, name, version)

    async def end_shadow(self, name: str) -> None:
        """End it here now (the figures stop growing), and in other processes at their next refresh."""
        await asyncio.to_thread(self.registry.end_shadow, name)
        kept = [offer for offer in self._queue if offer.model != name]
        self._queue = deque(kept)
        self._queued_bytes = sum(offer.size for offer in kept)
        await self.flush()

    # Figures

    def report(self, name: str) -> ShadowReport | None:
        """The model's shadow and its figures, as the store names it (blocking I/O: call it in a thread)."""
        version = self.registry.store.shadow(name)
        if version is None:
            return None
        counts = self.records.counts(name, version)
        return ShadowReport(
            version=version,
            sample_rate=self.sample_rate,
            shadow_requests_compared=counts.compared,
            shadow_agreements=counts.agreed,
            shadow_agreement=_share(counts.agreed, counts.compared),
            shadow_failures=counts.failed,
            shadow_dropped=counts.dropped,
            feedback_labels=counts.labelled,
            shadow_feedback_accuracy=_share(counts.shadow_correct, counts.labelled),
            serving_feedback_accuracy=_share(counts.serving_correct, counts.labelled),
        )

    def record_label(self, prediction_id: str, label: str) -> bool:
        """Score the shadow and the serving version on a prediction the shadow answered (blocking I/O: call it in a
        thread, after the label is recorded). False if the shadow did not answer it, or not yet (answers are
        written every FLUSH_INTERVAL)."""
        return self.records.record_label(prediction_id, label)

    def collect(self) -> Iterator[Metric]:
        """The figures of every shadow as Prometheus metrics, read from the database (the same in every process)."""
        labels = ["model", "shadow_version"]
        counters = {
            name: CounterMetricFamily(metric, help_text, labels=labels)
            for name, metric, help_text in (
                ("compared", "shadow_requests_compared", "Requests the shadow answered too."),
                ("agreed", "shadow_agreements", "Compared requests answered alike."),
                ("failed", "shadow_failures", "Requests the shadow failed to answer."),
                ("dropped", "shadow_dropped", "Requests not compared: the shadow's queue was full."),
                ("labelled", "shadow_feedback_labels", "Compared requests whose true label arrived."),
            )
        }
        agreement = GaugeMetricFamily(
            "shadow_agreement_ratio", "Share of compared requests answered alike.", labels=labels
        )
        accuracy = GaugeMetricFamily(
            "shadow_feedback_accuracy", "The shadow's accuracy on compared requests with feedback.", labels=labels
        )
        serving_accuracy = GaugeMetricFamily(
            "shadow_serving_feedback_accuracy",
            "The serving version's accuracy on the same requests.",
            labels=labels,
        )
        try:
            figures = self.records.all_counts()
            shadows = {name: self.registry.store.shadow(name) for name in self.registry.models}
        except DependencyUnavailable as error:  # the rest of /metrics still answers
            log.warning("/metrics without the shadows' figures: %s", error.detail)
            return
        for (model, version), counts in sorted(figures.items()):
            values = [model, str(version)]
            for name, counter in counters.items():
                counter.add_metric(values, getattr(counts, name))
            for gauge, part, whole in (
                (agreement, counts.agreed, counts.compared),
                (accuracy, counts.shadow_correct, counts.labelled),
                (serving_accuracy, counts.serving_correct, counts.labelled),
            ):
                if whole:
                    gauge.add_metric(values, part / whole)
        active = GaugeMetricFamily(
            "model_shadow_version", "The version answering in shadow (0: none).", labels=["model"]
        )
        for name, shadow in shadows.items():
            active.add_metric([name], shadow or 0)
        yield from (*counters.values(), agreement, accuracy, serving_accuracy, active)

    # The background work

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._compare_loop(), name="shadow-comparisons"),
            asyncio.create_task(self._flush_loop(), name="shadow-figures"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        try:
            await self.flush()
        except Exception:
            log.exception("writing the last shadow figures failed")

    async def flush(self) -> None:
        """Write this process's figures gathered since the last write (a failure is logged: the figures are
        best-effort, and whatever reads them must not fail for it)."""
        counts, answered = self._counts, self._answered
        if not counts and not answered:
            return
        self._counts, self._answered = {}, []
        try:
            await asyncio.to_thread(self.records.add, counts, answered)
        except Exception:
            log.exception("writing the shadow figures failed; they are lost, comparisons go on")

    def _count(self, model: str, version: int) -> ShadowCounts:
        counts = self._counts.get((model, version))
        if counts is None:
            counts = self._counts[(model, version)] = ShadowCounts()
        return counts

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL)
            await self.flush()

    async def _compare_loop(self) -> None:
        while True:
            if not self._queue:
                self._work.clear()
                await self._work.wait()
            await asyncio.sleep(GATHER)
            # Only what gathered: offers that come meanwhile wait for the next round, so batches stay big.
            gathered = len(self._queue)
            while gathered > 0 and self._queue:
                batch = self._next_batch(min(gathered, BATCH))
                gathered -= len(batch)
                await self._compare(batch)
                await asyncio.sleep(
                    0
                )  # the answers waiting go first: a shadow computing inline never holds them up long

    def _next_batch(self, limit: int) -> list[_Offer]:
        first = self._queue.popleft()
        batch = [first]
        while self._queue and len(batch) < limit:
            offer = self._queue[0]
            if (offer.model, offer.version) != (first.model, first.version):
                break
            batch.append(self._queue.popleft())
        self._queued_bytes -= sum(offer.size for offer in batch)
        return batch

    async def _compare(self, batch: list[_Offer]) -> None:
        model, version = batch[0].model, batch[0].version
        shadow = self._shadows.get(model)
        if not self._current(model, version):
            return  # ended or promoted since these were offered
        assert shadow is not None
        try:
            answers = await self.answers[model](shadow.predictor, [offer.input for offer in batch])
            if len(answers) != len(batch):
                raise RuntimeError(f"the shadow gave {len(answers)} answers to {len(batch)} inputs")
        except Exception:  # noqa: BLE001 - counted and logged: a failing shadow never fails anything else
            if self._current(model, version):
                self._count(model, version).failed += len(batch)
                self._log_failure(model, version)
            return
        if not self._current(model, version):
            return
        counts = self._count(model, version)
        counts.compared += len(batch)
        for offer, answer in zip(batch, answers, strict=True):
            counts.agreed += answer == offer.answer
            self._answered.append(ShadowAnswer(offer.prediction_id, model, version, offer.answer, answer))

    def _current(self, model: str, version: int) -> bool:
        shadow = self._shadows.get(model)
        return shadow is not None and shadow.version == version and version != self.registry.serving_version(model)

    def _log_failure(self, model: str, version: int) -> None:
        now = time.monotonic()
        if now - self._failure_logged.get(model, -FAILURE_LOG_INTERVAL) >= FAILURE_LOG_INTERVAL:
            self._failure_logged[model] = now
            log.warning(
                "%s version %d failed to answer in shadow (counted; logged once a minute)",
                model,
                version,
                exc_info=True,
            )
