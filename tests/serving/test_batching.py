import asyncio

import pytest

from prediction_service.core.errors import InvalidInput, Overloaded
from prediction_service.serving.batching import MicroBatcher


def test_concurrent_requests_share_batches_and_keep_their_own_answers() -> None:
    batch_sizes: list[int] = []

    async def double(items: list[int]) -> list[int | BaseException]:
        await asyncio.sleep(0.005)  # the model's process computing; the loop stays free meanwhile
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


def test_a_failed_batch_fails_its_requests_and_the_batcher_goes_on() -> None:
    calls: list[list[int]] = []

    async def flaky(items: list[int]) -> list[int | BaseException]:
        calls.append(items)
        if len(calls) == 1:
            raise Overloaded("the model's process restarted")
        return list(items)

    async def scenario() -> tuple[BaseException | int, int]:
        batcher = MicroBatcher(flaky, max_batch=4, max_wait=0, max_queue=10)
        batcher.start()
        try:
            first = await asyncio.gather(batcher.submit(1), return_exceptions=True)
            return first[0], await batcher.submit(2)
        finally:
            await batcher.stop()

    failed, answered = asyncio.run(scenario())
    assert isinstance(failed, Overloaded)
    assert answered == 2


def test_a_full_queue_answers_overloaded_at_once() -> None:
    async def scenario() -> list[object]:
        release = asyncio.Event()

        async def slow(items: list[int]) -> list[int | BaseException]:
            await release.wait()
            return list(items)

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
