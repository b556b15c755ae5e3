"""Every prediction answer carries a prediction id, and the prediction log keeps what the model saw."""

import asyncio
import base64
import re
from pathlib import Path

import numpy as np
from conftest import ROOT, SAMPLES, make_settings
from fastapi.testclient import TestClient
from test_v2_protocol import binary_body, split_binary, tensor

from prediction_service.api.app import create_app
from prediction_service.models.mnist.images import ImageLimits, decode_digit
from prediction_service.storage.layout import Layout
from prediction_service.storage.predictions import LoggedPrediction, PredictionLog

PREDICTION_ID = re.compile(r"[0-9a-f]{32}")
DIGIT = (SAMPLES / "test_img0.png").read_bytes()  # a 4
OTHER_DIGIT = (SAMPLES / "digit_rgba.png").read_bytes()


def find(client: TestClient, prediction_id: str) -> LoggedPrediction | None:
    return asyncio.run(client.app.state.services.serving.recorder.find(prediction_id))  # type: ignore[attr-defined]


def mnist_digits() -> np.ndarray:
    with np.load(ROOT / "data" / "mnist-sample.npz") as data:
        return data["x_test"][:3].astype(np.uint8)


def every_kind_of_prediction(client: TestClient) -> list[tuple[str, str]]:
    """(model, prediction id) of a prediction from every route, single and batch, own routes and /v2."""
    made: list[tuple[str, str]] = []
    single = client.get("/predict", params={"bill_length_mm": 40.3, "flipper_length_mm": 195}).json()
    made.append(("penguins", single["prediction_id"]))
    batch = client.post(
        "/predict",
        json=[
            {"bill_length_mm": 40.3, "flipper_length_mm": 195},
            {"bill_length_mm": -1},
            {"bill_length_mm": 47.5, "flipper_length_mm": 220},
        ],
    ).json()
    assert batch[1]["prediction_id"] is None  # a row that was not predicted has no id
    made += [("penguins", batch[0]["prediction_id"]), ("penguins", batch[2]["prediction_id"])]
    made.append(("mnist", client.post("/predict-image", files={"file": ("4.png", DIGIT)}).json()["prediction_id"]))
    images = client.post("/predict-images", files=[("files", DIGIT), ("files", b"no image"), ("files", OTHER_DIGIT)])
    items = images.json()
    assert items[1]["prediction_id"] is None
    made += [("mnist", items[0]["prediction_id"]), ("mnist", items[2]["prediction_id"])]
    for ids in (
        v2_ids(client, "penguins", {"inputs": [tensor("measurements", "FP32", [2, 2], [[40.3, 195], [47.5, 220]])]}),
        v2_ids(client, "mnist", {"inputs": [tensor("image", "UINT8", [3, 28, 28], mnist_digits().tolist())]}),
        v2_ids(
            client, "mnist", {"inputs": [tensor("image_file", "BYTES", [1, 1], [base64.b64encode(DIGIT).decode()])]}
        ),
    ):
        made += ids
    return made


def v2_ids(client: TestClient, model: str, request: dict) -> list[tuple[str, str]]:
    response = client.post(f"/v2/models/{model}/versions/1/infer", json={"id": "mine", **request})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == "mine"  # the protocol's request id is kept as it was
    rows = request["inputs"][0]["shape"][0]
    assert len(body["parameters"]["prediction_ids"]) == rows
    return [(model, prediction_id) for prediction_id in body["parameters"]["prediction_ids"]]


def test_every_prediction_answer_has_its_own_id_and_the_log_keeps_it(client: TestClient) -> None:
    made = every_kind_of_prediction(client)
    ids = [prediction_id for _, prediction_id in made]
    assert all(PREDICTION_ID.fullmatch(prediction_id) for prediction_id in ids), ids
    assert len(set(ids)) == len(ids) == 12
    for model, prediction_id in made:
        logged = find(client, prediction_id)
        assert logged is not None
        assert (logged.model, logged.version) == (model, 1)


