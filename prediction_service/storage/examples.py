"""Collected labelled examples (MODEL_DIR/learning.sqlite3): each with a copy of its input, so that it outlives
the bounded prediction log, its label, where it came from, and an id that only grows.

The ids are the learning loop's clock: a version trained on examples records the highest id it used (its
watermark), so "collected since the serving version" is "id above its watermark". A replaced label gets a new
id: an example that a version may already have learned from comes back as a new one.
"""

import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from prediction_service.storage.backends import open_database
from prediction_service.storage.postgres import Postgres
from prediction_service.storage.sqlite import array_columns, array_from_columns

FEEDBACK = "feedback"

SCHEMA = """
CREATE TABLE IF NOT EXISTS examples (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    model TEXT NOT NULL,
    source TEXT NOT NULL,
    prediction_id TEXT UNIQUE,
    label TEXT NOT NULL,
    input BLOB NOT NULL,
    input_dtype TEXT NOT NULL,
    input_shape TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS examples_model ON examples (model, id);
"""


@dataclass(frozen=True)
class Example:
    id: int
    model: str
    source: str
    prediction_id: str | None
    label: str
    input: np.ndarray
    created_at: float  # seconds since the epoch


@dataclass(frozen=True)
class Recorded:
    example: Example
    replaced_label: str | None  # the label this one replaced (None: the first for its prediction)


class ExampleStore:
    def __init__(self, where: Path | Postgres) -> None:
        """`where`: the SQLite file, or the PostgreSQL server."""
        self.database = open_database(where, SCHEMA, exclusive_table="examples")

    def record(self, model: str, source: str, prediction_id: str, label: str, values: np.ndarray) -> Recorded:
        """Keep a labelled example; a second label for the same prediction replaces the first (under a new id:
        a job may have learned the first). The same label again (a client's retry) changes nothing.

        Durable when it returns (synchronous=FULL): what the caller then confirms survives a crash.
        """
        created_at = time.time()
        with self.database.transaction(synchronous="FULL") as db:
            previous = db.execute(
                "SELECT id, label, created_at FROM examples WHERE prediction_id = ?", (prediction_id,)
            ).fetchone()
            if previous is not None and previous["label"] == label:
                kept = Example(previous["id"], model, source, prediction_id, label, values, previous["created_at"])
                return Recorded(kept, None)
            if previous is not None:
                db.execute("DELETE FROM examples WHERE prediction_id = ?", (prediction_id,))
            inserted = db.execute(
                "INSERT INTO examples (model, source, prediction_id, label, input, input_dtype, input_shape, "
                "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                (
                    model,
                    source,
                    prediction_id,
                    label,
                    *array_columns(values),
                    created_at,
                ),
            )
            example_id = int(inserted.fetchone()[0])
        example = Example(example_id, model, source, prediction_id, label, values, created_at)
        return Recorded(example, previous["label"] if previous is not None else None)

    def count(self, model: str, after: int) -> int:
        """How many examples of `model` have an id above `after`."""
        with self.database.connect() as db:
            row = db.execute("SELECT count(*) FROM examples WHERE model = ? AND id > ?", (model, after)).fetchone()
        return int(row[0])

    def counts(self, model: str, after: int) -> dict[str, Counter[str]]:
        """The examples of `model` above id `after`: per source, how many of each label."""
        with self.database.connect() as db:
            rows = db.execute(
                "SELECT source, label, count(*) AS n FROM examples WHERE model = ? AND id > ? GROUP BY source, label",
                (model, after),
            ).fetchall()
        counts: dict[str, Counter[str]] = {}
        for row in rows:
            counts.setdefault(row["source"], Counter())[row["label"]] = int(row["n"])
        return counts

    def last_id(self, model: str) -> int:
        with self.database.connect() as db:
            row = db.execute("SELECT max(id) FROM examples WHERE model = ?", (model,)).fetchone()
        return int(row[0] or 0)

    def between(self, model: str, after: int, up_to: int, newest: int | None = None) -> list[Example]:
        """The examples of `model` with `after` < id <= `up_to` (only the `newest` of them, if given), oldest first."""
        with self.database.connect() as db:
            rows = db.execute(
                "SELECT * FROM (SELECT * FROM examples WHERE model = ? AND id > ? AND id <= ? ORDER BY id DESC "
                "LIMIT ?) AS newest ORDER BY id",
                (model, after, up_to, 1 << 62 if newest is None else newest),  # no limit
            ).fetchall()
        return [
            Example(
                row["id"],
                row["model"],
                row["source"],
                row["prediction_id"],
                row["label"],
                array_from_columns(row["input"], row["input_dtype"], row["input_shape"]),
                row["created_at"],
            )
            for row in rows
        ]
