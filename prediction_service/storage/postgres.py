"""PostgreSQL (DATABASE_URL): one connection pool per process, the schema brought up to date by the numbered SQL
files in storage/migrations at the first use, and the stores' Database (storage.database) on top of it.
"""

import logging
import re
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import RowMaker
from psycopg_pool import ConnectionPool, PoolTimeout

from prediction_service.core.errors import DependencyUnavailable
from prediction_service.storage.database import Connection, Cursor, Dialect

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).with_name("migrations")
# Held (for one transaction) by the process that migrates: others that start at once wait, then find it done.
MIGRATION_LOCK = 7_140_114_001
# A dead server or host is noticed within ~10 s by a connection that waits (the LISTEN one, a long query); and
# by the server too (`options`): a worker whose host vanished in the middle of a transaction (a job claim locks
# the jobs table) has its session ended, and its locks released, within ~10 s instead of the system's ~2 h.
KEEPALIVES: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "options": "-c tcp_keepalives_idle=5 -c tcp_keepalives_interval=2 -c tcp_keepalives_count=3",
}

# How long the pool keeps retrying one lost connection before the next request starts a new attempt at once.
RECONNECT_SECONDS = 5.0


def _json_value(value: str) -> str:
    return "?::jsonb" if value == "?" else f"to_jsonb({value}::text)"


POSTGRES = Dialect(
    name="postgresql",
    integrity_errors=(psycopg.errors.IntegrityError,),
    for_update=" FOR UPDATE",
    skip_locked=" FOR UPDATE SKIP LOCKED",
    json_text=lambda column, key: f"({column}::jsonb ->> '{key}')",
    json_int=lambda column, key: f"({column}::jsonb ->> '{key}')::bigint",
    json_append=lambda column: f"({column}::jsonb || jsonb_build_array(?::jsonb))::text",
    json_set=lambda column, values: (
        f"(coalesce({column}, '{{}}')::jsonb || jsonb_build_object("
        + ", ".join(f"'{key}', {_json_value(value)}" for key, value in values.items())
        + "))::text"
    ),
)


class Row(tuple[Any, ...]):
    """A row read by position or by column name, as sqlite3.Row is (the stores read both backends alike)."""

    names: dict[str, int]

    def __getitem__(self, key: Any) -> Any:
        return super().__getitem__(self.names[key] if isinstance(key, str) else key)

    def keys(self) -> list[str]:
        return list(self.names)


def _rows(cursor: Any) -> RowMaker[Row]:
    names = {column.name: index for index, column in enumerate(cursor.description or ())}

    def make(values: Sequence[Any]) -> Row:
        row = Row(values)
        row.names = names
        return row

    return make


def _placeholders(sql: str) -> str:
    """The stores' `?` placeholders as psycopg's `%s` (no store's SQL has a `?` or `%` of its own)."""
    return sql.replace("%", "%%").replace("?", "%s")


class PostgresConnection:
    """A pooled connection that speaks the stores' SQL (storage.database.Connection)."""

    def __init__(self, connection: psycopg.Connection[Any]) -> None:
        self.connection = connection

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> Cursor:
        if not parameters:
            return self.connection.execute(sql)  # type: ignore[arg-type]  # our own SQL text
        return self.connection.execute(_placeholders(sql), parameters)  # type: ignore[arg-type]

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]], /) -> None:
        with self.connection.cursor() as cursor:
            cursor.executemany(_placeholders(sql), rows)  # type: ignore[arg-type]


