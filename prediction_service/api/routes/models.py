"""Model versions: list them, choose which one serves (rollback), and try one in shadow."""

import dataclasses
from typing import Annotated

from fastapi import APIRouter, Path
from starlette.concurrency import run_in_threadpool

from prediction_service.api.deps import ServingDep
from prediction_service.api.errors import error_responses
from prediction_service.api.schemas import ModelInfo, ModelList, VersionInfo
from prediction_service.api.security import AdminDep
from prediction_service.services import Serving

router = APIRouter(prefix="/models", tags=["models"])

ModelName = Annotated[str, Path(description="The model's name: `penguins` or `mnist`.", examples=["mnist"])]
Version = Annotated[int, Path(ge=1, le=1_000_000, description="A version number (GET /models lists them).")]


def model_info(serving: Serving, name: str) -> ModelInfo:
    registry = serving.registry
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
    return ModelInfo(**dataclasses.asdict(status), name=name, versions=versions, shadow=serving.shadow.report(name))


@router.get("", summary="Every model's versions, metrics, and which one serves")
async def list_models(serving: ServingDep) -> ModelList:
    await serving.refresh()
    await serving.shadow.flush()  # this process's latest comparisons too
    infos = await run_in_threadpool(lambda: [model_info(serving, name) for name in serving.registry.models])
    return ModelList(models=infos)


@router.post(
    "/{name}/versions/{version}/activate",
    summary="Serve a kept version (rollback, or promote a rejected candidate)",
    description="Needs the admin token. Every worker serves the version within a second or two.",
    dependencies=[AdminDep],
    responses=error_responses(401, 403, 404, 409, 422, 503),
)
async def activate_version(name: ModelName, version: Version, serving: ServingDep) -> ModelInfo:
    await run_in_threadpool(serving.registry.activate, name, version)
    return await run_in_threadpool(model_info, serving, name)


@router.post(
    "/{name}/versions/{version}/shadow",
    summary="Try a version in shadow: it answers beside the serving one, off the answer's path",
    description="Needs the admin token. On a share of live requests (SHADOW_SAMPLE_RATE), in every worker within a "
    "second or two, the version also answers; `shadow` in GET /models shows how often the two agree, and their "
    "accuracy on predictions that received feedback. Activating the version promotes it and ends the shadow.",
    dependencies=[AdminDep],
    responses=error_responses(401, 403, 404, 409, 422, 503),
)
async def start_shadow(name: ModelName, version: Version, serving: ServingDep) -> ModelInfo:
    await serving.shadow.start_shadow(name, version)
    return await run_in_threadpool(model_info, serving, name)


@router.delete(
    "/{name}/shadow",
    summary="End the shadow",
    description="Needs the admin token. Its figures stay in the database; they no longer grow.",
    dependencies=[AdminDep],
    responses=error_responses(401, 403, 404, 422),
)
async def end_shadow(name: ModelName, serving: ServingDep) -> ModelInfo:
    await serving.shadow.end_shadow(name)
    return await run_in_threadpool(model_info, serving, name)
