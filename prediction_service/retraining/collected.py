"""Labelled examples collected since the serving version was trained, and the snapshot a job trains on.

"Since the serving version": feedback examples with an id above its watermark (the highest example id a
version in its lineage trained on, from the manifests: it follows rollbacks and survives restarts), and the
uploads received since it was made that it has not learned from (not in its lineage).
"""

from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from prediction_service.retraining import replay
from prediction_service.retraining.intake import recipe
from prediction_service.storage.examples import FEEDBACK, ExampleStore
from prediction_service.storage.jobs import JobStore
from prediction_service.storage.versions import ModelStore, utc_now

UPLOADS = "uploads"
SNAPSHOT_LAYOUT = "collected examples"
# A job takes at most this many collected examples, the newest: as many as MNIST's training set, enough to learn
# from; the snapshot is built in the server's memory (about 190 MB of 28x28 float32 images at this bound).
MAX_SNAPSHOT_EXAMPLES = 60_000


@dataclass(frozen=True)
class Collected:
    serving_version: int | None
    watermark: int  # examples with a higher id are new to the serving version
    by_source: dict[str, Counter[str]]  # source -> label -> count

    @property
    def total(self) -> int:
        return sum(sum(counts.values()) for counts in self.by_source.values())

    def by_label(self) -> Counter[str]:
        return sum(self.by_source.values(), Counter())


@dataclass(frozen=True)
class Snapshot:
    """Collected examples as a training set (storage.uploads.Dataset): inputs and class indices."""

    inputs: np.ndarray
    labels: np.ndarray
    manifest: dict[str, Any]


class CollectedExamples:
    def __init__(self, examples: ExampleStore, jobs: JobStore, store: ModelStore) -> None:
        self.examples = examples
        self.jobs = jobs
        self.store = store

    def watermark(self, model: str) -> int:
        """The highest example id the serving version's lineage trained on (0: none)."""
        pointer = self.store.serving(model)
        if pointer is None:
            return 0
        return max(
            (
                int(manifest.get("training_data", {}).get("examples_watermark") or 0)
                for manifest in replay.lineage(self.store, model, pointer.version)
            ),
            default=0,
        )

    def since_serving(self, model: str) -> Collected:
        pointer = self.store.serving(model)
        watermark = self.watermark(model)
        by_source = self.examples.counts(model, watermark)
        if pointer is not None:
            uploads = Counter[str]()
            created_at = self.store.read_version(model, pointer.version, verify=False).manifest.get("created_at", "")
            learned = set(replay.lineage_uploads(self.store, model, pointer.version))
            for job in self.jobs.uploads_since(model, created_at):
                if job.upload.get("id") not in learned:
                    uploads.update({label: int(n) for label, n in job.upload.get("label_counts", {}).items() if n})
            if uploads:
                by_source[UPLOADS] = uploads
        return Collected(None if pointer is None else pointer.version, watermark, by_source)

    def snapshot(self, model: str, job_id: str, after: int, up_to: int, labels: list[str]) -> Snapshot | None:
        """The examples with `after` < id <= `up_to`, at most MAX_SNAPSHOT_EXAMPLES of them (the newest), their
        labels as indices into `labels` (the model's); None if none of them has one of those labels."""
        index = {label: position for position, label in enumerate(labels)}
        taken = self.examples.between(model, after, up_to, newest=MAX_SNAPSHOT_EXAMPLES)
        if len(taken) == MAX_SNAPSHOT_EXAMPLES:  # older ones may have been left out: the range says what was taken
            after = taken[0].id - 1
        chosen = [example for example in taken if example.label in index]
        if not chosen:
            return None
        counts = Counter(example.label for example in chosen)
        manifest = {
            "id": job_id,
            "filename": f"{FEEDBACK} examples {after + 1}-{up_to}",  # what the job and its version show as its name
            recipe(model).unit: len(chosen),  # as an upload's summary says it
            "layout": SNAPSHOT_LAYOUT,
            "label_counts": {label: counts.get(label, 0) for label in labels},
            "received_at": utc_now(),
            "source": FEEDBACK,
            "examples_from": after,
            "examples_watermark": up_to,
        }
        return Snapshot(
            np.stack([example.input for example in chosen]),
            np.array([index[example.label] for example in chosen], dtype=np.uint8),
            manifest,
        )
