"""The Open Inference Protocol (KServe V2 REST) in process: metadata, JSON and binary inference, errors."""

import base64
import json
import logging
import struct
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, SAMPLES, make_settings
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from prediction_service.api.app import create_app
from prediction_service.models.interface import ModelContext
from prediction_service.models.penguins.model import PenguinsModel
from prediction_service.storage.versions import ModelStore

PENGUINS = [[40.3, 195.0], [47.5, 220.0]]
DIGIT_FILE = SAMPLES / "test_img0.png"  # a 4


def tensor(name: str, datatype: str, shape: list[int], data: list) -> dict:
    return {"name": name, "datatype": datatype, "shape": shape, "data": data}


def penguins_request(rows: list[list[float]] = PENGUINS, **extra: object) -> dict:
    return {"inputs": [tensor("measurements", "FP32", [len(rows), 2], rows)], **extra}


def binary_body(header: dict, *chunks: bytes) -> tuple[bytes, dict[str, str]]:
    encoded = json.dumps(header).encode()
    return encoded + b"".join(chunks), {"Inference-Header-Content-Length": str(len(encoded))}


def split_binary(response) -> tuple[dict, bytes]:
    length = int(response.headers["inference-header-content-length"])
    return json.loads(response.content[:length]), response.content[length:]


def outputs(body: dict) -> dict[str, dict]:
    return {output["name"]: output for output in body["outputs"]}


def test_server_and_model_metadata(client: TestClient) -> None:
    server = client.get("/v2").json()
    assert "binary_tensor_data" in server["extensions"]
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    penguins = client.get("/v2/models/penguins").json()
    assert penguins["versions"] == ["1"]
    assert penguins["inputs"] == [{"name": "measurements", "datatype": "FP32", "shape": [-1, 2]}]
    assert {o["name"]: (o["datatype"], o["shape"]) for o in penguins["outputs"]} == {
        "species": ("BYTES", [-1]),
        "probabilities": ("FP32", [-1, 3]),
    }
    mnist = client.get("/v2/models/mnist/versions/1").json()
    assert {i["name"]: (i["datatype"], i["shape"]) for i in mnist["inputs"]} == {
        "image": ("UINT8", [-1, 28, 28]),
        "image_file": ("BYTES", [-1, 1]),
    }
    assert client.get("/v2/models/mnist/ready").json() == {"name": "mnist", "ready": True}
    assert client.get("/v2/models/penguins/versions/1/ready").status_code == 200


def test_triton_config_is_what_perf_analyzer_reads(client: TestClient) -> None:
    config = client.get("/v2/models/penguins/config").json()
    assert config["max_batch_size"] == 256  # MAX_BATCH_ITEMS
    assert config["input"] == [{"name": "measurements", "data_type": "TYPE_FP32", "format": "FORMAT_NONE", "dims": [2]}]
    assert {o["name"]: o["data_type"] for o in config["output"]} == {
        "species": "TYPE_STRING",
        "probabilities": "TYPE_FP32",
    }
    mnist = {i["name"]: i for i in client.get("/v2/models/mnist/config").json()["input"]}
    assert mnist["image"]["dims"] == [28, 28]
    assert mnist["image"]["data_type"] == "TYPE_UINT8"
    assert mnist["image_file"]["optional"] is True


def test_penguins_in_json_match_predict(client: TestClient) -> None:
    response = client.post("/v2/models/penguins/infer", json=penguins_request(id="my-request"))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == "my-request"
    assert body["model_name"] == "penguins"
    assert body["model_version"] == "1"
    found = outputs(body)
    assert found["species"]["data"] == ["Adelie", "Gentoo"]
    assert found["probabilities"]["shape"] == [2, 3]
    single = client.get("/predict", params={"bill_length_mm": 40.3, "flipper_length_mm": 195}).json()
    assert found["probabilities"]["data"][:3] == list(single["probabilities"].values())


def test_a_request_without_id_gets_the_request_id(client: TestClient) -> None:
    response = client.post("/v2/models/penguins/infer", json=penguins_request(), headers={"X-Request-ID": "r-7"})
    assert response.json()["id"] == "r-7"


