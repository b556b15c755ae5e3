import asyncio
import threading

import pytest

from prediction_service.batching import MicroBatcher
from prediction_service.errors import InvalidInput, Overloaded


def test_concurrent_requests_share_batches_and_keep_their_own_answers() -> None:
    batch_sizes: list[int] = []
    threads: set[str] = set()

    def double(items: list[int]) -> list[int | BaseException]:
        threads.add(threading.current_thread().name)
        return [InvalidInput("odd") if item % 2 else item * 2 for item in items]

    async def scenario() -> list[object]:
        batcher = MicroBatcher(double, max_batch=8, max_wait=0.01, max_queue=100, on_batch=batch_sizes.append)
        batcher.start()
        try:
            return await asyncio.gather(*(batcher.submit(n) for n in range(20)), return_exceptions=True)
        finally:
            await batcher.stop()

    results = asyncio.run(scenario())
    assert [r for r in results if not isinstance(r, Exception)] == [n * 2 for n in range(0, 20, 2)]
    assert all(isinstance(r, InvalidInput) for r in results[1::2])
    assert max(batch_sizes) > 1
    assert max(batch_sizes) <= 8
    assert sum(batch_sizes) == 20
    assert threading.main_thread().name not in threads  # off the event loop


def test_a_full_queue_answers_overloaded_at_once() -> None:
    release = threading.Event()

    def slow(items: list[int]) -> list[int | BaseException]:
        release.wait(5)
        return list(items)

    async def scenario() -> list[object]:
        batcher = MicroBatcher(slow, max_batch=1, max_wait=0, max_queue=2)
        batcher.start()
        try:
            first = asyncio.create_task(batcher.submit(0))  # taken into the (blocked) batch
            await asyncio.sleep(0.05)
            waiting = [asyncio.create_task(batcher.submit(n)) for n in (1, 2)]
            await asyncio.sleep(0.01)
            with pytest.raises(Overloaded) as raised:
                await batcher.submit(3)
            assert raised.value.headers["Retry-After"] == "1"
            release.set()
            return await asyncio.gather(first, *waiting)
        finally:
            release.set()
            await batcher.stop()

    assert asyncio.run(scenario()) == [0, 1, 2]
