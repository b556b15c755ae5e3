"""The training job on penguin rows: publishes only a version whose fast path answers as its pipeline does."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import ROOT, make_settings

from prediction_service.models.penguins.knn import FEATURES, PenguinClassifier
from prediction_service.models.penguins.model import PenguinsModel
from prediction_service.retraining.intake import training_params
from prediction_service.retraining.penguin_rows import LabelledRows
from prediction_service.retraining.training_job import retrain
from prediction_service.storage.jobs import REJECTED, SUCCEEDED, Job, JobStore, LeaseLost
from prediction_service.storage.uploads import UploadStore
from prediction_service.storage.versions import ModelStore

SPECIES = ["Adelie", "Chinstrap", "Gentoo"]
JOB_ID = "0123456789abcdef0123456789abcdef"


def queue_penguin_job(model_dir: Path) -> Job:
    """Every complete row of penguins.csv as it is: the parent's training rows come twice, the hold-out's once;
    rows at equal distance with different species are then common (duplicates, a 0.1 mm grid)."""
    data = pd.read_csv(ROOT / "penguins.csv").dropna()
    rows = LabelledRows(
        data[list(FEATURES)].to_numpy(np.float64),
        data["species"].map(SPECIES.index).to_numpy(np.uint8),
        SPECIES,
    )
    UploadStore(model_dir / "uploads").save(JOB_ID, rows, {"id": JOB_ID})
    jobs = JobStore(model_dir / "jobs.sqlite3")
    upload = {"id": JOB_ID, "rows": len(rows.labels), "layout": "csv", "label_counts": rows.label_counts()}
    jobs.create(JOB_ID, "penguins", upload, training_params(make_settings(model_dir), "penguins"))
    job = jobs.claim_next("a worker", 60)
    assert job is not None
    return job


def run(model_dir: Path) -> tuple[str, dict]:
    job = queue_penguin_job(model_dir)
    store, jobs = ModelStore(model_dir), JobStore(model_dir / "jobs.sqlite3")
    assert PenguinsModel.retraining is not None
    return retrain(store, jobs, UploadStore(model_dir / "uploads"), job, PenguinsModel.retraining)


def test_genuine_rows_with_ties_at_equal_distance_are_published(model_dir: Path) -> None:
    status, result = run(model_dir)
    assert status == SUCCEEDED, result
    assert (result["version"], result["published"]) == (2, True)
    assert ModelStore(model_dir).serving("penguins").version == 2  # type: ignore[union-attr]


def test_a_version_whose_fast_path_differs_from_its_pipeline_is_refused(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fast path that breaks ties its own way (the earlier training row wins) answers otherwise than the
    pipeline for some rows of this data: the job must not publish it, nor keep it to be activated by hand."""
    monkeypatch.setattr(PenguinClassifier, "_undecided", lambda self, distances, order: np.zeros(len(distances), bool))
    status, result = run(model_dir)
    assert status == REJECTED
    assert (result["version"], result["published"]) == (None, False)
    assert "the fast path answers otherwise than the pipeline" in result["refused"]
    assert ModelStore(model_dir).version_numbers("penguins") == [1]
    assert ModelStore(model_dir).serving("penguins").version == 1  # type: ignore[union-attr]


def test_a_penguin_job_runs_without_tensorflow(model_dir: Path) -> None:
    """TensorFlow takes seconds and hundreds of MB to import: only the digit model's jobs may load it."""
    queue_penguin_job(model_dir)
    code = (
        "import sys\n"
        "from prediction_service.retraining import training_job\n"
        f"code = training_job.main([{str(model_dir)!r}, {JOB_ID!r}])\n"
        "assert code == 0, code\n"
        "loaded = [name for name in ('tensorflow', 'keras') if name in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    finished = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert finished.returncode == 0, finished.stderr[-2000:]
    outcome = JobStore(model_dir / "jobs.sqlite3").get(JOB_ID).progress["outcome"]  # type: ignore[index]
    assert outcome["status"] == SUCCEEDED, outcome


def test_a_job_whose_lease_another_worker_took_publishes_nothing(model_dir: Path) -> None:
    """A worker that lost its lease (stalled past it; another worker claimed the job) must not publish."""
    job = queue_penguin_job(model_dir)  # claimed by "a worker"
    jobs = JobStore(model_dir / "jobs.sqlite3")
    jobs.expire_lease(job.id, "a worker")
    assert jobs.claim_next("another worker", 60) is not None
    assert PenguinsModel.retraining is not None
    with pytest.raises(LeaseLost):
        retrain(
            ModelStore(model_dir),
            jobs,
            UploadStore(model_dir / "uploads"),
            job,
            PenguinsModel.retraining,
            lease_owner="a worker",
        )
    assert ModelStore(model_dir).serving("penguins").version == 1  # type: ignore[union-attr]
    assert "outcome" not in (jobs.get(job.id).progress or {})
