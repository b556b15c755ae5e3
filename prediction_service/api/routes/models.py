"""Model versions: list them, and choose which one serves (rollback)."""

import dataclasses
from typing import Annotated

from fastapi import APIRouter, Path
from starlette.concurrency import run_in_threadpool

from prediction_service.api.deps import RegistryDep, ServingDep
from prediction_service.api.errors import error_responses
from prediction_service.api.schemas import ModelInfo, ModelList, VersionInfo
from prediction_service.api.security import AdminDep
from prediction_service.models.registry import Registry

router = APIRouter(prefix="/models", tags=["models"])

ModelName = Annotated[str, Path(description="The model's name: `penguins` or `mnist`.", examples=["mnist"])]
Version = Annotated[int, Path(ge=1, le=1_000_000, description="A version number (GET /models lists them).")]


def model_info(registry: Registry, name: str) -> ModelInfo:
    stored_versions, published = registry.versions(name)
    status = registry.status(name)
    versions = [
        VersionInfo(
            version=stored.version,
            created_at=str(stored.manifest.get("created_at", "")),
            source=stored.manifest.get("source"),
            serving=stored.version == status.serving_version,
            published=stored.version in published,
            metrics=stored.manifest.get("metrics", {}),
            training_data=stored.manifest.get("training_data", {}),
            gate=stored.manifest.get("gate"),
            job_id=stored.manifest.get("job_id"),
        )
        for stored in stored_versions
    ]
    return ModelInfo(**dataclasses.asdict(status), name=name, versions=versions)


@router.get("", summary="Every model's versions, metrics, and which one serves")
async def list_models(serving: ServingDep) -> ModelList:
    await serving.refresh()
    registry = serving.registry
    infos = await run_in_threadpool(lambda: [model_info(registry, name) for name in registry.models])
    return ModelList(models=infos)


@router.post(
    "/{name}/versions/{version}/activate",
    summary="Serve a kept version (rollback, or promote a rejected candidate)",
    description="Needs the admin token. Every worker serves the version within a second or two.",
    dependencies=[AdminDep],
    responses=error_responses(401, 403, 404, 409, 422, 503),
)
async def activate_version(name: ModelName, version: Version, registry: RegistryDep) -> ModelInfo:
    await run_in_threadpool(registry.activate, name, version)
    return await run_in_threadpool(model_info, registry, name)
