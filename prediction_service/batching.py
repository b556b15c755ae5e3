"""Adaptive micro-batching: concurrent requests share one model call, made off the event loop.

Requests queue up while the worker thread computes a batch; the next batch
takes everything that queued (up to `max_batch`), waiting at most `max_wait`
seconds for more when the queue is short. Under light load a request waits for
nobody; under heavy load batches grow and the per-call overhead is shared. The
queue is bounded: when it is full the caller gets `Overloaded` (503 with
Retry-After) at once.

The worker is one long-lived thread woken through a condition variable, and a
batch's answers go back to the event loop in one callback: each handoff
between the loop and a thread costs more than the work of a small image.
"""

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

from prediction_service.errors import Overloaded

log = logging.getLogger(__name__)

Item = TypeVar("Item")
Result = TypeVar("Result")


class MicroBatcher(Generic[Item, Result]):
    def __init__(
        self,
        process: Callable[[list[Item]], list[Result | BaseException]],
        *,
        max_batch: int,
        max_wait: float,
        max_queue: int,
        name: str = "batcher",
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self._process = process
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.max_queue = max_queue
        self.name = name
        self._on_batch = on_batch
        self._pending: deque[tuple[Item, asyncio.Future[Result]]] = deque()
        self._changed = threading.Condition()
        self._worker_idle = False
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = False
        self._thread = threading.Thread(target=self._work, name=self.name, daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        with self._changed:
            self._stopping = True
            self._changed.notify()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 30)
        while self._pending:
            _, future = self._pending.popleft()
            if not future.done():
                future.set_exception(Overloaded("the service is shutting down; retry on another instance"))

    def depth(self) -> int:
        return len(self._pending)

    async def submit(self, item: Item) -> Result:
        if self._loop is None or self._stopping:
            raise Overloaded("the service is not accepting predictions right now; retry shortly")
        if len(self._pending) >= self.max_queue:
            raise Overloaded(f"{self.max_queue} requests are already waiting; retry in a moment")
        future: asyncio.Future[Result] = self._loop.create_future()
        with self._changed:
            self._pending.append((item, future))
            # Wake the worker only when it sleeps for work or a batch just filled up.
            if self._worker_idle or len(self._pending) == self.max_batch:
                self._changed.notify()
        return await future

    def _work(self) -> None:
        assert self._loop is not None
        while True:
            with self._changed:
                self._worker_idle = True
                while not self._pending and not self._stopping:
                    self._changed.wait()
                self._worker_idle = False
                if self._stopping:
                    return
                if len(self._pending) < self.max_batch and self.max_wait > 0:
                    self._changed.wait(self.max_wait)  # woken early when the batch fills
                count = min(len(self._pending), self.max_batch)
                batch = [self._pending.popleft() for _ in range(count)]
            try:
                results = self._process([item for item, _ in batch])
            except Exception as error:
                log.exception("%s: batch of %d failed", self.name, len(batch))
                results = [error] * len(batch)
            self._loop.call_soon_threadsafe(self._deliver, batch, results)

    def _deliver(self, batch: list[tuple[Item, asyncio.Future[Result]]], results: list) -> None:
        if self._on_batch is not None:
            self._on_batch(len(batch))
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():  # the client went away
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)
