"""Kill the server with SIGKILL at random points of a retraining job, many times, and check that
nothing is lost.

    python scripts/crash_restart.py [--kills 20] [--seed 7]

Each round starts the server (uvicorn, one worker) on the same MODEL_DIR, checks the state the
last kill left, sends the sample zip, and SIGKILLs the server during the upload, the training, or
the evaluation and publishing of the new version. Every phase is hit at least once (a round whose
job ended before its moment is tried again). Rounds alternate between killing the whole process
group (the training subprocess included) and killing the server's pid alone, as the OOM killer
would: then its children (the training job, the digit model's process) must exit on their own.
After every kill and restart:
- the service becomes ready;
- the serving version is the newest published one (never older than one seen serving before),
  it loads (predictions report it), and every stored version matches its manifest;
- no partial version folder or half-received upload is left;
- a job the kill interrupted runs again after the restart (its lease's owner is gone) and every job
  ends, no version is published twice, and every upload that was answered 202 still has its dataset on disk;
- after a kill of the server's pid alone, no process of its group lives on.
Uses the bundled data/mnist-sample.npz. Prints the count of kills survived; exits 1 on a violation.
"""

import argparse
import contextlib
import json
import os
import random
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from servers import Server, process_group, start_server  # noqa: E402

from prediction_service.storage.versions import ModelStore  # noqa: E402

MNIST_SMALL = ROOT / "data" / "mnist-sample.npz"
SAMPLE = ROOT / "samples" / "retrain_img.zip"
TOKEN = "crash-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PHASES = ("upload", "training", "publishing")
KILL_MODES = ("group", "server alone")
ORPHAN_WAIT = 30  # seconds; children exit at once when their server dies, the bound only guards a hang


class Violation(Exception):
    pass


def start(env: dict[str, str], log: Path) -> Server:
    server = start_server(env, log)
    try:
        server.wait_until_ready(120, poll=0.1)
    except (RuntimeError, TimeoutError) as error:
        raise Violation(f"the service did not become ready after a restart: {error}") from error
    return server


