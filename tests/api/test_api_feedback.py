"""Feedback on predictions, who may send it, and the collected examples it adds up to."""

import io
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import AUTH, TOKEN, labelled_zip, make_settings
from fastapi.testclient import TestClient

from prediction_service.api.app import create_app
from prediction_service.core.ids import new_prediction_id
from prediction_service.models.mnist.model import normalize_all
from prediction_service.storage.layout import Layout
from prediction_service.storage.predictions import LoggedPrediction, PredictionLog

LABELLER = "labelling-tool-token"
LABELLER_AUTH = {"Authorization": f"Bearer {LABELLER}"}


def log_predictions(model_dir: Path, *predictions: tuple[str, str, np.ndarray]) -> list[str]:
    """Put (model, answer, input) predictions of version 1 into the prediction log; their ids."""
    logged = [
        LoggedPrediction(new_prediction_id(), model, 1, answer, values, time.time())
        for model, answer, values in predictions
    ]
    PredictionLog(Layout(model_dir).learning, 1000).append(logged)
    return [prediction.id for prediction in logged]


@pytest.fixture
def labeller(model_dir: Path) -> TestClient:
    with TestClient(create_app(make_settings(model_dir, feedback_tokens=f"other-token,{LABELLER}"))) as client:
        yield client


def feedback(client: TestClient, prediction_id: str, label: object, headers: dict[str, str] = LABELLER_AUTH):
    return client.post(f"/predictions/{prediction_id}/feedback", json={"label": label}, headers=headers)


def test_feedback_is_recorded_and_a_second_label_replaces_the_first(
    labeller: TestClient, model_dir: Path, mnist_arrays: dict[str, np.ndarray]
) -> None:
    digit = normalize_all(mnist_arrays["x_test"][:1])[0]
    (prediction_id,) = log_predictions(model_dir, ("mnist", "7", digit))
    first = feedback(labeller, prediction_id, "1")
    assert first.status_code == 201, first.text
    assert first.json() == {
        "prediction_id": prediction_id,
        "model": "mnist",
        "model_version": 1,
        "answer": "7",
        "label": "1",
        "correct": False,
        "replaced": False,
        "replaced_label": None,
        "example_id": first.json()["example_id"],
    }
    second = feedback(labeller, prediction_id, 7, headers=AUTH)  # the admin may too; a number is a digit
    assert second.status_code == 201, second.text
    assert second.json()["replaced"] is True
    assert second.json()["replaced_label"] == "1"
    assert second.json()["correct"] is True
    assert second.json()["example_id"] > first.json()["example_id"]
    # The same label again (a client retrying) changes nothing: not a new example that counts again.
    again = feedback(labeller, prediction_id, "7")
    assert again.status_code == 201, again.text
    assert (again.json()["replaced"], again.json()["example_id"]) == (False, second.json()["example_id"])
    examples = labeller.get("/models/mnist/examples").json()
    assert examples["total"] == 1
    assert examples["by_label"]["7"] == 1
    assert examples["by_label"]["1"] == 0


def test_a_penguin_label_is_a_species_in_the_models_spelling(labeller: TestClient, model_dir: Path) -> None:
    (prediction_id,) = log_predictions(model_dir, ("penguins", "Adelie", np.array([46.0, 215.0])))
    response = feedback(labeller, prediction_id, "gentoo")
    assert response.status_code == 201, response.text
    assert (response.json()["model"], response.json()["label"]) == ("penguins", "Gentoo")
    examples = labeller.get("/models/penguins/examples").json()
    assert examples["by_label"] == {"Adelie": 0, "Chinstrap": 0, "Gentoo": 1}
    assert examples["by_source"] == {"feedback": 1, "uploads": 0}


