"""Adaptive micro-batching: concurrent requests share one model call.

Requests queue up while a batch is being computed (elsewhere: the model runs in
its own process); the next batch takes everything that queued, up to
`max_batch`, waiting at most `max_wait` seconds for more when the queue is
short. Under light load a request waits for nobody; under heavy load batches
grow and the per-call overhead is shared. The queue is bounded: when it is full
the caller gets `Overloaded` (503 with Retry-After) at once.

Everything here runs on the event loop: no thread handoffs, which under load
cost more than the work of a small image.
"""

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from prediction_service.core.errors import Overloaded

log = logging.getLogger(__name__)

Item = TypeVar("Item")
Result = TypeVar("Result")


class MicroBatcher(Generic[Item, Result]):
    def __init__(
        self,
        process: Callable[[list[Item]], Awaitable[list[Result | BaseException]]],
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
        self._work = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        while self._pending:
            _, future = self._pending.popleft()
            if not future.done():
                future.set_exception(Overloaded("the service is shutting down; retry on another instance"))

    def depth(self) -> int:
        return len(self._pending)

    async def submit(self, item: Item) -> Result:
        if self._task is None:
            raise Overloaded("the service is not accepting predictions right now; retry shortly")
        if len(self._pending) >= self.max_queue:
            raise Overloaded(f"{self.max_queue} requests are already waiting; retry in a moment")
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        self._work.set()
        return await future

    async def _run(self) -> None:
        while True:
            await self._work.wait()
            self._work.clear()
            while self._pending:
                if len(self._pending) < self.max_batch and self.max_wait > 0:
                    await asyncio.sleep(self.max_wait)
                count = min(len(self._pending), self.max_batch)
                batch = [self._pending.popleft() for _ in range(count)]
                live = [(item, future) for item, future in batch if not future.done()]
                if live:
                    await self._compute(live)

    async def _compute(self, batch: list[tuple[Item, asyncio.Future[Result]]]) -> None:
        try:
            results = await self._process([item for item, _ in batch])
        except Exception as error:  # a failed batch fails its requests, not the batcher
            if not isinstance(error, Overloaded):
                log.exception("%s: batch of %d failed", self.name, len(batch))
            results = [error] * len(batch)
        if self._on_batch is not None:
            self._on_batch(len(batch))
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():  # the client went away
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)
