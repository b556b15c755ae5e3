"""The replay pool: the labelled examples a version of a model learned from.

Fine-tuning on an upload alone makes the CNN forget the classes the upload lacks, so
every retraining job mixes in a sample of what the serving version learned from (a
KNN, which is its memory, takes all of it).
That data is derived from the store, never kept as a separate list that a crash
could leave out of step:

- the first version learned from its training set, of which a bounded sample is
  kept beside the versions (`MODEL_DIR/<model>/replay-initial.npz`, or in the object store);
- a retrained version learned from its parent's data plus its job's upload
  (`MODEL_DIR/uploads/<id>/`, or in the object store), named in its manifest.

So the pool follows the serving version through rollbacks, survives restarts, and is
the same for every process that shares the store.
"""

import io
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from prediction_service.core.errors import NotFound
from prediction_service.storage.layout import REPLAY_INITIAL
from prediction_service.storage.uploads import UploadStore
from prediction_service.storage.versions import ModelStore

log = logging.getLogger(__name__)

# Enough of the first training set to replay every class many times over, small on disk (~8 MB).
INITIAL_MAX_IMAGES = 10_000
INITIAL = "initial"


@dataclass(frozen=True)
class ReplaySample:
    inputs: np.ndarray
    labels: np.ndarray
    # Where the pool comes from: "initial" and the upload ids, oldest first.
    sources: list[str]
    pool_size: int


def save_initial(store: ModelStore, model: str, inputs: np.ndarray, labels: np.ndarray, seed: int = 0) -> int:
    """Keep a bounded, shuffled sample of the first training set; returns how many examples it holds."""
    keep = np.random.default_rng(seed).permutation(len(labels))[:INITIAL_MAX_IMAGES]
    buffer = io.BytesIO()
    np.savez(buffer, inputs=inputs[keep], labels=np.asarray(labels, dtype=np.uint8)[keep])
    store.write_shared(model, REPLAY_INITIAL, buffer.getvalue())
    return len(keep)


def lineage(store: ModelStore, model: str, version: int) -> list[dict[str, Any]]:
    """The manifests of `version` and of its parents back to the first version, newest first."""
    manifests: list[dict[str, Any]] = []
    seen: set[int] = set()
    current: int | None = version
    while current is not None and current not in seen:
        seen.add(current)
        manifest = store.read_version(model, current, verify=False).manifest
        manifests.append(manifest)
        current = manifest.get("parent_version")
    return manifests


def lineage_uploads(store: ModelStore, model: str, version: int) -> list[str]:
    """The uploads `version` learned from, oldest first (walking its manifests back to the first version)."""
    uploads = [manifest.get("training_data", {}).get("upload_id") for manifest in lineage(store, model, version)]
    return [upload_id for upload_id in uploads[::-1] if upload_id]


def sample(
    store: ModelStore, uploads: UploadStore, model: str, version: int, size: int | None, seed: int, like: np.ndarray
) -> ReplaySample:
    """Up to `size` examples (None: all) drawn uniformly from everything `version` learned from.

    `like` has the examples' shape and dtype (e.g. the job's upload): an empty sample has them too.
    """
    parts: list[tuple[str, np.ndarray, np.ndarray]] = []
    initial = store.shared_file(model, REPLAY_INITIAL)
    if initial is not None:
        with np.load(initial, allow_pickle=False) as data:
            # Kept before the pool took any model's inputs: named `images`.
            parts.append((INITIAL, data["inputs"] if "inputs" in data.files else data["images"], data["labels"]))
    else:
        log.warning("no %s beside the %s versions: replaying uploads only", REPLAY_INITIAL, model)
    for upload_id in lineage_uploads(store, model, version):
        try:
            inputs, labels = uploads.load(upload_id)
        except NotFound as error:  # removed by hand: replay the rest rather than fail the job
            log.warning("replay pool: %s", error.detail)
            continue
        parts.append((upload_id, inputs, labels))
    pool_size = sum(len(labels) for _, _, labels in parts)
    if size is None:
        size = pool_size
    if size <= 0 or pool_size == 0:
        return ReplaySample(like[:0], np.empty(0, np.uint8), [], pool_size)
    picks = np.sort(np.random.default_rng(seed).permutation(pool_size)[:size])
    chosen_inputs, chosen_labels, offset = [], [], 0
    for _, inputs, labels in parts:
        local = picks[(picks >= offset) & (picks < offset + len(labels))] - offset
        chosen_inputs.append(inputs[local])
        chosen_labels.append(labels[local])
        offset += len(labels)
    return ReplaySample(
        np.concatenate(chosen_inputs),
        np.concatenate(chosen_labels).astype(np.uint8),
        [name for name, _, _ in parts],
        pool_size,
    )
