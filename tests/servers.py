"""Start a server in its own process, as users do (`uvicorn` / `fastapi run`), and wait until it answers.

The one way to do it for the tests, scripts/ and bench/ (which put this folder on sys.path).
"""

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    def __init__(self, process: subprocess.Popen, url: str, log: Path, name: str) -> None:
        self.process = process
        self.url = url
        self.log = log
        self.name = name
        self.started = time.monotonic()

    def wait_until_ready(self, timeout: float, path: str = "/health/ready", poll: float = 0.2) -> float:
        """Seconds from the start until `path` answered 200; raises if the server exits or takes longer."""
        while time.monotonic() - self.started < timeout:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode} (see {self.log})")
            try:
                if httpx.get(self.url + path, timeout=5).status_code == 200:
                    return time.monotonic() - self.started
            except httpx.HTTPError:
                pass
            time.sleep(poll)
        raise TimeoutError(f"{self.name} was not ready within {timeout} s (see {self.log})")

    def kill(self) -> None:
        """SIGKILL the whole server (all its workers and child processes), as a crash would."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def kill_alone(self) -> None:
        """SIGKILL the server's own process only, as the OOM killer would: its children are not signalled."""
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self, timeout: float = 30) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def start_server(
    env: dict[str, str],
    log: Path,
    workers: int = 1,
    command: str = "uvicorn",
    app: str = "main:app",
    cwd: Path = ROOT,
    name: str = "the server",
    options: tuple[str, ...] = (),
) -> Server:
    """The service (or another ASGI app) under uvicorn or `fastapi run`, on a free port of its own."""
    port = free_port()
    if command == "fastapi":
        args = [sys.executable, "-m", "fastapi", "run", "main.py", "--port", str(port), "--workers", str(workers)]
    else:
        # asyncio's own loop, named: fastapi-cli installs uvloop, which uvicorn would otherwise pick (see README).
        args = [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port), "--loop", "asyncio"]
        args += ["--workers", str(workers)]
    return launch([*args, *options], f"http://127.0.0.1:{port}", env, log, cwd, name)


def launch(
    args: list[str], url: str, env: dict[str, str], log: Path, cwd: Path = ROOT, name: str = "the server"
) -> Server:
    """Any server command, in a session of its own (so that `kill` reaches its children); output to `log`."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **env}
    with log.open("ab") as log_file:
        process = subprocess.Popen(
            args, cwd=cwd, env=full_env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
    return Server(process, url, log, name)


def process_group(group: int) -> list[str]:
    """The command lines of the live (not zombie) processes of a process group."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if fields[0] not in "ZX" and int(fields[2]) == group:
                found.append((stat.parent / "cmdline").read_text().replace("\0", " ")[:200])
        except (OSError, IndexError):
            continue
    return found


@contextmanager
def running_server(
    env: dict[str, str], log: Path, workers: int = 1, ready_timeout: float = 180, command: str = "uvicorn"
) -> Iterator[Server]:
    server = start_server(env, log, workers, command)
    try:
        server.wait_until_ready(ready_timeout)
        yield server
    finally:
        server.stop()
