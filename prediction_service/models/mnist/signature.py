"""The mnist model in the protocol: 28x28 images, or encoded image files -> digit and probabilities.

`image` is what the model takes: MNIST-style, a light digit on black, centred;
UINT8 0-255, or FP32 0.0-1.0 (pixel / 255). `image_file` holds PNG, JPEG, GIF,
BMP or WebP files, prepared exactly as POST /predict-image prepares them (base64
text in JSON, raw bytes with the binary extension), one file per row: shape [n, 1]. Both go through the same
micro-batching and the model's process as the other mnist routes.
"""

import asyncio
import base64
import binascii
from typing import Any

import numpy as np

from prediction_service.core import metrics
from prediction_service.inference_protocol.errors import BadRequest
from prediction_service.inference_protocol.signature import BATCH, ModelSignature, Prediction, TensorSpec
from prediction_service.inference_protocol.tensors import Tensor
from prediction_service.models.interface import ServedModel
from prediction_service.models.mnist import MNIST
from prediction_service.models.mnist.predictor import DigitResult, MnistPredictor
from prediction_service.serving.messages import ImageUpload
from prediction_service.serving.prediction_recorder import PredictionRecorder
from prediction_service.serving.shadow import ShadowRunner

IMAGE = "image"
IMAGE_FILE = "image_file"
INPUTS = (
    TensorSpec(IMAGE, "UINT8", (BATCH, 28, 28), also_accepted=("FP32",), optional=True),
    # [n, 1] rather than [n]: perf_analyzer cannot skip an optional input whose shape is the batch alone.
    TensorSpec(IMAGE_FILE, "BYTES", (BATCH, 1), optional=True),
)
OUTPUTS = (TensorSpec("digit", "INT64", (BATCH,)), TensorSpec("probabilities", "FP32", (BATCH, 10)))


def protocol_signature(
    digits: MnistPredictor, recorder: PredictionRecorder, shadow_runner: ShadowRunner
) -> ModelSignature:
    async def predict(inputs: dict[str, Tensor], shadow: ServedModel[Any] | None) -> Prediction:
        if (IMAGE in inputs) == (IMAGE_FILE in inputs):
            raise BadRequest(
                f"send exactly one of the inputs {IMAGE!r} (28x28 UINT8 0-255 or FP32 0-1, a light digit on black) "
                f"and {IMAGE_FILE!r} (encoded image files)"
            )
        if IMAGE in inputs:
            uploads = [ImageUpload(f"{IMAGE}[{row}]", image=image) for row, image in enumerate(_pixels(inputs[IMAGE]))]
        else:
            files = enumerate(_files(inputs[IMAGE_FILE]))
            uploads = list(
                await asyncio.gather(*(digits.upload_of(data, f"{IMAGE_FILE}[{row}]") for row, data in files))
            )
        outcomes: list[DigitResult | BaseException]
        if shadow is None:
            outcomes = await asyncio.gather(*(digits.submit(upload) for upload in uploads), return_exceptions=True)
        else:  # the shadow's trial: answered by it alone, in one call
            outcomes = await digits.predict_with(shadow.predictor, uploads)
        results: list[DigitResult] = []
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome  # the protocol has no per-row errors: the first one answers for the request
            results.append(outcome)
        ids = []
        for result in results:
            metrics.count_prediction(MNIST, result.model_version, result.digit)
            prediction_id = recorder.record(MNIST, result.model_version, str(result.digit), result.image)
            ids.append(prediction_id)
            if shadow is None:  # a request to the shadow itself is its trial, not a comparison
                shadow_runner.offer(MNIST, prediction_id, result.image, str(result.digit))
        digit = np.array([result.digit for result in results], dtype=np.int64)
        # float64 until encoded (as FP32): JSON then shows the rounded values, without float32 noise.
        probabilities = np.array([result.probabilities for result in results], dtype=np.float64)
        return Prediction(
            [Tensor("digit", "INT64", digit), Tensor("probabilities", "FP32", probabilities)],
            results[0].model_version,
            ids,
        )

    return ModelSignature(MNIST, "onnxruntime_onnx", INPUTS, OUTPUTS, predict)


def _pixels(tensor: Tensor) -> np.ndarray:
    """MNIST-style uint8 images, as the digit model's process takes them."""
    if tensor.datatype == "UINT8":
        return np.ascontiguousarray(tensor.data, dtype=np.uint8)
    pixels = tensor.data
    if not np.isfinite(pixels).all() or pixels.min() < 0 or pixels.max() > 1:
        raise BadRequest(f"input {IMAGE!r}: FP32 pixels must be 0.0-1.0 (pixel / 255); send UINT8 for 0-255")
    return np.rint(pixels * 255).astype(np.uint8)


def _files(tensor: Tensor) -> list[bytes]:
    elements: list[bytes] = list(tensor.data.reshape(-1))
    if not tensor.from_json:
        return elements
    try:  # JSON strings cannot carry raw bytes
        return [base64.b64decode(element, validate=True) for element in elements]
    except (binascii.Error, ValueError):
        raise BadRequest(f"input {IMAGE_FILE!r}: in JSON, each file must be base64 text") from None
