"""PostgreSQL only: migrations, and pointer moves notified to every listening process."""

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from conftest import wait_until

from prediction_service.storage.jobs import JobStore
from prediction_service.storage.pointer_listener import PointerListener
from prediction_service.storage.pointers import PostgresPointers
from prediction_service.storage.postgres import Postgres, migrate, migration_files
from prediction_service.storage.versions import ModelStore


def tables(url: str) -> set[str]:
    with psycopg.connect(url) as connection:
        rows = connection.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()
    return {row[0] for row in rows}


def test_the_first_use_applies_every_migration_once(postgres_url: str) -> None:
    assert tables(postgres_url) == set()
    server = Postgres(postgres_url)
    try:
        JobStore(server).recent()  # the first use migrates
    finally:
        server.close()
    assert {"schema_migrations", "jobs", "examples", "prediction_batches", "pointer_changes"} <= tables(postgres_url)
    with psycopg.connect(postgres_url) as connection:
        assert migrate(connection) == []  # applied twice: nothing to do
        recorded = connection.execute("SELECT version, name FROM schema_migrations ORDER BY version").fetchall()
    assert recorded == [(version, path.stem) for version, path in migration_files()]


def test_processes_starting_together_migrate_once(postgres_url: str) -> None:
    barrier = threading.Barrier(6)
    applied: list[list[str]] = []
    errors: list[Exception] = []

    def start() -> None:
        try:
            with psycopg.connect(postgres_url) as connection:  # a session of its own, as a process has
                barrier.wait()
                applied.append(migrate(connection))
        except Exception as error:  # noqa: BLE001 - reported by the test
            errors.append(error)

    threads = [threading.Thread(target=start) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(len(names) for names in applied) == [0] * 5 + [len(migration_files())]
    with psycopg.connect(postgres_url) as connection:
        assert connection.execute("SELECT count(*) FROM schema_migrations").fetchone() == (len(migration_files()),)


def test_a_later_migration_applies_on_a_database_that_has_the_earlier_ones(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with psycopg.connect(postgres_url) as connection:
        migrate(connection)
    folder = tmp_path / "migrations"
    folder.mkdir()
    for _, path in migration_files():
        (folder / path.name).write_text(path.read_text())
    (folder / "9999_add_a_column.sql").write_text("ALTER TABLE jobs ADD COLUMN a_later_column TEXT;")
    monkeypatch.setattr("prediction_service.storage.postgres.MIGRATIONS", folder)
    with psycopg.connect(postgres_url) as connection:
        assert migrate(connection) == ["9999_add_a_column"]
        assert migrate(connection) == []
        connection.execute("SELECT a_later_column FROM jobs")


@pytest.fixture
def listeners(postgres_url: str) -> Iterator[list[tuple[PointerListener, list[tuple[str | None, str | None]]]]]:
    """Two processes' listeners, each recording the moves it is told of."""
    made = []
    for _ in range(2):
        moves: list[tuple[str | None, str | None]] = []
        listener = PointerListener(postgres_url, lambda model, pointer, moves=moves: moves.append((model, pointer)))
        listener.start()
        made.append((listener, moves))
    for listener, _ in made:
        assert listener.connected.wait(10)
    yield made
    for listener, _ in made:
        listener.stop()


def test_every_listener_hears_a_pointer_move_within_two_seconds(
    postgres: Postgres, listeners: list, tmp_path: Path
) -> None:
    store = ModelStore(tmp_path, pointers=PostgresPointers(postgres))
    for text in ("v1", "v2"):
        store.add_version("m", lambda folder, text=text: (folder / "model.txt").write_text(text), {})
    started = time.monotonic()
    store.set_serving("m", 1)
    store.set_shadow("m", 2)
    for _, moves in listeners:
        assert wait_until(lambda moves=moves: ("m", "shadow") in moves, 2.0), moves
        assert ("m", "serving") in moves
    assert time.monotonic() - started < 2.0


def test_a_listener_whose_connection_drops_reconnects_and_reports_that_anything_may_have_moved(
    postgres: Postgres, listeners: list, postgres_url: str, tmp_path: Path
) -> None:
    (listener, moves), _ = listeners
    moves.clear()
    with psycopg.connect(postgres_url, autocommit=True) as admin:  # cut every LISTEN connection
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE 'LISTEN%'")
    assert wait_until(lambda: (None, None) in moves, 10), moves
    assert wait_until(listener.connected.is_set, 10)
    store = ModelStore(tmp_path, pointers=PostgresPointers(postgres))
    store.add_version("m", lambda folder: (folder / "model.txt").write_text("v1"), {})
    store.set_serving("m", 1)
    assert wait_until(lambda: ("m", "serving") in moves, 2.0), moves


def test_after_a_long_outage_the_pool_is_back_within_seconds_of_the_server(own_postgres_server) -> None:
    """The pool's retries back off (1, 2, 4, 8, 16 s ...); they must not leave the service refusing writes for
    many seconds after the database is back."""
    database = Postgres(own_postgres_server.url())
    try:
        assert database.reachable()
        own_postgres_server.stop()
        down_until = time.monotonic() + 18  # long enough for the pool's delay to have grown past 8 s
        while time.monotonic() < down_until:  # requests keep coming meanwhile, as the periodic check's do
            assert not database.reachable()
            time.sleep(0.5)
        own_postgres_server.start()
        back = time.monotonic()
        assert wait_until(database.reachable, 30)
        recovered = time.monotonic() - back
        print(f"reachable again {recovered:.1f} s after the server")
        assert recovered < 8, recovered
    finally:
        database.close()
