"""What the learning loop costs the answers: the prediction log, and a shadow version, each against neither.

    python bench/learning_loop.py [--duration 5] [--rounds 5]

Starts the project three times on loopback (one uvicorn worker each, copies of one trained MODEL_DIR): with
both off (PREDICTION_LOG_MAX=0, no shadow), with the log on (the default PREDICTION_LOG_MAX), and with a
shadow set on both models (a version 2 that is a copy of version 1, SHADOW_SAMPLE_RATE=1; the log off).
Loads GET /predict and POST /predict-image of each with wrk at 16 and 64 connections, in interleaved rounds
(medians reported: this machine drifts by 10-20% within minutes), and prints the throughput and p99 of each
and their ratio to "both off". Also reports the rows the log kept and the rows its buffer dropped
(prediction_log_dropped_total), and the requests each shadow compared.
Writes bench/results/learning-loop-latest.md. Needs wrk (apt-get install wrk).
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
from typing import TYPE_CHECKING

import httpx
from run import MNIST_SMALL, ROOT, machine, median_run, start, target, wrk

if TYPE_CHECKING:
    from prediction_service.storage.versions import ModelStore

BASE = "both off"
VARIANTS = {BASE: {"PREDICTION_LOG_MAX": "0"}, "log on": {}, "shadow set": {"PREDICTION_LOG_MAX": "0"}}
TOKEN = "bench"
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

    work = Path(tempfile.mkdtemp(prefix="bench-learning-"))
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
    sys.path.insert(0, str(ROOT))
    from prediction_service.storage.versions import ModelStore

    store = ModelStore(trained)
    for model in ("penguins", "mnist"):
        copy_version(store, model, 1)  # version 2: what the shadow serves
    servers = {}
    results: Results = {}
    try:
        for variant, extra in VARIANTS.items():
            model_dir = work / variant.replace(" ", "-")
            shutil.copytree(trained, model_dir)
            env = {"MODEL_DIR": str(model_dir), "MNIST_DATA": str(MNIST_SMALL), "ADMIN_TOKEN": TOKEN, **extra}
            servers[variant] = start(variant.replace(" ", "-"), "main:app", ROOT, env, logs)
        for server in servers.values():
            server.wait_until_ready(120, poll=0.05)
        for model in ("penguins", "mnist"):
            url = f"{servers['shadow set'].url}/models/{model}/versions/2/shadow"
            httpx.post(url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30).raise_for_status()
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
                base = results[(BASE, endpoint, connections)]["rps"]
                print(
                    f"c{connections} {endpoint}: "
                    + ", ".join(f"{v} {results[(v, endpoint, connections)]['rps'] / base:.1%}" for v in VARIANTS)
                )
        dropped = dropped_rows(servers["log on"].url)
        compared = shadow_compared(servers["shadow set"].url)
    finally:
        for server in servers.values():
            server.stop()  # a graceful stop: the log writes what it still buffers
    kept = {variant: logged_rows(work / variant.replace(" ", "-") / "learning.sqlite3") for variant in VARIANTS}
    table = render(results, args, kept, dropped, compared)
    print(table)
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "learning-loop-latest.md").write_text(table)
    return 0


def dropped_rows(url: str) -> float:
    text = httpx.get(url + "/metrics").text
    match = re.search(r"^prediction_log_dropped_total ([\d.e+]+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def shadow_compared(url: str) -> dict[str, int]:
    models = httpx.get(url + "/models", timeout=30).json()["models"]
    return {m["name"]: (m["shadow"] or {}).get("shadow_requests_compared", 0) for m in models}


def copy_version(store: "ModelStore", model: str, version: int) -> None:
    source = store.read_version(model, version)
    kept = {k: v for k, v in source.manifest.items() if k not in ("name", "version", "created_at", "files")}
    store.add_version(
        model,
        lambda folder: [shutil.copy2(source.path / name, folder / name) for name in source.manifest["files"]],
        {**kept, "source": f"a copy of version {version} (benchmark)"},
    )


def logged_rows(path: Path) -> int:
    if not path.exists():
        return 0
    with sqlite3.connect(path) as db:
        try:
            return int(db.execute("SELECT coalesce(sum(rows), 0) FROM prediction_batches").fetchone()[0])
        except sqlite3.OperationalError:  # the log is off: no table
            return 0


def render(
    results: Results, args: argparse.Namespace, kept: dict[str, int], dropped: float, compared: dict[str, int]
) -> str:
    rows = []
    for connections in CONNECTIONS:
        for endpoint, label in ENDPOINTS.items():
            base = results[(BASE, endpoint, connections)]
            cells = [f"{base['rps']:,.0f}", f"{base['p99_ms']:.1f}"]
            for variant in VARIANTS:
                if variant != BASE:
                    run = results[(variant, endpoint, connections)]
                    cells += [
                        f"{run['rps']:,.0f} ({run['rps'] / base['rps']:.1%})",
                        f"{run['p99_ms']:.1f} ({run['p99_ms'] / base['p99_ms']:.2f}x)",
                    ]
            rows.append(f"| {label}, {connections} conn. | " + " | ".join(cells) + " |")
    errors = sum(result["errors"] for result in results.values())
    return (
        f"Machine: {machine()}; {datetime.now(UTC).isoformat(timespec='seconds')}; one uvicorn worker each; wrk -t2; "
        f"medians of {args.rounds} interleaved {args.duration} s runs; non-2xx or socket errors: {errors:.0f}; "
        f"rows the log kept: {kept['log on']:,}, dropped by its buffer: {dropped:.0f}; requests the shadows "
        f"compared: {', '.join(f'{m} {n:,}' for m, n in compared.items())}\n\n"
        "| endpoint | req/s, both off | p99 ms, both off | req/s, log on | p99 ms, log on "
        "| req/s, shadow set | p99 ms, shadow set |\n"
        "| --- | --- | --- | --- | --- | --- | --- |\n" + "\n".join(rows) + "\n"
    )


if __name__ == "__main__":
    sys.exit(main())
