"""The handwritten digit in an uploaded image."""

from fastapi import APIRouter, UploadFile
from starlette.concurrency import run_in_threadpool

from prediction_service.api.deps import ServicesDep
from prediction_service.api.errors import error_responses
from prediction_service.api.schemas import DigitPrediction
from prediction_service.digit_inference import DigitResult

router = APIRouter(tags=["digits"])


def as_response(result: DigitResult, filename: str | None) -> DigitPrediction:
    return DigitPrediction(
        filename=filename,
        result=str(result.digit),
        probabilities=result.probabilities,
        confidence=result.confidence,
        model_version=result.model_version,
    )


@router.post(
    "/predict-image",
    summary="Predict the digit in an image",
    description="Multipart field `file`: a PNG, JPEG, GIF, BMP or WebP image of one handwritten digit, any size "
    "and colour mode, dark on light or light on dark. It is converted to what the model was trained on "
    "(28x28 grey, light digit on dark, centred like MNIST's digits).",
    responses=error_responses(413, 415, 422, 503),
)
async def predict_image(file: UploadFile, services: ServicesDep) -> DigitPrediction:
    digits = services.digits
    digits.check_available()
    data = await file.read()
    name = repr(file.filename) if file.filename else "the file"
    image = await run_in_threadpool(digits.decode, data, name) if digits.needs_own_thread(data) else None
    result = await digits.predict(data, name, image)
    return as_response(result, file.filename)
