"""The retraining job, run in its own process at low priority:

    python -m prediction_service.retraining.training_job MODEL_DIR JOB_ID [--threads N] [--niceness N]
        [--lease-owner OWNER] [--store-url s3://bucket/prefix]

It fine-tunes a fresh copy of the serving version (never the object that serves)
on the job's uploaded data plus a replay sample of what that version learned
from (so it does not forget the classes the upload lacks), scores it on the
model's fixed hold-out set, stores it as a new version, and makes it serve only
if it passes the gate (only while its runner holds the job's lease: the verdict and the
publication are one step with that check). A candidate that the model itself refuses (e.g. its fast
path would answer otherwise than what it learned) is rejected and not stored.
What the model needs for this is its `retraining` (models.interface), which also
bounds its threads: only the digit model's jobs load TensorFlow. Progress goes
to the job record after every epoch.
"""

import argparse
import functools
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from prediction_service.core.child_process import child_arguments, set_up_child
from prediction_service.core.provenance import library_versions
from prediction_service.core.settings import Settings
from prediction_service.models.catalog import model_named
from prediction_service.models.interface import RetrainingRecipe, final_epoch
from prediction_service.retraining import replay
from prediction_service.storage.backends import model_store, postgres
from prediction_service.storage.jobs import (
    FAILED,
    REJECTED,
    SUCCEEDED,
    Job,
    JobStore,
    LeaseLost,
    job_result,
    job_result_of,
)
from prediction_service.storage.layout import Layout
from prediction_service.storage.uploads import UploadStore
from prediction_service.storage.versions import ModelStore

log = logging.getLogger("prediction_service.retraining.training_job")