def test_v2_binary_answers_carry_the_ids_in_their_json_header(client: TestClient) -> None:
    rows = np.array([[40.3, 195.0], [47.5, 220.0]], dtype=np.float32)
    header = {
        "inputs": [
            {"name": "measurements", "datatype": "FP32", "shape": [2, 2], "parameters": {"binary_data_size": 16}}
        ],
        "parameters": {"binary_data_output": True},
    }
    body, headers = binary_body(header, rows.tobytes())
    response = client.post("/v2/models/penguins/infer", content=body, headers=headers)
    assert response.status_code == 200, response.text
    document, _ = split_binary(response)
    ids = document["parameters"]["prediction_ids"]
    assert len(ids) == 2
    assert ids[0] != ids[1]
    logged = find(client, ids[1])
    assert logged is not None
    assert logged.answer == "Gentoo"
    assert logged.input.tolist() == [47.5, 220.0]


def test_the_log_keeps_the_penguins_measurements_and_the_answer(client: TestClient) -> None:
    answer = client.get("/predict", params={"bill_length_mm": 40.3, "flipper_length_mm": 195}).json()
    logged = find(client, answer["prediction_id"])
    assert logged is not None
    assert (logged.model, logged.version, logged.answer) == ("penguins", answer["model_version"], answer["result"])
    assert logged.input.dtype == np.float64
    assert logged.input.shape == (2,)
    assert logged.input.tolist() == [40.3, 195.0]


def test_the_log_keeps_the_normalised_digit_the_model_saw(client: TestClient) -> None:
    answer = client.post("/predict-image", files={"file": ("4.png", DIGIT)}).json()
    logged = find(client, answer["prediction_id"])
    assert logged is not None
    assert (logged.model, logged.answer) == ("mnist", answer["result"])
    assert logged.input.dtype == np.uint8
    assert logged.input.shape == (28, 28)
    np.testing.assert_array_equal(logged.input, decode_digit(DIGIT, ImageLimits(1 << 20, 1 << 24)))
    # An MNIST-style tensor under /v2 is what the model sees, as it was sent.
    digits = mnist_digits()
    ids = v2_ids(client, "mnist", {"inputs": [tensor("image", "UINT8", [3, 28, 28], digits.tolist())]})
    for (_, prediction_id), digit in zip(ids, digits, strict=True):
        logged = find(client, prediction_id)
        assert logged is not None
        np.testing.assert_array_equal(logged.input, digit)


def test_a_graceful_stop_loses_no_prediction(model_dir: Path) -> None:
    with TestClient(create_app(make_settings(model_dir))) as client:
        ids = [
            client.get("/predict", params={"bill_length_mm": 40 + n / 10, "flipper_length_mm": 195}).json()[
                "prediction_id"
            ]
            for n in range(20)
        ]
        log = client.app.state.services.serving.prediction_log  # type: ignore[attr-defined]
    assert all(log.get(prediction_id) is not None for prediction_id in ids)


def test_prediction_log_max_zero_keeps_nothing_but_answers_keep_their_ids(model_dir: Path) -> None:
    with TestClient(create_app(make_settings(model_dir, prediction_log_max=0))) as client:
        made = every_kind_of_prediction(client)
        assert len({prediction_id for _, prediction_id in made}) == 12
        assert find(client, made[0][1]) is None
    learning = Layout(model_dir).learning
    assert not learning.exists() or PredictionLog(learning, max_rows=1).count() == 0


def test_the_api_documents_the_prediction_id(client: TestClient) -> None:
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    for name in ("PenguinPrediction", "DigitPrediction", "PenguinBatchItem", "DigitBatchItem"):
        assert "prediction_id" in schemas[name]["properties"], name
    assert "PenguinPrediction" in schemas
    assert "prediction_id" in schemas["PenguinPrediction"]["required"]
    assert "prediction_ids" in schemas["InferenceResponse"]["properties"]["parameters"]["description"]
