"""The handwritten digit in an uploaded image (the mnist model)."""

import asyncio
from typing import Annotated

from fastapi import APIRouter, File, Request, UploadFile
from fastapi.responses import JSONResponse

from prediction_service.api.deps import MnistDep, RecorderDep, SettingsDep, shadow_of
from prediction_service.api.errors import error_responses
from prediction_service.api.schemas import DigitBatchItem, DigitPrediction, part_media_types
from prediction_service.core import metrics
from prediction_service.core.errors import InvalidInput, ServiceError
from prediction_service.models.mnist import MNIST
from prediction_service.models.mnist.predictor import DigitResult, MnistPredictor
from prediction_service.serving.prediction_recorder import PredictionRecorder

router = APIRouter(tags=["digits"])
IMAGE_TYPES = "image/png, image/jpeg, image/gif, image/bmp, image/webp"


def answer(result: DigitResult, filename: str | None, recorder: PredictionRecorder) -> dict:
    """The answer for one image (DigitPrediction's shape, checked by the tests), counted in the metrics and
    recorded in the prediction log."""
    metrics.count_prediction(MNIST, result.model_version, result.digit)
    return {
        "filename": filename,
        "result": str(result.digit),
        "probabilities": result.probabilities,
        "confidence": result.confidence,
        "model_version": result.model_version,
        "prediction_id": recorder.record(MNIST, result.model_version, str(result.digit), result.image),
    }


@router.post(
    "/predict-image",
    summary="Predict the digit in an image",
    description="Multipart field `file`: a PNG, JPEG, GIF, BMP or WebP image of one handwritten digit, any size "
    "and colour mode, dark on light or light on dark. It is converted to what the model was trained on "
    "(28x28 grey, light digit on dark, centred like MNIST's digits).",
    response_model=DigitPrediction,
    responses=error_responses(400, 413, 415, 422, 503),
    openapi_extra=part_media_types("file", IMAGE_TYPES),
)
async def predict_image(file: UploadFile, mnist: MnistDep, recorder: RecorderDep, request: Request) -> JSONResponse:
    # The hottest route: the answer built directly (its shape is DigitPrediction, checked by the
    # tests), not validated again by FastAPI.
    result = await _predict(mnist, file.filename, await file.read())
    request.state.model_version = result.model_version
    answer_body = answer(result, file.filename, recorder)
    # The digit as the model saw it: the shadow neither decodes the file again nor queues its bytes.
    shadow_of(request).offer(MNIST, answer_body["prediction_id"], result.image, str(result.digit))
    return JSONResponse(answer_body)


async def _predict(mnist: MnistPredictor, filename: str | None, data: bytes) -> DigitResult:
    return await mnist.predict(data, repr(filename) if filename else "the file")


@router.post(
    "/predict-images",
    summary="Predict the digits in several images",
    description="Multipart field `files`, repeated: up to MAX_BATCH_ITEMS images. Answers a list in upload "
    "order; a file that cannot be read gets its own `error` (and `status`), the others are still answered.",
    responses=error_responses(400, 413, 422, 503),
    openapi_extra=part_media_types("files", IMAGE_TYPES),
)
async def predict_images(
    files: Annotated[list[UploadFile], File(min_length=1)],
    mnist: MnistDep,
    recorder: RecorderDep,
    settings: SettingsDep,
    request: Request,
) -> list[DigitBatchItem]:
    mnist.check_available()
    if len(files) > settings.max_batch_items:
        raise InvalidInput(f"{len(files)} files in one request; at most {settings.max_batch_items} (MAX_BATCH_ITEMS)")
    parts = [(file.filename, await file.read()) for file in files]
    outcomes = await asyncio.gather(*(_predict(mnist, name, data) for name, data in parts), return_exceptions=True)
    answers = []
    for (name, _), outcome in zip(parts, outcomes, strict=True):
        if isinstance(outcome, ServiceError):
            answers.append(DigitBatchItem(filename=name, error=outcome.detail, status=outcome.status_code))
        elif isinstance(outcome, BaseException):
            raise outcome
        else:
            item = answer(outcome, name, recorder)
            shadow_of(request).offer(MNIST, item["prediction_id"], outcome.image, str(outcome.digit))
            answers.append(DigitBatchItem(**item))
    return answers