def kill(server: Server, mode: str = "group") -> None:
    """SIGKILL the whole process group, or the server's pid alone (then its children must follow)."""
    if mode == "group":
        server.kill()
        return
    server.kill_alone()
    deadline = time.monotonic() + ORPHAN_WAIT
    while (left := process_group(server.process.pid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    if left:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.process.pid, signal.SIGKILL)
        raise Violation(f"processes outlived their server by {ORPHAN_WAIT} s: {left}")


def check_state(url: str, model_dir: Path, accepted: set[str], last_serving: int) -> int:
    store = ModelStore(model_dir)
    pointer = json.loads((model_dir / "mnist" / "serving.json").read_text())["version"]
    if pointer < last_serving:
        raise Violation(f"serving version went back from {last_serving} to {pointer}")
    for version in store.version_numbers("mnist"):
        store.read_version("mnist", version)  # raises if a stored version is damaged
    published = store.read_version("mnist", pointer).manifest
    if published.get("gate") and not published["gate"]["passed"]:
        raise Violation(f"version {pointer} serves but did not pass the gate")
    leftovers = [p.name for p in (model_dir / "mnist").iterdir() if p.name.startswith(".tmp")]
    uploads = model_dir / "uploads"
    if uploads.is_dir():
        leftovers += [p.name for p in uploads.iterdir() if p.name.startswith((".tmp", ".incoming"))]
    if leftovers:
        raise Violation(f"partial files left after the restart: {leftovers}")
    with (ROOT / "samples" / "test_img0.png").open("rb") as image:
        answered = httpx.post(f"{url}/predict-image", files={"file": image}, timeout=30).json()["model_version"]
    if answered != pointer:
        raise Violation(f"predictions come from version {answered}, the pointer names {pointer}")
    jobs = httpx.get(f"{url}/jobs?limit=1000", timeout=30).json()["jobs"]
    for job in jobs:
        if job["status"] == "running" and job["attempts"] == 0:
            raise Violation(f"job {job['job_id']} is running without an attempt")
    stale = [job["job_id"] for job in jobs if job["status"] == "running" and job["started_at"] is None]
    if stale:
        raise Violation(f"jobs in an impossible state: {stale}")
    for job_id in accepted:
        if not (uploads / job_id / "dataset.npz").is_file():
            raise Violation(f"the upload of job {job_id} (answered 202) is gone")
    return pointer


def wait_for_phase(url: str, job_id: str, phase: str, timeout: float = 120) -> bool:
    """Wait until the job reaches `phase` (training, or evaluating/publishing); False if it ended first."""
    wanted = {"training": ("training",), "publishing": ("evaluating", "publishing", "finishing")}[phase]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = httpx.get(f"{url}/jobs/{job_id}", timeout=10).json()
        if job["status"] not in ("queued", "running"):
            return False
        if (job.get("progress") or {}).get("stage") in wanted:
            return True
        time.sleep(0.01)
    return False


def drain(url: str, timeout: float = 180) -> None:
    """Let queued jobs (from earlier rounds) finish, so each round starts from a quiet queue."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        jobs = httpx.get(f"{url}/jobs?limit=1000", timeout=10).json()["jobs"]
        if not any(job["status"] in ("queued", "running") for job in jobs):
            return
        time.sleep(0.2)
    raise Violation("queued jobs did not finish after the restart")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--model-dir", type=Path, default=None, help="default: a new temporary folder")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="crash-test-"))
    model_dir = args.model_dir or work / "model_store"
    log = work / "server.log"
    env = {
        "MODEL_DIR": str(model_dir),
        "MNIST_DATA": str(MNIST_SMALL),
        "MNIST_TRAIN_SIZE": "2000",
        "MNIST_EPOCHS": "1",
        "RETRAIN_EPOCHS": "4",
        "ADMIN_TOKEN": TOKEN,
        "DECODE_PROCESSES": "0",
    }
    print(f"work folder: {work}")
    accepted: set[str] = set()
    last_serving = 0
    survived: dict[str, int] = dict.fromkeys(PHASES, 0)
    by_mode = dict.fromkeys(KILL_MODES, 0)
    # Each phase at least once, in random order; the rest at random. A phase the job ended before
    # reaching is tried again, within a bound on the rounds.
    schedule = rng.sample(PHASES, len(PHASES)) + [rng.choice(PHASES) for _ in range(args.kills - len(PHASES))]
    round_number = 0
    try:
        while schedule and round_number < max(args.kills, len(PHASES)) * 3:
            round_number += 1
            phase = schedule.pop(0)
            mode = KILL_MODES[round_number % 2]
            server = start(env, log)
            url = server.url
            last_serving = check_state(url, model_dir, accepted, last_serving)
            if rng.random() < 0.3:  # sometimes run interrupted jobs again, as an operator would
                for job in httpx.get(f"{url}/jobs?limit=1000").json()["jobs"]:
                    if job["status"] == "interrupted":
                        httpx.post(f"{url}/jobs/{job['job_id']}/retry", headers=AUTH)
            drain(url)
            last_serving = check_state(url, model_dir, accepted, last_serving)
            if phase == "upload":
                sender = threading.Thread(target=_upload_quietly, args=(url, accepted))
                sender.start()
                time.sleep(rng.uniform(0.0, 0.15))
                kill(server, mode)
                sender.join(30)
            else:
                job_id = _upload(url)
                accepted.add(job_id)
                reached = wait_for_phase(url, job_id, phase)
                time.sleep(rng.uniform(0.0, 0.4) if phase == "training" else rng.uniform(0.0, 0.05))
                kill(server, mode)
                if not reached:
                    schedule.insert(0, phase)  # try this phase again next round
                    phase = "after the job"  # it ended before the chosen moment: still a kill to survive
                    survived.setdefault(phase, 0)
            survived[phase] += 1
            by_mode[mode] += 1
            print(f"round {round_number}: killed {mode} during {phase}; serving version {last_serving}", flush=True)
        missed = [phase for phase in PHASES if not survived[phase]]
        if missed:
            raise Violation(f"never killed during {', '.join(missed)} in {round_number} rounds")
        server = start(env, log)
        check_state(server.url, model_dir, accepted, last_serving)
        kill(server)
    except Violation as violation:
        print(f"VIOLATION after {sum(survived.values())} kills: {violation}\nserver log: {log}")
        return 1
    total = sum(survived.values())
    print(
        f"survived {total} kills ({', '.join(f'{n} during {p}' for p, n in survived.items())}; "
        f"{', '.join(f'{n} of the {m}' for m, n in by_mode.items())}); {len(accepted)} accepted uploads all kept"
    )
    return 0


def _upload(url: str) -> str:
    response = httpx.post(f"{url}/upload-images", files={"file": SAMPLE.read_bytes()}, headers=AUTH, timeout=60)
    if response.status_code != 202:
        raise Violation(f"upload answered {response.status_code}: {response.text}")
    return response.json()["job_id"]


def _upload_quietly(url: str, accepted: set[str]) -> None:
    with contextlib.suppress(httpx.HTTPError, Violation):  # killed mid-request: no 202, nothing promised
        accepted.add(_upload(url))


if __name__ == "__main__":
    sys.exit(main())
