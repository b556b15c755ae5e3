"""A SQLite database file shared by every process that uses MODEL_DIR (WAL: readers never wait for the writer)."""

import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from prediction_service.storage.database import SQLITE


class SqliteDatabase:
    """The embedded mode's storage.database.Database."""

    dialect = SQLITE

    def __init__(self, path: Path, schema: str, upgrade: Callable[[sqlite3.Connection], None] | None = None) -> None:
        """`upgrade`: brings a database made by an earlier release up to `schema` (run before it, in a
        BEGIN IMMEDIATE transaction, so that processes starting together do it once)."""
        self.path = path
        self.schema = schema
        self.upgrade = upgrade
        self._schema_ready = False
        # Held open for the life of this object: when the last connection to a WAL database closes, SQLite
        # checkpoints the whole log and deletes it (~1.5 ms); with one kept open, a per-operation
        # connection closes cheaply, and checkpoints happen as the log grows.
        self._keeper: sqlite3.Connection | None = None
        self._writer: sqlite3.Connection | None = None
        self._writer_lock = threading.Lock()

    def _create_schema(self) -> None:
        # At the first use, not in __init__: making a store does no I/O. Idempotent across processes.
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            if self.upgrade is not None:
                db.execute("BEGIN IMMEDIATE")
                try:
                    self.upgrade(db)
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
                db.execute("COMMIT")
            db.executescript(self.schema)
        finally:
            db.close()
        self._keeper = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        self._schema_ready = True

    @contextmanager
    def connect(self, synchronous: str = "FULL") -> Iterator[sqlite3.Connection]:
        """A connection per operation: cheap for SQLite, and safe across threads and processes.

        `synchronous`: FULL makes a commit survive a power cut; NORMAL (in WAL mode) survives a process
        crash but may lose the last commits on a power cut, for much cheaper commits.
        """
        if not self._schema_ready:
            self._create_schema()
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.row_factory = sqlite3.Row
        db.execute(f"PRAGMA synchronous={synchronous}")
        try:
            yield db
        finally:
            db.close()

    @contextmanager
    def writer(self, synchronous: str) -> Iterator[sqlite3.Connection]:
        """One connection kept open for a frequent writer (opening and closing one costs ~1 ms in a busy WAL
        database), in a BEGIN IMMEDIATE transaction; one user at a time."""
        with self._writer_lock:
            if self._writer is None:
                if not self._schema_ready:
                    self._create_schema()
                self._writer = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
                self._writer.execute(f"PRAGMA synchronous={synchronous}")
            with _immediate(self._writer) as db:
                yield db

    @contextmanager
    def transaction(self, synchronous: str = "FULL") -> Iterator[sqlite3.Connection]:
        """A connection of its own in a BEGIN IMMEDIATE transaction."""
        with self.connect(synchronous) as db, _immediate(db):
            yield db


@contextmanager
def _immediate(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE: the write lock from the start, so read-then-write is atomic across processes."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def array_columns(values: np.ndarray) -> tuple[bytes, str, str]:
    """An array as three columns: its bytes, its dtype and its shape."""
    values = np.ascontiguousarray(values)
    return values.tobytes(), values.dtype.str, ",".join(str(n) for n in values.shape)


def array_from_columns(data: bytes, dtype: str, shape: str) -> np.ndarray:
    return np.frombuffer(data, dtype=np.dtype(dtype)).reshape(tuple(int(n) for n in shape.split(",") if n))
