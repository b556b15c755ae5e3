"""Who may send feedback: the holders of a FEEDBACK_TOKENS token (which allows nothing else), or the admin."""

import hmac

from prediction_service.core.admin_token import AdminToken, bearer_token
from prediction_service.core.errors import Forbidden

NEEDED = "a feedback token (FEEDBACK_TOKENS) or the admin token"


class FeedbackTokens:
    def __init__(self, tokens: list[str], admin: AdminToken) -> None:
        self._tokens = [token.encode() for token in tokens if token]
        self._admin = admin

    def check_header(self, authorization: str) -> None:
        """Check an `Authorization` header value; raise Unauthorized or Forbidden."""
        credentials = bearer_token(authorization, NEEDED)
        given = credentials.encode()
        # Every token compared, each in constant time: the time taken tells nothing about which one is close.
        matches = [hmac.compare_digest(given, token) for token in self._tokens]
        if not any(matches) and not self._admin.matches(credentials):
            raise Forbidden(f"the token is wrong: feedback needs {NEEDED}")
