"""The FastAPI application: routes, error handling, middleware, and the lifespan that loads models."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from prediction_service.api import errors
from prediction_service.api.middleware import (
    AuthBeforeBody,
    BodyLimits,
    PageSecurityHeaders,
    RequestObserver,
    TrailingSlashInsensitive,
)
from prediction_service.api.routes import jobs, learning, metrics, mnist, models, penguins, service, ui, v2
from prediction_service.api.security import admin_paths, feedback_paths
from prediction_service.api.slow_clients import install_header_timeout
from prediction_service.core import logs
from prediction_service.core.settings import Settings, get_settings
from prediction_service.services import Services

MULTIPART_OVERHEAD = 64 * 1024
# The order of the sections in /docs (routes are included hottest first, which is not reading order).
API_TAGS = [
    {"name": "service", "description": "What the service is, health, metrics."},
    {"name": "penguins", "description": "Penguin species from bill and flipper length (KNN)."},
    {"name": "digits", "description": "The handwritten digit in an image (CNN)."},
    {"name": "retraining", "description": "Retrain a model from labelled images or penguins; follow the jobs."},
    {"name": "models", "description": "Model versions: list them, choose the one that serves."},
    {"name": "learning", "description": "Feedback on predictions; the examples that retrain the models."},
]


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    services: Services = app.state.services
    await services.start()
    try:
        yield
    finally:
        await services.stop()


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    logs.configure(settings.log_level, settings.json_logs)
    install_header_timeout(settings.header_timeout)
    services = Services(settings)
    # Docs assets are served from the fastapi-offline package: /docs works without the internet.
    app = FastAPIOffline(
        title=service.NAME,
        description=service.description(services.serving.registry),
        version="1.0.0",
        lifespan=lifespan,
        redirect_slashes=False,
        swagger_ui_parameters={"persistAuthorization": True},
        openapi_tags=API_TAGS,
    )
    app.state.services = services
    errors.install(app)
    # The hot prediction routes first: requests are matched against the routers in this order.
    for router in (
        penguins.router,
        mnist.router,
        v2.router,
        service.router,
        jobs.router,
        models.router,
        learning.router,
        metrics.router,
        ui.router,
    ):
        app.include_router(router)
    app.mount("/ui/static", ui.static_files, name="ui-static")
    app.add_middleware(
        BodyLimits,
        limits={
            "/upload-images": (settings.max_upload_bytes + MULTIPART_OVERHEAD, "MAX_UPLOAD_BYTES"),
            "/predict-images": (settings.max_upload_bytes + MULTIPART_OVERHEAD, "MAX_UPLOAD_BYTES"),
            "/upload-penguins": (settings.max_csv_bytes + MULTIPART_OVERHEAD, "MAX_CSV_BYTES"),
        },
        default=(settings.max_image_bytes + MULTIPART_OVERHEAD, "MAX_IMAGE_BYTES"),
        timeout=settings.request_timeout,
    )
    v2.install(app)  # the Open Inference Protocol; after BodyLimits, so its 413s get the protocol's error shape
    app.add_middleware(
        AuthBeforeBody,
        protected=admin_paths(app),
        check=services.admin_token.check_header,
        timeout=settings.request_timeout,
    )
    app.add_middleware(
        AuthBeforeBody,
        protected=feedback_paths(app),
        check=services.feedback_tokens.check_header,
        timeout=settings.request_timeout,
    )
    app.add_middleware(PageSecurityHeaders, pages=("/docs", "/redoc", "/ui"))
    app.add_middleware(RequestObserver)  # inside the slash rewrite: it sees the matched route
    app.add_middleware(TrailingSlashInsensitive)
    document_configured_limits(app, settings)
    return app


def document_configured_limits(app: FastAPI, settings: Settings) -> None:
    """Put limits that are settings (MAX_BATCH_ITEMS) into the OpenAPI schema, as configured."""
    make_schema = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = make_schema()  # FastAPI keeps it as app.openapi_schema: changed here once
        batch = schema["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
        batch["maxItems"] = settings.max_batch_items
        form = schema["paths"]["/predict-images"]["post"]["requestBody"]["content"]["multipart/form-data"]
        form_schema = schema["components"]["schemas"][form["schema"]["$ref"].rsplit("/", 1)[-1]]
        form_schema["properties"]["files"]["maxItems"] = settings.max_batch_items
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
