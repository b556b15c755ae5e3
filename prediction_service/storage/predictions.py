"""The prediction log (MODEL_DIR/learning.sqlite3): each answered prediction's input, answer and model version,
so that feedback can name a prediction by its id. Bounded: the oldest rows go first.

Written a batch at a time (what one process answered in the last moment, per model): one table row per
batch, its inputs one array, so that a write costs one row, not one per prediction (the writer shares the
server's cores; at thousands of answers a second, per-row inserts cost it a tenth of its throughput). A
prediction is found by its id through the range of ids each batch holds (ids are time-ordered: core.ids).
"""

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from prediction_service.storage.backends import open_database
from prediction_service.storage.postgres import Postgres
from prediction_service.storage.sqlite import array_from_columns

SCHEMA = """
CREATE TABLE IF NOT EXISTS prediction_batches (
    seq INTEGER PRIMARY KEY,
    model TEXT NOT NULL,
    first_id TEXT NOT NULL,
    last_id TEXT NOT NULL,
    rows INTEGER NOT NULL,
    ids TEXT NOT NULL,
    versions TEXT NOT NULL,
    answers TEXT NOT NULL,
    created_at TEXT NOT NULL,
    inputs BLOB NOT NULL,
    input_dtype TEXT NOT NULL,
    input_shape TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS prediction_batches_ids ON prediction_batches (last_id, first_id);
-- Covers the trim's scan of (seq, rows), which then reads no batch's inputs.
CREATE INDEX IF NOT EXISTS prediction_batches_rows ON prediction_batches (seq, rows);
"""


@dataclass(frozen=True)
class LoggedPrediction:
    id: str
    model: str
    version: int
    answer: str  # the label the model answered, as the API shows it ("7", "Adelie")
    input: np.ndarray  # what the model saw: the normalised 28x28 digit; the penguin's two measurements
    created_at: float  # seconds since the epoch


class PredictionLog:
    def __init__(self, where: Path | Postgres, max_rows: int) -> None:
        """`where`: the SQLite file, or the PostgreSQL server."""
        self.database = open_database(where, SCHEMA)
        self.max_rows = max_rows

    def append(self, predictions: list[LoggedPrediction]) -> None:
        """Store them (a row per model and input shape) in one transaction, then drop the oldest batches
        beyond `max_rows` predictions.

        synchronous=NORMAL: a process crash loses nothing committed; the log is not worth an fsync per batch.
        """
        predictions = predictions[-self.max_rows :] if self.max_rows else []
        groups: defaultdict[tuple[str, str, tuple[int, ...]], list[LoggedPrediction]] = defaultdict(list)
        for prediction in predictions:
            groups[(prediction.model, prediction.input.dtype.str, prediction.input.shape)].append(prediction)
        if not groups:
            return
        batches = [
            (
                model,
                min(p.id for p in group),
                max(p.id for p in group),
                len(group),
                ",".join(p.id for p in group),
                json.dumps([p.version for p in group]),
                json.dumps([p.answer for p in group]),
                json.dumps([p.created_at for p in group]),
                np.stack([p.input for p in group]).tobytes(),
                dtype,
                ",".join(str(n) for n in shape),
            )
            for (model, dtype, shape), group in groups.items()
        ]
        with self.database.writer(synchronous="NORMAL") as db:
            db.executemany(
                "INSERT INTO prediction_batches (model, first_id, last_id, rows, ids, versions, answers, created_at, "
                "inputs, input_dtype, input_shape) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                batches,
            )
            kept, oldest_kept = 0, None
            for seq, rows in db.execute("SELECT seq, rows FROM prediction_batches ORDER BY seq DESC"):
                if kept + rows > self.max_rows:
                    break
                kept, oldest_kept = kept + rows, seq
            if oldest_kept is not None:
                db.execute("DELETE FROM prediction_batches WHERE seq < ?", (oldest_kept,))

    def get(self, prediction_id: str) -> LoggedPrediction | None:
        with self.database.connect() as db:
            candidates = db.execute(
                "SELECT seq FROM prediction_batches WHERE last_id >= ? AND first_id <= ? ORDER BY seq DESC",
                (prediction_id, prediction_id),
            ).fetchall()
            for (seq,) in candidates:
                row = db.execute("SELECT * FROM prediction_batches WHERE seq = ?", (seq,)).fetchone()
                ids = row["ids"].split(",")
                if prediction_id in ids:
                    return _unpack(row, ids.index(prediction_id))
        return None

    def count(self) -> int:
        with self.database.connect() as db:
            return int(db.execute("SELECT coalesce(sum(rows), 0) FROM prediction_batches").fetchone()[0])


def _unpack(row: Any, index: int) -> LoggedPrediction:
    inputs = array_from_columns(row["inputs"], row["input_dtype"], f"{row['rows']},{row['input_shape']}")
    return LoggedPrediction(
        row["ids"].split(",")[index],
        row["model"],
        json.loads(row["versions"])[index],
        json.loads(row["answers"])[index],
        inputs[index].copy(),
        json.loads(row["created_at"])[index],
    )
