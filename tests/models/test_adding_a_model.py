"""A third model needs its own code and one registering line: it then trains, loads, reports and predicts,
through its own Python API and under /v2."""

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import AUTH, make_settings
from fastapi.testclient import TestClient

from prediction_service.api.app import create_app
from prediction_service.inference_protocol.signature import BATCH, ModelSignature, Prediction, TensorSpec
from prediction_service.inference_protocol.tensors import Tensor
from prediction_service.models import catalog
from prediction_service.models.interface import ModelContext
from prediction_service.services import Serving
from prediction_service.storage.versions import ModelStore, StoredVersion

SPECIES = ("setosa", "versicolor", "virginica")
CENTRES = np.array([[5.0, 3.4], [5.9, 2.8], [6.6, 3.0]])  # sepal length and width, cm


class FlowerClassifier:
    """A loaded version: the nearest class centre wins."""

    def __init__(self, centres: np.ndarray) -> None:
        self.centres = centres

    def predict(self, sepal_length_cm: float, sepal_width_cm: float) -> str:
        distances = ((self.centres - [sepal_length_cm, sepal_width_cm]) ** 2).sum(axis=1)
        return SPECIES[int(distances.argmin())]


class IrisModel:
    """The whole model, as a new package would hold it: trained in the test, from made-up flowers."""

    name = "iris"
    description = "an iris's species from its sepal length and width (nearest centre)"
    retraining = None

    def __init__(self, context: ModelContext) -> None:
        self.settings = context.settings

    def train_first_version(self, store: ModelStore) -> StoredVersion:
        rng = np.random.default_rng(0)
        labels = np.repeat(np.arange(len(SPECIES)), 50)
        flowers = CENTRES[labels] + rng.normal(0, 0.2, (len(labels), 2))
        centres = np.stack([flowers[labels == label].mean(axis=0) for label in range(len(SPECIES))])
        classifier = FlowerClassifier(centres)
        accuracy = float(
            np.mean(
                [classifier.predict(*flower) == SPECIES[label] for flower, label in zip(flowers, labels, strict=True)]
            )
        )

        def write(folder: Path) -> None:
            (folder / "centres.json").write_text(json.dumps(centres.tolist()))

        return store.add_version(
            self.name, write, {"source": "initial training", "metrics": {"train_accuracy": round(accuracy, 4)}}
        )

    def labels(self, manifest: dict) -> list[str]:
        return list(SPECIES)

    def load(self, stored: StoredVersion) -> FlowerClassifier:
        return FlowerClassifier(np.array(json.loads((stored.path / "centres.json").read_text())))

    def shadow_answers(self, serving: Serving) -> None:
        """No shadow version for this model."""
        return None

    def protocol_signature(self, serving: Serving) -> ModelSignature:
        """Served under /v2 too: rows of (sepal length, sepal width) -> species."""

        async def predict(inputs: dict[str, Tensor], shadow: object) -> Prediction:
            served = serving.registry.serving(self.name, FlowerClassifier)
            species = np.empty(len(inputs["sepals"].data), dtype=object)
            species[:] = [served.predictor.predict(*row).encode() for row in inputs["sepals"].data.tolist()]
            return Prediction([Tensor("species", "BYTES", species)], served.version)

        sepals, species = TensorSpec("sepals", "FP32", (BATCH, 2)), TensorSpec("species", "BYTES", (BATCH,))
        return ModelSignature(self.name, "numpy", (sepals,), (species,), predict)


def test_a_third_model_is_one_registering_line(monkeypatch: pytest.MonkeyPatch, model_dir: Path) -> None:
    monkeypatch.setattr(catalog, "MODELS", [*catalog.MODELS, IrisModel])  # the one line

    with TestClient(create_app(make_settings(model_dir))) as client:
        ready = client.get("/health/ready")
        assert ready.status_code == 200
        assert ready.json()["models"]["iris"] == {"state": "ready", "serving_version": 1}

        models = {model["name"]: model for model in client.get("/models").json()["models"]}
        assert set(models) == {"penguins", "mnist", "iris"}
        [version] = models["iris"]["versions"]
        assert (version["version"], version["serving"], version["published"]) == (1, True, True)
        assert version["metrics"]["train_accuracy"] > 0.9
        assert IrisModel.description in client.get("/").json()["description"]

        registry = client.app.state.services.serving.registry  # type: ignore[attr-defined]
        served = registry.serving("iris", FlowerClassifier)
        assert served.version == 1
        assert [served.predictor.predict(*flower) for flower in CENTRES] == list(SPECIES)

        assert client.get("/v2/models/iris/ready").json() == {"name": "iris", "ready": True}
        body = {"inputs": [{"name": "sepals", "datatype": "FP32", "shape": [3, 2], "data": CENTRES.ravel().tolist()}]}
        inferred = client.post("/v2/models/iris/infer", json=body)
        assert inferred.status_code == 200, inferred.text
        assert inferred.json()["outputs"][0]["data"] == list(SPECIES)

        activated = client.post("/models/iris/versions/1/activate", headers=AUTH)
        assert activated.status_code == 200
        assert activated.json()["serving_version"] == 1
