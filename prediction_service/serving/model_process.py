"""The server's side of the model's process (serving.model_host): start, talk, restart.

One request at a time goes down the pipe (a batch of images, or a model to load);
while the process computes, the event loop stays free and the next batch fills up.
If the process dies, the request in flight fails with a 503 and a new process starts.
"""

import asyncio
import logging

from prediction_service.core.child_process import start_child
from prediction_service.core.errors import Overloaded
from prediction_service.core.settings import Settings
from prediction_service.serving.messages import FRAME_HEADER, LoadModel, Predict, Reply, decode_payload, encode_frame

log = logging.getLogger(__name__)
START_TIMEOUT = 60


class ModelProcess:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._process: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        settings = self.settings
        self._process = await start_child(
            "prediction_service.serving.model_host",
            "--max-image-bytes",
            str(settings.max_image_bytes),
            "--max-image-pixels",
            str(settings.max_image_pixels),
            settings=settings,
            threads=settings.inference_threads,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=1 << 24,
        )

    async def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        assert process.stdin is not None
        process.stdin.close()  # the model's process ends when its input does
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await process.wait()

    async def call(self, message: LoadModel | Predict) -> Reply:
        """The process's reply; raises its ModelProcessFailed, or Overloaded if the process died."""
        async with self._lock:
            process = self._process
            if process is None:
                raise Overloaded("the model's process is not running; retry shortly")
            assert process.stdin is not None
            assert process.stdout is not None
            try:
                process.stdin.write(encode_frame(message))
                await process.stdin.drain()
                header = await process.stdout.readexactly(FRAME_HEADER.size)
                (length,) = FRAME_HEADER.unpack(header)
                reply: Reply = decode_payload(await process.stdout.readexactly(length))
            except (ConnectionError, asyncio.IncompleteReadError, BrokenPipeError) as error:
                log.error("the model's process died (%s); starting a new one", error)
                await self._restart()
                raise Overloaded("the model's process restarted; retry in a moment") from error
        if reply.failure is not None:
            raise reply.failure
        return reply

    def busy(self) -> bool:
        """Whether a request is in the process or waiting for it."""
        return self._lock.locked()

    def call_from_thread(self, message: LoadModel | Predict, timeout: float = START_TIMEOUT) -> Reply:
        """`call` for code running in another thread (e.g. the registry loading a version)."""
        assert self._loop is not None, "start() first"
        return asyncio.run_coroutine_threadsafe(self.call(message), self._loop).result(timeout)

    async def _restart(self) -> None:
        if self._process is not None and self._process.returncode is None:
            self._process.kill()
            await self._process.wait()
        await self.start()
