"""Adaptive micro-batching: concurrent requests share one model call, run off the event loop.

Requests queue up while a batch computes in the worker thread; the next batch
takes everything that queued (up to `max_batch`), waiting at most `max_wait`
seconds for more. Under light load a request waits for nobody; under heavy
load batches grow and the per-call overhead is shared. The queue is bounded:
when it is full the caller gets `Overloaded` (503 with Retry-After) at once.
"""

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
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
        self._queue: asyncio.Queue[tuple[Item, asyncio.Future[Result]]] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._queue = asyncio.Queue(maxsize=self.max_queue)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=self.name)
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._queue is not None:
            while not self._queue.empty():
                _, future = self._queue.get_nowait()
                if not future.done():
                    future.set_exception(Overloaded("the service is shutting down; retry on another instance"))
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    def depth(self) -> int:
        return self._queue.qsize() if self._queue is not None else 0

    async def submit(self, item: Item) -> Result:
        if self._queue is None:
            raise Overloaded("the service is starting; retry shortly")
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait((item, future))
        except asyncio.QueueFull:
            raise Overloaded(f"{self.max_queue} requests are already waiting; retry in a moment") from None
        return await future

    async def _run(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            await self._fill(batch, loop.time() + self.max_wait)
            live = [(item, future) for item, future in batch if not future.done()]
            if not live:
                continue
            items = [item for item, _ in live]
            try:
                results = await loop.run_in_executor(self._executor, self._process, items)
            except Exception as error:
                log.exception("%s: batch of %d failed", self.name, len(items))
                results = [error] * len(items)
            if self._on_batch is not None:
                self._on_batch(len(items))
            for (_, future), result in zip(live, results, strict=True):
                if future.done():
                    continue
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)

    async def _fill(self, batch: list, deadline: float) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while len(batch) < self.max_batch:
            try:
                batch.append(self._queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                return
