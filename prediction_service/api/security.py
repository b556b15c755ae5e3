"""The admin-token dependency; it also puts the Authorize button in Swagger UI."""

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

bearer = HTTPBearer(
    auto_error=False,
    description="The admin token (ADMIN_TOKEN, or the one generated at first start in MODEL_DIR/admin_token).",
)


def require_admin(request: Request, _: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
    header = request.headers.get("authorization", "")
    scheme, _, credentials = header.strip().partition(" ")
    request.app.state.services.admin_token.check(scheme or None, credentials.strip() or None)


AdminDep = Depends(require_admin)
