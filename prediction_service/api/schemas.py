"""Response bodies, as the OpenAPI schema documents them."""

from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, Field

from prediction_service.models.interface import ModelStatus
from prediction_service.models.penguins.knn import MEASUREMENT_LIMITS
from prediction_service.serving.shadow import ShadowReport


def _no_digit_separators(value: object) -> object:
    """Python reads "40_3" as 403.0; someone who sent that meant something else."""
    if isinstance(value, str) and "_" in value:
        raise ValueError(f"{value[:20]!r} has an underscore: write the number plainly, like 40.3")
    return value


# A measurement sent as text (query strings, or a quoted number in JSON) is read as a plain decimal.
PlainNumber = BeforeValidator(_no_digit_separators)


def part_media_types(field: str, media_types: str) -> dict:
    """OpenAPI extra for a multipart field: the media types its file may have (the schema says only 'binary')."""
    return {"requestBody": {"content": {"multipart/form-data": {"encoding": {field: {"contentType": media_types}}}}}}


PredictionId = Annotated[
    str,
    Field(
        description="This prediction's id: POST /predictions/{prediction_id}/feedback tells the service its true "
        "label.",
        examples=["3f2b6c1e9a4d4e0f8b7a6c5d4e3f2a1b"],
    ),
]


class ServiceInfo(BaseModel):
    name: str
    description: str
    models: dict[str, ModelStatus]
    docs: str = "/docs"


class Liveness(BaseModel):
    status: str = "alive"


class Readiness(BaseModel):
    status: str = Field(description="ready, or not ready (then the answer is 503)")
    models: dict[str, ModelStatus]


class PenguinParameters(BaseModel):
    bill_length_mm: float
    flipper_length_mm: float


class PenguinPrediction(BaseModel):
    parameters: PenguinParameters
    result: str = Field(description="The predicted species.", examples=["Adelie"])
    probabilities: dict[str, float] = Field(description="Share of the 11 nearest training penguins per species.")
    model_version: int
    warnings: list[str] = Field(default_factory=list, description="Why the prediction may be unreliable.")
    prediction_id: PredictionId


class DigitPrediction(BaseModel):
    filename: str | None
    result: str = Field(description="The predicted digit, as a string (as in the original tutorial).")
    probabilities: list[float] = Field(description="Probability of each digit 0-9.")
    confidence: float = Field(description="Probability of the predicted digit.")
    model_version: int
    prediction_id: PredictionId


class VersionInfo(BaseModel):
    version: int
    created_at: str
    source: str | None = None
    serving: bool
    published: bool = Field(description="Whether this version has ever served (rejected candidates have not).")
    metrics: dict[str, Any]
    training_data: dict[str, Any] = Field(default_factory=dict)
    gate: dict[str, Any] | None = None
    job_id: str | None = None


@dataclass(frozen=True, kw_only=True)
class ModelInfo(ModelStatus):
    name: str
    versions: list[VersionInfo]
    shadow: ShadowReport | None = None  # the version answering beside the serving one, and how they compare


class ModelList(BaseModel):
    models: list[ModelInfo]


class UploadSummary(BaseModel):
    id: str
    filename: str = ""
    bytes: int = 0
    sha256: str | None = None
    images: int | None = Field(None, description="Images in a zip (mnist).")
    rows: int | None = Field(None, description="Rows in a CSV (penguins).")
    layout: str
    label_counts: dict[str, int]
    received_at: str
    source: str | None = Field(None, description="`feedback`: collected examples, for an automatic job.")
    examples_watermark: int | None = Field(
        None, description="An automatic job's: the highest collected example id it trains on."
    )


