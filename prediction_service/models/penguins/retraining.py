"""Retraining the penguin model: refit the tutorial's pipeline on everything the parent learned plus new rows.

A KNN is its memory, so nothing is fine-tuned: the new version is the same pipeline fitted on the parent's
training rows (the replay pool: the first training split and every upload of its lineage, all of it) and
the job's rows. Labels are indices into the version's `classes`. Every version is scored on the first
training's test split, kept as the hold-out set, and one whose fast path would answer otherwise than its
pipeline is never published.
"""

import io
import logging
from pathlib import Path
from typing import Any

import numpy as np

from prediction_service.core.settings import Settings, get_settings
from prediction_service.models.interface import ProgressCallback
from prediction_service.models.penguins import PENGUINS
from prediction_service.models.penguins.knn import (
    NEIGHBORS,
    PenguinClassifier,
    TrainedPenguins,
    fast_path_disagreements,
    feature_ranges,
    fit_pipeline,
    plausible_grid,
    save_model,
    train,
)
from prediction_service.retraining import replay
from prediction_service.storage.layout import HOLDOUT
from prediction_service.storage.versions import ModelStore, StoredVersion

log = logging.getLogger(__name__)

Holdout = tuple[np.ndarray, np.ndarray]
MAX_LISTED = 5


class PenguinsCandidate:
    """A refitted pipeline, not yet stored."""

    def __init__(self, classifier: PenguinClassifier, features: np.ndarray, labels: np.ndarray) -> None:
        self.classifier = classifier
        self.features = features
        self.labels = labels
        self.history: list[dict[str, float]] = []  # fitted at once: no epochs

    def score(self, holdout: Holdout) -> float:
        return float(self.classifier.pipeline.score(*holdout))

    def refusal(self, holdout: Holdout) -> str | None:
        return fast_path_refusal(self.classifier, holdout, self.features)

    def save(self, folder: Path) -> None:
        fitted = self.classifier
        save_model(folder, fitted.pipeline, fitted.species, self.features, self.labels, fitted.feature_ranges)


def fast_path_refusal(classifier: PenguinClassifier, holdout: Holdout, training_rows: np.ndarray) -> str | None:
    """Why the version must not serve: rows where what serves (the fast path) and its pipeline disagree."""
    rows = np.vstack([holdout[0], training_rows, plausible_grid()])
    differing = fast_path_disagreements(classifier, rows)
    if not len(differing):
        return None
    shown = ", ".join(f"({bill:g}, {flipper:g})" for bill, flipper in differing[:MAX_LISTED].tolist())
    more = f" and {len(differing) - MAX_LISTED} more" if len(differing) > MAX_LISTED else ""
    return (
        f"the fast path answers otherwise than the pipeline for {len(differing)} of {len(rows)} checked "
        f"(bill_length_mm, flipper_length_mm) rows: {shown}{more}; this version would not serve what it learned"
    )


class PenguinsRetrainingRecipe:
    gate_metric = "holdout_accuracy"
    unit = "rows"

    def params(self, settings: Settings) -> dict[str, Any]:
        # replay_size None: the whole pool; a KNN forgets every row it is not given.
        return {"neighbors": NEIGHBORS, "replay_size": None, "gate_margin": settings.retrain_gate_margin}

    def set_up_process(self, threads: int) -> None:
        pass  # a KNN on a few hundred rows: nothing to bound

    def holdout(self, store: ModelStore) -> Holdout:
        path = store.shared_file(PENGUINS, HOLDOUT)
        if path is None:
            derive_first_training_files(store, get_settings().penguins_csv)
            path = store.model_path(PENGUINS) / HOLDOUT  # just written (and cached)
        with np.load(path, allow_pickle=False) as data:
            return data["x"], data["y"]

    def score(self, version: StoredVersion, holdout: Holdout) -> float:
        return float(PenguinClassifier.load(version.path).pipeline.score(*holdout))

    def fine_tune(
        self,
        parent: StoredVersion,
        data: tuple[np.ndarray, np.ndarray],
        params: dict[str, Any],
        seed: int,
        on_epoch: ProgressCallback,
    ) -> PenguinsCandidate:
        features, labels = np.asarray(data[0], dtype=np.float64), np.asarray(data[1], dtype=np.intp)
        species = list(parent.manifest["classes"])
        classifier = PenguinClassifier(
            fit_pipeline(features, labels), species, features, labels, feature_ranges(features)
        )
        return PenguinsCandidate(classifier, features, labels)


def save_first_training_files(store: ModelStore, trained: TrainedPenguins) -> None:
    """Keep the first training's test split (the hold-out set) and training split (the replay pool's start)."""
    replay.save_initial(store, PENGUINS, trained.train_features, trained.train_labels)
    buffer = io.BytesIO()
    np.savez(buffer, x=trained.test_features, y=trained.test_labels)
    store.write_shared(PENGUINS, HOLDOUT, buffer.getvalue())  # last: it says both are there


def derive_first_training_files(store: ModelStore, csv_path: Path) -> None:
    """For a store whose penguin model was trained before it retrained: split the data again (the split is
    fixed, random_state=0), after checking that it is the data version 1 was trained on."""
    trained = train(csv_path)
    first = store.read_version(PENGUINS, 1, verify=False).manifest.get("training_data", {}).get("sha256")
    if first != trained.data_sha256:
        raise RuntimeError(
            f"the penguin hold-out set is missing and {csv_path} is not the data version 1 was trained on "
            f"(sha256 {trained.data_sha256}, version 1: {first}); set PENGUINS_CSV to that file"
        )
    log.info("keeping the penguin model's hold-out set and first training split (derived from %s)", csv_path)
    save_first_training_files(store, trained)
