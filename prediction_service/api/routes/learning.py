"""The learning loop: feedback on predictions, and the examples collected for retraining."""

from typing import Annotated

from fastapi import APIRouter, Path
from starlette.concurrency import run_in_threadpool

from prediction_service.api.deps import RegistryDep, RetrainingDep, ServicesDep
from prediction_service.api.errors import error_responses
from prediction_service.api.routes.models import ModelName
from prediction_service.api.schemas import (
    AutomaticRetrainingInfo,
    ExamplesInfo,
    FeedbackIn,
    FeedbackRecorded,
)
from prediction_service.api.security import FeedbackDep
from prediction_service.retraining.collected import UPLOADS
from prediction_service.services import Retraining
from prediction_service.storage.examples import FEEDBACK

router = APIRouter(tags=["learning"])

PredictionId = Annotated[
    str, Path(max_length=64, description="The `prediction_id` of a prediction's answer.", examples=["0" * 32])
]


@router.post(
    "/predictions/{prediction_id}/feedback",
    status_code=201,
    summary="The true label of an earlier prediction",
    description="Needs a feedback token (FEEDBACK_TOKENS) or the admin token. The label is kept with a copy of "
    "the prediction's input as a collected example; a second label for the same prediction replaces the first. "
    "RETRAIN_MIN_EXAMPLES new examples start an automatic retraining job (at RETRAIN_SCHEDULE's times, if set).",
    dependencies=[FeedbackDep],
    responses=error_responses(400, 401, 403, 404, 422, 503),
)
async def send_feedback(prediction_id: PredictionId, body: FeedbackIn, services: ServicesDep) -> FeedbackRecorded:
    done = await services.feedback.record(prediction_id, body.label)
    prediction, example = done.prediction, done.recorded.example
    return FeedbackRecorded(
        prediction_id=prediction.id,
        model=prediction.model,
        model_version=prediction.version,
        answer=prediction.answer,
        label=example.label,
        correct=prediction.answer == example.label,
        replaced=done.recorded.replaced_label is not None,
        replaced_label=done.recorded.replaced_label,
        example_id=example.id,
    )


@router.get(
    "/models/{name}/examples",
    summary="Labelled examples collected since the serving version was trained",
    description="By label and by source (feedback, uploads), and when automatic retraining starts.",
    responses=error_responses(404, 503),
)
async def collected_examples(name: ModelName, registry: RegistryDep, retraining: RetrainingDep) -> ExamplesInfo:
    labels = registry.labels(name)  # 404 for an unknown model
    return await run_in_threadpool(examples_info, retraining, name, labels)


def examples_info(retraining: Retraining, name: str, labels: list[str]) -> ExamplesInfo:
    collected = retraining.collected.since_serving(name)
    automatic = retraining.automatic
    by_label = collected.by_label()
    next_check = automatic.next_check()
    active = retraining.jobs.active_automatic(name)
    return ExamplesInfo(
        model=name,
        serving_version=collected.serving_version,
        since_example_id=collected.watermark,
        total=collected.total,
        by_label={**{label: by_label.get(label, 0) for label in labels}, **by_label},
        by_source={
            FEEDBACK: 0,
            UPLOADS: 0,
            **{source: sum(counts.values()) for source, counts in collected.by_source.items()},
        },
        automatic_retraining=AutomaticRetrainingInfo(
            enabled=name in automatic.models,
            min_examples=automatic.min_examples,
            new_examples=automatic.new_examples(name),
            schedule=automatic.schedule,
            next_check=next_check.isoformat(timespec="seconds") if next_check else None,
            job_id=active.id if active else None,
        ),
    )
