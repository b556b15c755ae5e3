"""The penguin-species model: the tutorial's scikit-learn pipeline, and a fast way to serve it.

Training follows the original tutorial exactly: rows with a missing value dropped,
species label-encoded, a stratified split with random_state=0, StandardScaler then
KNN with k=11 on bill and flipper length.
"""

import hashlib
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import LabelEncoder, StandardScaler

FEATURES = ("bill_length_mm", "flipper_length_mm")
# What a measurement may be (the API validates each input with these): a finite number above 0.
MEASUREMENT_LIMITS: dict[str, Any] = {"gt": 0, "allow_inf_nan": False}
# Where a real penguin's measurements lie (Palmer penguins: bill 32-60 mm, flipper 172-231 mm), with room:
# labelled rows outside are refused as typos, and the fast path is checked against the pipeline on this area.
PLAUSIBLE_RANGES = {"bill_length_mm": (20.0, 80.0), "flipper_length_mm": (120.0, 280.0)}
TARGET = "species"
NEIGHBORS = 11
ARTIFACT = "model.pkl"
# Squared scaled distances this close count as equal: far above rounding, far below the data's resolution.
TIE_TOLERANCE = 1e-9


@dataclass
class TrainedPenguins:
    pipeline: Pipeline
    species: list[str]
    train_features: np.ndarray
    train_labels: np.ndarray
    feature_ranges: dict[str, tuple[float, float]]
    test_accuracy: float
    train_rows: int
    test_rows: int
    data_sha256: str
    # The stratified test split: the fixed hold-out set every later version is scored on.
    test_features: np.ndarray
    test_labels: np.ndarray

    def save(self, folder: Path) -> None:
        save_model(folder, self.pipeline, self.species, self.train_features, self.train_labels, self.feature_ranges)

    def manifest(self, csv_path: Path) -> dict:
        return {
            "training_data": {
                "description": f"{csv_path.name}: Palmer penguins, rows with missing values dropped, "
                "stratified 75/25 split (random_state=0)",
                "sha256": self.data_sha256,
                "train_rows": self.train_rows,
                "test_rows": self.test_rows,
            },
            # The test split is the hold-out set: the same figure under the name every model's gate reads.
            "metrics": {
                "test_accuracy": round(self.test_accuracy, 4),
                "holdout_accuracy": round(self.test_accuracy, 4),
            },
            "features": list(FEATURES),
            "classes": self.species,
        }


def train(csv_path: Path) -> TrainedPenguins:
    raw = csv_path.read_bytes()
    data = pd.read_csv(csv_path).dropna()
    encoder = LabelEncoder().fit(data[TARGET])
    labels = encoder.transform(data[TARGET])
    features = data[list(FEATURES)].to_numpy(dtype=np.float64)
    x_train, x_test, y_train, y_test = train_test_split(features, labels, stratify=labels, random_state=0)
    pipeline = fit_pipeline(x_train, y_train)
    return TrainedPenguins(
        pipeline=pipeline,
        species=[str(name) for name in encoder.classes_],
        train_features=x_train,
        train_labels=y_train,
        feature_ranges=feature_ranges(x_train),
        test_accuracy=float(pipeline.score(x_test, y_test)),
        train_rows=len(x_train),
        test_rows=len(x_test),
        data_sha256=hashlib.sha256(raw).hexdigest(),
        test_features=x_test,
        test_labels=y_test.astype(np.uint8),
    )


def save_model(
    folder: Path,
    pipeline: Pipeline,
    species: list[str],
    train_features: np.ndarray,
    train_labels: np.ndarray,
    ranges: dict[str, tuple[float, float]],
) -> None:
    """A version's artifact: the pipeline and what the fast path serves it with (PenguinClassifier.load)."""
    payload = {
        "pipeline": pipeline,
        "species": species,
        "train_features": train_features,
        "train_labels": train_labels,
        "feature_ranges": ranges,
    }
    (folder / ARTIFACT).write_bytes(pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL))


def fit_pipeline(features: np.ndarray, labels: np.ndarray) -> Pipeline:
    """The tutorial's pipeline (scaler, then KNN with k=11), fitted."""
    steps = [("scaler", StandardScaler()), ("knn", KNeighborsClassifier(n_neighbors=NEIGHBORS))]
    return Pipeline(steps=steps).fit(features, labels)


