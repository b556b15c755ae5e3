"""Retraining job records in SQLite (MODEL_DIR/jobs.sqlite3), shared by every process that uses MODEL_DIR, or in
PostgreSQL (DATABASE_URL; the table's schema: storage/migrations).

States: queued -> running -> succeeded | rejected | failed | interrupted (failed and interrupted can be retried,
back to queued). A running job is held under a lease (owner, expiry) that its worker renews; a job whose lease
expired (its worker died or lost its host) is claimed again, at most MAX_ATTEMPTS runs in all. The database lets
one job per model run at a time (jobs_one_running).
"""

import json
import sqlite3
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prediction_service.core.errors import Conflict, NotFound
from prediction_service.storage.backends import open_database
from prediction_service.storage.database import Connection, Dialect
from prediction_service.storage.postgres import Postgres
from prediction_service.storage.versions import StoredVersion, utc_now

QUEUED, RUNNING, SUCCEEDED, REJECTED, FAILED, INTERRUPTED = (
    "queued",
    "running",
    "succeeded",
    "rejected",
    "failed",
    "interrupted",
)
RETRYABLE = (FAILED, INTERRUPTED)
# Runs a job gets whose workers die (their leases expire) before it fails for good.
MAX_ATTEMPTS = 3
# What started a job: an upload, or the learning loop (retraining.triggers) on collected examples.
UPLOAD, AUTOMATIC = "upload", "automatic"

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT UNIQUE NOT NULL,
    model TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    upload TEXT NOT NULL,
    params TEXT NOT NULL,
    progress TEXT,
    history TEXT NOT NULL DEFAULT '[]',
    result TEXT,
    error TEXT,
    trigger TEXT NOT NULL DEFAULT 'upload',
    lease_owner TEXT,
    lease_expires REAL
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status, seq);
-- At most one automatic job per model waits or runs, whichever process or restart tries to add another.
CREATE UNIQUE INDEX IF NOT EXISTS jobs_one_automatic ON jobs (model)
    WHERE trigger = 'automatic' AND status IN ('queued', 'running');
-- At most one job per model trains at a time, whichever worker claims it.
CREATE UNIQUE INDEX IF NOT EXISTS jobs_one_running ON jobs (model) WHERE status = 'running';
"""


def add_trigger_column(db: sqlite3.Connection) -> None:
    """Stores made before automatic jobs have no `trigger` column: their jobs were all uploads."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(jobs)")}
    if columns and "trigger" not in columns:
        db.execute("ALTER TABLE jobs ADD COLUMN trigger TEXT NOT NULL DEFAULT 'upload'")


def add_lease_columns(db: sqlite3.Connection) -> None:
    """Stores made before leases: their running jobs get an expired lease (claimed again), and only the newest
    running job of a model stays running (jobs_one_running)."""
    add_trigger_column(db)
    columns = {row[1] for row in db.execute("PRAGMA table_info(jobs)")}
    if columns and "lease_owner" not in columns:
        db.execute("ALTER TABLE jobs ADD COLUMN lease_owner TEXT")
        db.execute("ALTER TABLE jobs ADD COLUMN lease_expires REAL")
        db.execute("UPDATE jobs SET lease_expires = 0 WHERE status = 'running'")
        db.execute(
            "UPDATE jobs SET status = 'interrupted', error = 'the server stopped while the job was running' "
            "WHERE status = 'running' "
            "AND seq NOT IN (SELECT max(seq) FROM jobs WHERE status = 'running' GROUP BY model)"
        )


class LeaseLost(Exception):
    """The worker's lease on a job expired (another worker may run it now): it must not publish."""


@dataclass
class Job:
    id: str
    model: str
    status: str
    created_at: str
    upload: dict[str, Any]
    params: dict[str, Any]
    started_at: str | None = None
    finished_at: str | None = None
    attempts: int = 0
    progress: dict[str, Any] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    result: dict[str, Any] | None = None
    error: str | None = None
    trigger: str = UPLOAD
    lease_owner: str | None = None
    lease_expires: float | None = None  # Unix time

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> "Job":
        return cls(
            id=row["id"],
            model=row["model"],
            status=row["status"],
            created_at=row["created_at"],
            started_at=row["started_at"],
            finished_at=row["finished_at"],
            attempts=row["attempts"],
            upload=json.loads(row["upload"]),
            params=json.loads(row["params"]),
            progress=json.loads(row["progress"]) if row["progress"] else None,
            history=json.loads(row["history"]),
            result=json.loads(row["result"]) if row["result"] else None,
            error=row["error"],
            trigger=row["trigger"],
            lease_owner=row["lease_owner"],
            lease_expires=row["lease_expires"],
        )


