"""Domain errors that carry the HTTP status a client should see.

Domain code raises these without knowing about HTTP frameworks; one handler in
`api.errors` renders every one of them as `{"detail": message}`.
"""


class ServiceError(Exception):
    status_code = 500

    def __init__(self, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or {}

    def __reduce__(self) -> tuple:
        # Pickled as what it is (e.g. from the model's process), whatever its subclass's __init__ takes.
        return _rebuild, (type(self), self.detail), self.__dict__


class InvalidInput(ServiceError):
    """The request is well-formed HTTP, but its content cannot be used."""

    status_code = 422


class UnsupportedMediaType(ServiceError):
    status_code = 415


class PayloadTooLarge(ServiceError):
    status_code = 413


class NotFound(ServiceError):
    status_code = 404


class Conflict(ServiceError):
    status_code = 409


class Unauthorized(ServiceError):
    status_code = 401

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": "Bearer"})


class ModelUnavailable(ServiceError):
    status_code = 503

    def __init__(self, detail: str, retry_after: int | None = None) -> None:
        headers = {"Retry-After": str(retry_after)} if retry_after else None
        super().__init__(detail, headers=headers)


class Overloaded(ServiceError):
    status_code = 503

    def __init__(self, detail: str, retry_after: int = 1) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after)})


class Forbidden(ServiceError):
    status_code = 403


class DependencyUnavailable(ServiceError):
    """A service that this request needs (the database) is away: predictions go on from what is loaded, but
    what must be written or read there waits until it is back."""

    status_code = 503

    def __init__(self, detail: str, retry_after: int = 5) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after)})


def _rebuild(kind: type[ServiceError], detail: str) -> ServiceError:
    error = kind.__new__(kind)
    Exception.__init__(error, detail)
    return error  # pickle then restores its attributes (detail, headers, ...)