def feature_ranges(features: np.ndarray) -> dict[str, tuple[float, float]]:
    """Each feature's range in training: inputs outside it get a warning."""
    return {
        name: (float(features[:, column].min()), float(features[:, column].max()))
        for column, name in enumerate(FEATURES)
    }


@dataclass(frozen=True)
class SpeciesPrediction:
    species: str
    probabilities: dict[str, float]
    warnings: list[str]


class PenguinClassifier:
    """Serves a fitted pipeline without scikit-learn's per-call overhead.

    `predict_proba` on one row costs ~0.5 ms here, almost all of it input
    validation. The pipeline is a scaler and a brute-force vote among the k
    nearest of ~250 training points, so the same arithmetic in NumPy answers in
    ~15 us. Where points at the k-th nearest distance have different species,
    which of them count depends on scikit-learn's search (its tree's layout):
    only then, rarely, the pipeline itself answers, so that both always agree.
    """

    def __init__(
        self,
        pipeline: Pipeline,
        species: list[str],
        train_features: np.ndarray,
        train_labels: np.ndarray,
        feature_ranges: dict[str, tuple[float, float]],
    ) -> None:
        scaler: StandardScaler = pipeline.named_steps["scaler"]
        self.pipeline = pipeline
        self.species = species
        self.feature_ranges = feature_ranges
        self._mean = scaler.mean_
        self._scale = scaler.scale_
        self._points = scaler.transform(np.asarray(train_features, dtype=np.float64))
        self._points_x = np.ascontiguousarray(self._points[:, 0])
        self._points_y = np.ascontiguousarray(self._points[:, 1])
        self._labels = np.asarray(train_labels, dtype=np.intp)
        self._k = pipeline.named_steps["knn"].n_neighbors

    @classmethod
    def load(cls, folder: Path) -> "PenguinClassifier":
        # Only files whose hashes match their manifest get here (see ModelStore.read_version).
        payload = pickle.loads((folder / ARTIFACT).read_bytes())  # noqa: S301
        return cls(**payload)

    def probabilities(self, rows: np.ndarray) -> np.ndarray:
        """Class probabilities for an (n, 2) array of bill and flipper lengths."""
        rows = np.asarray(rows, dtype=np.float64).reshape(-1, 2)
        scaled = (rows - self._mean) / self._scale
        # Per coordinate, as `predict` does: half the time of one (n, points, 2) array summed over its last axis.
        distances = (scaled[:, :1] - self._points_x) ** 2 + (scaled[:, 1:] - self._points_y) ** 2
        order = self._nearest_first(distances)
        votes = self._labels[order[:, : self._k]]
        counts = (votes[:, :, None] == np.arange(len(self.species))).sum(axis=1)  # votes per class, per row
        probabilities = counts / self._k
        undecided = self._undecided(distances, order)
        if undecided.any():
            probabilities[undecided] = self.pipeline_probabilities(rows[undecided])
        return probabilities

    def predict(self, bill_length_mm: float, flipper_length_mm: float) -> SpeciesPrediction:
        """One penguin: the same arithmetic as `probabilities`, without its batch overhead (~8 us)."""
        bill = (bill_length_mm - self._mean[0]) / self._scale[0]
        flipper = (flipper_length_mm - self._mean[1]) / self._scale[1]
        distances = (self._points_x - bill) ** 2 + (self._points_y - flipper) ** 2
        order = self._nearest_first(distances)
        # The common case in two scalar reads: the k-th and the next nearest are not at one distance.
        near_tie = len(order) > self._k and (
            distances[order[self._k]] - distances[order[self._k - 1]]
            <= TIE_TOLERANCE * (1 + distances[order[self._k - 1]])
        )
        if near_tie and self._undecided(distances[None, :], order[None, :])[0]:
            probabilities = self.pipeline_probabilities(np.array([[bill_length_mm, flipper_length_mm]]))[0]
        else:
            probabilities = np.bincount(self._labels[order[: self._k]], minlength=len(self.species)) / self._k
        return SpeciesPrediction(
            species=self.species[int(probabilities.argmax())],
            probabilities=dict(zip(self.species, probabilities.tolist(), strict=True)),
            warnings=self.unfamiliar_inputs((bill_length_mm, flipper_length_mm)),
        )

    def _nearest_first(self, distances: np.ndarray) -> np.ndarray:
        """Indices along the last axis: the k nearest first (in any order; they vote as a set), then the k-th
        and the next nearest at positions k-1 and k (what `_undecided` compares). A partition, not a sort:
        a fifth of the time."""
        if distances.shape[-1] <= self._k:
            return np.argsort(distances, axis=-1)
        return np.argpartition(distances, (self._k - 1, self._k), axis=-1)

    def _undecided(self, distances: np.ndarray, order: np.ndarray) -> np.ndarray:
        """Rows whose k nearest are not one set: points tied at the k-th distance, of different species."""
        if distances.shape[1] <= self._k:
            return np.zeros(len(distances), dtype=bool)
        kth = np.take_along_axis(distances, order[:, self._k - 1 : self._k], axis=1)
        following = np.take_along_axis(distances, order[:, self._k : self._k + 1], axis=1)
        tolerance = TIE_TOLERANCE * (1 + kth)
        undecided = (following - kth <= tolerance)[:, 0]
        if undecided.any():
            tied = np.abs(distances[undecided] - kth[undecided]) <= tolerance[undecided]
            labels = np.broadcast_to(self._labels, tied.shape)
            lowest = np.where(tied, labels, len(self.species)).min(axis=1)
            highest = np.where(tied, labels, -1).max(axis=1)
            undecided[undecided] = lowest != highest
        return undecided

    def pipeline_probabilities(self, rows: np.ndarray) -> np.ndarray:
        """The pipeline's own probabilities, one column per species."""
        knn: KNeighborsClassifier = self.pipeline.named_steps["knn"]
        probabilities = np.zeros((len(rows), len(self.species)))
        probabilities[:, knn.classes_] = self.pipeline.predict_proba(rows)
        return probabilities

    def predict_many(self, rows: list[tuple[float, float]]) -> list[SpeciesPrediction]:
        if not rows:
            return []
        probabilities = self.probabilities(np.array(rows, dtype=np.float64).reshape(-1, 2))
        return [
            SpeciesPrediction(
                species=self.species[int(np.argmax(row_probabilities))],
                probabilities={name: float(p) for name, p in zip(self.species, row_probabilities, strict=True)},
                warnings=self.unfamiliar_inputs(row),
            )
            for row, row_probabilities in zip(rows, probabilities, strict=True)
        ]

    def unfamiliar_inputs(self, row: tuple[float, float]) -> list[str]:
        """Say which inputs lie outside what the model saw in training."""
        warnings = []
        for name, value in zip(FEATURES, row, strict=True):
            low, high = self.feature_ranges[name]
            if not low <= value <= high:
                warnings.append(
                    f"{name}={value:g} is outside the training range [{low:g}, {high:g}]: "
                    "the input is unlike the training data, so the prediction may be unreliable"
                )
        return warnings