def test_only_the_outputs_asked_for_and_nested_or_flat_data(client: TestClient) -> None:
    request = {
        "inputs": [tensor("measurements", "FP32", [2, 2], [40.3, 195, 47.5, 220])],
        "outputs": [{"name": "species"}],
    }
    body = client.post("/v2/models/penguins/infer/", json=request).json()  # a trailing slash works too
    assert [o["name"] for o in body["outputs"]] == ["species"]
    assert body["outputs"][0]["data"] == ["Adelie", "Gentoo"]


def test_penguins_with_the_binary_extension(client: TestClient) -> None:
    rows = np.array(PENGUINS, dtype="<f4")
    header = {
        "inputs": [
            {"name": "measurements", "datatype": "FP32", "shape": [2, 2], "parameters": {"binary_data_size": 16}}
        ],
        "outputs": [{"name": "species", "parameters": {"binary_data": True}}, {"name": "probabilities"}],
        "parameters": {"binary_data_output": True},
    }
    body, headers = binary_body(header, rows.tobytes())
    response = client.post("/v2/models/penguins/infer", content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/octet-stream"
    document, binary = split_binary(response)
    species, probabilities = document["outputs"]
    species_size = species["parameters"]["binary_data_size"]
    names, position = [], 0
    while position < species_size:
        (length,) = struct.unpack_from("<I", binary, position)
        names.append(binary[position + 4 : position + 4 + length].decode())
        position += 4 + length
    assert names == ["Adelie", "Gentoo"]
    values = np.frombuffer(binary[species_size:], dtype="<f4").reshape(probabilities["shape"])
    assert values.shape == (2, 3)
    assert values.argmax(axis=1).tolist() == [0, 2]


def test_mnist_image_tensor_uint8_binary_and_fp32_json_agree(client: TestClient) -> None:
    with np.load(ROOT / "data" / "mnist-sample.npz") as data:
        images, labels = data["x_test"][:6].astype(np.uint8), data["y_test"][:6]
    header = {"inputs": [{"name": "image", "datatype": "UINT8", "shape": [6, 28, 28]}]}
    header["inputs"][0]["parameters"] = {"binary_data_size": images.size}
    body, headers = binary_body(header, images.tobytes())
    from_binary = client.post("/v2/models/mnist/infer", content=body, headers=headers)
    assert from_binary.status_code == 200, from_binary.text
    digits = outputs(from_binary.json())["digit"]["data"]
    assert sum(d == label for d, label in zip(digits, labels.tolist(), strict=True)) >= 5
    as_fp32 = (images / 255).astype(np.float32).tolist()
    from_json = client.post(
        "/v2/models/mnist/infer", json={"inputs": [tensor("image", "FP32", [6, 28, 28], as_fp32)]}
    ).json()
    assert outputs(from_json)["digit"]["data"] == digits
    assert outputs(from_json)["probabilities"]["shape"] == [6, 10]


def test_mnist_image_files_as_base64_json_and_raw_binary(client: TestClient) -> None:
    encoded = DIGIT_FILE.read_bytes()
    as_json = {"inputs": [tensor("image_file", "BYTES", [1, 1], [base64.b64encode(encoded).decode()])]}
    response = client.post("/v2/models/mnist/infer", json=as_json)
    assert response.status_code == 200, response.text
    assert outputs(response.json())["digit"]["data"] == [4]
    element = struct.pack("<I", len(encoded)) + encoded
    header = {"inputs": [{"name": "image_file", "datatype": "BYTES", "shape": [2, 1]}]}
    header["inputs"][0]["parameters"] = {"binary_data_size": 2 * len(element)}
    body, headers = binary_body(header, element, element)
    response = client.post("/v2/models/mnist/infer", content=body, headers=headers)
    assert outputs(response.json())["digit"]["data"] == [4, 4]
    expected = client.post("/predict-image", files={"file": encoded}).json()["probabilities"]
    assert outputs(response.json())["probabilities"]["data"][:10] == pytest.approx(expected, abs=1e-6)


def one_image(datatype: str = "UINT8") -> dict:
    return tensor("image", datatype, [1, 28, 28], [0] * 784)


@pytest.mark.parametrize(
    ("path", "request_body", "status", "says"),
    [
        ("penguins", {"inputs": [tensor("measurements", "INT32", [1, 2], [40, 195])]}, 400, "must be FP32"),
        ("penguins", {"inputs": [tensor("measurements", "FP32", [1, 3], [40, 195, 1])]}, 400, "shape [n, 2]"),
        ("penguins", {"inputs": [tensor("measurements", "FP32", [1, 2], [40])]}, 400, "holds 2"),
        ("penguins", {"inputs": [tensor("bill", "FP32", [1, 2], [40, 195])]}, 400, "no input 'bill'"),
        ("penguins", {"inputs": [tensor("measurements", "FP32", [1, 2], ["a", "b"])]}, 400, "FP32 values"),
        ("penguins", {"inputs": [tensor("measurements", "FP32", [1, 2], [-1, 195])]}, 400, "greater than 0"),
        ("penguins", {"inputs": [tensor("measurements", "FP64", [0, 2], [])]}, 400, "must be FP32"),
        ("penguins", {"inputs": [tensor("measurements", "FP32", [0, 2], [])]}, 400, "at least one row"),
        ("penguins", {**penguins_request(), "outputs": [{"name": "size"}]}, 400, "no output 'size'"),
        ("penguins", {"inputs": []}, 400, "non-empty list"),
        ("penguins", {"inputs": [tensor("measurements", "FLOAT", [1, 2], [40, 195])]}, 400, "not one of"),
        ("mnist", {"inputs": [one_image(), tensor("image_file", "BYTES", [1, 1], ["eA=="])]}, 400, "exactly one"),
        ("mnist", {"inputs": [tensor("image", "UINT8", [1, 28, 28], [300] * 784)]}, 400, "out of UINT8"),
        ("mnist", {"inputs": [tensor("image", "FP32", [1, 28, 28], [2.0] * 784)]}, 400, "0.0-1.0"),
        ("mnist", {"inputs": [tensor("image_file", "BYTES", [1, 1], ["not base64!"])]}, 400, "base64"),
        ("mnist", {"inputs": [tensor("image_file", "BYTES", [1, 1], ["aGVsbG8="])]}, 415, "image_file[0]"),
        ("nope", penguins_request(), 404, "no model 'nope'"),
        ("penguins/versions/9", penguins_request(), 404, "no version '9'"),
    ],
)
def test_bad_requests_get_a_4xx_in_the_protocols_shape(
    client: TestClient, path: str, request_body: dict, status: int, says: str
) -> None:
    response = client.post(f"/v2/models/{path}/infer", json=request_body)
    assert response.status_code == status, response.text
    assert list(response.json()) == ["error"]
    assert says in response.json()["error"]


def test_too_many_rows(model_dir: Path) -> None:
    with TestClient(create_app(make_settings(model_dir, max_batch_items=3))) as client:
        response = client.post("/v2/models/penguins/infer", json=penguins_request([[40.3, 195.0]] * 4))
        assert response.status_code == 400
        assert response.json() == {"error": "4 rows in one request; at most 3 (MAX_BATCH_ITEMS)"}
        assert client.get("/v2/models/mnist/config").json()["max_batch_size"] == 3


@pytest.mark.parametrize(
    ("body", "headers", "says"),
    [
        (b"{not json", {}, "not valid JSON"),
        (b'{"inputs": []}', {"Inference-Header-Content-Length": "99"}, "Inference-Header-Content-Length is 99"),
        (b'{"inputs": []}', {"Inference-Header-Content-Length": "x"}, "whole number"),
    ],
)
def test_unreadable_bodies(client: TestClient, body: bytes, headers: dict, says: str) -> None:
    response = client.post("/v2/models/penguins/infer", content=body, headers=headers)
    assert response.status_code == 400
    assert says in response.json()["error"]


def test_binary_sizes_must_add_up(client: TestClient) -> None:
    header = {"inputs": [{"name": "measurements", "datatype": "FP32", "shape": [1, 2]}]}
    header["inputs"][0]["parameters"] = {"binary_data_size": 8}
    body, headers = binary_body(header, b"\0" * 12)
    response = client.post("/v2/models/penguins/infer", content=body, headers=headers)
    assert response.status_code == 400
    assert "no input claims" in response.json()["error"]


def test_only_the_serving_version_answers_and_the_404_says_how_to_serve_another(model_dir: Path) -> None:
    penguins = PenguinsModel(ModelContext(make_settings(model_dir)))
    penguins.train_first_version(ModelStore(model_dir))  # version 2, not serving
    with TestClient(create_app(make_settings(model_dir))) as client:
        for response in (
            client.get("/v2/models/penguins/versions/2"),
            client.get("/v2/models/penguins/versions/2/ready"),
            client.post("/v2/models/penguins/versions/2/infer", json=penguins_request()),
        ):
            assert response.status_code == 404
            assert "POST /models/penguins/versions/2/activate" in response.json()["error"]
        assert client.post("/v2/models/penguins/versions/1/infer", json=penguins_request()).status_code == 200


def test_errors_elsewhere_keep_their_shape(client: TestClient) -> None:
    assert client.get("/v2/nothing-here").json() == {"error": "Not Found"}
    assert "detail" in client.get("/jobs/nothing-here").json()
    assert "detail" in client.get("/predict", params={"bill_length_mm": -1, "flipper_length_mm": 1}).json()


def test_body_limit_answers_in_the_protocols_shape(model_dir: Path) -> None:
    with TestClient(create_app(make_settings(model_dir, max_image_bytes=1000))) as client:
        rows = [[40.3, 195.0]] * 10_000
        response = client.post("/v2/models/penguins/infer", json=penguins_request(rows))
        assert response.status_code == 413
        assert "MAX_IMAGE_BYTES" in response.json()["error"]


def test_metrics_and_request_log_count_v2_predictions(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    def counted() -> dict[tuple, float]:
        found: dict[tuple, float] = {}
        for family in text_string_to_metric_families(client.get("/metrics").text):
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                found[key] = found.get(key, 0) + sample.value
        return found

    before = counted()
    with caplog.at_level(logging.INFO, logger="prediction_service.requests"):
        client.post("/v2/models/penguins/infer", json=penguins_request(), headers={"X-Request-ID": "v2-log"})
        image = {
            "inputs": [tensor("image_file", "BYTES", [1, 1], [base64.b64encode(DIGIT_FILE.read_bytes()).decode()])]
        }
        client.post("/v2/models/mnist/infer", json=image)
    after = counted()

    def grew(name: str, **labels: str) -> float:
        keys = [key for key in after if key[0] == name and labels.items() <= dict(key[1]).items()]
        return sum(after[key] - before.get(key, 0) for key in keys)

    route = "/v2/models/{name}/infer"
    assert grew("http_requests_total", method="POST", route=route, status="200") == 2
    assert grew("predictions_total", model="penguins", version="1", result="Adelie") == 1
    assert grew("predictions_total", model="penguins", version="1", result="Gentoo") == 1
    assert grew("predictions_total", model="mnist", version="1", result="4") == 1
    assert grew("inference_batch_size_count") >= 1  # through the digit model's micro-batching
    [record] = [r for r in caplog.records if getattr(r, "fields", {}).get("request_id") == "v2-log"]
    assert record.fields["route"] == route  # type: ignore[attr-defined]
    assert record.fields["model_version"] == 1  # type: ignore[attr-defined]


def test_openapi_lists_the_v2_routes(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path in (
        "/v2",
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/models/{name}",
        "/v2/models/{name}/ready",
        "/v2/models/{name}/config",
        "/v2/models/{name}/infer",
        "/v2/models/{name}/versions/{version}",
        "/v2/models/{name}/versions/{version}/ready",
        "/v2/models/{name}/versions/{version}/infer",
    ):
        assert path in paths, path
    infer = paths["/v2/models/{name}/infer"]["post"]
    assert set(infer["requestBody"]["content"]) == {"application/json"}
    assert "Inference-Header-Content-Length" in infer["requestBody"]["description"]  # the binary extension
    assert {"200", "400", "404", "413", "503"} <= set(infer["responses"])
