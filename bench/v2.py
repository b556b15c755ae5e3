"""Benchmark the Open Inference Protocol: this service's V2 infer against Seldon MLServer's, in one run.

    python bench/v2.py [--duration 10] [--connections 16 64] [--mlserver-venv .venv-mlserver]

Starts on loopback, one process each (ours: one uvicorn worker; MLServer: its defaults, one inference
worker), both serving the same penguin pipeline (MLServer through mlserver-sklearn, from the pipeline
this service trained), then loads with wrk, one at a time:
- this service's POST /v2/models/penguins/infer (one row, JSON: species and probabilities),
- MLServer's POST /v2/models/penguins/infer (the same body; its default output, the class),
- this service's own GET /predict.
Prints a table (throughput, p99, ratio to MLServer) and writes bench/results/v2-latest.md.
Needs wrk (apt-get install wrk); creates the MLServer venv from bench/requirements-mlserver.txt if absent.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import httpx
import joblib

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from servers import Server, free_port, launch, start_server  # noqa: E402

from prediction_service.models.penguins.knn import PenguinClassifier  # noqa: E402
from prediction_service.models.penguins.model import PenguinsModel  # noqa: E402
from prediction_service.storage.versions import ModelStore  # noqa: E402

BENCH = ROOT / "bench"
MNIST_SMALL = ROOT / "data" / "mnist-sample.npz"
V2_BODY = {"inputs": [{"name": "measurements", "datatype": "FP32", "shape": [1, 2], "data": [40.3, 195.0]}]}
PREDICT_PATH = "/predict?bill_length_mm=40.3&flipper_length_mm=195"


def wait_ready(server: Server, timeout: float, path: str) -> None:
    try:
        server.wait_until_ready(timeout, path, poll=0.3)
    except (RuntimeError, TimeoutError) as error:
        raise SystemExit(f"{error}:\n{server.log_text()[-2000:]}") from None


def mlserver_python(venv: Path) -> Path:
    python = venv / "bin" / "python"
    if not python.exists():
        print(f"creating {venv} (bench/requirements-mlserver.txt)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "-r", str(BENCH / "requirements-mlserver.txt")], check=True
        )
    return python


def mlserver_repository(folder: Path, model_store: Path, ports: dict[str, int]) -> None:
    """MLServer's model repository: the pipeline this service serves, as mlserver-sklearn loads it."""
    store = ModelStore(model_store)
    pointer = store.serving(PenguinsModel.name)
    assert pointer is not None, f"{model_store} has no serving penguin model"
    classifier = PenguinClassifier.load(store.read_version(PenguinsModel.name, pointer.version).path)
    model_folder = folder / "penguins"
    model_folder.mkdir(parents=True)
    joblib.dump(classifier.pipeline, model_folder / "model.joblib")
    settings = {"debug": False, "host": "127.0.0.1", **ports}
    (folder / "settings.json").write_text(json.dumps(settings))
    model_settings = {
        "name": "penguins",
        "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": "./model.joblib", "version": "v1"},
    }
    (model_folder / "model-settings.json").write_text(json.dumps(model_settings))


def wrk(url: str, connections: int, duration: int, body: Path | None) -> dict[str, float]:
    command = ["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency", "--timeout", "10s"]
    env = dict(os.environ)
    if body is not None:
        command += ["-s", str(BENCH / "post_body.lua")]
        env["BENCH_BODY"] = str(body)
    output = subprocess.run([*command, url], capture_output=True, text=True, check=True, env=env).stdout
    throughput = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", output)
    assert p99, output
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    socket_errors = re.search(r"Socket errors: (.*)", output)
    return {
        "rps": throughput,
        "p99_ms": float(p99.group(1)) * scale,
        "non_2xx": int(errors.group(1)) if errors else 0,
        "socket_errors": socket_errors.group(1) if socket_errors else "",
    }


