"""The prediction log (MODEL_DIR/learning.sqlite3): each answered prediction's input, answer and model version,
so that feedback can name a prediction by its id. Bounded: the oldest rows go first.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from prediction_service.storage.sqlite import SqliteDatabase, array_columns, array_from_columns

# seq without AUTOINCREMENT (which writes sqlite_sequence on every insert); ids are time-ordered
# (core.ids), so both indexes grow at one end.
SCHEMA = """
CREATE TABLE IF NOT EXISTS predictions (
    seq INTEGER PRIMARY KEY,
    id TEXT UNIQUE NOT NULL,
    model TEXT NOT NULL,
    version INTEGER NOT NULL,
    answer TEXT NOT NULL,
    input BLOB NOT NULL,
    input_dtype TEXT NOT NULL,
    input_shape TEXT NOT NULL,
    created_at REAL NOT NULL
);
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
    def __init__(self, path: Path, max_rows: int) -> None:
        self.database = SqliteDatabase(path, SCHEMA)
        self.max_rows = max_rows

    def append(self, predictions: list[LoggedPrediction]) -> None:
        """Store a batch in one transaction, then drop the oldest beyond `max_rows`.

        synchronous=NORMAL: a process crash loses nothing committed; the log is not worth an fsync per batch.
        """
        if not predictions:
            return
        rows = [(p.id, p.model, p.version, p.answer, *array_columns(p.input), p.created_at) for p in predictions]
        with self.database.transaction(synchronous="NORMAL") as db:
            db.executemany(
                "INSERT OR IGNORE INTO predictions (id, model, version, answer, input, input_dtype, input_shape, "
                "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            db.execute("DELETE FROM predictions WHERE seq <= (SELECT max(seq) FROM predictions) - ?", (self.max_rows,))

    def get(self, prediction_id: str) -> LoggedPrediction | None:
        with self.database.connect() as db:
            row = db.execute("SELECT * FROM predictions WHERE id = ?", (prediction_id,)).fetchone()
        if row is None:
            return None
        values = array_from_columns(row["input"], row["input_dtype"], row["input_shape"])
        return LoggedPrediction(row["id"], row["model"], row["version"], row["answer"], values, row["created_at"])

    def count(self) -> int:
        with self.database.connect() as db:
            return int(db.execute("SELECT count(*) FROM predictions").fetchone()[0])
