"""The service with DATABASE_URL: jobs, the serving pointers and their history, and the learning loop's records
live in PostgreSQL, not in MODEL_DIR's SQLite files."""

import time
from pathlib import Path

import psycopg
from conftest import AUTH, SAMPLES, make_settings, wait_for_job
from fastapi.testclient import TestClient
from postgres import PostgresServer

from prediction_service.api.app import create_app
from prediction_service.storage.layout import Layout
from prediction_service.storage.pointers import PostgresPointers
from prediction_service.storage.postgres import Postgres


def test_a_service_keeps_its_records_in_postgresql(model_dir: Path, postgres_url: str, postgres: Postgres) -> None:
    settings = make_settings(model_dir, database_url=postgres_url)
    with TestClient(create_app(settings)) as client:
        # The first start finds no pointer in the database: the store's first versions serve (no retraining).
        assert client.get("/models").status_code == 200
        answer = client.get("/predict", params={"bill_length_mm": 40.3, "flipper_length_mm": 195}).json()
        assert answer["model_version"] == 1
        prediction_id = answer["prediction_id"]
        labelled = client.post(f"/predictions/{prediction_id}/feedback", json={"label": "Gentoo"}, headers=AUTH)
        assert labelled.status_code == 201, labelled.text

        upload = client.post(
            "/upload-penguins",
            files={"file": ("rows.csv", (SAMPLES / "penguin_rows.csv").read_bytes(), "text/csv")},
            headers=AUTH,
        )
        assert upload.status_code == 202, upload.text
        job = wait_for_job(client, upload.json()["job_id"])
        assert job["status"] in ("succeeded", "rejected"), job
        published = job["status"] == "succeeded"
        serving = 2 if published else 1

        models = {model["name"]: model for model in client.get("/models").json()["models"]}
        assert models["penguins"]["serving_version"] == serving
        if published:
            assert client.post("/models/penguins/versions/1/activate", headers=AUTH).status_code == 200
        else:
            assert client.post("/models/penguins/versions/2/shadow", headers=AUTH).status_code == 200

    with psycopg.connect(postgres_url) as connection:
        jobs = connection.execute("SELECT id, status FROM jobs").fetchall()
        examples = connection.execute("SELECT prediction_id, label FROM examples").fetchall()
        logged = connection.execute("SELECT coalesce(sum(rows), 0) FROM prediction_batches").fetchone()[0]
    assert jobs == [(upload.json()["job_id"], job["status"])]
    assert examples == [(answer["prediction_id"], "Gentoo")]
    assert logged >= 1
    pointers = PostgresPointers(postgres)
    history = [period.version for period in pointers.serving_history("penguins")]
    assert history == ([1, 2, 1] if published else [1])
    assert pointers.shadow("penguins") == (None if published else 2)
    assert {period.version for period in pointers.serving_history("mnist")} == {1}
    # Nothing of this went to MODEL_DIR's SQLite files or pointer files.
    layout = Layout(model_dir)
    assert not layout.jobs.exists()
    assert not layout.learning.exists()


def test_with_the_database_down_predictions_go_on_writes_get_503_and_all_recovers(
    model_dir: Path, own_postgres_server: PostgresServer
) -> None:
    server = own_postgres_server
    penguin = {"bill_length_mm": 40.3, "flipper_length_mm": 195}
    with TestClient(create_app(make_settings(model_dir, database_url=server.url()))) as client:
        prediction_id = client.get("/predict", params=penguin).json()["prediction_id"]

        def label(name: str):
            return client.post(f"/predictions/{prediction_id}/feedback", json={"label": name}, headers=AUTH)

        assert label("Adelie").status_code == 201
        server.stop()

        for _ in range(20):  # answers go on from what is loaded; their log is dropped meanwhile
            assert client.get("/predict", params=penguin).status_code == 200
        assert client.get("/metrics").status_code == 200  # without the shadows' figures
        image = client.post("/predict-image", files={"file": ("d.png", (SAMPLES / "test_img0.png").read_bytes())})
        assert image.status_code == 200, image.text
        refused = [
            label("Gentoo"),
            client.post("/models/penguins/versions/1/activate", headers=AUTH),
            client.post(
                "/upload-penguins",
                files={"file": ("rows.csv", (SAMPLES / "penguin_rows.csv").read_bytes(), "text/csv")},
                headers=AUTH,
            ),
        ]
        for response in refused:
            assert response.status_code == 503, response.text
            assert int(response.headers["Retry-After"]) > 0
            assert "database is unavailable" in response.json()["detail"]

        server.start()
        deadline = time.monotonic() + 15  # the pool reconnects by itself
        while (relabelled := label("Gentoo")).status_code != 201:
            assert relabelled.status_code == 503, relabelled.text
            assert time.monotonic() < deadline, relabelled.text
            time.sleep(0.2)
        assert relabelled.json()["replaced_label"] == "Adelie"
        assert client.post("/models/penguins/versions/1/activate", headers=AUTH).status_code == 200
        later = client.get("/predict", params=penguin).json()["prediction_id"]  # logged again
        labelled = client.post(f"/predictions/{later}/feedback", json={"label": "Adelie"}, headers=AUTH)
        assert labelled.status_code == 201, labelled.text
