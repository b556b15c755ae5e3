"""A real PostgreSQL server for the tests: initdb and pg_ctl (Debian's `postgresql`) on a free port, its data in a
temporary folder, run as the `postgres` user when the tests run as root (PostgreSQL refuses root)."""

import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
import pytest
from servers import free_port

from prediction_service.storage.postgres import Postgres

if TYPE_CHECKING:
    from hosts import Host


def postgres_binaries() -> Path | None:
    """The folder of initdb and pg_ctl (Debian keeps them off PATH), the newest major version; None: not installed."""
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    folders = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda path: int(Path(path).parent.name))
    folders = [folder for folder in folders if (Path(folder) / "pg_ctl").exists()]
    return Path(folders[-1]) if folders else None


class PostgresServer:
    """`address`: where it listens (and its URLs point); `host`: the test host it runs on (tests/hosts.py)."""

    def __init__(self, binaries: Path, address: str = "127.0.0.1", host: "Host | None" = None) -> None:
        self.binaries = binaries
        self.address = address
        self.host = host
        self.port = host.free_port() if host else free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="pg-tests-"))
        self.data = self.folder / "data"
        self.log = self.folder / "server.log"
        self.as_root = os.geteuid() == 0
        if self.as_root:
            shutil.chown(self.folder, "postgres", "postgres")

    def _run(self, tool: str, *args: str) -> None:
        command = [str(self.binaries / tool), *args]
        if self.as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        if self.host:
            command = self.host.command(command)
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@{self.address}:{self.port}/{database}"

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8")
        if self.address != "127.0.0.1":  # initdb trusts loopback only; let in the hosts of the server's own subnet
            with (self.data / "pg_hba.conf").open("a") as rules:
                rules.write("host all all samenet trust\n")

    def start(self) -> None:
        # No fsync: a test server's data need not survive a power cut. No Unix socket: TCP on `address` only.
        options = f"-p {self.port} -c listen_addresses={self.address} -c unix_socket_directories='' -c fsync=off"
        self._run("pg_ctl", "start", "-w", "-t", "60", "-D", str(self.data), "-l", str(self.log), "-o", options)

    def stop(self) -> None:
        """As a crash would (immediate: no clean shutdown); `start` then recovers."""
        self._run("pg_ctl", "stop", "-w", "-m", "immediate", "-D", str(self.data))

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def started_server(address: str = "127.0.0.1", host: "Host | None" = None) -> PostgresServer:
    """A new server, started; the test is skipped where PostgreSQL is not installed, and fails under CI."""
    from conftest import require_tool

    binaries = postgres_binaries()
    require_tool(binaries is not None, "PostgreSQL is not installed (Debian: apt-get install postgresql)")
    assert binaries is not None
    server = PostgresServer(binaries, address, host)
    server.init()
    server.start()
    return server


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One server for the session."""
    server = started_server()
    yield server
    server.stop()
    server.remove()


@pytest.fixture
def own_postgres_server() -> Iterator[PostgresServer]:
    """A server of the test's own, for a test that stops and starts it."""
    server = started_server()
    yield server
    if server.running():
        server.stop()
    server.remove()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """A new, empty database of its own for each test."""
    name = f"test_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(postgres_server.url(), autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {name}")
    return postgres_server.url(name)


@pytest.fixture
def postgres(postgres_url: str) -> Iterator[Postgres]:
    server = Postgres(postgres_url)
    yield server
    server.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def records_home(request: pytest.FixtureRequest, tmp_path: Path) -> Path | Postgres:
    """Where a store keeps its records, for each backend: a SQLite file, or a PostgreSQL database."""
    if request.param == "sqlite":
        return tmp_path / "records.sqlite3"
    return request.getfixturevalue("postgres")
