"""Which backend keeps what, from the settings: SQLite files in MODEL_DIR (the default), or PostgreSQL at
DATABASE_URL for the records (jobs, the learning loop's, the serving and shadow pointers); MODEL_DIR (the
default), or the object store at MODEL_STORE_URL for the versions, uploads and data."""

from pathlib import Path
from typing import Any

from prediction_service.core.settings import Settings
from prediction_service.storage.database import Database
from prediction_service.storage.objects import object_store
from prediction_service.storage.pointers import PostgresPointers
from prediction_service.storage.postgres import Postgres, PostgresDatabase
from prediction_service.storage.sqlite import SqliteDatabase
from prediction_service.storage.versions import ModelStore


def postgres(settings: Settings) -> Postgres | None:
    """A pool for DATABASE_URL (None: unset, the embedded mode); its owner shares it between the stores, and
    closes it."""
    return None if settings.database_url is None else Postgres(settings.database_url.get_secret_value())


def open_database(
    where: Path | Postgres, sqlite_schema: str, upgrade: Any = None, exclusive_table: str | None = None
) -> Database:
    """A store's database: the SQLite file `where` (made with `sqlite_schema`, after `upgrade`), or its tables in
    PostgreSQL (made by storage/migrations), where `transaction` locks `exclusive_table` against other writers
    as SQLite's BEGIN IMMEDIATE does (None: the store's transactions lock the rows they change instead)."""
    if isinstance(where, Path):
        return SqliteDatabase(where, sqlite_schema, upgrade)
    return PostgresDatabase(where, exclusive_table)


def model_store(settings: Settings, server: Postgres | None) -> ModelStore:
    """The versions in MODEL_DIR, or in the object store at MODEL_STORE_URL (MODEL_DIR their cache); their
    serving and shadow pointers in MODEL_DIR, or in PostgreSQL (`server`)."""
    return ModelStore(
        settings.model_dir,
        object_store(settings.model_store_url),
        None if server is None else PostgresPointers(server),
    )
