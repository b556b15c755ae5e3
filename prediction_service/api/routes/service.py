"""What the service is, and whether it is alive and ready."""

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from prediction_service.api.deps import RegistryDep, ServicesDep
from prediction_service.api.schemas import Liveness, ModelState, Readiness, ServiceInfo
from prediction_service.models.registry import Registry

router = APIRouter(tags=["service"])

NAME = "Penguins and digits prediction service"
DESCRIPTION = (
    "Predicts a penguin's species from its bill and flipper length (KNN), and the handwritten "
    "digit in an image (CNN); retrains the digit model from uploaded, labelled images."
)


def model_states(registry: Registry) -> dict[str, ModelState]:
    return {
        name: ModelState(serving_version=registry.serving_version(name), **registry.status(name).as_dict())
        for name in registry.kinds
    }


@router.get("/", summary="What this service is and which model versions serve")
async def service_info(services: ServicesDep) -> ServiceInfo:
    await services.refresh_models()
    return ServiceInfo(name=NAME, description=DESCRIPTION, models=model_states(services.registry))


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
    body = Readiness(status="ready" if registry.ready() else "not ready", models=model_states(registry))
    return JSONResponse(body.model_dump(exclude_none=True), status_code=200 if registry.ready() else 503)
