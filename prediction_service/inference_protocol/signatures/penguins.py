"""The penguin model in the protocol: rows of (bill length, flipper length) -> species and probabilities."""

import numpy as np

from prediction_service import metrics
from prediction_service.catalog import PENGUINS
from prediction_service.inference_protocol.errors import BadRequest
from prediction_service.inference_protocol.signature import BATCH, ModelSignature, Prediction, TensorSpec
from prediction_service.inference_protocol.tensors import Tensor
from prediction_service.registry import Registry

INPUT = "measurements"  # bill_length_mm, flipper_length_mm: the same order as GET /predict's parameters
INPUTS = (TensorSpec(INPUT, "FP32", (BATCH, 2)),)
OUTPUTS = (TensorSpec("species", "BYTES", (BATCH,)), TensorSpec("probabilities", "FP32", (BATCH, 3)))


def signature(registry: Registry) -> ModelSignature:
    async def predict(inputs: dict[str, Tensor]) -> Prediction:
        rows = inputs[INPUT].data.astype(np.float64)
        if not np.isfinite(rows).all() or (rows <= 0).any():
            raise BadRequest(f"input {INPUT!r}: lengths in millimetres must be finite numbers greater than 0")
        served = registry.get(PENGUINS)
        # The same predict paths as GET and POST /predict: the single-row one is ~10x cheaper.
        if len(rows) == 1:
            predictions = [served.predictor.predict(float(rows[0, 0]), float(rows[0, 1]))]
        else:
            predictions = served.predictor.predict_many([(float(a), float(b)) for a, b in rows])
        species = np.empty(len(predictions), dtype=object)
        species[:] = [prediction.species.encode() for prediction in predictions]
        # Kept as float64 until encoded: JSON then shows 0.000575, not float32 noise (0.0005750000127591193).
        probabilities = np.array([list(p.probabilities.values()) for p in predictions], dtype=np.float64)
        for prediction in predictions:
            metrics.count_prediction(PENGUINS, served.version, prediction.species)
        return Prediction(
            [Tensor("species", "BYTES", species), Tensor("probabilities", "FP32", probabilities)], served.version
        )

    return ModelSignature(PENGUINS, "numpy_knn", INPUTS, OUTPUTS, predict)
