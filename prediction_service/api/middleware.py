"""Pure ASGI middleware (cheap on the hot path): trailing slashes, body limits and timeouts."""

import asyncio
import contextlib
import functools
import json
import os
import random
import re
import time
from collections.abc import Callable

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from prediction_service.core import logs, metrics
from prediction_service.core.errors import ServiceError


class TrailingSlashInsensitive:
    """Serve `/predict/` exactly like `/predict`: no redirect, no second route."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = scope["path"]
            if len(path) > 1 and path.endswith("/"):
                scope = {**scope, "path": path.rstrip("/") or "/"}
        await self.app(scope, receive, send)


class BodyLimits:
    """Refuse request bodies over a per-path size limit, and bodies that arrive too slowly.

    A declared Content-Length over the limit is answered 413 before anything is
    read; a body without one is counted as it streams in and cut off at the
    limit. The whole body must arrive within `timeout` seconds (408), so a
    client trickling it in cannot hold a connection open forever.
    """

    def __init__(self, app: ASGIApp, limits: dict[str, tuple[int, str]], default: tuple[int, str], timeout: float):
        self.app = app
        self.limits = limits
        self.default = default
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        limit, setting = self.limits.get(scope["path"], self.default)
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _send_json(
                send, 413, f"the request body is {declared} bytes, over the limit of {limit} bytes ({setting})"
            )
            return
        received = 0
        deadline = time.monotonic() + self.timeout

        async def limited_receive() -> Message:
            nonlocal received
            remaining = deadline - time.monotonic()
            try:
                async with asyncio.timeout(max(remaining, 0.001)):
                    message = await receive()
            except TimeoutError:
                raise HTTPException(408, f"the request body did not arrive within {self.timeout:g} s") from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise HTTPException(413, f"the request body is over the limit of {limit} bytes ({setting})")
            return message

        await self.app(scope, limited_receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _send_json(send: Send, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    extra = [(name.lower().encode(), value.encode()) for name, value in (headers or {}).items()]
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
                *extra,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class AuthBeforeBody:
    """Check the token of protected writes (the admin's; for feedback, a feedback token too) before reading
    their body.

    FastAPI reads (and spools to disk) a request's body before it runs the
    route's dependencies, so without this an anonymous client could make the
    server store a large upload only to be told 401 afterwards.

    A refused body is not stored, but a small one is still read and dropped
    before the answer: a server that closes a connection with unread data
    resets it, and a client still sending (curl, without `Expect:
    100-continue` below 1 MiB) then fails with "connection reset" and never
    sees the 401. A body over `drain_bytes`, one announced with `Expect:
    100-continue` (not sent yet) or one slower than `timeout` is not waited for.
    """

    def __init__(
        self,
        app: ASGIApp,
        protected: list[re.Pattern[str]],
        check: Callable[[str], None],
        drain_bytes: int = 8 * 1024 * 1024,
        timeout: float = 10.0,
    ) -> None:
        self.app = app
        self.protected = protected
        self.check = check
        self.drain_bytes = drain_bytes
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] == "POST"
            and any(p.match(scope["path"]) for p in self.protected)
        ):
            header = next((value.decode("latin-1") for name, value in scope["headers"] if name == b"authorization"), "")
            try:
                self.check(header)
            except ServiceError as error:
                if self._worth_draining(scope):
                    await _discard_body(receive, self.drain_bytes, self.timeout)
                await _send_json(send, error.status_code, error.detail, error.headers)
                return
        await self.app(scope, receive, send)

    def _worth_draining(self, scope: Scope) -> bool:
        expects_continue = any(
            name == b"expect" and value.lower() == b"100-continue" for name, value in scope["headers"]
        )
        declared = _content_length(scope)
        return not expects_continue and (declared is None or 0 < declared <= self.drain_bytes)


async def _discard_body(receive: Receive, most: int, seconds: float) -> None:
    """Read and drop a request body, up to `most` bytes and `seconds`."""
    received = 0
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            while received <= most:
                message = await receive()
                if message["type"] != "http.request":
                    return
                received += len(message.get("body", b""))
                if not message.get("more_body", False):
                    return


# The pages may load only what this service serves: no CDN, nothing from outside, even by accident
# (ReDoc, for one, asks a CDN for its logo).
SAME_ORIGIN_ONLY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; font-src 'self' data:; worker-src 'self' blob:; connect-src 'self'; "
    "frame-ancestors 'none'"
)


class PageSecurityHeaders:
    """A Content-Security-Policy that keeps the HTML pages (docs, dashboard) on this origin."""

    def __init__(self, app: ASGIApp, pages: tuple[str, ...]) -> None:
        self.app = app
        self.pages = pages

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.pages):
            await self.app(scope, receive, send)
            return

        async def send_with_policy(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"content-security-policy", SAME_ORIGIN_ONLY.encode()))
                headers.append((b"x-content-type-options", b"nosniff"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_policy)


REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# Names this worker process in responses (X-Worker) and logs: which of several workers answered.
WORKER_ID = os.urandom(4).hex().encode()


class RequestObserver:
    """For every request: a request id (the client's X-Request-ID, or a new one; always returned),
    one log line (id, method, path, status, latency, model version), and the HTTP metrics."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = _client_request_id(scope) or f"{random.getrandbits(128):032x}"  # an id, not a secret
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        ours = ((b"x-request-id", request_id.encode()), (b"x-worker", WORKER_ID))
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                # The message is the sender's own, made for this one call: extended, not copied.
                message["headers"] = [*message.get("headers", ()), *ours]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope["method"]
            requests, latency = _request_metrics(method, template, status)
            requests.inc()
            latency.observe(elapsed)
            path = scope["path"][:200]
            fields = {
                "request_id": request_id,
                "method": method,
                "path": path,
                "route": template,
                "status": status,
                "duration_ms": round(elapsed * 1000, 2),
            }
            if "model_version" in state:
                fields["model_version"] = state["model_version"]
            logs.log_request(f"{method} {path} {status} {elapsed * 1000:.1f} ms", fields)


@functools.cache
def _request_metrics(method: str, route: str, status: int) -> tuple:
    """The labelled metric children, looked up once per (method, route, status)."""
    return metrics.REQUESTS.labels(method, route, status), metrics.LATENCY.labels(method, route, status)


def _client_request_id(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            text = value.decode("latin-1")
            return text if REQUEST_ID.match(text) else None
    return None
