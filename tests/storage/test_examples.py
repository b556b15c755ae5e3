from pathlib import Path

import numpy as np

from prediction_service.storage.examples import FEEDBACK, ExampleStore
from prediction_service.storage.postgres import Postgres


def test_an_example_keeps_a_copy_of_its_input_and_a_replaced_label_is_a_new_example(
    records_home: Path | Postgres,
) -> None:
    store = ExampleStore(records_home)
    digit = np.arange(784, dtype=np.uint8).reshape(28, 28)
    first = store.record("mnist", FEEDBACK, "p1", "7", digit)
    store.record("penguins", FEEDBACK, "p2", "Adelie", np.array([40.3, 195.0]))
    assert first.replaced_label is None
    replaced = store.record("mnist", FEEDBACK, "p1", "1", digit)
    assert replaced.replaced_label == "7"
    assert replaced.example.id > first.example.id  # new to a version that may have learned the first label
    (kept,) = store.between("mnist", 0, store.last_id("mnist"))
    assert (kept.id, kept.label, kept.prediction_id) == (replaced.example.id, "1", "p1")
    np.testing.assert_array_equal(kept.input, digit)
    (penguin,) = store.between("penguins", 0, 100)
    assert penguin.input.dtype == np.float64
    assert penguin.input.tolist() == [40.3, 195.0]


def test_counts_by_source_and_label_above_a_watermark(records_home: Path | Postgres) -> None:
    store = ExampleStore(records_home)
    ids = [
        store.record("mnist", FEEDBACK, f"p{n}", str(n % 3), np.zeros((28, 28), np.uint8)).example.id for n in range(7)
    ]
    assert store.count("mnist", 0) == 7
    assert store.count("mnist", ids[3]) == 3
    assert store.counts("mnist", ids[3]) == {FEEDBACK: {"1": 1, "2": 1, "0": 1}}
    assert store.count("penguins", 0) == 0
    assert [example.id for example in store.between("mnist", ids[1], ids[4])] == ids[2:5]


def test_a_second_process_sees_what_one_recorded(records_home: Path | Postgres) -> None:
    ExampleStore(records_home).record("mnist", FEEDBACK, "p1", "3", np.ones((28, 28), np.uint8))
    assert ExampleStore(records_home).count("mnist", 0) == 1
