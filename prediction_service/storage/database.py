"""The one database interface the record stores use, whichever backend keeps their tables.

Two implementations: SqliteDatabase (storage.sqlite: a file in MODEL_DIR, the embedded default) and
PostgresDatabase
(storage.postgres: DATABASE_URL); storage.backends picks one. Stores write one SQL text, with `?` placeholders; the few
places where the dialects differ are the Dialect's members, here and nowhere else.
"""

import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...
    def __iter__(self) -> Iterator[Any]: ...


class Connection(Protocol):
    """Rows are read by column name or by position, on both backends."""

    def execute(self, sql: str, parameters: Sequence[Any] = ..., /) -> Cursor: ...
    def executemany(self, sql: str, rows: Sequence[Sequence[Any]], /) -> Any: ...


@dataclass(frozen=True)
class Dialect:
    name: str
    # Exceptions a unique index raises (a store treats some as "someone else got there first").
    integrity_errors: tuple[type[Exception], ...]
    # Appended to a SELECT whose rows the transaction then updates (SQLite's BEGIN IMMEDIATE already
    # serialises writers; PostgreSQL locks the rows).
    for_update: str
    # The same, skipping rows that another transaction holds (a job claim: each claimer takes another job).
    skip_locked: str
    # Text columns holding JSON: a member as text, a member as an integer, an element appended to an array,
    # members set in an object (`values`: SQL expressions; `?` placeholders hold JSON text).
    json_text: Callable[[str, str], str]
    json_int: Callable[[str, str], str]
    json_append: Callable[[str], str]
    json_set: Callable[[str, dict[str, str]], str]


SQLITE = Dialect(
    name="sqlite",
    integrity_errors=(sqlite3.IntegrityError,),
    for_update="",
    skip_locked="",
    json_text=lambda column, key: f"json_extract({column}, '$.{key}')",
    json_int=lambda column, key: f"json_extract({column}, '$.{key}')",
    json_append=lambda column: f"json_insert({column}, '$[#]', json(?))",
    json_set=lambda column, values: (
        f"json_set(coalesce({column}, '{{}}'), "
        + ", ".join(f"'$.{key}', {_sqlite_json(value)}" for key, value in values.items())
        + ")"
    ),
)


def _sqlite_json(value: str) -> str:
    # A `?` holds JSON text: json() makes SQLite store it as JSON, not as a string.
    return "json(?)" if value == "?" else value


class Database(Protocol):
    dialect: Dialect

    def connect(self, synchronous: str = "FULL") -> AbstractContextManager[Connection]:
        """A connection for reads (and single-statement writes)."""
        ...

    def transaction(self, synchronous: str = "FULL") -> AbstractContextManager[Connection]:
        """One transaction, in which a read followed by writes is atomic against every other process."""
        ...

    def writer(self, synchronous: str) -> AbstractContextManager[Connection]:
        """A transaction for a frequent writer (appends; no read-then-write that must be exclusive)."""
        ...
