import time
from datetime import datetime
from pathlib import Path

import pytest

from prediction_service.core.errors import NotFound
from prediction_service.storage.pointers import PostgresPointers
from prediction_service.storage.postgres import Postgres
from prediction_service.storage.versions import ModelStore


def store_on(records_home: Path | Postgres, model_dir: Path) -> ModelStore:
    """Versions in `model_dir`; their pointers there too (the SQLite run) or in PostgreSQL."""
    if isinstance(records_home, Path):
        return ModelStore(model_dir)
    return ModelStore(model_dir, pointers=PostgresPointers(records_home))


@pytest.fixture
def store(records_home: Path | Postgres, tmp_path: Path) -> ModelStore:
    store = store_on(records_home, tmp_path / "models")
    for text in ("v1", "v2", "v3"):
        store.add_version("m", lambda folder, text=text: (folder / "model.txt").write_text(text), {})
    return store


def test_the_serving_pointer_moves_and_keeps_its_history_as_fallbacks(store: ModelStore) -> None:
    assert store.serving("m") is None
    assert store.pointer_stamp("m") is None
    store.set_serving("m", 1)
    first_stamp = store.pointer_stamp("m")
    store.set_serving("m", 3)
    pointer = store.set_serving("m", 2)
    assert pointer.version == 2
    assert store.serving("m") == pointer
    assert list(pointer.candidates()) == [2, 3, 1]
    assert pointer.published() == {1, 2, 3}
    assert store.pointer_stamp("m") not in (None, first_stamp)
    with pytest.raises(NotFound):
        store.set_serving("m", 7)
    assert store.serving("m").version == 2
    assert store.serving("other") is None


def test_the_shadow_pointer_starts_ends_and_is_promoted(store: ModelStore) -> None:
    store.set_serving("m", 1)
    assert store.shadow("m") is None
    assert store.shadow_stamp("m") is None
    store.set_shadow("m", 2)
    assert store.shadow("m") == 2
    stamp = store.shadow_stamp("m")
    assert stamp is not None
    assert store.clear_shadow("m") is True
    assert store.shadow("m") is None
    assert store.clear_shadow("m") is False
    store.set_shadow("m", 3)
    assert store.shadow_stamp("m") != stamp
    store.set_serving("m", 3)  # promoted: it no longer answers beside itself
    assert store.shadow("m") is None
    assert store.serving("m").version == 3
    with pytest.raises(NotFound):
        store.set_shadow("m", 9)


def test_a_second_process_sees_the_pointers(records_home: Path | Postgres, store: ModelStore, tmp_path: Path) -> None:
    store.set_serving("m", 2)
    store.set_shadow("m", 1)
    other = store_on(records_home, tmp_path / "models")
    assert (other.serving("m").version, other.shadow("m")) == (2, 1)
    assert other.pointer_stamp("m") == store.pointer_stamp("m")


def test_postgresql_keeps_which_version_served_from_when_to_when(postgres: Postgres, tmp_path: Path) -> None:
    pointers = PostgresPointers(postgres)
    store = store_on(postgres, tmp_path)
    for text in ("v1", "v2"):
        store.add_version("m", lambda folder, text=text: (folder / "model.txt").write_text(text), {})
    before = datetime.now().astimezone()
    store.set_serving("m", 1)
    time.sleep(0.01)
    store.set_serving("m", 2)
    store.set_shadow("m", 1)  # not a serving period
    store.set_serving("m", 1)  # a rollback
    periods = pointers.serving_history("m")
    assert [period.version for period in periods] == [1, 2, 1]
    assert periods[0].since >= before
    assert periods[0].until == periods[1].since
    assert periods[1].until == periods[2].since
    assert periods[0].since < periods[1].since < periods[2].since
    assert periods[2].until is None
    assert pointers.serving_history("other") == []
