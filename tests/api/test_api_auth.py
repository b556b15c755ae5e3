import logging
import stat
from pathlib import Path

import pytest
from conftest import SAMPLES, TOKEN, make_settings
from fastapi.testclient import TestClient

from prediction_service.api.app import create_app

PROTECTED = [
    ("/upload-images", {"files": {"file": ("r.zip", b"PK\x03\x04 not really")}}),
    ("/models/mnist/versions/1/activate", {}),
    ("/models/mnist/versions/1/shadow", {}),
    ("/jobs/" + "a" * 32 + "/retry", {}),
]


@pytest.mark.parametrize(("path", "body"), PROTECTED)
@pytest.mark.parametrize(
    ("header", "status"),
    [
        (None, 401),
        ("", 401),
        ("Bearer", 401),
        ("Bearer ", 401),
        (f"Basic {TOKEN}", 401),
        (f"Token {TOKEN}", 401),
        ("Bearer wrong-token", 403),
        (f"Bearer {TOKEN}x", 403),
    ],
)
def test_management_refuses_missing_wrong_or_wrongly_schemed_tokens(
    client: TestClient, path: str, body: dict, header: str | None, status: int
) -> None:
    headers = {} if header is None else {"Authorization": header}
    response = client.post(path, headers=headers, **body)
    assert response.status_code == status
    assert "detail" in response.json()
    assert TOKEN not in response.text
    if status == 401:
        assert response.headers["www-authenticate"] == "Bearer"


def test_predictions_need_no_token(client: TestClient) -> None:
    assert client.get("/predict", params={"bill_length_mm": 40, "flipper_length_mm": 190}).status_code == 200
    assert client.post("/predict-image", files={"file": (SAMPLES / "test_img0.png").read_bytes()}).status_code == 200
    assert client.get("/models").status_code == 200


def test_the_openapi_schema_offers_the_bearer_scheme(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    assert schema["components"]["securitySchemes"]["HTTPBearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": schema["components"]["securitySchemes"]["HTTPBearer"]["description"],
    }
    assert schema["paths"]["/upload-images"]["post"]["security"] == [{"HTTPBearer": []}]
    assert "security" not in schema["paths"]["/predict"]["get"]


def test_a_generated_token_is_kept_private_and_logged_only_when_made(
    model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(model_dir, admin_token=None)
    with caplog.at_level(logging.INFO), TestClient(create_app(settings)) as client:
        token_file = model_dir / "admin_token"
        token = token_file.read_text().strip()
        assert len(token) >= 32
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        assert any(token in record.getMessage() for record in caplog.records)
        activate = "/models/penguins/versions/1/activate"
        assert client.post(activate, headers={"Authorization": f"Bearer {token}"}).status_code == 200
    caplog.clear()
    with caplog.at_level(logging.INFO), TestClient(create_app(settings)) as client:
        assert client.post(activate, headers={"Authorization": f"Bearer {token}"}).status_code == 200
        assert not any(token in record.getMessage() for record in caplog.records)
