"""Which version of a model serves, and which answers beside it as its shadow: the pointers.

Two implementations of one interface: files in MODEL_DIR (the embedded mode), or PostgreSQL (DATABASE_URL),
which keeps every move (the history: which version served from when to when) and tells every process
listening (storage.pointer_listener) with a NOTIFY in the same transaction. Neither checks that a version
exists: storage.versions.ModelStore does, before it moves a pointer.
"""

import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from filelock import FileLock

from prediction_service.core.files import write_atomic
from prediction_service.storage.database import Connection
from prediction_service.storage.layout import POINTER, SHADOW_POINTER, Layout
from prediction_service.storage.postgres import Postgres, PostgresDatabase

log = logging.getLogger(__name__)

# A cheap change detector: equal while a pointer has not moved (None: it was never set).
Stamp = tuple[int, int] | None
SERVING, SHADOW = "serving", "shadow"
# The channel of the NOTIFY sent on every move; its payload is "<model> <serving|shadow>".
CHANNEL = "model_pointers"
HISTORY_KEPT = 50  # earlier serving versions kept as fallbacks


@dataclass(frozen=True)
class ServingPointer:
    version: int
    history: list[int] = field(default_factory=list)

    def candidates(self) -> Iterator[int]:
        """The serving version, then earlier serving versions, newest first: the fallbacks."""
        seen = set()
        for version in [self.version, *reversed(self.history)]:
            if version not in seen:
                seen.add(version)
                yield version

    def published(self) -> set[int]:
        """Every version that has served (a stored version not in it is a rejected candidate)."""
        return {self.version, *self.history}