class Postgres:
    """The server at DATABASE_URL, for one process. Opening it does no I/O: the pool connects, and the schema is
    migrated, at the first use (and again at the next use if the server was away)."""

    def __init__(self, url: str, max_connections: int = 8) -> None:
        self.url = url
        self._pool = ConnectionPool(
            url,
            min_size=1,
            max_size=max_connections,
            open=False,
            timeout=3,  # seconds a caller waits for a connection: then 503 (the server is away, or all are busy)
            # The pool retries a lost connection with a doubling delay (1, 2, 4, ... s): after a minute's outage it
            # would come back a minute late. Given up after a few seconds instead, the next request starts anew.
            reconnect_timeout=RECONNECT_SECONDS,
            check=ConnectionPool.check_connection,  # a connection the server dropped is replaced, not handed out
            kwargs={"autocommit": True, "row_factory": _rows, **KEEPALIVES},
            name="prediction-service",
        )
        self._ready = False
        self._ready_lock = threading.Lock()

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection; DependencyUnavailable (503) while the server cannot be reached."""
        try:
            if not self._ready:
                self._open()
            with self._pool.connection() as connection:
                yield connection
        except (psycopg.OperationalError, PoolTimeout) as error:
            # Also a connection lost mid-transaction (rolled back: nothing half-written stays).
            raise DependencyUnavailable(
                f"the database is unavailable ({str(error).strip().splitlines()[0][:200]}); retry in a few seconds"
            ) from error

    def reachable(self) -> bool:
        try:
            with self.connection() as connection:
                connection.execute("SELECT 1")
        except DependencyUnavailable:
            return False
        return True

    def _open(self) -> None:
        with self._ready_lock:
            if self._ready:
                return
            self._pool.open()
            with self._pool.connection() as connection:
                applied = migrate(connection)
            if applied:
                log.info("PostgreSQL schema migrated: %s", ", ".join(applied))
            self._ready = True

    def close(self) -> None:
        self._pool.close()


def migration_files() -> list[tuple[int, Path]]:
    """storage/migrations/NNNN_what.sql, in the order they apply."""
    files = []
    for path in MIGRATIONS.glob("*.sql"):
        match = re.fullmatch(r"(\d+)_\w+\.sql", path.name)
        if match is None:
            raise RuntimeError(f"migration file {path.name} is not named NNNN_what.sql")
        files.append((int(match.group(1)), path))
    return sorted(files)


def migrate(connection: psycopg.Connection[Any]) -> list[str]:
    """Apply the migrations this database has not had yet, in order, each recorded in schema_migrations; all in
    one transaction, under a lock, so that processes starting together apply each exactly once."""
    applied_now = []
    with connection.transaction():
        connection.execute(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")
        connection.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        applied = {row[0] for row in connection.execute("SELECT version FROM schema_migrations")}
        for version, path in migration_files():
            if version in applied:
                continue
            connection.execute(path.read_text())  # type: ignore[call-overload]  # our own SQL file
            connection.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (version, path.stem))
            applied_now.append(path.stem)
    return applied_now


class PostgresDatabase:
    """A store's tables in PostgreSQL (storage.database.Database)."""

    dialect = POSTGRES

    def __init__(self, postgres: Postgres, exclusive_table: str | None = None) -> None:
        """`exclusive_table`: locked by `transaction` against other writers (readers go on), as SQLite's BEGIN
        IMMEDIATE does, for a store whose transactions check several rows before they write."""
        self.postgres = postgres
        self.exclusive_table = exclusive_table

    @contextmanager
    def connect(self, synchronous: str = "FULL") -> Iterator[Connection]:
        with self.postgres.connection() as connection:
            yield PostgresConnection(connection)

    @contextmanager
    def transaction(self, synchronous: str = "FULL") -> Iterator[Connection]:
        with self._transaction(synchronous, self.exclusive_table) as connection:
            yield connection

    @contextmanager
    def writer(self, synchronous: str) -> Iterator[Connection]:
        with self._transaction(synchronous, None) as connection:
            yield connection

    @contextmanager
    def _transaction(self, synchronous: str, exclusive_table: str | None) -> Iterator[Connection]:
        with self.postgres.connection() as connection, connection.transaction():
            if synchronous != "FULL":
                # SQLite's NORMAL: a crash of the server may lose the last commits, never corrupt them.
                connection.execute("SET LOCAL synchronous_commit = off")
            if exclusive_table is not None:
                connection.execute(f"LOCK TABLE {exclusive_table} IN SHARE ROW EXCLUSIVE MODE")
            yield PostgresConnection(connection)
