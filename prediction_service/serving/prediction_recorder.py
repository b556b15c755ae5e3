"""Writes the prediction log off the answers' path: a route only appends to a buffer in memory; a thread
writes the buffer to the log in batches (one transaction each) every FLUSH_INTERVAL seconds.

Answers never wait for the log: when the writer falls behind, the buffer drops its oldest rows and counts
them (prediction_log_dropped_total). A graceful stop writes what is left. PREDICTION_LOG_MAX=0 turns the
log off: answers still carry ids, nothing is kept, and no id is found.
"""

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Sequence

import numpy as np

from prediction_service.core import metrics
from prediction_service.core.ids import new_prediction_id
from prediction_service.storage.predictions import LoggedPrediction, PredictionLog

log = logging.getLogger(__name__)
# id, model, version, answer, input, created_at: LoggedPrediction's fields, its input not yet an array
Buffered = tuple[str, str, int, str, np.ndarray | Sequence[float], float]

FLUSH_INTERVAL = 0.1  # seconds: ~400 rows a batch at full /predict speed
BUFFER_ROWS = 20_000  # ~16 MB of digits: seconds of full load, a stall of the disk, not more


class PredictionRecorder:
    def __init__(self, prediction_log: PredictionLog, interval: float = FLUSH_INTERVAL, buffer_rows: int = BUFFER_ROWS):
        self.log = prediction_log
        self.enabled = prediction_log.max_rows > 0
        self.interval = interval
        self._capacity = max(1, min(buffer_rows, prediction_log.max_rows))  # no use buffering more than is kept
        self._buffer: deque[Buffered] = deque()
        self._buffer_lock = threading.Lock()
        self._write_lock = threading.Lock()  # one write at a time: rows reach the log in the order they came
        self._stopping = threading.Event()
        self._writer: threading.Thread | None = None

    def record(self, model: str, version: int, answer: str, model_input: np.ndarray | Sequence[float]) -> str:
        """Give the prediction its id and queue it for the log (a microsecond or two; never waits for I/O).

        `model_input`: what the model saw, as an array or a tuple of floats (made a float64 array later,
        in the writer, off the answer's path).
        """
        prediction_id = new_prediction_id()
        if self.enabled:
            row = (prediction_id, model, version, answer, model_input, time.time())
            with self._buffer_lock:
                if len(self._buffer) >= self._capacity:
                    self._buffer.popleft()
                    metrics.PREDICTION_LOG_DROPPED.inc()
                self._buffer.append(row)
        return prediction_id

    def start(self) -> None:
        if self.enabled and self._writer is None:
            self._stopping.clear()
            self._writer = threading.Thread(target=self._write_periodically, name="prediction-log-writer", daemon=True)
            self._writer.start()

    async def stop(self) -> None:
        """Stop the writer and write what is still buffered."""
        await asyncio.to_thread(self._stop)

    def _stop(self) -> None:
        self._stopping.set()
        if self._writer is not None:
            self._writer.join()
            self._writer = None
        self.flush()

    def flush(self) -> None:
        """Write the buffer to the log now (blocking: call it from a thread)."""
        with self._write_lock:
            with self._buffer_lock:
                if not self._buffer:
                    return
                batch, self._buffer = self._buffer, deque()
            try:
                self.log.append([LoggedPrediction(i, m, v, a, np.asarray(x), t) for i, m, v, a, x, t in batch])
            except Exception:  # the log is best-effort: answers go on, the loss is counted and logged
                metrics.PREDICTION_LOG_DROPPED.inc(len(batch))
                log.exception("writing %d predictions to the prediction log failed; they are not kept", len(batch))

    async def find(self, prediction_id: str) -> LoggedPrediction | None:
        """The logged prediction with this id, or None (unknown, dropped, or the log is off).

        This process's buffer is written first. Another worker process may still hold the prediction in its
        buffer: then it is looked up once more, after that worker's writer has run (an interval, and half of
        one for its write).
        """
        if not self.enabled:
            return None
        found = await asyncio.to_thread(self._flush_and_get, prediction_id)
        if found is None:
            await asyncio.sleep(self.interval * 1.5)
            found = await asyncio.to_thread(self.log.get, prediction_id)
        return found

    def _flush_and_get(self, prediction_id: str) -> LoggedPrediction | None:
        self.flush()
        return self.log.get(prediction_id)

    def _write_periodically(self) -> None:
        while not self._stopping.wait(self.interval):
            self.flush()