def new_job_id() -> str:
    return uuid.uuid4().hex


def job_result(version: StoredVersion, published: bool) -> dict[str, Any]:
    """A finished job's result: the version it stored and the gate's verdict (from the version's manifest)."""
    return job_result_of(version.manifest, version.version, published)


def job_result_of(manifest: dict[str, Any], version: int | None, published: bool) -> dict[str, Any]:
    """The result of a job whose candidate has this manifest (`version` None: the candidate was not stored)."""
    gate = manifest.get("gate") or {}
    training_data = manifest.get("training_data", {})
    unit = training_data.get("unit", "images")  # manifests from before other models retrained: images
    return {
        "version": version,
        "published": published,
        "holdout_accuracy": gate.get("candidate_accuracy"),
        "serving_version": gate.get("serving_version"),
        "serving_accuracy": gate.get("serving_accuracy"),
        "margin": gate.get("margin"),
        f"upload_{unit}": training_data.get(unit),
        f"replay_{unit}": training_data.get(f"replay_{unit}"),
    }


class JobStore:
    def __init__(self, where: Path | Postgres) -> None:
        """`where`: the SQLite file, or the PostgreSQL server."""
        self.database = open_database(where, SCHEMA, upgrade=add_lease_columns, exclusive_table="jobs")

    def create(self, job_id: str, model: str, upload: dict[str, Any], params: dict[str, Any]) -> Job:
        with self.database.transaction() as db:
            _insert(db, job_id, model, upload, params, UPLOAD)
        return self.get(job_id)

    def create_automatic(
        self, job_id: str, model: str, upload: dict[str, Any], params: dict[str, Any], last_watermark: int
    ) -> Job | None:
        """Queue an automatic job on the examples up to `upload["examples_watermark"]`, unless another automatic
        job of the model waits or runs, or another attempt was made since the caller saw `last_watermark`
        (then None). Checked and written in one exclusive transaction: one winner across processes."""
        try:
            with self.database.transaction() as db:
                if _last_automatic_watermark(db, self.database.dialect, model) != last_watermark:
                    return None
                _insert(db, job_id, model, upload, params, AUTOMATIC)
        except self.database.dialect.integrity_errors:  # jobs_one_automatic: one is queued or running
            return None
        return self.get(job_id)

    def last_automatic_watermark(self, model: str) -> int:
        """The highest example id an automatic job of `model` was given (0: none yet)."""
        with self.database.connect() as db:
            return _last_automatic_watermark(db, self.database.dialect, model)

    def active_automatic(self, model: str) -> Job | None:
        with self.database.connect() as db:
            row = db.execute(
                "SELECT * FROM jobs WHERE model = ? AND trigger = ? AND status IN (?, ?)",
                (model, AUTOMATIC, QUEUED, RUNNING),
            ).fetchone()
        return None if row is None else Job.from_row(row)

    def uploads_since(self, model: str, created_at: str) -> list[Job]:
        """The upload jobs of `model` created at or after `created_at` (an ISO time), oldest first."""
        with self.database.connect() as db:
            rows = db.execute(
                "SELECT * FROM jobs WHERE model = ? AND trigger = ? AND created_at >= ? ORDER BY seq",
                (model, UPLOAD, created_at),
            ).fetchall()
        return [Job.from_row(row) for row in rows]

    def upload_ids(self) -> set[str]:
        """The ids of the uploads that jobs train on (any state: a finished job's upload is replayed later)."""
        with self.database.connect() as db:
            upload_id = self.database.dialect.json_text("upload", "id")
            rows = db.execute(f"SELECT {upload_id} FROM jobs").fetchall()  # noqa: S608 - the dialect's SQL
        return {row[0] for row in rows if row[0]}

    def get(self, job_id: str) -> Job:
        with self.database.connect() as db:
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise NotFound(f"there is no job {job_id[:64]!r}; GET /jobs lists them")
        return Job.from_row(row)

    def recent(self, limit: int = 50, status: str | None = None) -> list[Job]:
        with self.database.connect() as db:
            if status:
                rows = db.execute(
                    "SELECT * FROM jobs WHERE status = ? ORDER BY seq DESC LIMIT ?", (status, limit)
                ).fetchall()
            else:
                rows = db.execute("SELECT * FROM jobs ORDER BY seq DESC LIMIT ?", (limit,)).fetchall()
        return [Job.from_row(row) for row in rows]

    def has_queued(self) -> bool:
        with self.database.connect() as db:
            return db.execute("SELECT 1 FROM jobs WHERE status = ? LIMIT 1", (QUEUED,)).fetchone() is not None

    def claim_next(self, owner: str, lease_seconds: float) -> Job | None:
        """Hold the oldest job that is queued (its model has no job running) or running under an expired lease,
        for `owner` until `lease_seconds` from now (renew extends it). One exclusive transaction (SQLite: BEGIN
        IMMEDIATE; PostgreSQL: the table locked against other writers, the row FOR UPDATE SKIP LOCKED): one winner
        across processes and hosts. A job claimed again keeps in progress["lease_expired"] its lost run's progress and
        attempts: that run may have got as far as a verdict. Its attempts count on up to MAX_ATTEMPTS."""
        now = time.time()
        with self.database.transaction() as db:
            claimable = (
                "SELECT * FROM jobs AS j WHERE (status = ? AND NOT EXISTS "
                "(SELECT 1 FROM jobs AS r WHERE r.model = j.model AND r.status = ?)) "
                "OR (status = ? AND lease_expires < ?) ORDER BY seq LIMIT 1"
            )
            skip_locked = self.database.dialect.skip_locked
            row = db.execute(claimable + skip_locked, (QUEUED, RUNNING, RUNNING, now)).fetchone()
            if row is None:
                return None
            job = Job.from_row(row)
            progress: dict[str, Any] = {"stage": "starting"}
            attempts = job.attempts + 1
            if job.status == RUNNING:
                lost = {"owner": job.lease_owner, "attempts": job.attempts, "progress": job.progress}
                progress["lease_expired"] = lost
                attempts = job.attempts if job.attempts >= MAX_ATTEMPTS else attempts  # it will not run again
            db.execute(
                "UPDATE jobs SET status = ?, lease_owner = ?, lease_expires = ?, started_at = ?, attempts = ?, "
                "progress = ?, history = '[]', result = NULL, error = NULL, finished_at = NULL WHERE id = ?",
                (RUNNING, owner, now + lease_seconds, utc_now(), attempts, json.dumps(progress), job.id),
            )
        return self.get(job.id)

    def renew(self, job_id: str, owner: str, lease_seconds: float) -> bool:
        """Extend `owner`'s lease on a running job; False: it has expired (or was never its)."""
        now = time.time()
        with self.database.transaction() as db:
            renewed = db.execute(
                "UPDATE jobs SET lease_expires = ? "
                "WHERE id = ? AND status = ? AND lease_owner = ? AND lease_expires > ?",
                (now + lease_seconds, job_id, RUNNING, owner, now),
            )
            return renewed.rowcount == 1

    def expire_lease(self, job_id: str, owner: str) -> None:
        """End `owner`'s lease now (its process is known to be gone): the job can be claimed again at once."""
        with self.database.transaction() as db:
            db.execute(
                "UPDATE jobs SET lease_expires = 0 WHERE id = ? AND status = ? AND lease_owner = ?",
                (job_id, RUNNING, owner),
            )

    def release(self, job_id: str, owner: str) -> None:
        """Give a job that a graceful stop ended back to the queue (that run does not count as an attempt)."""
        with self.database.transaction() as db:
            db.execute(
                "UPDATE jobs SET status = ?, attempts = attempts - 1, progress = NULL, lease_owner = NULL, "
                "lease_expires = NULL, finished_at = NULL WHERE id = ? AND status = ? AND lease_owner = ?",
                (QUEUED, job_id, RUNNING, owner),
            )

    def set_progress(self, job_id: str, progress: dict[str, Any], epoch: dict[str, Any] | None = None) -> None:
        with self.database.transaction() as db:
            if epoch is not None:
                history = self.database.dialect.json_append("history")
                db.execute(
                    f"UPDATE jobs SET progress = ?, history = {history} WHERE id = ? AND status = ?",  # noqa: S608
                    (json.dumps(progress), json.dumps(epoch), job_id, RUNNING),
                )
            else:
                db.execute(
                    "UPDATE jobs SET progress = ? WHERE id = ? AND status = ?",
                    (json.dumps(progress), job_id, RUNNING),
                )

    def record_outcome(
        self,
        job_id: str,
        status: str,
        result: dict[str, Any] | None,
        error: str | None,
        owner: str | None = None,
        publish: Callable[[], None] | None = None,
    ) -> bool:
        """The training process's verdict; the job becomes final when its runner has swapped models. With `owner`:
        only while it holds the job's lease, and `publish` (make the version serve) runs inside the same
        transaction, so a worker whose lease expired never publishes. False: the lease was lost."""
        outcome = {"status": status, "result": result, "error": error}
        with self.database.transaction() as db:
            if owner is not None and not _holds_lease(db, job_id, owner):
                return False
            progress = self.database.dialect.json_set("progress", {"stage": "'finishing'", "outcome": "?"})
            db.execute(
                f"UPDATE jobs SET progress = {progress} WHERE id = ? AND status = ?",  # noqa: S608 - dialect SQL
                (json.dumps(outcome), job_id, RUNNING),
            )
            if publish is not None:
                publish()
        return True

    def finish(
        self,
        job_id: str,
        status: str,
        result: dict[str, Any] | None = None,
        error: str | None = None,
        owner: str | None = None,
    ) -> None:
        """Make the job final (with `owner`: only if it still holds the job, so a lost run never ends a new one)."""
        # PostgreSQL cannot type a bare `? IS NULL`: the owner's condition is there or not.
        held = "" if owner is None else " AND lease_owner = ?"
        with self.database.transaction() as db:
            db.execute(
                f"UPDATE jobs SET status = ?, finished_at = ?, result = ?, error = ?, lease_expires = NULL "  # noqa: S608
                f"WHERE id = ?{held}",
                (status, utc_now(), json.dumps(result) if result is not None else None, error, job_id)
                + (() if owner is None else (owner,)),
            )

    def running(self) -> list[Job]:
        return self.recent(limit=1000, status=RUNNING)

    def retry(self, job_id: str) -> Job:
        try:
            with self.database.transaction() as db:
                row = db.execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()
                if row is None:
                    raise NotFound(f"there is no job {job_id[:64]!r}; GET /jobs lists them")
                if row["status"] not in RETRYABLE:
                    raise Conflict(
                        f"job {job_id} is {row['status']}; only {' or '.join(RETRYABLE)} jobs can be retried"
                    )
                db.execute(
                    "UPDATE jobs SET status = ?, progress = NULL, finished_at = NULL WHERE id = ?", (QUEUED, job_id)
                )
        except self.database.dialect.integrity_errors:
            raise Conflict(
                f"job {job_id} is automatic and another automatic job of its model is queued or running; "
                "retry it once that one has finished"
            ) from None
        return self.get(job_id)


def _insert(
    db: Connection, job_id: str, model: str, upload: dict[str, Any], params: dict[str, Any], trigger: str
) -> None:
    db.execute(
        "INSERT INTO jobs (id, model, status, created_at, upload, params, trigger) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (job_id, model, QUEUED, utc_now(), json.dumps(upload), json.dumps(params), trigger),
    )


def _holds_lease(db: Connection, job_id: str, owner: str) -> bool:
    row = db.execute(
        "SELECT 1 FROM jobs WHERE id = ? AND status = ? AND lease_owner = ? AND lease_expires > ?",
        (job_id, RUNNING, owner, time.time()),
    ).fetchone()
    return row is not None


def _last_automatic_watermark(db: Connection, dialect: Dialect, model: str) -> int:
    watermark = dialect.json_int("upload", "examples_watermark")
    query = f"SELECT max({watermark}) FROM jobs WHERE model = ? AND trigger = ?"  # noqa: S608 - the dialect's SQL
    row = db.execute(query, (model, AUTOMATIC)).fetchone()
    return int(row[0] or 0)