class Pointers(Protocol):
    def serving(self, name: str) -> ServingPointer | None: ...
    def pointer_stamp(self, name: str) -> Stamp:
        """Cheap (no I/O beyond a stat: the request path asks), as of the last `check_stamps`."""
        ...

    def check_stamps(self) -> None:
        """Read where every pointer stands now, for the stamps (I/O: not on the request path)."""
        ...

    def set_serving(self, name: str, version: int) -> ServingPointer:
        """Point the model at `version`; ends its shadow if that was `version` (promoted). Atomic."""
        ...

    def shadow(self, name: str) -> int | None: ...
    def shadow_stamp(self, name: str) -> Stamp: ...
    def set_shadow(self, name: str, version: int) -> None: ...
    def clear_shadow(self, name: str) -> bool:
        """End the shadow; False if there was none."""
        ...


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _file_stamp(path: Path) -> Stamp:
    """(inode, mtime in ns) of a pointer file; None while it does not exist."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_ino, stat.st_mtime_ns


class FilePointers:
    """MODEL_DIR/<model>/serving.json and shadow.json, replaced atomically under the model's lock."""

    def __init__(self, layout: Layout, lock: Callable[[str], FileLock]) -> None:
        self.layout = layout
        self.lock = lock

    def serving(self, name: str) -> ServingPointer | None:
        try:
            data = json.loads((self.layout.model(name) / POINTER).read_text())
            return ServingPointer(int(data["version"]), [int(v) for v in data.get("history", [])])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as error:
            log.warning("unreadable serving pointer of %s: %s", name, error)
            return None

    def pointer_stamp(self, name: str) -> Stamp:
        return _file_stamp(self.layout.model(name) / POINTER)

    def check_stamps(self) -> None:
        """Nothing to do: a file's stamp is a stat, read at each look."""

    def set_serving(self, name: str, version: int) -> ServingPointer:
        with self.lock(name):
            current = self.serving(name)
            history = [] if current is None else [*current.history, current.version]
            pointer = ServingPointer(version, history[-HISTORY_KEPT:])
            payload = {"version": version, "history": pointer.history, "updated_at": utc_now()}
            write_atomic(self.layout.model(name) / POINTER, json.dumps(payload).encode())
            if self.shadow(name) == version:  # promoted: it no longer answers beside the serving version
                (self.layout.model(name) / SHADOW_POINTER).unlink(missing_ok=True)
        return pointer

    def shadow(self, name: str) -> int | None:
        try:
            return int(json.loads((self.layout.model(name) / SHADOW_POINTER).read_text())["version"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as error:
            log.warning("unreadable shadow pointer of %s: %s", name, error)
            return None

    def shadow_stamp(self, name: str) -> Stamp:
        return _file_stamp(self.layout.model(name) / SHADOW_POINTER)

    def set_shadow(self, name: str, version: int) -> None:
        with self.lock(name):
            payload = {"version": version, "updated_at": utc_now()}
            write_atomic(self.layout.model(name) / SHADOW_POINTER, json.dumps(payload).encode())

    def clear_shadow(self, name: str) -> bool:
        with self.lock(name):
            try:
                (self.layout.model(name) / SHADOW_POINTER).unlink()
            except FileNotFoundError:
                return False
        return True


@dataclass(frozen=True)
class ServingPeriod:
    version: int
    since: datetime
    until: datetime | None  # None: it serves now


class PostgresPointers:
    """The pointer_changes table (storage/migrations): a row per move, never updated; the newest row of a
    (model, pointer) is where it points, its seq the pointer's stamp. Moves take turns (the table is locked
    while one is made).

    The stamps are kept in memory, read by `check_stamps` (one query for every pointer: the periodic check, a
    NOTIFY) and by this process's own moves, so that the request path never waits for the database, nor fails
    while it is away."""

    def __init__(self, postgres: Postgres) -> None:
        self.database = PostgresDatabase(postgres, exclusive_table="pointer_changes")
        self._stamps: dict[tuple[str, str], int] | None = None  # None: never read yet

    def serving(self, name: str) -> ServingPointer | None:
        with self.database.connect() as db:
            return _serving(db, name)

    def pointer_stamp(self, name: str) -> Stamp:
        return self._stamp(name, SERVING)

    def check_stamps(self) -> None:
        with self.database.connect() as db:
            rows = db.execute("SELECT model, pointer, max(seq) FROM pointer_changes GROUP BY model, pointer").fetchall()
        self._stamps = {(row[0], row[1]): row[2] for row in rows}

    def set_serving(self, name: str, version: int) -> ServingPointer:
        with self.database.transaction() as db:
            current = _serving(db, name)
            history = [] if current is None else [*current.history, current.version]
            moved = {SERVING: _move(db, name, SERVING, version)}
            if _current(db, name, SHADOW) == version:  # promoted: it no longer answers beside the serving version
                moved[SHADOW] = _move(db, name, SHADOW, None)
        self._moved(name, moved)
        return ServingPointer(version, history[-HISTORY_KEPT:])

    def shadow(self, name: str) -> int | None:
        with self.database.connect() as db:
            return _current(db, name, SHADOW)

    def shadow_stamp(self, name: str) -> Stamp:
        return self._stamp(name, SHADOW)

    def set_shadow(self, name: str, version: int) -> None:
        with self.database.transaction() as db:
            moved = {SHADOW: _move(db, name, SHADOW, version)}
        self._moved(name, moved)

    def clear_shadow(self, name: str) -> bool:
        with self.database.transaction() as db:
            if _current(db, name, SHADOW) is None:
                return False
            moved = {SHADOW: _move(db, name, SHADOW, None)}
        self._moved(name, moved)
        return True

    def serving_history(self, name: str) -> list[ServingPeriod]:
        """Every version that served, from when until when, oldest first."""
        with self.database.connect() as db:
            rows = db.execute(
                "SELECT version, changed_at FROM pointer_changes WHERE model = ? AND pointer = ? ORDER BY seq",
                (name, SERVING),
            ).fetchall()
        ends = [row["changed_at"] for row in rows[1:]] + [None]  # each period ends where the next begins
        return [ServingPeriod(row["version"], row["changed_at"], end) for row, end in zip(rows, ends, strict=False)]

    def _stamp(self, name: str, pointer: str) -> Stamp:
        if self._stamps is None:  # the first look (start-up, in a thread): read them
            self.check_stamps()
        assert self._stamps is not None
        seq = self._stamps.get((name, pointer))
        return None if seq is None else (seq, 0)

    def _moved(self, name: str, moved: dict[str, int]) -> None:
        """This process's own move: its stamps without waiting for the next check."""
        if self._stamps is not None:
            self._stamps.update({(name, pointer): seq for pointer, seq in moved.items()})


def _serving(db: Connection, name: str) -> ServingPointer | None:
    rows = db.execute(
        "SELECT version FROM pointer_changes WHERE model = ? AND pointer = ? ORDER BY seq DESC LIMIT ?",
        (name, SERVING, HISTORY_KEPT + 1),
    ).fetchall()
    if not rows:
        return None
    return ServingPointer(rows[0]["version"], [row["version"] for row in reversed(rows[1:])])


def _current(db: Connection, name: str, pointer: str) -> int | None:
    row = db.execute(
        "SELECT version FROM pointer_changes WHERE model = ? AND pointer = ? ORDER BY seq DESC LIMIT 1", (name, pointer)
    ).fetchone()
    return None if row is None else row["version"]


def _move(db: Connection, name: str, pointer: str, version: int | None) -> int:
    """Record a move and tell the listeners (PostgreSQL delivers the NOTIFY when the transaction commits); its seq."""
    seq = db.execute(
        "INSERT INTO pointer_changes (model, pointer, version) VALUES (?, ?, ?) RETURNING seq", (name, pointer, version)
    ).fetchone()[0]
    db.execute("SELECT pg_notify(?, ?)", (CHANNEL, f"{name} {pointer}"))
    return int(seq)
