"""Accepting an upload (a zip of digits, a CSV of penguins): validate it completely, store it, then record a
queued job."""

import hashlib
import logging
from pathlib import Path
from typing import Any, BinaryIO

from prediction_service.core.errors import InvalidInput
from prediction_service.core.settings import Settings
from prediction_service.models.catalog import model_named
from prediction_service.models.interface import RetrainingRecipe
from prediction_service.models.penguins import PENGUINS
from prediction_service.retraining.archive import ArchiveLimits, DecodeChunks, read_labelled_zip
from prediction_service.retraining.penguin_rows import CsvLimits, read_penguin_rows
from prediction_service.storage.jobs import Job, JobStore, new_job_id
from prediction_service.storage.uploads import Dataset, UploadStore
from prediction_service.storage.versions import utc_now

log = logging.getLogger(__name__)


def recipe(model: str) -> RetrainingRecipe:
    """How the model retrains (its unit, its parameters); an error saying so if it does not."""
    retraining = model_named(model).retraining
    if retraining is None:
        raise InvalidInput(f"the model {model!r} is not retrained")
    return retraining


def training_params(settings: Settings, model: str) -> dict[str, Any]:
    """A new job's parameters: what its model's retraining takes, from the settings of now."""
    return recipe(model).params(settings)


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
        self.csv_limits = CsvLimits(settings.max_csv_rows, settings.max_csv_bytes)
        self.settings = settings
        self.decode_chunks = decode_chunks

    def accept(self, model: str, file: BinaryIO, filename: str | None) -> Job:
        """A zip of labelled images. Blocking (run it in a thread). Raises a ServiceError saying what to fix."""
        with self.uploads.incoming() as path:
            size, sha256 = _copy_and_hash(file, path)
            data = read_labelled_zip(path, self.limits, self.decode_chunks)
        summary = {"bytes": size, "sha256": sha256, "images": len(data.labels), "layout": data.layout}
        return self._queue(model, data, data.label_counts(), summary, filename)

    def accept_penguin_rows(self, file: BinaryIO, filename: str | None, species: list[str]) -> Job:
        """A CSV of labelled penguins (labels: `species`, the serving version's classes). Blocking, like `accept`."""
        file.seek(0)
        content = file.read(self.csv_limits.max_bytes + 1)  # one byte more than allowed tells it is too large
        data = read_penguin_rows(content, species, self.csv_limits)
        summary = {
            "bytes": len(content),
            "sha256": hashlib.sha256(content).hexdigest(),
            "rows": len(data.labels),
            "layout": "csv",
        }
        return self._queue(PENGUINS, data, data.label_counts(), summary, filename)

    def _queue(
        self, model: str, data: Dataset, label_counts: dict[str, int], summary: dict[str, Any], filename: str | None
    ) -> Job:
        """Store a checked upload, then record its job: queued, with the parameters of now."""
        job_id = new_job_id()
        upload = {
            "id": job_id,
            "filename": (filename or "")[:200],
            **summary,
            "label_counts": label_counts,
            "received_at": utc_now(),
        }
        self.uploads.save(job_id, data, upload)
        job = self.jobs.create(job_id, model, upload, training_params(self.settings, model))
        log.info("accepted an upload of %d labelled examples for %s as job %s", len(data.labels), model, job_id)
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
