"""A bounded load test with a retraining job published halfway, on several workers.

    python scripts/load_with_retrain.py [--duration 60] [--connections 64] [--workers 2]

Starts `fastapi run --workers N` on loopback with a trained MODEL_DIR, then keeps `connections`
clients busy with a mix of GET /predict and POST /predict-image for `duration` seconds. Halfway
it uploads samples/retrain_img.zip; the job's version is published while the load goes on.
Every answer's X-Worker header says which worker process gave it. Checks:
- zero errors and zero 5xx (every answer 200);
- per worker, no answer has an older digit model_version than one already received before it was sent;
- every one of the N workers answers (told apart by X-Worker, which every answer must carry), and
  each answers with the new version within 2 s of the pointer moving.
Prints the figures; exits 1 if a check fails. Uses the bundled data/mnist-sample.npz.
"""

import argparse
import asyncio
import bisect
import contextlib
import itertools
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import NamedTuple

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from servers import start_server  # noqa: E402

MNIST_SMALL = ROOT / "data" / "mnist-sample.npz"
TOKEN = "load-test-token"
SWITCH_LIMIT = 2.0
RAMP_UP_SECONDS = 0.5


class Answer(NamedTuple):
    sent: float
    received: float
    worker: str
    status: int
    version: int | None
    kind: str


class Recorder:
    def __init__(self) -> None:
        self.answers: list[Answer] = []
        self.errors: list[str] = []


async def client(
    http: httpx.AsyncClient, url: str, stop: float, record: Recorder, image: bytes, index: int, connections: int
) -> None:
    # Clients arrive over half a second, as real ones do. Connections opened in one burst are all
    # accepted by whichever worker wakes first (they share one listening socket), and a worker that
    # gets no traffic could not show which version it serves.
    await asyncio.sleep(RAMP_UP_SECONDS * index / connections)
    turn = index
    while time.monotonic() < stop:
        turn += 1
        kind = "image" if turn % 2 else "penguin"
        sent = time.monotonic()
        try:
            if kind == "image":
                response = await http.post(f"{url}/predict-image", files={"file": ("d.png", image)})
            else:
                response = await http.get(f"{url}/predict", params={"bill_length_mm": 40.3, "flipper_length_mm": 195})
        except httpx.HTTPError as error:
            record.errors.append(f"{kind}: {type(error).__name__}: {error}")
            continue
        version = response.json().get("model_version") if response.status_code == 200 else None
        worker = response.headers.get("x-worker")
        if worker is None:  # every answer must say which worker gave it, or the checks below mean nothing
            record.errors.append(f"{kind}: answer {response.status_code} without an X-Worker header")
            continue
        record.answers.append(Answer(sent, time.monotonic(), worker, response.status_code, version, kind))


async def watch_pointer(pointer: Path, stop: float) -> float | None:
    """The moment the digit model's serving pointer changes (the job published)."""
    first = os.stat(pointer).st_mtime_ns
    while time.monotonic() < stop:
        if os.stat(pointer).st_mtime_ns != first:
            return time.monotonic()
        await asyncio.sleep(0.005)
    return None


async def run(url: str, model_dir: Path, duration: float, connections: int) -> dict:
    record = Recorder()
    image = (ROOT / "samples" / "test_img0.png").read_bytes()
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    started = time.monotonic()
    stop = started + duration
    async with httpx.AsyncClient(limits=limits, timeout=30) as http:
        workers = [
            asyncio.create_task(client(http, url, stop, record, image, n, connections)) for n in range(connections)
        ]
        await asyncio.sleep(duration / 2)
        watcher = asyncio.create_task(watch_pointer(model_dir / "mnist" / "serving.json", stop))
        with (ROOT / "samples" / "retrain_img.zip").open("rb") as archive:
            upload = await http.post(
                f"{url}/upload-images", files={"file": archive}, headers={"Authorization": f"Bearer {TOKEN}"}
            )
        published_at = await watcher
        await asyncio.gather(*workers)
        job = (await http.get(f"{url}/jobs/{upload.json()['job_id']}")).json()
    return {"record": record, "published_at": published_at, "started": started, "job": job, "upload": upload}


