"""One error shape for every failure: `{"detail": ...}` with a message that says what to fix."""

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute, iter_route_contexts
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from prediction_service.core.errors import ServiceError

log = logging.getLogger(__name__)


class ErrorResponse(BaseModel):
    detail: str


class FieldError(BaseModel):
    loc: list[str | int]
    msg: str
    type: str
    input: Any = None


class UnprocessableResponse(BaseModel):
    """422: either FastAPI's list of bad fields, or one message about the content (e.g. the zip)."""

    detail: list[FieldError] | str


ERROR_DESCRIPTIONS = {
    400: "The request body could not be read (e.g. malformed multipart data).",
    401: "Missing or malformed `Authorization: Bearer <admin token>` header.",
    403: "The admin token is wrong.",
    404: "No such resource.",
    408: "The client took too long to send the request body.",
    409: "The request conflicts with the current state.",
    413: "The upload is over a size or pixel limit.",
    415: "The file is not of an accepted type.",
    422: "A parameter or the uploaded content is invalid; the message says which and why.",
    503: "A model is not loaded yet or is unavailable, or the service is busy; see Retry-After.",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error codes a route can answer with."""
    responses: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        model = UnprocessableResponse if code == 422 else ErrorResponse
        responses[code] = {"model": model, "description": ERROR_DESCRIPTIONS[code]}
    return responses


async def service_error_handler(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, ServiceError)
    return JSONResponse({"detail": error.detail}, status_code=error.status_code, headers=error.headers)


async def validation_error_handler(request: Request, error: Exception) -> JSONResponse:
    """FastAPI's 422 list, with each message naming the field and what it accepts."""
    assert isinstance(error, RequestValidationError)
    descriptions = _parameter_descriptions(request)
    details = []
    for item in error.errors():
        location = [str(part) for part in item.get("loc", ())]
        field = location[-1] if location else "request"
        where = " -> ".join(location[1:]) or field
        message = f"{where}: {item.get('msg', 'invalid')}"
        if "Expected UploadFile" in message:  # a part without a file name arrives as a plain form field
            part = location[1] if len(location) > 1 else field
            message = (
                f"{where}: this part is a plain form field, not a file: send it with a file name "
                f'(Content-Disposition: form-data; name="{part}"; filename="...")'
            )
        accepted = descriptions.get(field) if len(location) == 2 else None
        if accepted:
            message += f". Accepted: {accepted}"
        shown = {"loc": item.get("loc", ()), "msg": message, "type": item.get("type", "value_error")}
        if "input" in item and item.get("type") != "missing":
            shown["input"] = _printable(item["input"])
        details.append(shown)
    return JSONResponse({"detail": details}, status_code=422)


def _parameter_descriptions(request: Request) -> dict[str, str]:
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return {}
    params = [*route.dependant.query_params, *route.dependant.path_params]
    return {param.alias: param.field_info.description for param in params if param.field_info.description}


def _printable(value: Any) -> Any:
    if isinstance(value, str | int | float | bool) or value is None:
        return value if not isinstance(value, str) or len(value) <= 200 else value[:200] + "..."
    return repr(value)[:200]


async def unexpected_error_handler(request: Request, error: Exception) -> JSONResponse:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=error)
    return JSONResponse(
        {"detail": "internal error: the service logged it; please report the request id"}, status_code=500
    )


async def http_error_handler(request: Request, error: Exception) -> Response:
    """Starlette's HTTP errors as JSON; a 405 lists every method the path has, not one route's."""
    assert isinstance(error, StarletteHTTPException)
    headers = dict(error.headers or {})
    detail = error.detail
    if error.status_code == 400 and detail == "There was an error parsing the body":
        detail = "the request body could not be parsed: send UTF-8 JSON or multipart/form-data, as documented"
    if error.status_code == 405:
        methods: set[str] = set()
        for route in iter_route_contexts(request.app.routes):
            if (
                route.methods
                and route.route.matches({**request.scope, "method": next(iter(route.methods))})[0] == Match.FULL
            ):
                methods |= route.methods
        headers["Allow"] = ", ".join(sorted(methods))
    return JSONResponse({"detail": detail}, status_code=error.status_code, headers=headers)


def install(app: FastAPI) -> None:
    app.add_exception_handler(StarletteHTTPException, http_error_handler)
    app.add_exception_handler(ServiceError, service_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_exception_handler(Exception, unexpected_error_handler)
