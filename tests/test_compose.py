"""compose.yaml, the distributed set-up: what `podman-compose config` makes of it (no compose engine runs here;
scripts/container-check.sh runs the images themselves)."""

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml
from conftest import ROOT, running_in_ci

SECRETS = {"ADMIN_TOKEN": "compose-admin", "POSTGRES_PASSWORD": "compose-db", "AWS_SECRET_ACCESS_KEY": "compose-s3"}
STORE_SETTINGS = (
    "DATABASE_URL",
    "MODEL_STORE_URL",
    "AWS_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_DEFAULT_REGION",
)


def compose_config(**env: str) -> subprocess.CompletedProcess[str]:
    missing = [
        tool
        for tool, found in (
            ("podman-compose (pip install -r requirements-dev.txt)", importlib.util.find_spec("podman_compose")),
            ("podman (apt-get install podman), which podman-compose asks for its version", shutil.which("podman")),
        )
        if found is None
    ]
    if missing:
        if running_in_ci():
            pytest.fail(f"missing: {', '.join(missing)}")
        pytest.skip(f"missing: {', '.join(missing)}")
    clean = {name: value for name, value in os.environ.items() if name not in SECRETS and not name.startswith("AWS_")}
    return subprocess.run(
        [sys.executable, "-m", "podman_compose", "-f", str(ROOT / "compose.yaml"), "config"],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    result = compose_config(**SECRETS)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)["services"]


def test_the_set_up_has_a_database_an_object_store_two_replicas_and_a_worker(services: dict[str, Any]) -> None:
    assert {"postgres", "s3", "api-1", "api-2", "worker", "train"} <= set(services)
    assert "postgres" in services["postgres"]["image"]
    assert "seaweedfs" in services["s3"]["image"]
    targets = {name: service.get("build", {}).get("target") for name, service in services.items()}
    assert targets["api-1"] == targets["api-2"] == "serving"
    assert targets["worker"] == targets["train"] == "worker"
    assert services["worker"]["command"] == ["python", "-m", "prediction_service", "worker"]
    assert services["train"]["command"] == ["python", "-m", "prediction_service", "train"]
    # Both replicas reachable from outside, on ports of their own.
    ports = [services[name]["ports"][0].split(":") for name in ("api-1", "api-2")]
    assert [container for _, container in ports] == ["8000", "8000"]
    assert len({host for host, _ in ports}) == 2


def test_every_replica_and_the_worker_point_at_the_same_stores(services: dict[str, Any]) -> None:
    apps = {name: services[name]["environment"] for name in ("api-1", "api-2", "worker", "train")}
    for name, env in apps.items():
        for setting in STORE_SETTINGS:
            assert env.get(setting), f"{name} lacks {setting}"
            assert env[setting] == apps["worker"][setting], f"{name}'s {setting} differs from the worker's"
        assert env["ADMIN_TOKEN"] == SECRETS["ADMIN_TOKEN"]  # one token for every replica
    assert apps["api-1"]["RUN_TRAINING"] == apps["api-2"]["RUN_TRAINING"] == "false"
    assert apps["worker"].get("RUN_TRAINING", "true") != "false"

    worker = apps["worker"]
    database = urlparse(worker["DATABASE_URL"])
    postgres = services["postgres"]["environment"]
    assert database.scheme == "postgresql"
    assert database.hostname in services
    assert (database.username, database.password) == (postgres["POSTGRES_USER"], postgres["POSTGRES_PASSWORD"])
    assert database.path == f"/{postgres['POSTGRES_DB']}"
    assert postgres["POSTGRES_PASSWORD"] == SECRETS["POSTGRES_PASSWORD"]

    # The clients' endpoint and keys are the object store's: its port, its one identity, its bucket.
    endpoint = urlparse(worker["AWS_ENDPOINT_URL"])
    s3 = services["s3"]
    server_command = " ".join(s3["entrypoint"])
    assert endpoint.hostname == "s3"
    assert f"-s3.port={endpoint.port}" in server_command
    assert (s3["environment"]["AWS_ACCESS_KEY_ID"], s3["environment"]["AWS_SECRET_ACCESS_KEY"]) == (
        worker["AWS_ACCESS_KEY_ID"],
        SECRETS["AWS_SECRET_ACCESS_KEY"],
    )
    bucket = urlparse(worker["MODEL_STORE_URL"])
    assert bucket.scheme == "s3"
    assert f"s3.bucket.create -name {bucket.hostname}" in " ".join(services["s3-bucket"]["entrypoint"])


def test_the_replicas_start_after_the_first_versions_exist_and_the_worker_after_its_stores(
    services: dict[str, Any],
) -> None:
    for name in ("api-1", "api-2"):
        assert services[name]["depends_on"]["train"]["condition"] == "service_completed_successfully"
    for name in ("train", "worker"):
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert services[name]["depends_on"]["s3-bucket"]["condition"] == "service_completed_successfully"
    assert services["s3-bucket"]["depends_on"]["s3"]["condition"] == "service_healthy"
    assert "healthcheck" in services["postgres"]
    assert "healthcheck" in services["s3"]


@pytest.mark.parametrize("secret", sorted(SECRETS))
def test_a_missing_secret_is_named(secret: str) -> None:
    result = compose_config(**{name: value for name, value in SECRETS.items() if name != secret})
    assert result.returncode != 0
    assert f"set {secret}" in result.stderr


def test_the_dockerfile_builds_the_targets_compose_names() -> None:
    stages = re.findall(r"^FROM \S+ AS (\S+)$", (ROOT / "Dockerfile").read_text(), flags=re.MULTILINE)
    assert {"serving", "worker"} <= set(stages)
    assert stages[-1] == "serving", "a build without --target gives the serving image"