def answers_older_than_already_seen(seen: list[Answer]) -> list[str]:
    """A request sent after a worker's answer with version v arrived must not get a version below v.

    (Comparing arrival order alone would be wrong: two requests in flight at the swap may be
    answered by the old and the new version, and arrive in either order.)
    """
    by_arrival = sorted(seen, key=lambda answer: answer.received)
    arrivals = [answer.received for answer in by_arrival]
    newest_seen = list(itertools.accumulate((answer.version or 0 for answer in by_arrival), max))
    older = []
    for answer in seen:
        known = bisect.bisect_left(arrivals, answer.sent)  # answers that had arrived when this one was sent
        if known and (answer.version or 0) < newest_seen[known - 1]:
            older.append(f"version {answer.version} after {newest_seen[known - 1]} had been seen")
    return older


def analyse(result: dict, duration: float, workers: int) -> list[str]:
    record: Recorder = result["record"]
    problems = [f"{len(record.errors)} request errors, e.g. {record.errors[:3]}"] if record.errors else []
    statuses = Counter(answer.status for answer in record.answers)
    if set(statuses) != {200}:
        problems.append(f"answers other than 200: {dict(statuses)}")
    by_worker: dict[str, list[Answer]] = defaultdict(list)
    for answer in record.answers:
        if answer.status == 200 and answer.kind == "image":
            by_worker[answer.worker].append(answer)
    if len(by_worker) != workers:  # each worker must answer, or one busy worker could pass for all
        problems.append(f"{len(by_worker)} of {workers} workers answered digit predictions: {sorted(by_worker)}")
    for worker, seen in by_worker.items():
        older = answers_older_than_already_seen(seen)
        if older:
            problems.append(f"worker {worker}: {len(older)} answers went back to an older version, e.g. {older[:3]}")
    published_at = result["published_at"]
    switches = {}
    if published_at is None:
        problems.append(f"the job did not publish during the run: {result['job'].get('status')}")
    else:
        new_version = result["job"]["result"]["version"]
        for worker, seen in by_worker.items():
            first_new = min((answer.received for answer in seen if answer.version == new_version), default=None)
            if first_new is None:
                problems.append(f"worker {worker} never served version {new_version}")
                continue
            switches[worker] = first_new - published_at
            if switches[worker] > SWITCH_LIMIT:
                problems.append(
                    f"worker {worker} served version {new_version} {switches[worker]:.2f} s after publishing"
                )
    total = len(record.answers)
    per_worker = Counter(answer.worker for answer in record.answers)
    print(
        f"{total} answers in {duration:.0f} s ({total / duration:.0f}/s) from {len(per_worker)} workers "
        f"({', '.join(f'{worker} {count}' for worker, count in per_worker.items())}); "
        f"statuses {dict(statuses)}; errors {len(record.errors)}"
    )
    if published_at is not None:
        print(
            f"published {published_at - result['started']:.1f} s into the run; each worker on the new version "
            f"after: " + ", ".join(f"{worker} {delay:+.2f} s" for worker, delay in switches.items())
        )
    return problems


def wait_for_workers(url: str, workers: int, timeout: float = 60) -> bool:
    """Until `workers` distinct workers have answered /health/ready (each request on a new connection)."""
    ready: set[str] = set()
    deadline = time.monotonic() + timeout
    while len(ready) < workers and time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            response = httpx.get(f"{url}/health/ready", timeout=5)
            if response.status_code == 200:
                ready.add(response.headers["x-worker"])
        time.sleep(0.02)
    return len(ready) >= workers


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=60)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="load-test-"))
    model_dir = work / "model_store"
    env = {
        **os.environ,
        "MODEL_DIR": str(model_dir),
        "MNIST_DATA": str(MNIST_SMALL),
        "MNIST_TRAIN_SIZE": "4000",
        "MNIST_EPOCHS": "2",
        "RETRAIN_EPOCHS": "2",
        "ADMIN_TOKEN": TOKEN,
    }
    print(f"work folder: {work}; training the first versions ...", flush=True)
    subprocess.run(
        [sys.executable, "-m", "prediction_service", "train"], cwd=ROOT, env=env, check=True, capture_output=True
    )
    server = start_server(env, work / "server.log", workers=args.workers, command="fastapi")
    try:
        try:
            server.wait_until_ready(120)
        except (RuntimeError, TimeoutError) as error:
            print(f"the server did not start ({error})")
            return 1
        if not wait_for_workers(server.url, args.workers):
            print(f"not all {args.workers} workers became ready; see {work / 'server.log'}")
            return 1
        result = asyncio.run(run(server.url, model_dir, args.duration, args.connections))
    finally:
        server.stop(60)
    problems = analyse(result, args.duration, args.workers)
    for problem in problems:
        print(f"FAILED: {problem}")
    print("load test passed" if not problems else f"load test failed; server log: {work / 'server.log'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
