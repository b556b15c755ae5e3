"""The Open Inference Protocol (KServe V2 REST) for every model that has a signature.

Thin: the protocol itself lives in `prediction_service.inference_protocol`. Errors
under /v2 have the protocol's shape, `{"error": "..."}`; the rest of the service
keeps `{"detail": ...}`. The app includes `router` and calls `install(app)` for that error shape.
"""

import json
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Path, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from prediction_service.inference_protocol.service import InferenceProtocol
from prediction_service.inference_protocol.tensors import DATATYPES

PREFIX = "/v2"
router = APIRouter(prefix=PREFIX, tags=["open inference protocol"])

ModelName = Annotated[str, Path(description="The model: `penguins` or `mnist` (GET /models lists them).")]
ModelVersion = Annotated[
    str,
    Path(
        description="The serving version, or the shadow's (GET /models): the shadow then answers alone. "
        "Another version answers 404 with how to serve it."
    ),
]


class ProtocolErrorBody(BaseModel):
    error: str


class Readiness(BaseModel):
    ready: bool


class ModelReadiness(Readiness):
    name: str


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class OutputTensor(TensorMetadata):
    data: list[Any] | None = None
    parameters: dict[str, Any] | None = None


class InferenceResponse(BaseModel):
    model_name: str
    model_version: str
    id: str | None = None
    parameters: dict[str, Any] | None = Field(
        None,
        description="`prediction_ids`: each row's prediction id, in row order "
        "(POST /predictions/{prediction_id}/feedback tells the service its true label).",
        examples=[{"prediction_ids": ["3f2b6c1e9a4d4e0f8b7a6c5d4e3f2a1b"]}],
    )
    outputs: list[OutputTensor]


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    descriptions = {
        400: "The request does not fit the model: datatype, shape, input name, row count; the message says which.",
        404: "No such model, or the version named neither serves nor shadows (the message says how to serve it).",
        413: "The request body is over MAX_IMAGE_BYTES.",
        422: "An image file cannot be read.",
        503: "The model is not loaded yet, or the service is busy; see Retry-After.",
    }
    return {code: {"model": ProtocolErrorBody, "description": descriptions[code]} for code in codes}


TENSOR_SCHEMA = {
    "type": "object",
    "required": ["name", "datatype", "shape"],
    "properties": {
        "name": {"type": "string"},
        "datatype": {"type": "string", "enum": list(DATATYPES)},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "data": {"type": "array", "description": "Row-major values, flat or nested; BYTES as strings."},
        "parameters": {"type": "object", "description": "`binary_data_size` with the binary extension."},
    },
}
INFER_BODY = {
    "requestBody": {
        "required": True,
        # The binary extension is described, not declared as a second content type: any bytes would be schema-valid.
        "description": "JSON; or, with the binary tensor data extension (any Content-Type), a JSON header of "
        "`Inference-Header-Content-Length` bytes followed by the raw tensors.",
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["inputs"],
                    "properties": {
                        "id": {"type": "string"},
                        "parameters": {
                            "type": "object",
                            "description": "`binary_data_output: true`: every output as binary data.",
                        },
                        "inputs": {"type": "array", "minItems": 1, "items": TENSOR_SCHEMA},
                        "outputs": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["name"],
                                "properties": {"name": {"type": "string"}, "parameters": {"type": "object"}},
                            },
                        },
                    },
                },
                "examples": {
                    "penguins": {
                        "value": {
                            "inputs": [
                                {"name": "measurements", "datatype": "FP32", "shape": [1, 2], "data": [40.3, 195]}
                            ]
                        }
                    }
                },
            },
        },
    }
}


def _protocol(request: Request) -> InferenceProtocol:
    return request.app.state.inference_protocol


# Inference first: requests are matched against the routes in order.
@router.post(
    "/models/{name}/infer",
    summary="Inference",
    response_model=InferenceResponse,
    responses=_errors(400, 404, 413, 422, 503),
    openapi_extra=INFER_BODY,
)
async def infer(name: ModelName, request: Request) -> Response:
    return await _infer(request, name, None)


@router.post(
    "/models/{name}/versions/{version}/infer",
    summary="Inference on a version",
    response_model=InferenceResponse,
    responses=_errors(400, 404, 413, 422, 503),
    openapi_extra=INFER_BODY,
)
async def version_infer(name: ModelName, version: ModelVersion, request: Request) -> Response:
    return await _infer(request, name, version)


async def _infer(request: Request, name: str, version: str | None) -> Response:
    body, headers, model_version = await _protocol(request).infer(
        name,
        version,
        await request.body(),
        request.headers.get("inference-header-content-length"),
        getattr(request.state, "request_id", None),
    )
    request.state.model_version = model_version  # for the request log
    return Response(body, headers=headers)


