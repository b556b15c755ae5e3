from pathlib import Path

import numpy as np

from prediction_service.storage.postgres import Postgres
from prediction_service.storage.predictions import LoggedPrediction, PredictionLog


def logged(prediction_id: str, model_input: np.ndarray, answer: str = "Adelie") -> LoggedPrediction:
    return LoggedPrediction(prediction_id, "penguins", 3, answer, model_input, 1_700_000_000.5)


def test_a_prediction_comes_back_as_it_was_logged(records_home: Path | Postgres) -> None:
    log = PredictionLog(records_home, max_rows=10)
    digit = np.arange(784, dtype=np.uint8).reshape(28, 28)
    log.append([logged("a", np.array([40.3, 195.0])), LoggedPrediction("b", "mnist", 2, "7", digit, 5.0)])
    penguin, image = log.get("a"), log.get("b")
    assert penguin is not None
    assert image is not None
    assert (penguin.model, penguin.version, penguin.answer, penguin.created_at) == (
        "penguins",
        3,
        "Adelie",
        1.7e9 + 0.5,
    )
    assert penguin.input.dtype == np.float64
    assert penguin.input.tolist() == [40.3, 195.0]
    assert (image.model, image.version, image.answer) == ("mnist", 2, "7")
    assert image.input.dtype == np.uint8
    np.testing.assert_array_equal(image.input, digit)
    assert log.get("unknown") is None


def test_the_log_keeps_the_newest_max_rows(records_home: Path | Postgres) -> None:
    log = PredictionLog(records_home, max_rows=3)
    log.append([logged(f"p{n}", np.array([40.0 + n, 195.0])) for n in range(2)])
    log.append([logged(f"p{n}", np.array([40.0 + n, 195.0])) for n in range(2, 5)])
    assert log.count() == 3
    assert [log.get(f"p{n}") is not None for n in range(5)] == [False, False, True, True, True]
