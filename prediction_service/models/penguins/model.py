"""The penguins model as the service sees it: first training, retraining, loading (see models.interface)."""

import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from prediction_service.core.provenance import library_versions
from prediction_service.inference_protocol.signature import ModelSignature
from prediction_service.models.interface import ModelContext, ShadowAnswers
from prediction_service.models.penguins import PENGUINS
from prediction_service.models.penguins.knn import PenguinClassifier, train
from prediction_service.models.penguins.retraining import (
    PenguinsRetrainingRecipe,
    fast_path_refusal,
    save_first_training_files,
)
from prediction_service.models.penguins.signature import protocol_signature
from prediction_service.storage.versions import ModelStore, StoredVersion

if TYPE_CHECKING:
    from prediction_service.services import Serving

log = logging.getLogger(__name__)


class PenguinsModel:
    name = PENGUINS
    description = "a penguin's species from its bill and flipper length (KNN)"
    retraining = PenguinsRetrainingRecipe()

    def __init__(self, context: ModelContext) -> None:
        self.csv_path = context.settings.penguins_csv

    def train_first_version(self, store: ModelStore) -> StoredVersion:
        trained = train(self.csv_path)
        log.info("trained %s: test accuracy %.4f", self.name, trained.test_accuracy)
        classifier = PenguinClassifier(
            trained.pipeline, trained.species, trained.train_features, trained.train_labels, trained.feature_ranges
        )
        refusal = fast_path_refusal(classifier, (trained.test_features, trained.test_labels), trained.train_features)
        if refusal is not None:
            raise RuntimeError(refusal)
        save_first_training_files(store, trained)
        manifest = {"source": "initial training", **trained.manifest(self.csv_path), "libraries": library_versions()}
        return store.add_version(self.name, trained.save, manifest)

    def protocol_signature(self, serving: "Serving") -> ModelSignature:
        return protocol_signature(serving.registry, serving.recorder, serving.shadow)

    def labels(self, manifest: dict[str, Any]) -> list[str]:
        return [str(species) for species in manifest["classes"]]

    def load(self, stored: StoredVersion) -> PenguinClassifier:
        return PenguinClassifier.load(stored.path)

    def shadow_answers(self, serving: "Serving") -> ShadowAnswers:
        return shadow_species


async def shadow_species(shadow: PenguinClassifier, rows: list[tuple[float, float]]) -> list[str]:
    """The shadow's species for the (bill, flipper) rows the routes offer it (predict_many's, without its extras).

    Inline: ~10 us a row, cheaper than any handoff to a thread (which would contend for the interpreter's lock)."""
    probabilities = shadow.probabilities(np.array(rows, dtype=np.float64).reshape(-1, 2))
    return [shadow.species[index] for index in probabilities.argmax(axis=1).tolist()]
