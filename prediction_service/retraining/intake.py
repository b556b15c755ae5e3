"""Accepting an upload: validate it completely, store it, then record a queued job."""

import hashlib
import logging
from pathlib import Path
from typing import Any, BinaryIO

from prediction_service.core.settings import Settings
from prediction_service.retraining.archive import ArchiveLimits, DecodeChunks, read_labelled_zip
from prediction_service.storage.jobs import Job, JobStore, new_job_id
from prediction_service.storage.uploads import UploadStore
from prediction_service.storage.versions import utc_now

log = logging.getLogger(__name__)


def training_params(settings: Settings) -> dict[str, Any]:
    return {
        "epochs": settings.retrain_epochs,
        "batch_size": settings.retrain_batch_size,
        "validation_split": settings.retrain_validation_split,
        "learning_rate": settings.retrain_learning_rate,
        "replay_size": settings.retrain_replay_size,
        "gate_margin": settings.retrain_gate_margin,
    }


class Intake:
    def __init__(
        self,
        jobs: JobStore,
        uploads: UploadStore,
        limits: ArchiveLimits,
        settings: Settings,
        decode_chunks: DecodeChunks | None = None,
    ) -> None:
        self.jobs = jobs
        self.uploads = uploads
        self.limits = limits
        self.settings = settings
        self.decode_chunks = decode_chunks

    def accept(self, model: str, file: BinaryIO, filename: str | None) -> Job:
        """Blocking (run it in a thread). Raises a ServiceError saying what to fix."""
        with self.uploads.incoming() as path:
            size, sha256 = _copy_and_hash(file, path)
            data = read_labelled_zip(path, self.limits, self.decode_chunks)
        job_id = new_job_id()
        upload = {
            "id": job_id,
            "filename": (filename or "")[:200],
            "bytes": size,
            "sha256": sha256,
            "images": len(data.labels),
            "layout": data.layout,
            "label_counts": data.label_counts(),
            "received_at": utc_now(),
        }
        self.uploads.save(job_id, data, upload)
        job = self.jobs.create(job_id, model, upload, training_params(self.settings))
        log.info("accepted upload of %d images as job %s", len(data.labels), job_id)
        return job


def _copy_and_hash(source: BinaryIO, path: Path) -> tuple[int, str]:
    """Copy the received upload to `path` (a name the service made), hashing it on the way."""
    source.seek(0)
    digest = hashlib.sha256()
    size = 0
    with path.open("wb") as target:
        for chunk in iter(lambda: source.read(1 << 20), b""):
            digest.update(chunk)
            target.write(chunk)
            size += len(chunk)
    return size, digest.hexdigest()
