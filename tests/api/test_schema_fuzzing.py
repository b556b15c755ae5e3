"""schemathesis against the live service's OpenAPI schema: every operation, every check."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, TOKEN
from servers import running_server
from test_server_processes import quick_env

pytestmark = [pytest.mark.e2e, pytest.mark.fuzz]

SEED = int(os.environ.get("FUZZ_SEED", "20261126"))
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "25"))


@pytest.mark.timeout(900)  # other seeds send more valid zips, and every one starts a real training job
def test_schemathesis_finds_nothing(tmp_path: Path, trained_store: Path) -> None:
    model_dir = tmp_path / "store"
    shutil.copytree(trained_store, model_dir)
    # Valid zips it sends start real (short) retraining jobs; that is part of what is tested.
    env = quick_env(model_dir, RETRAIN_EPOCHS="1", TRAINING_NICENESS="19")
    with running_server(env, tmp_path / "server.log") as server:
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "schemathesis.cli",
                "run",
                f"{server.url}/openapi.json",
                "--checks",
                "all",
                "--header",
                f"Authorization: Bearer {TOKEN}",
                "--seed",
                str(SEED),
                "--max-examples",
                str(EXAMPLES),
                "--request-timeout",
                "30",
                "--no-color",
            ],
            cwd=ROOT / "tests",
            env={**os.environ, "SCHEMATHESIS_HOOKS": "schemathesis_hooks"},
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        log = server.log_text()
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-6000:]
    assert "Traceback" not in log, log[-4000:]
    assert "No issues found" in output or " 0 failures" in output or "passed" in output, output[-3000:]
