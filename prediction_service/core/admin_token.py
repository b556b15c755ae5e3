"""The admin token that retraining and model management require."""

import hmac
import logging
import os
import secrets
from pathlib import Path

from filelock import FileLock

from prediction_service.core.errors import Forbidden, Unauthorized

log = logging.getLogger(__name__)


class AdminToken:
    """`ADMIN_TOKEN` if set; otherwise one generated at first start and kept at `path` (0600)."""

    def __init__(self, configured: str | None, path: Path) -> None:
        self._configured = configured
        self._path = path
        self._token: str | None = configured

    @property
    def path(self) -> Path:
        return self._path

    def ensure(self) -> None:
        """Read or create the token file (all worker processes end up with the same token)."""
        if self._configured:
            return
        self._path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(self._path.with_name(f".{self._path.name}.lock")):
            if self._path.exists():
                self._token = self._path.read_text().strip()
                log.info("admin token: read from %s (set ADMIN_TOKEN to choose your own)", self._path)
                return
            token = secrets.token_urlsafe(32)
            fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(token + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            self._token = token
            # Logged once, when generated, so local use is one copy-paste away.
            log.warning("generated an admin token (kept in %s, mode 0600): %s", self._path, token)

    def check_header(self, authorization: str) -> None:
        """Check an `Authorization` header value; raise Unauthorized or Forbidden."""
        if not self.matches(bearer_token(authorization, "the admin token")):
            raise Forbidden("the admin token is wrong")

    def matches(self, credentials: str) -> bool:
        if self._token is None:
            self.ensure()
        return hmac.compare_digest(credentials.encode(), (self._token or "").encode())


def bearer_token(authorization: str, needed: str) -> str:
    """The token of an `Authorization: Bearer <token>` header value; Unauthorized if there is none."""
    scheme, _, credentials = authorization.strip().partition(" ")
    if not scheme or not credentials.strip():
        raise Unauthorized(f"this needs {needed}: send the header `Authorization: Bearer <token>`")
    if scheme.lower() != "bearer":
        raise Unauthorized(f"the Authorization scheme must be Bearer, not {scheme[:20]!r}")
    return credentials.strip()
