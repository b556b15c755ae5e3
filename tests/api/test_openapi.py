"""What /docs shows comes from the OpenAPI schema: check that it documents what the service does."""

import pytest
from fastapi.testclient import TestClient


@pytest.fixture
def schema(client: TestClient) -> dict:
    return client.get("/openapi.json").json()


def operations(schema: dict):
    for path, methods in schema["paths"].items():
        for method, operation in methods.items():
            yield path, method, operation


def test_every_operation_has_a_summary_and_described_parameters(schema: dict) -> None:
    for path, method, operation in operations(schema):
        assert operation.get("summary"), (path, method)
        for parameter in operation.get("parameters", []):
            assert parameter.get("description"), (path, method, parameter["name"])


def test_penguin_parameters_show_range_and_examples(schema: dict) -> None:
    parameters = {p["name"]: p for p in schema["paths"]["/predict"]["get"]["parameters"]}
    for name in ("bill_length_mm", "flipper_length_mm"):
        assert parameters[name]["required"] is True
        assert parameters[name]["schema"]["exclusiveMinimum"] == 0
        assert parameters[name]["examples"]


@pytest.mark.parametrize(
    ("path", "method", "codes"),
    [
        ("/predict", "get", {"200", "422", "503"}),
        ("/predict-image", "post", {"200", "413", "415", "422", "503"}),
        ("/upload-images", "post", {"202", "401", "403", "413", "415", "422", "503"}),
        ("/jobs/{job_id}", "get", {"200", "404", "422"}),
        ("/jobs/{job_id}/retry", "post", {"202", "401", "403", "404", "409", "422"}),
        ("/models/{name}/versions/{version}/activate", "post", {"200", "401", "403", "404", "409", "422"}),
        ("/models/{name}/versions/{version}/shadow", "post", {"200", "401", "403", "404", "409", "422"}),
        ("/models/{name}/shadow", "delete", {"200", "401", "403", "404", "422"}),
        ("/health/ready", "get", {"200", "503"}),
    ],
)
def test_error_codes_are_documented_where_they_occur(schema: dict, path: str, method: str, codes: set[str]) -> None:
    assert codes <= set(schema["paths"][path][method]["responses"])


def test_management_operations_ask_for_the_bearer_token(schema: dict) -> None:
    for path, method, operation in operations(schema):
        # Predictions are open; feedback on them (/predictions/...) is not.
        open_to_all = path in ("/predict", "/predict-image", "/predict-images") or path.startswith("/v2/")
        needs_token = method in ("post", "delete") and not open_to_all
        assert ("security" in operation) == needs_token, (path, method)
