import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from prometheus_client import REGISTRY

from prediction_service.serving.prediction_recorder import PredictionRecorder
from prediction_service.storage.predictions import PredictionLog

MEASUREMENTS = (40.3, 195.0)


def dropped() -> float:
    return REGISTRY.get_sample_value("prediction_log_dropped_total") or 0.0


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition did not come true in time"
        time.sleep(0.01)


def test_recording_gives_unique_ids_and_the_writer_logs_input_answer_and_version(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path / "learning.sqlite3", max_rows=100)
    recorder = PredictionRecorder(log, interval=0.05)
    recorder.start()
    try:
        digit = np.full((28, 28), 9, dtype=np.uint8)
        ids = [recorder.record("penguins", 2, "Adelie", MEASUREMENTS), recorder.record("mnist", 5, "7", digit)]
        assert len(set(ids)) == 2
        wait_for(lambda: log.count() == 2)  # written by the writer thread, without a flush from here
        penguin, image = log.get(ids[0]), log.get(ids[1])
        assert penguin is not None
        assert image is not None
        assert (penguin.model, penguin.version, penguin.answer) == ("penguins", 2, "Adelie")
        assert penguin.input.dtype == np.float64
        assert penguin.input.tolist() == list(MEASUREMENTS)
        assert (image.model, image.version, image.answer) == ("mnist", 5, "7")
        np.testing.assert_array_equal(image.input, digit)
    finally:
        asyncio.run(recorder.stop())


def test_a_graceful_stop_writes_everything_still_buffered(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path / "learning.sqlite3", max_rows=1000)
    recorder = PredictionRecorder(log, interval=3600)  # the writer would not run before the stop
    recorder.start()
    ids = [recorder.record("penguins", 1, "Gentoo", (47.5, 220.0 + n)) for n in range(300)]
    assert log.count() == 0
    asyncio.run(recorder.stop())
    assert log.count() == 300
    last = log.get(ids[-1])
    assert last is not None
    assert last.input.tolist() == [47.5, 519.0]


def test_a_full_buffer_drops_its_oldest_rows_and_counts_them(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path / "learning.sqlite3", max_rows=1000)
    recorder = PredictionRecorder(log, interval=3600, buffer_rows=5)  # a writer that has fallen behind
    before = dropped()
    started = time.monotonic()
    ids = [recorder.record("penguins", 1, "Adelie", MEASUREMENTS) for _ in range(8)]
    assert time.monotonic() - started < 1  # the answers never waited
    assert dropped() - before == 3
    recorder.flush()
    assert [log.get(prediction_id) is not None for prediction_id in ids] == [False] * 3 + [True] * 5


def test_the_buffer_is_no_bigger_than_the_log(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path / "learning.sqlite3", max_rows=2)
    recorder = PredictionRecorder(log, interval=3600, buffer_rows=1000)
    ids = [recorder.record("penguins", 1, "Adelie", MEASUREMENTS) for _ in range(4)]
    recorder.flush()
    assert log.count() == 2
    assert [log.get(prediction_id) is not None for prediction_id in ids] == [False, False, True, True]


def test_find_sees_predictions_still_buffered_here_or_in_another_worker(tmp_path: Path) -> None:
    path = tmp_path / "learning.sqlite3"
    here = PredictionRecorder(PredictionLog(path, max_rows=100), interval=0.05)  # its writer not started
    other_worker = PredictionRecorder(PredictionLog(path, max_rows=100), interval=0.05)
    other_worker.start()
    try:
        mine = here.record("penguins", 1, "Adelie", MEASUREMENTS)
        theirs = other_worker.record("penguins", 1, "Chinstrap", (50.0, 196.0))

        async def look_up() -> tuple:
            return await here.find(mine), await here.find(theirs), await here.find("0" * 32)

        found_mine, found_theirs, unknown = asyncio.run(look_up())
        assert found_mine is not None
        assert found_mine.answer == "Adelie"
        assert found_theirs is not None
        assert found_theirs.answer == "Chinstrap"
        assert unknown is None
    finally:
        asyncio.run(other_worker.stop())


def test_max_zero_turns_the_log_off_but_answers_keep_their_ids(tmp_path: Path) -> None:
    path = tmp_path / "learning.sqlite3"
    recorder = PredictionRecorder(PredictionLog(path, max_rows=0))
    recorder.start()
    ids = {recorder.record("penguins", 1, "Adelie", MEASUREMENTS) for _ in range(3)}
    assert len(ids) == 3
    assert asyncio.run(recorder.find(ids.pop())) is None
    asyncio.run(recorder.stop())
    assert not path.exists()  # nothing was ever stored
