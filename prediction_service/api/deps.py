"""Named dependencies the routes declare (async: a plain function would run in a thread)."""

from typing import Annotated

from fastapi import Depends, Request

from prediction_service.core.settings import Settings
from prediction_service.models.mnist.predictor import MnistPredictor
from prediction_service.models.registry import Registry
from prediction_service.services import Retraining, Services, Serving
from prediction_service.serving.prediction_recorder import PredictionRecorder
from prediction_service.serving.shadow import ShadowRunner


async def get_services(request: Request) -> Services:
    return request.app.state.services


async def get_serving(request: Request) -> Serving:
    return request.app.state.services.serving


async def get_registry(request: Request) -> Registry:
    return request.app.state.services.serving.registry


async def get_mnist(request: Request) -> MnistPredictor:
    return request.app.state.services.serving.mnist


async def get_recorder(request: Request) -> PredictionRecorder:
    return request.app.state.services.serving.recorder


def shadow_of(request: Request) -> ShadowRunner:
    """The shadow, called directly by the prediction routes (cheaper than a dependency on the hottest routes)."""
    return request.app.state.services.serving.shadow


async def get_retraining(request: Request) -> Retraining:
    return request.app.state.services.retraining


async def get_settings_of_app(request: Request) -> Settings:
    return request.app.state.services.settings


ServicesDep = Annotated[Services, Depends(get_services)]
ServingDep = Annotated[Serving, Depends(get_serving)]
RegistryDep = Annotated[Registry, Depends(get_registry)]
MnistDep = Annotated[MnistPredictor, Depends(get_mnist)]
RecorderDep = Annotated[PredictionRecorder, Depends(get_recorder)]
RetrainingDep = Annotated[Retraining, Depends(get_retraining)]
SettingsDep = Annotated[Settings, Depends(get_settings_of_app)]
