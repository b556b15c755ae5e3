"""Prometheus metrics."""

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from prediction_service.core import metrics

router = APIRouter(tags=["service"])


@router.get(
    "/metrics",
    summary="Prometheus metrics: requests, latencies, predictions, versions, jobs, batches",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Metrics."}},
)
async def prometheus_metrics() -> Response:
    return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
