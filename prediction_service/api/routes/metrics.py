"""Prometheus metrics."""

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.concurrency import run_in_threadpool

from prediction_service.api.deps import ServingDep
from prediction_service.core import metrics

router = APIRouter(tags=["service"])


@router.get(
    "/metrics",
    summary="Prometheus metrics: requests, latencies, predictions, versions, jobs, batches, shadows",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Metrics."}},
)
async def prometheus_metrics(serving: ServingDep) -> Response:
    body = await run_in_threadpool(metrics.exposition, serving.shadow)  # the shadows' figures: a database read
    return Response(body, media_type=CONTENT_TYPE_LATEST)
