"""The shadows' figures (MODEL_DIR/learning.sqlite3), the same for every process that uses MODEL_DIR.

Per (model, shadow version): counters that each process adds to in batches; and, per prediction id,
both answers (bounded: the oldest rows go first), so that a label sent later scores the shadow and the
serving version on the same predictions.
"""

import dataclasses
import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from prediction_service.storage.backends import open_database
from prediction_service.storage.postgres import Postgres

SCHEMA = """
CREATE TABLE IF NOT EXISTS shadow_figures (
    model TEXT NOT NULL,
    shadow_version INTEGER NOT NULL,
    compared INTEGER NOT NULL DEFAULT 0,
    agreed INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    dropped INTEGER NOT NULL DEFAULT 0,
    labelled INTEGER NOT NULL DEFAULT 0,
    shadow_correct INTEGER NOT NULL DEFAULT 0,
    serving_correct INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (model, shadow_version)
);
CREATE TABLE IF NOT EXISTS shadow_answers (
    seq INTEGER PRIMARY KEY,  -- the rowid: new rows get the largest yet, and the smallest go first
    key INTEGER NOT NULL,  -- a 64-bit hash of prediction_id: its index is a quarter of one on the text
    prediction_id TEXT NOT NULL,
    model TEXT NOT NULL,
    shadow_version INTEGER NOT NULL,
    serving_answer TEXT NOT NULL,
    shadow_answer TEXT NOT NULL,
    label TEXT,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS shadow_answers_key ON shadow_answers (key);
"""


@dataclass
class ShadowCounts:
    compared: int = 0  # requests both versions answered
    agreed: int = 0  # of those, with the same answer
    failed: int = 0  # requests the shadow could not answer (it raised)
    dropped: int = 0  # requests not compared because the shadow's queue was full
    labelled: int = 0  # compared requests whose true label arrived later (feedback)
    shadow_correct: int = 0  # of those, answered right by the shadow
    serving_correct: int = 0  # ... and by the serving version

    def add(self, other: "ShadowCounts") -> None:
        for field in dataclasses.fields(self):
            setattr(self, field.name, getattr(self, field.name) + getattr(other, field.name))


COUNTERS = tuple(field.name for field in dataclasses.fields(ShadowCounts))


class ShadowAnswer(NamedTuple):
    prediction_id: str
    model: str
    shadow_version: int
    serving_answer: str  # as the API shows it ("7", "Adelie")
    shadow_answer: str


class ShadowRecords:
    def __init__(self, where: Path | Postgres, max_answers: int) -> None:
        """`where`: the SQLite file, or the PostgreSQL server (whose transactions here lock the answer they label)."""
        self.database = open_database(where, SCHEMA)
        self.max_answers = max_answers  # answers kept for feedback to score (like the prediction log's bound)

    def add(self, counts: dict[tuple[str, int], ShadowCounts], answers: list[ShadowAnswer]) -> None:
        """Add one batch of a process's counts and answers, in one transaction.

        synchronous=NORMAL: a process crash loses nothing committed; these figures are not worth an fsync a batch.
        """
        if not counts and not answers:
            return
        columns = ", ".join(COUNTERS)
        increments = ", ".join(f"{name} = shadow_figures.{name} + excluded.{name}" for name in COUNTERS)
        # Sorted: writers that lock the same figures rows lock them in one order (no deadlock on PostgreSQL).
        rows = [(model, version, *dataclasses.astuple(count)) for (model, version), count in sorted(counts.items())]
        with self.database.writer(synchronous="NORMAL") as db:
            if answers and self.max_answers > 0:
                now = time.time()
                db.executemany(
                    "INSERT INTO shadow_answers (key, prediction_id, model, shadow_version, serving_answer, "
                    "shadow_answer, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [(_key(answer.prediction_id), *answer, now) for answer in answers],
                )
                db.execute(
                    "DELETE FROM shadow_answers WHERE seq <= (SELECT max(seq) FROM shadow_answers) - ?",
                    (self.max_answers,),
                )
            # After the answers: record_label locks an answer, then its figures; never the other way round.
            db.executemany(
                f"INSERT INTO shadow_figures (model, shadow_version, {columns}) "  # noqa: S608 - our own column names
                f"VALUES (?, ?{', ?' * len(COUNTERS)}) "
                f"ON CONFLICT (model, shadow_version) DO UPDATE SET {increments}",
                rows,
            )

    def counts(self, model: str, version: int) -> ShadowCounts:
        return self.all_counts().get((model, version), ShadowCounts())

    def all_counts(self) -> dict[tuple[str, int], ShadowCounts]:
        with self.database.connect() as db:
            query = f"SELECT model, shadow_version, {', '.join(COUNTERS)} FROM shadow_figures"  # noqa: S608 - ours
            rows = db.execute(query).fetchall()
        return {(row["model"], row["shadow_version"]): ShadowCounts(*(row[name] for name in COUNTERS)) for row in rows}

    def record_label(self, prediction_id: str, label: str) -> bool:
        """Score the shadow and the serving version on a prediction both answered; False if the shadow did not.

        A second label for the same prediction replaces the first one in the figures.
        """
        with self.database.transaction() as db:
            row = db.execute(
                f"SELECT * FROM shadow_answers WHERE key = ? AND prediction_id = ?{self.database.dialect.for_update}",  # noqa: S608 - the dialect's SQL
                (_key(prediction_id), prediction_id),
            ).fetchone()
            if row is None:
                return False
            before, label = row["label"], str(label)
            if before == label:
                return True
            change = ShadowCounts(
                labelled=1 if before is None else 0,
                shadow_correct=(label == row["shadow_answer"]) - (before == row["shadow_answer"]),
                serving_correct=(label == row["serving_answer"]) - (before == row["serving_answer"]),
            )
            db.execute("UPDATE shadow_answers SET label = ? WHERE seq = ?", (label, row["seq"]))
            db.execute(
                "UPDATE shadow_figures SET labelled = labelled + ?, shadow_correct = shadow_correct + ?, "
                "serving_correct = serving_correct + ? WHERE model = ? AND shadow_version = ?",
                (change.labelled, change.shadow_correct, change.serving_correct, row["model"], row["shadow_version"]),
            )
        return True


def _key(prediction_id: str) -> int:
    """A prediction id as a signed 64-bit integer (ids are random: an index on these stays small and cheap)."""
    return int.from_bytes(hashlib.blake2b(prediction_id.encode(), digest_size=8).digest(), "big", signed=True)
