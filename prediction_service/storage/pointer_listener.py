"""LISTEN for pointer moves (storage.pointers' NOTIFY), so that a process serves a new version within moments.

One connection per process, in a thread, outside the pool (it waits for notifications all its life). When it
drops, it connects again, backing off; the moves notified meanwhile are lost, so on every (re)connection it
reports every pointer as possibly moved. The periodic check of the pointers stays the fallback.
"""

import logging
import threading
from collections.abc import Callable

import psycopg

from prediction_service.storage.pointers import CHANNEL
from prediction_service.storage.postgres import KEEPALIVES

log = logging.getLogger(__name__)

# (model, pointer) with pointer "serving" or "shadow"; (None, None) after a (re)connection: anything may have moved.
OnMove = Callable[[str | None, str | None], None]


class PointerListener:
    def __init__(self, url: str, on_move: OnMove, max_backoff: float = 5.0) -> None:
        self.url = url
        self.on_move = on_move
        self.max_backoff = max_backoff
        self.connected = threading.Event()  # set while listening (tests wait for it)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="pointer-listener", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        backoff = 0.1
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True, connect_timeout=5, **KEEPALIVES) as connection:
                    connection.execute(f"LISTEN {CHANNEL}")
                    self.connected.set()
                    backoff = 0.1
                    self._report(None, None)  # what moved while no one listened
                    while not self._stop.is_set():
                        # A timeout, so that stop() is noticed within half a second.
                        for notification in connection.notifies(timeout=0.5):
                            model, _, pointer = notification.payload.partition(" ")
                            self._report(model, pointer)
            except psycopg.Error as error:
                if self.connected.is_set():
                    log.warning("lost the database's pointer notifications (%s); reconnecting", error)
                self.connected.clear()
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self.max_backoff)
        self.connected.clear()

    def _report(self, model: str | None, pointer: str | None) -> None:
        try:
            self.on_move(model, pointer)
        except Exception:
            log.exception("following a pointer move of %s failed; the periodic check will retry", model)
