"""The admin-token dependency; it also puts the Authorize button in Swagger UI."""

import re
from typing import Annotated

from fastapi import Depends, FastAPI, Request
from fastapi.routing import iter_route_contexts
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from prediction_service.api.deps import ServicesDep

bearer = HTTPBearer(
    auto_error=False,
    description="The admin token (ADMIN_TOKEN, or the one generated at first start in MODEL_DIR/admin_token); "
    "for feedback, also a FEEDBACK_TOKENS one.",
)


async def require_admin(
    services: ServicesDep, request: Request, _: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> None:
    services.admin_token.check_header(request.headers.get("authorization", ""))


AdminDep = Depends(require_admin)


async def require_feedback_token(
    services: ServicesDep, request: Request, _: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> None:
    services.feedback_tokens.check_header(request.headers.get("authorization", ""))


FeedbackDep = Depends(require_feedback_token)


def admin_paths(app: FastAPI) -> list[re.Pattern[str]]:
    """The path patterns of every route that needs the admin token (including included routers)."""
    return _paths_needing(app, require_admin)


def feedback_paths(app: FastAPI) -> list[re.Pattern[str]]:
    """The path patterns of every route that takes a feedback token."""
    return _paths_needing(app, require_feedback_token)


def _paths_needing(app: FastAPI, requirement: object) -> list[re.Pattern[str]]:
    patterns = []
    for context in iter_route_contexts(app.routes):
        dependant = getattr(context.original_route, "dependant", None)
        if dependant is not None and any(dep.call is requirement for dep in dependant.dependencies):
            patterns.append(context.route.path_regex)  # type: ignore[attr-defined]  # an APIRoute's
    return patterns