def check_answers(ours: str, mlserver: str) -> None:
    """Each target answers the benchmark's request correctly before it is measured."""
    v2 = httpx.post(f"{ours}/v2/models/penguins/infer", json=V2_BODY).json()
    assert v2["outputs"][0]["data"] == ["Adelie"], v2
    theirs = httpx.post(f"{mlserver}/v2/models/penguins/infer", json=V2_BODY).json()
    assert theirs["outputs"][0]["data"] == [0], theirs  # the label-encoded class: Adelie
    assert httpx.get(ours + PREDICT_PATH).json()["result"] == "Adelie"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10, help="seconds of each measured wrk run")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--connections", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--mlserver-venv", type=Path, default=ROOT / ".venv-mlserver")
    parser.add_argument("--model-dir", type=Path, help="a populated MODEL_DIR (default: train small models first)")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed: apt-get install wrk")
    mlserver = mlserver_python(args.mlserver_venv)
    work = Path(tempfile.mkdtemp(prefix="bench-v2-"))
    model_dir = args.model_dir or work / "model_store"
    ours_env = {
        "MODEL_DIR": str(model_dir),
        "MNIST_DATA": str(MNIST_SMALL),
        "MNIST_TRAIN_SIZE": "2000",
        "MNIST_EPOCHS": "1",
        "ADMIN_TOKEN": "bench-token",
    }
    ours = start_server(ours_env, work / "service.log", options=("--no-access-log",), name="this service")
    servers = [ours]
    try:
        ours_url = ours.url
        wait_ready(ours, 600, "/health/ready")
        ports = {"http_port": free_port(), "grpc_port": free_port(), "metrics_port": free_port()}
        mlserver_repository(work / "mlserver", model_dir, ports)
        mlserver_url = f"http://127.0.0.1:{ports['http_port']}"
        theirs = launch(
            [str(mlserver.parent / "mlserver"), "start", str(work / "mlserver")],
            mlserver_url,
            {},
            work / "mlserver.log",
            cwd=work / "mlserver",
            name="MLServer",
        )
        servers.append(theirs)
        wait_ready(theirs, 180, "/v2/models/penguins/ready")
        check_answers(ours_url, mlserver_url)
        body = work / "v2-body.json"
        body.write_text(json.dumps(V2_BODY))
        targets = {
            "this service, V2 infer": (f"{ours_url}/v2/models/penguins/infer", body),
            "MLServer 1.7.1, V2 infer": (f"{mlserver_url}/v2/models/penguins/infer", body),
            "this service, GET /predict": (ours_url + PREDICT_PATH, None),
        }
        results: dict[int, dict[str, dict[str, float]]] = {}
        for connections in args.connections:
            results[connections] = {}
            for name, (url, payload) in targets.items():
                wrk(url, connections, args.warmup, payload)
                results[connections][name] = measured = wrk(url, connections, args.duration, payload)
                print(f"{connections:3d} connections  {name:28s} {measured}", flush=True)
    finally:
        for server in servers:
            server.stop()
    report(results, args)
    shutil.rmtree(work, ignore_errors=True)


def report(results: dict[int, dict[str, dict[str, float]]], args: argparse.Namespace) -> None:
    lines = [
        f"V2 benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, wrk -t2, "
        f"{args.duration} s per run after {args.warmup} s of warm-up, one row per request",
        "",
        "| connections | target | requests/s | p99 ms | vs MLServer throughput | non-2xx |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for connections, by_target in results.items():
        baseline = by_target["MLServer 1.7.1, V2 infer"]["rps"]
        for name, measured in by_target.items():
            ratio = measured["rps"] / baseline if baseline else float("nan")
            lines.append(
                f"| {connections} | {name} | {measured['rps']:,.0f} | {measured['p99_ms']:.1f} | "
                f"{ratio:.1f}x | {measured['non_2xx']} |"
            )
    table = "\n".join(lines)
    print("\n" + table)
    results_dir = BENCH / "results"
    results_dir.mkdir(exist_ok=True)
    (results_dir / "v2-latest.md").write_text(table + "\n")
    stamp = f"{datetime.now(UTC):%Y%m%dT%H%M%S}"
    (results_dir / f"v2-{stamp}.json").write_text(json.dumps({str(c): r for c, r in results.items()}, indent=2))


if __name__ == "__main__":
    main()
