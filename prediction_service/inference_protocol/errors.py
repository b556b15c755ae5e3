"""Protocol errors: each carries the status it is answered with (rendered as `{"error": ...}` under /v2)."""

from prediction_service.core.errors import ServiceError


class BadRequest(ServiceError):
    """The inference request cannot be used as sent: wrong datatype, shape, input name, or too many rows."""

    status_code = 400
