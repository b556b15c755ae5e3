"""The admin-token dependency; it also puts the Authorize button in Swagger UI."""

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

bearer = HTTPBearer(
    auto_error=False,
    description="The admin token (ADMIN_TOKEN, or the one generated at first start in MODEL_DIR/admin_token).",
)


async def require_admin(request: Request, _: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
    request.app.state.services.admin_token.check_header(request.headers.get("authorization", ""))


AdminDep = Depends(require_admin)


def requires_admin(route: object) -> bool:
    dependant = getattr(route, "dependant", None)
    return dependant is not None and any(dep.call is require_admin for dep in dependant.dependencies)