def test_unknown_ids_labels_the_model_lacks_and_malformed_bodies_are_refused(
    labeller: TestClient, model_dir: Path
) -> None:
    (prediction_id,) = log_predictions(model_dir, ("penguins", "Adelie", np.array([40.0, 190.0])))
    unknown = feedback(labeller, new_prediction_id(), "Adelie")
    assert unknown.status_code == 404
    assert "PREDICTION_LOG_MAX" in unknown.json()["detail"]
    wrong = feedback(labeller, prediction_id, "Emperor")
    assert wrong.status_code == 422
    assert "Adelie, Chinstrap, Gentoo" in wrong.json()["detail"]
    path = f"/predictions/{prediction_id}/feedback"
    for body in ({}, {"label": ""}, {"label": None}, {"label": ["Adelie"]}, {"label": "x" * 101}):
        response = labeller.post(path, json=body, headers=LABELLER_AUTH)
        assert response.status_code == 422, body
        assert "label" in str(response.json()["detail"])
    not_json = labeller.post(path, content=b"Adelie", headers={**LABELLER_AUTH, "Content-Type": "application/json"})
    assert not_json.status_code == 422
    assert labeller.get("/models/penguins/examples").json()["total"] == 0  # nothing partial was kept


def test_without_a_prediction_log_feedback_says_so(model_dir: Path) -> None:
    with TestClient(create_app(make_settings(model_dir, prediction_log_max=0))) as client:
        response = feedback(client, new_prediction_id(), "7", headers=AUTH)
    assert response.status_code == 404
    assert "PREDICTION_LOG_MAX=0" in response.json()["detail"]


@pytest.mark.parametrize(("headers", "status"), [({}, 401), ({"Authorization": "Bearer nope"}, 403)])
def test_feedback_needs_a_token(labeller: TestClient, model_dir: Path, headers: dict, status: int) -> None:
    (prediction_id,) = log_predictions(model_dir, ("penguins", "Adelie", np.array([40.0, 190.0])))
    response = feedback(labeller, prediction_id, "Adelie", headers=headers)
    assert response.status_code == status
    assert LABELLER not in response.text
    assert labeller.get("/models/penguins/examples").json()["total"] == 0


def test_a_feedback_token_can_do_nothing_else(labeller: TestClient) -> None:
    zip_bytes = labelled_zip(np.zeros((2, 28, 28), np.uint8), [0, 1])
    assert (
        labeller.post("/upload-images", files={"file": ("a.zip", zip_bytes)}, headers=LABELLER_AUTH).status_code == 403
    )
    assert labeller.post("/models/mnist/versions/1/activate", headers=LABELLER_AUTH).status_code == 403
    assert labeller.post("/jobs/" + "a" * 32 + "/retry", headers=LABELLER_AUTH).status_code == 403
    assert labeller.get("/jobs").json()["jobs"] == []
    assert TOKEN not in labeller.post("/models/mnist/versions/1/activate", headers=LABELLER_AUTH).text


def test_examples_count_feedback_and_uploads_the_serving_version_has_not_learned(
    labeller: TestClient, model_dir: Path, mnist_arrays: dict[str, np.ndarray]
) -> None:
    digits = normalize_all(mnist_arrays["x_test"][:3])
    ids = log_predictions(model_dir, *[("mnist", "0", digit) for digit in digits])
    for prediction_id, label in zip(ids, ["4", "4", "9"], strict=True):
        assert feedback(labeller, prediction_id, label).status_code == 201
    # An accepted upload, its job not run yet (so it has not produced a version).
    services = labeller.app.state.services
    services.retraining.intake.accept(
        "mnist", io.BytesIO(labelled_zip(mnist_arrays["x_train"][:5], [4, 4, 1, 1, 1])), "five.zip"
    )
    examples = labeller.get("/models/mnist/examples").json()
    assert examples["serving_version"] == 1
    assert examples["total"] == 8
    assert examples["by_source"] == {"feedback": 3, "uploads": 5}
    assert examples["by_label"] == {**{str(d): 0 for d in range(10)}, "4": 4, "9": 1, "1": 3}
    automatic = examples["automatic_retraining"]
    assert automatic["enabled"] is True
    assert (automatic["min_examples"], automatic["new_examples"]) == (200, 3)
    assert (automatic["schedule"], automatic["next_check"], automatic["job_id"]) == (None, None, None)
    assert labeller.get("/models/iris/examples").status_code == 404