def retrain(
    store: ModelStore,
    jobs: JobStore,
    uploads: UploadStore,
    job: Job,
    retraining: RetrainingRecipe,
    lease_owner: str | None = None,
) -> tuple[str, dict[str, Any]]:
    """Train, gate, store and (if it passed) publish a candidate, and record the verdict; raises LeaseLost (and
    publishes nothing) if `lease_owner` no longer holds the job."""
    params = job.params
    unit = retraining.unit
    epochs = params.get("epochs")  # None: a model that does not train in epochs

    def stage(name: str, **extra: Any) -> None:
        jobs.set_progress(job.id, {"stage": name, "epoch": 0, "epochs": epochs, **extra})

    stage("loading")
    inputs, labels = uploads.load(job.upload["id"])
    holdout = retraining.holdout(store)
    pointer = store.serving(job.model)
    if pointer is None:
        raise RuntimeError(f"{job.model} has no serving version to fine-tune")
    parent = store.read_version(job.model, pointer.version)
    seed = int(job.id[:8], 16)  # reproducible per job, different between jobs
    replayed = replay.sample(store, uploads, job.model, parent.version, params.get("replay_size"), seed, like=inputs)
    counts = {f"upload_{unit}": len(labels), f"replay_{unit}": len(replayed.labels)}

    stage("training", **counts)
    candidate = retraining.fine_tune(
        parent,
        (np.concatenate([inputs, replayed.inputs]), np.concatenate([labels, replayed.labels])),
        params,
        seed,
        on_epoch=lambda epoch: jobs.set_progress(job.id, {"stage": "training", **counts, **epoch}, epoch),
    )
    history = candidate.history
    stage("evaluating", epoch=epochs, **counts)
    candidate_accuracy = candidate.score(holdout)
    refusal = candidate.refusal(holdout)

    # Compare with what serves now (someone may have activated another version meanwhile).
    serving = store.read_version(job.model, (store.serving(job.model) or pointer).version)
    serving_accuracy = serving.manifest.get("metrics", {}).get(retraining.gate_metric)
    if serving_accuracy is None:  # a version stored before the model had this metric
        serving_accuracy = retraining.score(serving, holdout)
    margin = params["gate_margin"]
    passed = refusal is None and candidate_accuracy >= serving_accuracy - margin
    gate = {
        "passed": passed,
        "candidate_accuracy": round(candidate_accuracy, 4),
        "serving_version": serving.version,
        "serving_accuracy": round(serving_accuracy, 4),
        "margin": margin,
        "rule": "publish if candidate_accuracy >= serving_accuracy - margin",
        **({"refused": refusal} if refusal else {}),
    }
    log.info("job %s gate: %s", job.id, gate)

    stage("publishing", epoch=epochs, **counts)
    manifest = {
        "source": "retraining",
        "job_id": job.id,
        "parent_version": parent.version,
        "training_data": {
            "description": f"upload {job.upload['id']} ({job.upload.get('filename') or 'unnamed'}): "
            f"{len(labels)} {unit}, {job.upload.get('layout')}",
            "sha256": job.upload.get("sha256"),
            "upload_id": job.upload["id"],
            "unit": unit,
            unit: len(labels),
            f"replay_{unit}": len(replayed.labels),
            "replay_pool": {unit: replayed.pool_size, "sources": replayed.sources},
            # Collected examples (an automatic job): the highest example id learned, the lineage's watermark.
            **({"examples_watermark": job.upload["examples_watermark"]} if "examples_watermark" in job.upload else {}),
        },
        "trigger": job.trigger,
        "parameters": {key: value for key, value in params.items() if key != "gate_margin"},
        "metrics": {retraining.gate_metric: round(candidate_accuracy, 4), **final_epoch(history)},
        "gate": gate,
        "history": history,
        "libraries": library_versions(),
    }
    parent_classes = parent.manifest.get("classes")
    if parent_classes is not None:  # what the labels mean (the indices of the parent's classes)
        manifest["classes"] = parent_classes
    publish: Callable[[], Any] | None = None
    if refusal is not None:  # never stored: activating it by hand would serve what it refuses
        status, result = REJECTED, {**job_result_of(manifest, None, False), "refused": refusal}
    else:
        stored = store.add_version(job.model, candidate.save, manifest)
        status, result = (SUCCEEDED if passed else REJECTED), job_result(stored, passed)
        if passed:
            publish = functools.partial(store.set_serving, job.model, stored.version)
    if not jobs.record_outcome(job.id, status, result, None, owner=lease_owner, publish=publish):
        raise LeaseLost(f"job {job.id}: the lease expired before the verdict; another worker runs the job")
    return status, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m prediction_service.retraining.training_job", description=__doc__)
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("job_id")
    parser.add_argument("--niceness", type=int, default=10)
    parser.add_argument("--lease-owner", default=None, help="publish only while this owner holds the job's lease")
    parser.add_argument("--store-url", default=None, help="MODEL_STORE_URL (unset: MODEL_DIR)")
    args = child_arguments(parser).parse_args(argv)

    set_up_child(args)
    if args.niceness > os.getpriority(os.PRIO_PROCESS, 0):  # the server may have lowered it already
        os.setpriority(os.PRIO_PROCESS, 0, args.niceness)

    layout = Layout(args.model_dir)
    settings = Settings(model_dir=args.model_dir, model_store_url=args.store_url)  # DATABASE_URL: from the runner
    server = postgres(settings)
    store = model_store(settings, server)
    jobs = JobStore(server or layout.jobs)
    uploads = UploadStore(layout.uploads, store.objects)
    job = jobs.get(args.job_id)
    try:
        retraining = model_named(job.model).retraining
        if retraining is None:
            raise RuntimeError(f"{job.model} cannot be retrained")
        retraining.set_up_process(args.threads)
        status, result = retrain(store, jobs, uploads, job, retraining, args.lease_owner)
    except LeaseLost as error:
        log.warning("%s", error)
        return 1
    except Exception as error:
        log.exception("job %s failed", job.id)
        why = f"{type(error).__name__}: {getattr(error, 'detail', error)}"
        jobs.record_outcome(job.id, FAILED, None, why, owner=args.lease_owner)
        return 1
    log.info("job %s %s: version %s", job.id, status, result.get("version"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