@router.get("", summary="Server metadata", response_model=ServerMetadata)
async def server_metadata(request: Request) -> dict[str, Any]:
    return _protocol(request).server_metadata()


@router.get("/health/live", summary="Server liveness")
async def server_live() -> dict[str, bool]:
    return {"live": True}


@router.get(
    "/health/ready",
    summary="Server readiness: 200 once every model serves",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "A model is not loaded yet."}},
)
async def server_ready(request: Request) -> JSONResponse:
    ready = _protocol(request).server_ready()
    return JSONResponse({"ready": ready}, status_code=200 if ready else 503)


@router.get("/models/{name}", summary="Model metadata", response_model=ModelMetadata, responses=_errors(404, 503))
async def model_metadata(name: ModelName, request: Request) -> dict[str, Any]:
    return _protocol(request).model_metadata(name, None)


@router.get(
    "/models/{name}/versions/{version}",
    summary="Model metadata of a version",
    response_model=ModelMetadata,
    responses=_errors(404, 503),
)
async def version_metadata(name: ModelName, version: ModelVersion, request: Request) -> dict[str, Any]:
    return _protocol(request).model_metadata(name, version)


NOT_READY: dict[int | str, dict[str, Any]] = {
    503: {"model": ModelReadiness, "description": "The model is not loaded yet."}
}


@router.get(
    "/models/{name}/ready", summary="Model readiness", response_model=ModelReadiness, responses=_errors(404) | NOT_READY
)
async def model_ready(name: ModelName, request: Request) -> JSONResponse:
    return _readiness(name, _protocol(request).model_ready(name, None))


@router.get(
    "/models/{name}/versions/{version}/ready",
    summary="Readiness of a version",
    response_model=ModelReadiness,
    responses=_errors(404) | NOT_READY,
)
async def version_ready(name: ModelName, version: ModelVersion, request: Request) -> JSONResponse:
    return _readiness(name, _protocol(request).model_ready(name, version))


def _readiness(name: str, ready: bool) -> JSONResponse:
    return JSONResponse({"name": name, "ready": ready}, status_code=200 if ready else 503)


@router.get(
    "/models/{name}/config",
    summary="Triton's model configuration (what perf_analyzer reads)",
    responses=_errors(404, 503),
)
async def model_config(name: ModelName, request: Request) -> dict[str, Any]:
    return _protocol(request).model_config(name, None)


@router.get(
    "/models/{name}/versions/{version}/config",
    summary="Triton's model configuration of a version",
    responses=_errors(404, 503),
)
async def version_config(name: ModelName, version: ModelVersion, request: Request) -> dict[str, Any]:
    return _protocol(request).model_config(name, version)


class ProtocolErrorShape:
    """Under /v2, turn the service's `{"detail": ...}` errors (from any handler or middleware inside this
    one) into the protocol's `{"error": "..."}`; other paths pass straight through."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not (path == PREFIX or path.startswith(PREFIX + "/")):
            await self.app(scope, receive, send)
            return
        error_start: Message | None = None
        chunks: list[bytes] = []

        async def send_in_protocol_shape(message: Message) -> None:
            nonlocal error_start
            if message["type"] == "http.response.start" and message["status"] >= 400:
                error_start = message  # held until the body is known
                return
            if error_start is None or message["type"] != "http.response.body":
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            body = _protocol_error(b"".join(chunks))
            headers = [(key, value) for key, value in error_start.get("headers", []) if key != b"content-length"]
            headers.append((b"content-length", str(len(body)).encode()))
            await send({**error_start, "headers": headers})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, send_in_protocol_shape)


def _protocol_error(body: bytes) -> bytes:
    try:
        document = json.loads(body)
    except ValueError:
        return body
    if not isinstance(document, dict) or "detail" not in document:
        return body
    detail = document["detail"]
    if isinstance(detail, list):  # FastAPI's list of bad fields, as one message
        detail = "; ".join(f"{'.'.join(map(str, item.get('loc', ())))}: {item.get('msg')}" for item in detail)
    return json.dumps({"error": str(detail)}).encode()


def install(app: FastAPI) -> None:
    """The protocol's state and error shape on `app` (include `router` too). Call it after adding the body
    limits: their errors get the protocol's shape too."""
    services = app.state.services
    app.state.inference_protocol = InferenceProtocol(
        services.serving.registry,
        services.serving.protocol_signatures(),
        services.settings.max_batch_items,
        (app.title, app.version),
    )
    app.add_middleware(ProtocolErrorShape)
