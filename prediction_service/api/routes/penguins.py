"""Penguin species from bill and flipper length."""

from typing import Annotated

from fastapi import APIRouter, Query

from prediction_service.api.deps import RegistryDep
from prediction_service.api.errors import error_responses
from prediction_service.api.schemas import PenguinParameters, PenguinPrediction
from prediction_service.catalog import PENGUINS

router = APIRouter(tags=["penguins"])

BillLength = Annotated[
    float,
    Query(
        gt=0,
        allow_inf_nan=False,
        description="Bill length in millimetres: a finite number greater than 0 (the training data spans 32-60).",
        openapi_examples={"Adelie": {"value": 40.3}, "Gentoo": {"value": 47.5}},
    ),
]
FlipperLength = Annotated[
    float,
    Query(
        gt=0,
        allow_inf_nan=False,
        description="Flipper length in millimetres: a finite number greater than 0 (the training data spans 172-231).",
        openapi_examples={"Adelie": {"value": 195}, "Gentoo": {"value": 220}},
    ),
]


@router.get(
    "/predict",
    summary="Predict a penguin's species",
    description="The species among the 11 training penguins nearest in bill and flipper length (scaled). "
    "Values outside the training range are answered with a warning.",
    responses=error_responses(422, 503),
)
async def predict_penguin(
    bill_length_mm: BillLength, flipper_length_mm: FlipperLength, registry: RegistryDep
) -> PenguinPrediction:
    served = registry.get(PENGUINS)
    prediction = served.predictor.predict(bill_length_mm, flipper_length_mm)
    return PenguinPrediction(
        parameters=PenguinParameters(bill_length_mm=bill_length_mm, flipper_length_mm=flipper_length_mm),
        result=prediction.species,
        probabilities=prediction.probabilities,
        model_version=served.version,
        warnings=prediction.warnings,
    )
