"""Decode many uploaded images on several cores.

Decoding a PNG and normalising it is ~50 us of mostly Python work, so threads
do not help (the GIL); a few worker processes do. They are started by a
forkserver that imports only the image code (no TensorFlow), once, at service
start, so a big upload does not pay for process start-up.
"""

import logging
import multiprocessing
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import numpy as np

from prediction_service.errors import ServiceError
from prediction_service.ml.images import ImageLimits, decode_digits

log = logging.getLogger(__name__)

Chunk = list[tuple[str, bytes]]
Decoded = list[np.ndarray | ServiceError]


class DecodePool:
    def __init__(self, processes: int, limits: ImageLimits) -> None:
        self.processes = processes
        self.limits = limits
        self._executor: ProcessPoolExecutor | None = None

    def start(self) -> None:
        if self.processes < 1:
            return
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["prediction_service.ml.images"])
        self._executor = ProcessPoolExecutor(self.processes, mp_context=context)
        # Start the processes now rather than at the first upload.
        for future in [self._executor.submit(int) for _ in range(self.processes)]:
            future.result()

    def stop(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    def decode_chunks(self, chunks: Iterable[Chunk]) -> Iterator[Decoded]:
        """Decoded chunks, in order; a few are in flight at once, so memory stays bounded."""
        if self._executor is None:
            yield from (decode_digits(chunk, self.limits) for chunk in chunks)
            return
        in_flight: deque[tuple[Chunk, Future[Decoded]]] = deque()
        try:
            for chunk in chunks:
                in_flight.append((chunk, self._executor.submit(decode_digits, chunk, self.limits)))
                if len(in_flight) > 2 * self.processes:
                    yield self._result(*in_flight.popleft())
            while in_flight:
                yield self._result(*in_flight.popleft())
        finally:
            for _, future in in_flight:
                future.cancel()

    def _result(self, chunk: Chunk, future: Future[Decoded]) -> Decoded:
        try:
            return future.result()
        except BrokenProcessPool:
            log.exception("an image decoding process died; decoding in this process instead")
            self.stop()
            return decode_digits(chunk, self.limits)
