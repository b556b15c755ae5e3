"""python -m prediction_service: train ahead of time, list versions, activate one."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import psycopg
from conftest import MNIST_SMALL, ROOT


def cli(*args: str, model_dir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "MODEL_DIR": str(model_dir), "MNIST_DATA": str(MNIST_SMALL), **env}
    return subprocess.run(
        [sys.executable, "-m", "prediction_service", *args],
        cwd=ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_help_lists_the_commands(tmp_path: Path) -> None:
    result = cli("--help", model_dir=tmp_path)
    assert result.returncode == 0
    for command in ("train", "worker", "versions", "activate", "token"):
        assert command in result.stdout


def test_train_ahead_of_time_then_list(tmp_path: Path) -> None:
    model_dir = tmp_path / "store"
    trained = cli("train", "penguins", model_dir=model_dir)
    assert trained.returncode == 0, trained.stderr
    assert "penguins: ready, version 1 serves" in trained.stdout
    listed = cli("versions", "penguins", model_dir=model_dir)
    assert " *   1 " in listed.stdout
    assert "test_accuracy" in listed.stdout
    again = cli("train", "penguins", model_dir=model_dir)
    assert sorted(p.name for p in (model_dir / "penguins").iterdir() if p.name.isdigit()) == ["1"]
    assert again.returncode == 0


def test_activate_moves_the_pointer_and_refuses_unknown_versions(tmp_path: Path, trained_store: Path) -> None:
    model_dir = tmp_path / "store"
    shutil.copytree(trained_store, model_dir)
    shutil.copytree(model_dir / "mnist" / "1", model_dir / "mnist" / "2")  # a second kept version
    assert cli("activate", "mnist", "2", model_dir=model_dir).returncode == 0
    assert json.loads((model_dir / "mnist" / "serving.json").read_text())["version"] == 2
    refused = cli("activate", "mnist", "7", model_dir=model_dir)
    assert refused.returncode == 2
    assert "no version 7" in refused.stderr


def test_token_prints_the_generated_token(tmp_path: Path) -> None:
    printed = cli("token", model_dir=tmp_path).stdout.strip()
    assert printed == (tmp_path / "admin_token").read_text().strip()
    assert cli("token", model_dir=tmp_path, ADMIN_TOKEN="chosen").stdout.strip() == "chosen"


def test_with_database_url_the_pointers_are_in_postgresql(tmp_path: Path, postgres_url: str) -> None:
    model_dir = tmp_path / "store"
    trained = cli("train", "penguins", model_dir=model_dir, DATABASE_URL=postgres_url)
    assert trained.returncode == 0, trained.stderr
    shutil.copytree(model_dir / "penguins" / "1", model_dir / "penguins" / "2")
    activated = cli("activate", "penguins", "2", model_dir=model_dir, DATABASE_URL=postgres_url)
    assert activated.returncode == 0, activated.stderr
    listed = cli("versions", "penguins", model_dir=model_dir, DATABASE_URL=postgres_url)
    assert " *   2 " in listed.stdout
    assert not (model_dir / "penguins" / "serving.json").exists()
    with psycopg.connect(postgres_url) as connection:
        moves = connection.execute("SELECT model, pointer, version FROM pointer_changes ORDER BY seq").fetchall()
    assert moves == [("penguins", "serving", 1), ("penguins", "serving", 2)]
