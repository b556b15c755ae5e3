import pytest
from fastapi.testclient import TestClient


def test_the_tutorial_example_is_an_adelie(client: TestClient) -> None:
    response = client.get("/predict", params={"bill_length_mm": 40.3, "flipper_length_mm": 195})
    assert response.status_code == 200
    body = response.json()
    assert body["parameters"] == {"bill_length_mm": 40.3, "flipper_length_mm": 195.0}
    assert body["result"] == "Adelie"
    assert set(body["probabilities"]) == {"Adelie", "Chinstrap", "Gentoo"}
    assert body["probabilities"]["Adelie"] == max(body["probabilities"].values())
    assert sum(body["probabilities"].values()) == pytest.approx(1)
    assert body["model_version"] == 1
    assert body["warnings"] == []


@pytest.mark.parametrize(
    ("bill", "flipper", "species"),
    [(47.5, 220, "Gentoo"), (50.0, 195, "Chinstrap"), (36.0, 185, "Adelie")],
)
def test_each_species(client: TestClient, bill: float, flipper: float, species: str) -> None:
    assert (
        client.get("/predict", params={"bill_length_mm": bill, "flipper_length_mm": flipper}).json()["result"]
        == species
    )


def test_an_unusual_penguin_is_answered_with_a_warning(client: TestClient) -> None:
    body = client.get("/predict", params={"bill_length_mm": 95, "flipper_length_mm": 195}).json()
    assert body["result"] in {"Adelie", "Chinstrap", "Gentoo"}
    assert any("bill_length_mm=95" in warning and "training" in warning for warning in body["warnings"])


def test_a_missing_parameter_is_named_with_its_range(client: TestClient) -> None:
    response = client.get("/predict", params={"bill_length_mm": 40.3})
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["query", "flipper_length_mm"]
    assert "flipper_length_mm" in error["msg"]
    assert "Field required" in error["msg"]
    assert "greater than 0" in error["msg"]


@pytest.mark.parametrize(
    ("value", "complaint"),
    [
        ("-3", "greater than 0"),
        ("0", "greater than 0"),
        ("nan", "finite number"),
        ("inf", "finite number"),
        ("-Infinity", "finite number"),
        ("forty", "valid number"),
        ("", "valid number"),
        ("40_3", "underscore"),  # Python's float() would read 403.0
    ],
)
def test_bad_values_are_422_saying_what_to_fix(client: TestClient, value: str, complaint: str) -> None:
    response = client.get("/predict", params={"bill_length_mm": value, "flipper_length_mm": 195})
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["query", "bill_length_mm"]
    assert complaint in error["msg"]
    assert "Accepted: Bill length in millimetres: a finite number greater than 0" in error["msg"]


def test_a_gigantic_query_string_is_a_clear_4xx(client: TestClient) -> None:
    response = client.get("/predict", params={"bill_length_mm": "4" * 5000, "flipper_length_mm": 195})
    assert response.status_code == 422, response.text[:300]
    assert len(response.text) < 2000  # the input is not echoed back whole
