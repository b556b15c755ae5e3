"""Model swaps and the frozen garbage collector: a replaced model must still be freed."""

import gc
import weakref
from pathlib import Path

from conftest import make_settings

from prediction_service.core import memory
from prediction_service.models.interface import ModelContext
from prediction_service.models.penguins.model import PenguinsModel
from prediction_service.models.registry import Registry
from prediction_service.storage.versions import ModelStore


def test_a_replaced_model_is_freed_though_it_was_frozen(tmp_path: Path) -> None:
    # Start-up freezes every object, the models included, out of the collector's view, and a swap
    # does not unfreeze them (that full collection stopped the server for ~100 ms). So a replaced
    # model must be freed by reference counting alone: a cycle in a model would leak it per swap.
    kind = PenguinsModel(ModelContext(make_settings(tmp_path)))
    store = ModelStore(tmp_path)
    kind.train_first_version(store)
    kind.train_first_version(store)  # a second version to swap with
    registry = Registry(store, [kind], after_swap=memory.freeze_long_lived)
    registry.start()
    memory.freeze_long_lived()
    try:
        frozen_after_start = gc.get_freeze_count()
        for swap in range(20):
            replaced = weakref.ref(registry.get("penguins").predictor)
            registry.activate("penguins", 1 + swap % 2)
            assert replaced() is None, f"swap {swap}: the replaced model is still alive"
        assert gc.get_freeze_count() <= frozen_after_start + 100
    finally:
        gc.unfreeze()
