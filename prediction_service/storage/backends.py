"""Which backend keeps what, from the settings: SQLite files in MODEL_DIR (the default), or PostgreSQL at
DATABASE_URL for the records (jobs, the learning loop's, the serving and shadow pointers)."""

import threading
from pathlib import Path
from typing import Any

from prediction_service.core.settings import Settings
from prediction_service.storage.database import Database
from prediction_service.storage.pointers import PostgresPointers
from prediction_service.storage.postgres import Postgres, PostgresDatabase
from prediction_service.storage.sqlite import SqliteDatabase
from prediction_service.storage.versions import ModelStore

_servers: dict[str, Postgres] = {}
_servers_lock = threading.Lock()


def postgres(settings: Settings) -> Postgres | None:
    """The process's one pool for DATABASE_URL (None: unset, the embedded mode)."""
    if settings.database_url is None:
        return None
    url = settings.database_url.get_secret_value()
    with _servers_lock:
        if url not in _servers:
            _servers[url] = Postgres(url)
        return _servers[url]


def records(settings: Settings, sqlite_file: Path) -> Path | Postgres:
    """Where a store keeps its records: PostgreSQL, or (embedded mode) its SQLite file in MODEL_DIR."""
    return postgres(settings) or sqlite_file


def open_database(
    where: Path | Postgres, sqlite_schema: str, upgrade: Any = None, exclusive_table: str | None = None
) -> Database:
    """A store's database: the SQLite file `where` (made with `sqlite_schema`, after `upgrade`), or its tables in
    PostgreSQL (made by storage/migrations), where `transaction` locks `exclusive_table` against other writers
    as SQLite's BEGIN IMMEDIATE does (None: the store's transactions lock the rows they change instead)."""
    if isinstance(where, Path):
        return SqliteDatabase(where, sqlite_schema, upgrade)
    return PostgresDatabase(where, exclusive_table)


def model_store(settings: Settings) -> ModelStore:
    """The versions in MODEL_DIR; their serving and shadow pointers there too, or in PostgreSQL."""
    server = postgres(settings)
    return ModelStore(settings.model_dir, pointers=None if server is None else PostgresPointers(server))
