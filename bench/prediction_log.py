"""What keeping the prediction log costs the answers: the same server with the log on and off, in one run.

    python bench/prediction_log.py [--duration 5] [--rounds 5]

Starts the project twice on loopback (one uvicorn worker each, copies of one trained MODEL_DIR): with the
log on (the default PREDICTION_LOG_MAX) and off (PREDICTION_LOG_MAX=0). Loads GET /predict and POST
/predict-image of each with wrk at 16 and 64 connections, in interleaved rounds (medians reported: this
machine drifts by 10-20% within minutes), and prints the throughput and p99 of each and their ratio.
Also reports the rows the log kept and the rows its buffer dropped (prediction_log_dropped_total).
Writes bench/results/prediction-log-latest.md. Needs wrk (apt-get install wrk).
"""

import argparse
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import httpx
from run import MNIST_SMALL, ROOT, machine, median_run, start, target, wrk

VARIANTS = {"log on": {}, "log off": {"PREDICTION_LOG_MAX": "0"}}
ENDPOINTS = {"predict": "GET /predict", "image": "POST /predict-image"}
CONNECTIONS = (16, 64)
Results = dict[tuple[str, str, int], dict[str, float]]  # (variant, endpoint, connections) -> wrk's medians


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=5, help="seconds of each wrk run")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved wrk runs per figure (medians reported)")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is missing: apt-get install wrk")

    work = Path(tempfile.mkdtemp(prefix="bench-log-"))
    logs = work / "logs"
    logs.mkdir()
    trained = work / "trained"
    print(f"work folder: {work}\ntraining a model store ...")
    subprocess.run(
        [sys.executable, "-m", "prediction_service", "train"],
        cwd=ROOT,
        check=True,
        env={**os.environ, "MODEL_DIR": str(trained), "MNIST_DATA": str(MNIST_SMALL), "MNIST_EPOCHS": "1"},
        capture_output=True,
    )
    servers = {}
    results: Results = {}
    try:
        for variant, extra in VARIANTS.items():
            model_dir = work / variant.replace(" ", "-")
            shutil.copytree(trained, model_dir)
            env = {"MODEL_DIR": str(model_dir), "MNIST_DATA": str(MNIST_SMALL), "ADMIN_TOKEN": "bench", **extra}
            servers[variant] = start(variant.replace(" ", "-"), "main:app", ROOT, env, logs)
        for server in servers.values():
            server.wait_until_ready(120, poll=0.05)
        for connections in CONNECTIONS:
            for endpoint in ENDPOINTS:
                rounds: dict[str, list[dict[str, float]]] = {variant: [] for variant in servers}
                for _ in range(args.rounds):
                    for variant, server in servers.items():
                        url, script = target(server, "project", endpoint)
                        wrk(url, connections, 1, script)  # warm-up
                        rounds[variant].append(wrk(url, connections, args.duration, script))
                for variant, runs in rounds.items():
                    results[(variant, endpoint, connections)] = median_run(runs)
                on, off = (results[(variant, endpoint, connections)]["rps"] for variant in VARIANTS)
                print(f"c{connections} {endpoint}: log on {on:.0f}/s, log off {off:.0f}/s ({on / off:.1%})")
        dropped = dropped_rows(servers["log on"].url)
    finally:
        for server in servers.values():
            server.stop()  # a graceful stop: the log writes what it still buffers
    kept = {variant: logged_rows(work / variant.replace(" ", "-") / "learning.sqlite3") for variant in VARIANTS}
    table = render(results, args, kept, dropped)
    print(table)
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "prediction-log-latest.md").write_text(table)
    return 0


def dropped_rows(url: str) -> float:
    text = httpx.get(url + "/metrics").text
    match = re.search(r"^prediction_log_dropped_total ([\d.e+]+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def logged_rows(path: Path) -> int:
    if not path.exists():
        return 0
    with sqlite3.connect(path) as db:
        return int(db.execute("SELECT count(*) FROM predictions").fetchone()[0])


def render(results: Results, args: argparse.Namespace, kept: dict[str, int], dropped: float) -> str:
    rows = []
    for connections in CONNECTIONS:
        for endpoint, label in ENDPOINTS.items():
            on, off = (results[(variant, endpoint, connections)] for variant in VARIANTS)
            rows.append(
                f"| {label}, {connections} conn. | {on['rps']:,.0f} | {off['rps']:,.0f} | {on['rps'] / off['rps']:.1%} "
                f"| {on['p99_ms']:.1f} | {off['p99_ms']:.1f} | {on['p99_ms'] / off['p99_ms']:.2f}x |"
            )
    errors = sum(result["errors"] for result in results.values())
    return (
        f"Machine: {machine()}; {datetime.now(UTC).isoformat(timespec='seconds')}; one uvicorn worker each; wrk -t2; "
        f"medians of {args.rounds} interleaved {args.duration} s runs; non-2xx or socket errors: {errors:.0f}; "
        f"rows kept: log on {kept['log on']:,}, log off {kept['log off']:,}; rows dropped by the buffer: "
        f"{dropped:.0f}\n\n"
        "| endpoint | req/s, log on | req/s, log off | on/off | p99 ms, log on | p99 ms, log off | on/off |\n"
        "| --- | --- | --- | --- | --- | --- | --- |\n" + "\n".join(rows) + "\n"
    )


if __name__ == "__main__":
    sys.exit(main())
