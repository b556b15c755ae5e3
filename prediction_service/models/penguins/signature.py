"""The penguin model in the protocol: rows of (bill length, flipper length) -> species and probabilities."""

import math
from typing import Any

import numpy as np

from prediction_service.core import metrics
from prediction_service.inference_protocol.errors import BadRequest
from prediction_service.inference_protocol.signature import BATCH, ModelSignature, Prediction, TensorSpec
from prediction_service.inference_protocol.tensors import Tensor
from prediction_service.models.interface import ServedModel
from prediction_service.models.penguins import PENGUINS
from prediction_service.models.penguins.knn import PenguinClassifier
from prediction_service.models.registry import Registry
from prediction_service.serving.prediction_recorder import PredictionRecorder
from prediction_service.serving.shadow import ShadowRunner

INPUT = "measurements"  # bill_length_mm, flipper_length_mm: the same order as GET /predict's parameters
INPUTS = (TensorSpec(INPUT, "FP32", (BATCH, 2)),)
OUTPUTS = (TensorSpec("species", "BYTES", (BATCH,)), TensorSpec("probabilities", "FP32", (BATCH, 3)))


def protocol_signature(registry: Registry, recorder: PredictionRecorder, shadow_runner: ShadowRunner) -> ModelSignature:
    async def predict(inputs: dict[str, Tensor], shadow: ServedModel[Any] | None) -> Prediction:
        # Plain floats: for the usual one or few rows, cheaper than NumPy's per-call overhead.
        rows = [(bill, flipper) for bill, flipper in inputs[INPUT].data.tolist()]
        if not all(math.isfinite(value) and value > 0 for row in rows for value in row):
            raise BadRequest(f"input {INPUT!r}: lengths in millimetres must be finite numbers greater than 0")
        served = registry.serving(PENGUINS, PenguinClassifier) if shadow is None else shadow
        # The same predict paths as GET and POST /predict: the single-row one is ~10x cheaper.
        predictor = served.predictor
        predictions = [predictor.predict(*rows[0])] if len(rows) == 1 else predictor.predict_many(rows)
        species = np.empty(len(predictions), dtype=object)
        species[:] = [prediction.species.encode() for prediction in predictions]
        # Kept as float64 until encoded: JSON then shows 1/11 as 0.09090909090909091, not float32 noise.
        probabilities = np.array([list(p.probabilities.values()) for p in predictions], dtype=np.float64)
        ids = []
        for row, prediction in zip(rows, predictions, strict=True):
            metrics.count_prediction(PENGUINS, served.version, prediction.species)
            prediction_id = recorder.record(PENGUINS, served.version, prediction.species, row)
            ids.append(prediction_id)
            if shadow is None:  # a request to the shadow itself is its trial, not a comparison
                shadow_runner.offer(PENGUINS, prediction_id, row, prediction.species)
        return Prediction(
            [Tensor("species", "BYTES", species), Tensor("probabilities", "FP32", probabilities)], served.version, ids
        )

    return ModelSignature(PENGUINS, "numpy_knn", INPUTS, OUTPUTS, predict)
