"""Decode the images of an uploaded zip on several cores.

Reading a PNG from a zip, decoding and normalising it is ~25 us of mostly
Python work, so threads do not help (the GIL); a few decoding processes do. They
read the zip themselves, by path and the directory records the server sends
(see zip_entries), so no image bytes travel between processes, and they are
started by a forkserver that imports only the image code, once, at service
start, so an upload does not pay for process start-up.
"""

import logging
import multiprocessing
import os
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from prediction_service.models.mnist.images import ImageLimits, warm_up
from prediction_service.retraining.archive import Chunk, Decoded, decode_entries

log = logging.getLogger(__name__)


class DecodePool:
    def __init__(self, processes: int, limits: ImageLimits) -> None:
        self.processes = processes
        self.limits = limits
        self._executor: ProcessPoolExecutor | None = None

    def start(self) -> None:
        if self.processes < 1:
            return
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["prediction_service.retraining.archive"])
        self._executor = ProcessPoolExecutor(
            self.processes, mp_context=context, initializer=_exit_with_server, initargs=(os.getpid(),)
        )
        try:
            # Start the processes, and their image decoders, now rather than at the first upload.
            for future in [self._executor.submit(warm_up) for _ in range(self.processes)]:
                future.result(timeout=60)
        except Exception:  # e.g. a __main__ that child processes cannot import
            log.exception("decoding processes did not start; uploads are decoded in the server process")
            self.stop()

    def stop(self) -> None:
        if self._executor is not None:
            # Waiting lets the processes see their end (without it they outlive the server).
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    def decode_chunks(self, path: Path, chunks: Iterable[Chunk]) -> Iterator[Decoded]:
        """Decoded chunks of the zip at `path`, in order; a few in flight, so memory stays bounded."""
        if self._executor is None:
            yield from (decode_entries(path, chunk, self.limits) for chunk in chunks)
            return
        in_flight: deque[tuple[Chunk, Future[Decoded]]] = deque()
        try:
            for chunk in chunks:
                in_flight.append((chunk, self._executor.submit(decode_entries, path, chunk, self.limits)))
                if len(in_flight) > 2 * self.processes:
                    yield self._result(path, *in_flight.popleft())
            while in_flight:
                yield self._result(path, *in_flight.popleft())
        finally:
            for _, future in in_flight:
                future.cancel()

    def _result(self, path: Path, chunk: Chunk, future: Future[Decoded]) -> Decoded:
        try:
            return future.result()
        except BrokenProcessPool:
            log.exception("an image decoding process died; decoding in this process instead")
            self.stop()
            return decode_entries(path, chunk, self.limits)


def _exit_with_server(server_pid: int) -> None:
    """In each decoding process: end when the server is gone, even if it was killed (SIGKILL).

    The processes are the forkserver's children, not the server's, so the
    kernel's parent-death signal cannot do this; nor can a closed pipe, since
    each process holds both ends of its own task queue.
    """

    def watch() -> None:
        while True:
            time.sleep(1)
            try:
                os.kill(server_pid, 0)
            except ProcessLookupError:
                os._exit(0)
            except PermissionError:  # the pid now belongs to another user's process: ours is gone
                os._exit(0)

    threading.Thread(target=watch, name="exit-with-server", daemon=True).start()
