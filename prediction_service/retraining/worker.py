"""The retraining job, run in its own process at low priority:

    python -m prediction_service.retraining.worker MODEL_DIR JOB_ID [--threads N] [--niceness N]

It fine-tunes a fresh copy of the serving CNN (never the object that serves)
on the job's uploaded images plus a replay sample of what that version learned
from (so it does not forget the classes the upload lacks), scores it on the
fixed hold-out set, stores it as a new version, and makes it serve only if it
passes the gate. Progress goes to the job record after every epoch.
"""

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from prediction_service import logs
from prediction_service.catalog import MNIST, final_epoch, load_holdout
from prediction_service.child_process import die_with_parent
from prediction_service.jobs import FAILED, REJECTED, SUCCEEDED, Job, JobStore
from prediction_service.ml import tf_runtime
from prediction_service.provenance import library_versions
from prediction_service.retraining import replay
from prediction_service.retraining.uploads import UploadStore
from prediction_service.store import ModelStore

log = logging.getLogger("prediction_service.retraining.worker")

JOBS_FILE = "jobs.sqlite3"
UPLOADS_DIR = "uploads"


def retrain(store: ModelStore, jobs: JobStore, uploads: UploadStore, job: Job) -> tuple[str, dict[str, Any]]:
    from prediction_service.ml import digits  # TensorFlow, after the thread limits are set

    params = job.params

    def stage(name: str, **extra: Any) -> None:
        jobs.set_progress(job.id, {"stage": name, "epoch": 0, "epochs": params["epochs"], **extra})

    stage("loading")
    images, labels = uploads.load(job.upload["id"])
    holdout = load_holdout(store)
    pointer = store.serving(MNIST)
    if pointer is None:
        raise RuntimeError("mnist has no serving version to fine-tune")
    parent = store.read_version(MNIST, pointer.version)
    model = digits.load_model(parent.path)
    seed = int(job.id[:8], 16)  # reproducible per job, different between jobs
    replayed = replay.sample(store, uploads, MNIST, parent.version, params.get("replay_size", 0), seed)
    counts = {"upload_images": len(labels), "replay_images": len(replayed.labels)}

    stage("training", **counts)
    history = digits.fit(
        model,
        np.concatenate([images, replayed.images]),
        np.concatenate([labels, replayed.labels]),
        epochs=params["epochs"],
        batch_size=params["batch_size"],
        validation_split=params["validation_split"],
        learning_rate=params.get("learning_rate", 0.001),
        seed=seed,
        on_epoch=lambda epoch: jobs.set_progress(job.id, {"stage": "training", **counts, **epoch}, epoch),
    )
    stage("evaluating", epoch=params["epochs"], **counts)
    candidate_accuracy = digits.accuracy(model, *holdout)

    # Compare with what serves now (someone may have activated another version meanwhile).
    serving = store.read_version(MNIST, (store.serving(MNIST) or pointer).version)
    serving_accuracy = serving.manifest.get("metrics", {}).get("holdout_accuracy")
    if serving_accuracy is None:
        serving_accuracy = digits.accuracy(digits.load_model(serving.path), *holdout)
    margin = params["gate_margin"]
    passed = candidate_accuracy >= serving_accuracy - margin
    gate = {
        "passed": passed,
        "candidate_accuracy": round(candidate_accuracy, 4),
        "serving_version": serving.version,
        "serving_accuracy": round(serving_accuracy, 4),
        "margin": margin,
        "rule": "publish if candidate_accuracy >= serving_accuracy - margin",
    }
    log.info("job %s gate: %s", job.id, gate)

    stage("publishing", epoch=params["epochs"], **counts)
    manifest = {
        "source": "retraining",
        "job_id": job.id,
        "parent_version": parent.version,
        "training_data": {
            "description": f"upload {job.upload['id']} ({job.upload.get('filename') or 'unnamed'}): "
            f"{len(labels)} images, {job.upload.get('layout')}",
            "sha256": job.upload.get("sha256"),
            "upload_id": job.upload["id"],
            "images": len(labels),
            "replay_images": len(replayed.labels),
            "replay_pool": {"images": replayed.pool_size, "sources": replayed.sources},
        },
        "parameters": {
            key: params[key]
            for key in ("epochs", "batch_size", "validation_split", "learning_rate", "replay_size")
            if key in params
        },
        "metrics": {"holdout_accuracy": round(candidate_accuracy, 4), **final_epoch(history)},
        "gate": gate,
        "history": history,
        "libraries": library_versions(),
    }
    stored = store.add_version(MNIST, lambda folder: digits.save(model, folder), manifest)
    if passed:
        store.set_serving(MNIST, stored.version)
    result = {
        "version": stored.version,
        "published": passed,
        "holdout_accuracy": gate["candidate_accuracy"],
        "serving_version": serving.version,
        "serving_accuracy": gate["serving_accuracy"],
        "margin": margin,
        **counts,
    }
    return (SUCCEEDED if passed else REJECTED), result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m prediction_service.retraining.worker", description=__doc__)
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("job_id")
    parser.add_argument("--parent-pid", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--niceness", type=int, default=10)
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--json-logs", action="store_true")
    args = parser.parse_args(argv)

    if args.parent_pid is not None:
        die_with_parent(args.parent_pid)
    if args.niceness > os.getpriority(os.PRIO_PROCESS, 0):  # the server may have lowered it already
        os.setpriority(os.PRIO_PROCESS, 0, args.niceness)
    logs.configure(args.log_level, args.json_logs)
    tf_runtime.limit_threads(args.threads, 1)

    store = ModelStore(args.model_dir)
    jobs = JobStore(args.model_dir / JOBS_FILE)
    uploads = UploadStore(args.model_dir / UPLOADS_DIR)
    job = jobs.get(args.job_id)
    try:
        status, result = retrain(store, jobs, uploads, job)
    except Exception as error:
        log.exception("job %s failed", job.id)
        jobs.record_outcome(job.id, FAILED, None, f"{type(error).__name__}: {getattr(error, 'detail', error)}")
        return 1
    jobs.record_outcome(job.id, status, result, None)
    log.info("job %s %s: version %s", job.id, status, result["version"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
