"""Log set-up: plain lines for people, or one JSON object per line for log collectors.

Lines are written through a buffer that is flushed at once for warnings and
errors and otherwise at most `FLUSH_SECONDS` later: a flush per line costs a
system call, which under load is a good part of a request's time.
"""

import atexit
import io
import json
import logging
import os
import sys
import threading
import time
from datetime import UTC, datetime

FLUSH_SECONDS = 0.2


class LineFormatter(logging.Formatter):
    """Formats a record through `line`, which `log_request` also calls without a record."""

    def format(self, record: logging.LogRecord) -> str:
        exception = self.formatException(record.exc_info) if record.exc_info else None
        fields = getattr(record, "fields", None)
        return self.line(record.created, record.levelname, record.name, record.getMessage(), fields, exception)

    def line(
        self, created: float, level: str, name: str, message: str, fields: dict | None, exception: str | None = None
    ) -> str:
        raise NotImplementedError


class JsonFormatter(LineFormatter):
    def line(
        self, created: float, level: str, name: str, message: str, fields: dict | None, exception: str | None = None
    ) -> str:
        entry = {
            "time": datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds"),
            "level": level,
            "logger": name,
            "message": message,
        }
        if fields:
            entry.update(fields)
        if exception:
            entry["exception"] = exception
        return json.dumps(entry, default=str)


class PlainFormatter(LineFormatter):
    """`time LEVEL logger: message key=value ...`, with the time text made once per second."""

    _second = -1
    _second_text = ""

    def line(
        self, created: float, level: str, name: str, message: str, fields: dict | None, exception: str | None = None
    ) -> str:
        second = int(created)
        if second != self._second:
            self._second, self._second_text = second, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
        line = f"{self._second_text},{int((created - second) * 1000):03d} {level} {name}: {message}"
        if fields:
            line += " " + " ".join([f"{key}={value}" for key, value in fields.items()])
        if exception:
            line += "\n" + exception
        return line


class BufferedStreamHandler(logging.StreamHandler):
    """A StreamHandler whose stream is flushed for warnings, and otherwise every FLUSH_SECONDS."""

    def __init__(self) -> None:
        raw = io.FileIO(os.dup(sys.stderr.fileno()), "w")
        super().__init__(io.TextIOWrapper(io.BufferedWriter(raw, 1 << 16), encoding="utf-8", errors="replace"))
        assert self.lock is not None  # Handler.__init__ always makes it; the one emit() holds too
        self._lock = self.lock
        self._last_flush = time.monotonic()
        threading.Thread(target=self._flush_now_and_then, name="log-flusher", daemon=True).start()
        atexit.register(self.flush_now)

    def emit(self, record: logging.LogRecord) -> None:
        super().emit(record)
        if record.levelno >= logging.WARNING:
            self.flush_now()

    def write_line(self, line: str) -> None:
        """A formatted line, written without a LogRecord (see `log_request`)."""
        with self._lock:
            self.stream.write(line + "\n")
        self.flush()

    def flush(self) -> None:
        """Called by StreamHandler after every record: only flush when it is time."""
        if time.monotonic() - self._last_flush >= FLUSH_SECONDS:
            self.flush_now()

    def flush_now(self) -> None:
        with self._lock:
            self._last_flush = time.monotonic()
            if not self.stream.closed:
                self.stream.flush()

    def _flush_now_and_then(self) -> None:
        while True:
            time.sleep(FLUSH_SECONDS)
            if time.monotonic() - self._last_flush >= FLUSH_SECONDS:
                self.flush_now()


_handler: BufferedStreamHandler | None = None


def configure(level: str = "INFO", json_lines: bool = False) -> None:
    """Give the service's loggers one stderr handler (idempotent: later calls change its format)."""
    global _handler
    # The logging HOWTO's "Optimization" switches: records here need no thread, process or caller.
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging._srcfile = None  # type: ignore[attr-defined]
    logger = logging.getLogger("prediction_service")
    logger.setLevel(level.upper())
    logger.propagate = False
    if _handler is None:
        _handler = BufferedStreamHandler()
    _handler.setFormatter(JsonFormatter() if json_lines else PlainFormatter())
    if _handler not in logger.handlers:
        logger.addHandler(_handler)
    # The service logs every request itself (with its id, latency and model version).
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)


request_log = logging.getLogger("prediction_service.requests")


def log_request(message: str, fields: dict) -> None:
    """The one line per request, at INFO.

    Under load a LogRecord and the logging machinery cost a tenth of a small
    request's time, so when nothing but this module's own handler listens (the
    normal case) the line goes straight to it, in the same format; with other
    handlers or filters attached (tests, embedding applications) it goes
    through logging as usual.
    """
    if not request_log.isEnabledFor(logging.INFO):
        return
    handler = _handler
    service = request_log.parent
    if (
        handler is not None
        and not request_log.handlers
        and not request_log.filters
        and service is not None
        and service.handlers == [handler]
        and not service.propagate
        and not service.filters
        and not handler.filters
        and isinstance(handler.formatter, LineFormatter)
    ):
        handler.write_line(handler.formatter.line(time.time(), "INFO", request_log.name, message, fields))
    else:
        request_log.info("%s", message, extra={"fields": fields})
