"""Close connections whose request line and headers do not arrive in time (slowloris).

uvicorn has no such timeout: a client that opens a connection and sends its
headers a byte every few seconds keeps the connection (and its buffers) for as
long as it likes, and a few thousand of them exhaust the server's sockets. The
application cannot see a request before its headers are complete (BodyLimits
times the body), so this adds the missing timer to uvicorn's httptools
protocol, the one `fastapi run` and `uvicorn main:app` use: armed when a
connection opens and after each response, disarmed when a request's headers
are complete; on expiry the client gets a 408 and the connection is closed.
It is installed once per process, from create_app (setting HEADER_TIMEOUT).
"""

import logging
from typing import Any

log = logging.getLogger(__name__)

REQUEST_TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
    b'content-length: 62\r\n\r\n{"detail": "the request headers did not arrive in time (408)"}'
)

_installed_timeout: list[float] = []


def install_header_timeout(seconds: float) -> None:
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:  # httptools not installed: uvicorn uses h11, which is left as it is
        log.warning("httptools is not installed: slow request headers are not timed out")
        return
    if _installed_timeout:
        _installed_timeout[0] = seconds
        return
    _installed_timeout.append(seconds)
    original_made = HttpToolsProtocol.connection_made
    original_lost = HttpToolsProtocol.connection_lost
    original_headers = HttpToolsProtocol.on_headers_complete
    original_response = HttpToolsProtocol.on_response_complete

    def arm(protocol: Any) -> None:
        disarm(protocol)
        protocol._head_timer = protocol.loop.call_later(_installed_timeout[0], expire, protocol)

    def disarm(protocol: Any) -> None:
        timer = getattr(protocol, "_head_timer", None)
        if timer is not None:
            timer.cancel()
            protocol._head_timer = None

    def expire(protocol: Any) -> None:
        protocol._head_timer = None
        transport = protocol.transport
        if transport is not None and not transport.is_closing():
            transport.write(REQUEST_TIMEOUT_RESPONSE)
            transport.close()

    def connection_made(self: Any, transport: Any) -> None:
        original_made(self, transport)
        arm(self)

    def connection_lost(self: Any, exc: Exception | None) -> None:
        disarm(self)
        original_lost(self, exc)

    def on_headers_complete(self: Any) -> None:
        disarm(self)
        original_headers(self)

    def on_response_complete(self: Any) -> None:
        original_response(self)
        if not self.transport.is_closing():
            arm(self)

    HttpToolsProtocol.connection_made = connection_made  # type: ignore[method-assign]
    HttpToolsProtocol.connection_lost = connection_lost  # type: ignore[method-assign]
    HttpToolsProtocol.on_headers_complete = on_headers_complete  # type: ignore[method-assign]
    HttpToolsProtocol.on_response_complete = on_response_complete  # type: ignore[method-assign]
