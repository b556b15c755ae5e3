"""test_main.http, run by httpyac (PyCharm's HTTP client format) against a live server."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import ROOT, TOKEN, running_in_ci
from servers import running_server
from test_server_processes import quick_env

pytestmark = pytest.mark.e2e
HTTPYAC = ROOT / "node_modules" / ".bin" / "httpyac"


def test_every_request_in_test_main_http_passes(tmp_path: Path, trained_store: Path) -> None:
    if not HTTPYAC.exists():
        if running_in_ci():
            pytest.fail("httpyac is missing: run `npm ci`")
        pytest.skip("httpyac is not installed (npm ci)")
    model_dir = tmp_path / "store"
    shutil.copytree(trained_store, model_dir)
    with running_server(quick_env(model_dir), tmp_path / "server.log") as server:
        # The user's files, with the environment pointing at this server and holding its token.
        workdir = tmp_path / "project"
        workdir.mkdir()
        for name in ("test_main.http", "penguins.csv"):
            shutil.copy(ROOT / name, workdir / name)
        shutil.copytree(ROOT / "samples", workdir / "samples")
        environments = json.loads((ROOT / "http-client.env.json").read_text())
        environments["dev"]["host"] = server.url
        (workdir / "http-client.env.json").write_text(json.dumps(environments))
        (workdir / "http-client.private.env.json").write_text(json.dumps({"dev": {"token": TOKEN}}))
        run = subprocess.run(
            [str(HTTPYAC), "send", "test_main.http", "--all", "-e", "dev", "--no-color", "--bail"],
            cwd=workdir,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    assert "✖" not in output, output
    requests = (ROOT / "test_main.http").read_text().count("\n###")
    assert f"{requests} requests processed ({requests} succeeded)" in output, output
