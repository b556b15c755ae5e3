import logging
import threading
from pathlib import Path

import pytest

from prediction_service.core.errors import ModelUnavailable
from prediction_service.models.registry import Registry
from prediction_service.storage.versions import ModelStore, StoredVersion


class CountingKind:
    """A model kind whose 'model' is the text of its artifact; counts its trainings."""

    name = "toy"

    def __init__(self) -> None:
        self.trained = 0
        self.loaded: list[int] = []
        self.release = threading.Event()
        self.release.set()
        self.loading = threading.Event()  # set once load() has begun

    def train_first_version(self, store: ModelStore) -> StoredVersion:
        self.trained += 1
        return store.add_version(
            self.name, lambda folder: (folder / "model.txt").write_text("v1"), {"source": "initial training"}
        )

    def load(self, stored: StoredVersion) -> str:
        self.loading.set()
        assert self.release.wait(30), "the test never released load()"
        self.loaded.append(stored.version)
        return (stored.path / "model.txt").read_text()


def add_toy_version(store: ModelStore, text: str) -> StoredVersion:
    return store.add_version("toy", lambda folder: (folder / "model.txt").write_text(text), {"source": "test"})


def test_first_start_trains_publishes_and_serves(tmp_path: Path) -> None:
    kind = CountingKind()
    registry = Registry(ModelStore(tmp_path), [kind])
    registry.start()
    assert kind.trained == 1
    assert registry.ready()
    served = registry.get("toy")
    assert (served.version, served.predictor) == (1, "v1")
    assert ModelStore(tmp_path).serving("toy").version == 1


def test_a_second_start_loads_and_does_not_train(tmp_path: Path) -> None:
    Registry(ModelStore(tmp_path), [CountingKind()]).start()
    kind = CountingKind()
    registry = Registry(ModelStore(tmp_path), [kind])
    registry.start()
    assert kind.trained == 0
    assert registry.get("toy").version == 1


def test_a_corrupt_serving_version_is_skipped_for_the_last_good_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = ModelStore(tmp_path)
    Registry(store, [CountingKind()]).start()
    broken = add_toy_version(store, "v2")
    store.set_serving("toy", broken.version)
    (broken.path / "model.txt").write_text("half-writ")  # damaged after publishing
    kind = CountingKind()
    registry = Registry(store, [kind])
    with caplog.at_level(logging.WARNING):
        registry.start()
    assert registry.get("toy").version == 1
    assert kind.trained == 0
    assert any("skipping toy version 2" in record.getMessage() for record in caplog.records)


def test_a_rejected_candidate_is_never_a_fallback(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    Registry(store, [CountingKind()]).start()
    add_toy_version(store, "rejected candidate")  # version 2: stored, never served
    latest = add_toy_version(store, "v3")
    store.set_serving("toy", latest.version)
    (latest.path / "model.txt").unlink()
    registry = Registry(store, [CountingKind()])
    registry.start()
    assert registry.get("toy").version == 1


def test_refresh_swaps_only_after_the_new_version_is_loaded(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    kind = CountingKind()
    registry = Registry(store, [kind])
    registry.start()
    store.set_serving("toy", add_toy_version(store, "v2").version)
    kind.release.clear()  # loading v2 now blocks
    kind.loading.clear()
    loader = threading.Thread(target=registry.refresh)
    loader.start()
    try:
        assert kind.loading.wait(30), "refresh never began loading version 2"
        # load() of version 2 is in progress right now: the old version keeps serving meanwhile
        served = registry.get("toy")
        assert (served.version, served.predictor) == (1, "v1")
        assert registry.ready()
    finally:
        kind.release.set()
        loader.join(30)
    assert not loader.is_alive()
    served = registry.get("toy")
    assert (served.version, served.predictor) == (2, "v2")
    assert kind.loaded == [1, 2]


def test_an_unknown_model_is_not_found_and_an_unloaded_one_unavailable(tmp_path: Path) -> None:
    registry = Registry(ModelStore(tmp_path), [CountingKind()])
    with pytest.raises(ModelUnavailable, match="still loading"):
        registry.get("toy")
    with pytest.raises(Exception, match="no model 'zebra'"):
        registry.get("zebra")