def fast_path_disagreements(classifier: PenguinClassifier, rows: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """The rows (n, 2) where a fast path (one row, or a batch) answers otherwise than the pipeline itself:
    another species or any other probability."""
    rows = np.asarray(rows, dtype=np.float64).reshape(-1, 2)
    species = np.array(classifier.species)
    differ = np.zeros(len(rows), dtype=bool)
    for start in range(0, len(rows), chunk):
        part = rows[start : start + chunk]
        expected = classifier.pipeline_probabilities(part)
        answers = species[classifier.pipeline.predict(part)]
        batch = classifier.probabilities(part)
        singles = [classifier.predict(bill, flipper) for bill, flipper in part.tolist()]
        single = np.array([list(prediction.probabilities.values()) for prediction in singles])
        differ[start : start + chunk] = (
            (batch != expected).any(axis=1)
            | (single != expected).any(axis=1)
            | (species[batch.argmax(axis=1)] != answers)
            | (np.array([prediction.species for prediction in singles]) != answers)
        )
    return rows[differ]


def plausible_grid(bill_step: float = 1.0, flipper_step: float = 2.0) -> np.ndarray:
    """A grid over the plausible measurements (PLAUSIBLE_RANGES): where live requests fall."""
    (bill_low, bill_high), (flipper_low, flipper_high) = (PLAUSIBLE_RANGES[name] for name in FEATURES)
    bills = np.arange(bill_low, bill_high + bill_step / 2, bill_step)
    flippers = np.arange(flipper_low, flipper_high + flipper_step / 2, flipper_step)
    return np.array([(bill, flipper) for bill in bills for flipper in flippers])
