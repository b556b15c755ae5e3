"""The admin-token dependency; it also puts the Authorize button in Swagger UI."""

import re
from typing import Annotated

from fastapi import Depends, FastAPI, Request
from fastapi.routing import iter_route_contexts
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from prediction_service.api.deps import ServicesDep

bearer = HTTPBearer(
    auto_error=False,
    description="The admin token (ADMIN_TOKEN, or the one generated at first start in MODEL_DIR/admin_token).",
)


async def require_admin(
    services: ServicesDep, request: Request, _: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> None:
    services.admin_token.check_header(request.headers.get("authorization", ""))


AdminDep = Depends(require_admin)


def admin_paths(app: FastAPI) -> list[re.Pattern[str]]:
    """The path patterns of every route that needs the admin token (including included routers)."""
    patterns = []
    for context in iter_route_contexts(app.routes):
        dependant = getattr(context.original_route, "dependant", None)
        if dependant is not None and any(dep.call is require_admin for dep in dependant.dependencies):
            patterns.append(context.route.path_regex)  # type: ignore[attr-defined]  # an APIRoute's
    return patterns
