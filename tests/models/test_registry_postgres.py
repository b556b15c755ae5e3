"""DATABASE_URL: registries in separate processes serve a newly activated version, or a new shadow, within 2 s,
told by NOTIFY (no periodic check runs here)."""

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import wait_until

from prediction_service.models.registry import Registry
from prediction_service.storage.pointer_listener import PointerListener
from prediction_service.storage.pointers import PostgresPointers
from prediction_service.storage.postgres import Postgres
from prediction_service.storage.versions import ModelStore, StoredVersion


class TextKind:
    """A model kind whose 'model' is the text of its artifact."""

    name = "toy"

    def train_first_version(self, store: ModelStore) -> StoredVersion:
        return add_version(store, "v1", "initial training")

    def load(self, stored: StoredVersion) -> str:
        return (stored.path / "model.txt").read_text()


def add_version(store: ModelStore, text: str, source: str = "test") -> StoredVersion:
    return store.add_version("toy", lambda folder: (folder / "model.txt").write_text(text), {"source": source})


@pytest.fixture
def replicas(postgres_url: str, tmp_path: Path) -> Iterator[list[Registry]]:
    """Two registries, each with its own pool and listener as a process has (the versions on one disk here)."""
    made: list[tuple[Registry, Postgres, PointerListener]] = []
    for _ in range(2):
        server = Postgres(postgres_url)
        registry = Registry(ModelStore(tmp_path, pointers=PostgresPointers(server)), [TextKind()])
        registry.start()
        listener = PointerListener(postgres_url, registry.pointer_moved)
        listener.start()
        assert listener.connected.wait(10)
        made.append((registry, server, listener))
    yield [registry for registry, _, _ in made]
    for _, server, listener in made:
        listener.stop()
        server.close()


def test_an_activation_and_a_shadow_reach_every_replica_within_two_seconds(
    replicas: list[Registry], postgres: Postgres, tmp_path: Path
) -> None:
    assert [registry.get("toy").version for registry in replicas] == [1, 1]
    admin = ModelStore(tmp_path, pointers=PostgresPointers(postgres))  # e.g. `python -m prediction_service activate`
    add_version(admin, "v2")
    add_version(admin, "v3")

    started = time.monotonic()
    admin.set_serving("toy", 2)
    for registry in replicas:
        assert wait_until(lambda registry=registry: registry.get("toy").predictor == "v2", 2.0)
    admin.set_shadow("toy", 3)
    for registry in replicas:
        assert wait_until(lambda registry=registry: "toy" in registry.shadows, 2.0)
        assert registry.shadows["toy"].predictor == "v3"
    admin.clear_shadow("toy")
    for registry in replicas:
        assert wait_until(lambda registry=registry: "toy" not in registry.shadows, 2.0)
    assert time.monotonic() - started < 6.0
