"""schemathesis against the live service's OpenAPI schema: every operation, every check."""

import os
import shutil
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree

import httpx
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
    junit = tmp_path / "schemathesis.xml"
    with running_server(env, tmp_path / "server.log") as server:
        operations = schema_operations(httpx.get(f"{server.url}/openapi.json").json())
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "schemathesis.cli",
                "--config-file",
                "schemathesis.toml",  # every check (and the one exception it explains)
                "run",
                f"{server.url}/openapi.json",
                "--header",
                f"Authorization: Bearer {TOKEN}",
                "--seed",
                str(SEED),
                "--max-examples",
                str(EXAMPLES),
                "--request-timeout",
                "30",
                "--no-color",
                "--report",
                "junit",
                "--report-junit-path",
                str(junit),
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
    # The run's own report, not words in its output: every operation tested, none failed or errored.
    cases = ElementTree.parse(junit).getroot().findall(".//testcase")
    outcomes = {case.get("name", ""): [child.tag for child in case] for case in cases}
    assert not {name: tags for name, tags in outcomes.items() if tags}, output[-6000:]
    assert operations <= set(outcomes), sorted(operations - set(outcomes))  # (and its stateful run)


def schema_operations(schema: dict) -> set[str]:
    """'METHOD /path' for every operation in an OpenAPI schema, as schemathesis names them."""
    methods = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
    return {
        f"{method.upper()} {path}" for path, item in schema["paths"].items() for method in item if method in methods
    }
