"""The V2 clients teams already have, against a real server: tritonclient (JSON and binary), the kserve
SDK, and perf_analyzer driving both models' /infer.

The clients live in their own virtual environment (tests/v2_clients/requirements.txt: their pins
conflict with the project's), named by V2_CLIENTS_VENV (default: .venv-v2-clients in the
repository; .ci/run creates it). Without it these tests skip locally; under CI they fail.
"""

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, TOKEN
from servers import Server, running_server

pytestmark = pytest.mark.e2e
CLIENTS_VENV = Path(os.environ.get("V2_CLIENTS_VENV", ROOT / ".venv-v2-clients"))
CLIENT_CHECKS = ROOT / "tests" / "v2_clients" / "check_clients.py"


def running_in_ci() -> bool:
    """Any truthy CI (true, 1, yes): missing tools then fail the run instead of skipping."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no", "off")


def clients_python() -> Path:
    python = CLIENTS_VENV / "bin" / "python"
    if not python.exists():
        missing = f"no V2 clients environment at {CLIENTS_VENV} (see tests/v2_clients/requirements.txt)"
        if running_in_ci():
            pytest.fail(missing)
        pytest.skip(missing)
    return python


def perf_analyzer() -> tuple[Path, dict[str, str]]:
    """The perf_analyzer binary of tritonclient 2.51 and the library path it needs (libcudart)."""
    python = clients_python()
    binary = python.parent / "perf_analyzer"
    libraries = list(CLIENTS_VENV.glob("lib/python3*/site-packages/nvidia/cuda_runtime/lib"))
    problem = None
    if not binary.exists() or not libraries:
        problem = f"perf_analyzer or libcudart missing in {CLIENTS_VENV}"
    elif not any(Path(folder, "libb64.so.0d").exists() for folder in ("/usr/lib/x86_64-linux-gnu", "/usr/lib")):
        problem = "perf_analyzer needs libb64 (apt-get install libb64-0d)"
    if problem:
        if running_in_ci():
            pytest.fail(problem)
        pytest.skip(problem)
    return binary, {**os.environ, "LD_LIBRARY_PATH": str(libraries[0])}


@pytest.fixture(scope="module")
def clients() -> Path:
    """Checked before the server starts: a missing tool skips (or fails, in CI) without waiting for it."""
    return clients_python()


@pytest.fixture(scope="module")
def server(trained_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("v2-server")
    shutil.copytree(trained_store, folder / "model_store")
    env = {"MODEL_DIR": str(folder / "model_store"), "ADMIN_TOKEN": TOKEN, "DECODE_PROCESSES": "0"}
    with running_server(env, folder / "server.log") as running:
        yield running


def test_tritonclient_and_kserve_read_metadata_and_infer_on_both_models(clients: Path, server: Server) -> None:
    done = subprocess.run(
        [str(clients), str(CLIENT_CHECKS), server.url], capture_output=True, text=True, timeout=180, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "all client checks passed" in done.stdout
    for mode in ("JSON", "binary"):
        assert f"tritonclient {mode}: penguins ['Adelie', 'Gentoo']" in done.stdout
        assert f"kserve {mode}: penguins ['Adelie', 'Gentoo']" in done.stdout


@pytest.mark.parametrize(
    ("model", "rows"),
    [
        ("penguins", [{"measurements": [40.3, 195.0]}, {"measurements": [47.5, 220.0]}]),
        # image_file is optional: perf_analyzer sends only the tensor it has data for.
        ("mnist", [{"image": np.arange(784, dtype=np.uint32).__mod__(256).tolist()}]),
    ],
)
def test_perf_analyzer_drives_infer_without_errors(
    clients: Path, server: Server, tmp_path: Path, model: str, rows: list
) -> None:
    binary, env = perf_analyzer()
    data = tmp_path / f"{model}.json"
    data.write_text(json.dumps({"data": rows}))
    done = subprocess.run(
        [
            str(binary),
            *("-m", model, "-u", server.url.removeprefix("http://"), "-i", "http"),
            *("--input-data", str(data), "--concurrency-range", "4"),
            # A short run that does not chase stable numbers on a busy machine: errors are what count.
            *("--measurement-interval", "1000", "--stability-percentage", "999", "--max-trials", "3"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "error" not in output.lower(), output
    assert "throughput:" in output, output
