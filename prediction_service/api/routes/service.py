"""What the service is, and whether it is alive and ready."""

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from prediction_service.api.deps import RegistryDep, ServingDep
from prediction_service.api.schemas import Liveness, Readiness, ServiceInfo
from prediction_service.models.interface import ModelStatus
from prediction_service.models.registry import Registry

router = APIRouter(tags=["service"])

NAME = "Penguins and digits prediction service"


def description(registry: Registry) -> str:
    """What the service predicts: each model's own description."""
    return f"Predicts {'; '.join(model.description for model in registry.models.values())}."


def statuses(registry: Registry) -> dict[str, ModelStatus]:
    return {name: registry.status(name) for name in registry.models}


@router.get("/", summary="What this service is and which model versions serve")
async def service_info(serving: ServingDep) -> ServiceInfo:
    await serving.refresh()
    return ServiceInfo(name=NAME, description=description(serving.registry), models=statuses(serving.registry))


@router.get("/health/live", summary="Liveness: the process answers")
async def live() -> Liveness:
    return Liveness()


@router.get(
    "/health/ready",
    summary="Readiness: every model is loaded",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "Some model is not ready; its state says why."}},
)
async def ready(registry: RegistryDep) -> JSONResponse:
    body = Readiness(status="ready" if registry.ready() else "not ready", models=statuses(registry))
    return JSONResponse(body.model_dump(exclude_none=True), status_code=200 if registry.ready() else 503)