class JobInfo(BaseModel):
    job_id: str
    model: str
    trigger: str = Field(
        description="`upload` (an upload started it) or `automatic` (RETRAIN_MIN_EXAMPLES collected examples)"
    )
    status: str = Field(description="queued, running, succeeded, rejected, failed or interrupted")
    status_url: str
    created_at: str
    started_at: str | None = None
    finished_at: str | None = None
    attempts: int
    upload: UploadSummary
    parameters: dict[str, Any]
    progress: dict[str, Any] | None = Field(
        None,
        description="While running: stage, epoch, epochs, loss, accuracy, eta_seconds, and once loaded "
        "upload_images and replay_images (the earlier images mixed in against forgetting; for penguins "
        "upload_rows and replay_rows).",
    )
    history: list[dict[str, Any]] = Field(default_factory=list, description="Metrics of every finished epoch.")
    result: dict[str, Any] | None = Field(
        None,
        description="At the end: the new version, its hold-out accuracy and the serving version's, and how many "
        "upload_images and replay_images (penguins: upload_rows, replay_rows) it trained on; `refused`: why a "
        "candidate was not even stored.",
    )
    error: str | None = None


class JobList(BaseModel):
    jobs: list[JobInfo]


class PenguinInput(BaseModel):
    # The validator after the constraints, so that the schema still shows them (exclusiveMinimum).
    bill_length_mm: Annotated[
        float, Field(**MEASUREMENT_LIMITS, description="Bill length in millimetres."), PlainNumber
    ]
    flipper_length_mm: Annotated[
        float, Field(**MEASUREMENT_LIMITS, description="Flipper length in millimetres."), PlainNumber
    ]


class PenguinBatchItem(BaseModel):
    """One answer per input row, in input order: a prediction, or the error of that row."""

    parameters: PenguinParameters | None = None
    result: str | None = None
    probabilities: dict[str, float] | None = None
    model_version: int | None = None
    warnings: list[str] = Field(default_factory=list)
    prediction_id: PredictionId | None = None
    error: str | None = Field(None, description="Why this row could not be predicted (other rows still are).")


class DigitBatchItem(BaseModel):
    """One answer per uploaded file, in upload order: a prediction, or the error of that file."""

    filename: str | None
    result: str | None = None
    probabilities: list[float] | None = None
    confidence: float | None = None
    model_version: int | None = None
    prediction_id: PredictionId | None = None
    error: str | None = Field(None, description="Why this file could not be read (other files still are).")
    status: int = Field(200, description="The HTTP status this file alone would have got.")


def _label_text(value: object) -> object:
    """A digit may come as a number: {"label": 7} is "7"."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


class FeedbackIn(BaseModel):
    label: Annotated[
        str,
        BeforeValidator(_label_text),
        Field(
            min_length=1,
            max_length=100,
            description="The true label: a digit 0-9 for mnist, a species for penguins.",
            examples=["7"],
        ),
    ]


class FeedbackRecorded(BaseModel):
    prediction_id: str
    model: str
    model_version: int = Field(description="The version that made the prediction.")
    answer: str = Field(description="What the model answered.")
    label: str = Field(description="The true label, as recorded.")
    correct: bool = Field(description="Whether the answer was the label.")
    replaced: bool = Field(description="Whether this label replaced an earlier one for the same prediction.")
    replaced_label: str | None = Field(None, description="The label it replaced.")
    example_id: int = Field(description="The collected example's id (a replaced label gets a new one).")


class AutomaticRetrainingInfo(BaseModel):
    enabled: bool = Field(description="Whether this model is retrained automatically (it can be retrained).")
    min_examples: int = Field(description="RETRAIN_MIN_EXAMPLES: new examples that start a job.")
    new_examples: int = Field(
        description="Collected examples newer than the serving version and than the last automatic job's."
    )
    schedule: str | None = Field(description="RETRAIN_SCHEDULE; null: a job starts as soon as the threshold is met.")
    next_check: str | None = Field(description="With a schedule, when the threshold is checked next (UTC).")
    job_id: str | None = Field(None, description="The automatic job queued or running now.")


class ExamplesInfo(BaseModel):
    model: str
    serving_version: int | None
    since_example_id: int = Field(description="The serving version learned collected examples up to this id.")
    total: int = Field(description="Labelled examples collected since the serving version was trained.")
    by_label: dict[str, int]
    by_source: dict[str, int] = Field(
        description="`feedback`: labels sent for predictions; `uploads`: the labelled images of uploads received "
        "since the serving version was made that it did not learn from."
    )
    automatic_retraining: AutomaticRetrainingInfo
