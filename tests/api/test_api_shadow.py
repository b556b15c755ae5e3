"""A shadow version answers beside the serving one, off the answer's path; /models and /metrics compare them."""

import asyncio
import base64
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from conftest import AUTH, SAMPLES, make_settings
from fastapi.testclient import TestClient
from pydantic import ValidationError

from prediction_service.api.app import create_app
from prediction_service.core.settings import PROJECT_ROOT, Settings
from prediction_service.models.penguins.knn import train
from prediction_service.serving.shadow import ShadowRunner
from prediction_service.storage.layout import MANIFEST
from prediction_service.storage.versions import ModelStore

ADELIE = {"bill_length_mm": 40.3, "flipper_length_mm": 195}
GENTOO = {"bill_length_mm": 47.5, "flipper_length_mm": 220}
DIGIT = (SAMPLES / "test_img0.png").read_bytes()


def add_penguin_version(model_dir: Path, tmp_path: Path) -> int:
    """A version that calls every Adelie a Chinstrap: it disagrees with version 1 on Adelie penguins only."""
    data = pd.read_csv(PROJECT_ROOT / "penguins.csv")
    data["species"] = data["species"].replace("Adelie", "Chinstrap")
    csv = tmp_path / "no-adelie.csv"
    data.to_csv(csv, index=False)
    trained = train(csv)
    manifest = {"source": "test", **trained.manifest(csv)}
    return ModelStore(model_dir).add_version("penguins", trained.save, manifest).version


def add_mnist_copy(model_dir: Path) -> int:
    """A second mnist version: version 1's files (it agrees with it everywhere)."""
    store = ModelStore(model_dir)
    first = store.read_version("mnist", 1)

    def copy(folder: Path) -> None:
        for path in first.path.iterdir():
            if path.name != MANIFEST:
                shutil.copy(path, folder / path.name)

    return store.add_version("mnist", copy, {"source": "copy of version 1"}).version


def shadow_of(client: TestClient, name: str) -> dict[str, Any] | None:
    models = {model["name"]: model for model in client.get("/models").json()["models"]}
    return models[name]["shadow"]


def wait_for_shadow(client: TestClient, name: str, until: Any, timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        shadow = shadow_of(client, name)
        assert shadow is not None
        if until(shadow):
            return shadow
        assert time.monotonic() < deadline, shadow
        time.sleep(0.05)


def runner(client: TestClient) -> ShadowRunner:
    return client.app.state.services.serving.shadow  # type: ignore[attr-defined]


@contextmanager
def app(model_dir: Path, **settings: Any) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(model_dir, **settings))) as client:
        yield client


def predict_penguins(client: TestClient) -> None:
    """Five penguins by every route: three Adelie (the shadow disagrees), two Gentoo (it agrees)."""
    assert client.get("/predict", params=ADELIE).json()["result"] == "Adelie"
    assert client.get("/predict", params=ADELIE).json()["result"] == "Adelie"
    assert [row["result"] for row in client.post("/predict", json=[ADELIE, GENTOO]).json()] == ["Adelie", "Gentoo"]
    body = {"inputs": [{"name": "measurements", "datatype": "FP32", "shape": [1, 2], "data": list(GENTOO.values())}]}
    assert client.post("/v2/models/penguins/infer", json=body).json()["outputs"][0]["data"] == ["Gentoo"]


def test_the_penguin_shadows_agreement_shows_after_live_traffic(model_dir: Path, tmp_path: Path) -> None:
    version = add_penguin_version(model_dir, tmp_path)
    with app(model_dir) as client:
        assert shadow_of(client, "penguins") is None
        started = client.post(f"/models/penguins/versions/{version}/shadow", headers=AUTH)
        assert started.status_code == 200, started.text
        assert started.json()["serving_version"] == 1
        assert started.json()["shadow"]["version"] == version
        assert started.json()["shadow"]["sample_rate"] == 1.0

        predict_penguins(client)
        shadow = wait_for_shadow(client, "penguins", lambda s: s["shadow_requests_compared"] == 5)
        assert shadow["shadow_agreements"] == 2
        assert shadow["shadow_agreement"] == 0.4
        assert (shadow["shadow_failures"], shadow["shadow_dropped"]) == (0, 0)
        assert shadow_of(client, "mnist") is None

        metrics = client.get("/metrics").text
        assert f'shadow_requests_compared_total{{model="penguins",shadow_version="{version}"}} 5.0' in metrics
        assert f'shadow_agreement_ratio{{model="penguins",shadow_version="{version}"}} 0.4' in metrics
        assert f'model_shadow_version{{model="penguins"}} {version}.0' in metrics
        assert 'model_shadow_version{model="mnist"} 0.0' in metrics


def test_the_mnist_shadows_agreement_shows_after_live_traffic(
    model_dir: Path, mnist_arrays: dict[str, np.ndarray]
) -> None:
    version = add_mnist_copy(model_dir)
    with app(model_dir) as client:
        assert client.post(f"/models/mnist/versions/{version}/shadow", headers=AUTH).status_code == 200
        assert client.post("/predict-image", files={"file": ("d.png", DIGIT)}).json()["result"] == "4"
        files = [("files", ("a.png", DIGIT)), ("files", ("b.png", DIGIT)), ("files", ("c.txt", b"no image"))]
        assert [item["status"] for item in client.post("/predict-images", files=files).json()] == [200, 200, 415]
        image = mnist_arrays["x_test"][:1]
        tensor = {"name": "image", "datatype": "UINT8", "shape": [1, 28, 28], "data": image.ravel().tolist()}
        body = {"inputs": [tensor]}
        assert client.post("/v2/models/mnist/infer", json=body).status_code == 200

        shadow = wait_for_shadow(client, "mnist", lambda s: s["shadow_requests_compared"] == 4)
        assert (shadow["version"], shadow["shadow_agreement"], shadow["shadow_failures"]) == (version, 1.0, 0)


def test_a_label_scores_the_shadow_and_the_serving_version(model_dir: Path, tmp_path: Path) -> None:
    version = add_penguin_version(model_dir, tmp_path)
    with app(model_dir) as client:
        assert client.post(f"/models/penguins/versions/{version}/shadow", headers=AUTH).status_code == 200
        shadow = runner(client)
        # As the prediction routes do it, with ids we know (the answers carry theirs).
        client.portal.call(shadow.offer, "penguins", "adelie-1", (40.3, 195.0), "Adelie")  # type: ignore[union-attr]
        client.portal.call(shadow.offer, "penguins", "gentoo-1", (47.5, 220.0), "Gentoo")  # type: ignore[union-attr]
        wait_for_shadow(client, "penguins", lambda s: s["shadow_requests_compared"] == 2)
        assert shadow_of(client, "penguins")["feedback_labels"] == 0  # type: ignore[index]

        assert shadow.record_label("adelie-1", "Adelie")  # the serving version was right, the shadow wrong
        assert shadow.record_label("gentoo-1", "Gentoo")  # both right
        figures = shadow_of(client, "penguins")
        assert figures is not None
        assert (figures["feedback_labels"], figures["shadow_feedback_accuracy"]) == (2, 0.5)
        assert figures["serving_feedback_accuracy"] == 1.0
        metrics = client.get("/metrics").text
        assert f'shadow_feedback_accuracy{{model="penguins",shadow_version="{version}"}} 0.5' in metrics

        assert not shadow.record_label("not-compared", "Adelie")


def test_a_failing_shadow_never_fails_an_answer(model_dir: Path) -> None:
    version = add_mnist_copy(model_dir)
    with app(model_dir) as client:
        assert client.post(f"/models/mnist/versions/{version}/shadow", headers=AUTH).status_code == 200

        async def broken(loaded: object, inputs: list[Any]) -> list[str]:
            raise RuntimeError("the shadow is broken")

        runner(client).answers["mnist"] = broken
        for _ in range(3):
            response = client.post("/predict-image", files={"file": ("d.png", DIGIT)})
            assert (response.status_code, response.json()["result"]) == (200, "4")
        shadow = wait_for_shadow(client, "mnist", lambda s: s["shadow_failures"] == 3)
        assert shadow["shadow_requests_compared"] == 0


@pytest.mark.parametrize("model", ["penguins", "mnist"])
def test_a_blocked_shadow_never_delays_an_answer(model_dir: Path, tmp_path: Path, model: str) -> None:
    version = add_penguin_version(model_dir, tmp_path) if model == "penguins" else add_mnist_copy(model_dir)
    release = asyncio.Event()
    with app(model_dir) as client:
        assert client.post(f"/models/{model}/versions/{version}/shadow", headers=AUTH).status_code == 200
        shadow = runner(client)
        answer = shadow.answers[model]

        async def blocked(loaded: object, inputs: list[Any]) -> list[str]:
            await release.wait()  # until the test lets it go: were answers waiting for it, they would never come
            return await answer(loaded, inputs)

        shadow.answers[model] = blocked
        shadow.max_items = 2
        try:
            for _ in range(6):
                if model == "penguins":
                    response = client.get("/predict", params=GENTOO)
                else:
                    response = client.post("/predict-image", files={"file": ("d.png", DIGIT)})
                assert response.status_code == 200
        finally:
            client.portal.call(release.set)  # type: ignore[union-attr]
        figures = wait_for_shadow(client, model, lambda s: s["shadow_requests_compared"] + s["shadow_dropped"] == 6)
        assert figures["shadow_dropped"] >= 1  # the queue was full while the shadow was blocked
        assert figures["shadow_agreement"] == 1.0


def test_delete_ends_the_shadow_and_its_figures_stop_growing(model_dir: Path, tmp_path: Path) -> None:
    version = add_penguin_version(model_dir, tmp_path)
    with app(model_dir) as client:
        assert client.delete("/models/penguins/shadow", headers=AUTH).status_code == 404
        assert client.post(f"/models/penguins/versions/{version}/shadow", headers=AUTH).status_code == 200
        predict_penguins(client)
        wait_for_shadow(client, "penguins", lambda s: s["shadow_requests_compared"] == 5)

        ended = client.delete("/models/penguins/shadow", headers=AUTH)
        assert ended.status_code == 200, ended.text
        assert ended.json()["shadow"] is None
        assert ModelStore(model_dir).shadow("penguins") is None
        predict_penguins(client)
        assert shadow_of(client, "penguins") is None  # /models writes this process's latest figures first
        assert runner(client).records.counts("penguins", version).compared == 5

        assert client.delete("/models/penguins/shadow", headers=AUTH).status_code == 404
        assert client.delete("/models/penguins/shadow").status_code == 401
        assert client.delete("/models/penguins/shadow", headers={"Authorization": "Bearer wrong"}).status_code == 403


def test_activating_the_shadows_version_promotes_it(model_dir: Path, tmp_path: Path) -> None:
    version = add_penguin_version(model_dir, tmp_path)
    with app(model_dir) as client:
        assert client.post(f"/models/penguins/versions/{version}/shadow", headers=AUTH).status_code == 200
        activated = client.post(f"/models/penguins/versions/{version}/activate", headers=AUTH)
        assert activated.status_code == 200
        assert (activated.json()["serving_version"], activated.json()["shadow"]) == (version, None)
        assert client.get("/predict", params=ADELIE).json()["result"] == "Chinstrap"
        assert runner(client).registry.shadows == {}
        assert client.delete("/models/penguins/shadow", headers=AUTH).status_code == 404


def test_a_newly_published_version_leaves_the_shadow_as_it_is(model_dir: Path, tmp_path: Path) -> None:
    shadow = add_penguin_version(model_dir, tmp_path)
    store = ModelStore(model_dir)
    store.set_shadow("penguins", shadow)
    third = add_penguin_version(model_dir, tmp_path)
    store.set_serving("penguins", third)
    assert store.shadow("penguins") == shadow
    store.set_serving("penguins", shadow)  # the CLI's activate promotes it too
    assert store.shadow("penguins") is None


def test_shadow_refusals_say_what_to_fix(model_dir: Path) -> None:
    store = ModelStore(model_dir)
    broken = store.add_version("penguins", lambda folder: (folder / "model.pkl").write_bytes(b"not a pickle"), {})
    with app(model_dir) as client:
        unknown_model = client.post("/models/nope/versions/1/shadow", headers=AUTH)
        assert unknown_model.status_code == 404
        assert "penguins" in unknown_model.json()["detail"]
        unknown_version = client.post("/models/penguins/versions/99/shadow", headers=AUTH)
        assert unknown_version.status_code == 404
        assert "GET /models" in unknown_version.json()["detail"]
        itself = client.post("/models/penguins/versions/1/shadow", headers=AUTH)
        assert itself.status_code == 409
        assert "cannot shadow itself" in itself.json()["detail"]
        unloadable = client.post(f"/models/penguins/versions/{broken.version}/shadow", headers=AUTH)
        assert unloadable.status_code == 409
        assert "cannot be loaded" in unloadable.json()["detail"]
        assert shadow_of(client, "penguins") is None
        assert client.delete("/models/nope/shadow", headers=AUTH).status_code == 404
        assert client.post("/models/penguins/versions/1/shadow").status_code == 401


def test_every_process_on_the_model_dir_runs_the_shadow(model_dir: Path, tmp_path: Path) -> None:
    version = add_penguin_version(model_dir, tmp_path)
    with app(model_dir) as first, app(model_dir) as second:
        assert first.post(f"/models/penguins/versions/{version}/shadow", headers=AUTH).status_code == 200
        assert shadow_of(second, "penguins")["version"] == version  # type: ignore[index]
        predict_penguins(second)  # answered by the other process: its comparisons count the same
        shadow = wait_for_shadow(first, "penguins", lambda s: s["shadow_requests_compared"] == 5)
        assert shadow["shadow_agreement"] == 0.4

        assert first.delete("/models/penguins/shadow", headers=AUTH).status_code == 200
        assert shadow_of(second, "penguins") is None
        assert runner(second).registry.shadows == {}


def test_the_sample_rate_is_a_share_of_requests(model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="shadow_sample_rate"):
        Settings(_env_file=None, shadow_sample_rate=1.5)  # type: ignore[call-arg]
    version = add_penguin_version(model_dir, tmp_path)
    with app(model_dir, shadow_sample_rate=0.0) as client:
        started = client.post(f"/models/penguins/versions/{version}/shadow", headers=AUTH)
        assert started.json()["shadow"]["sample_rate"] == 0.0
        predict_penguins(client)
        assert shadow_of(client, "penguins")["shadow_requests_compared"] == 0  # type: ignore[index]


def v2_penguin(client: TestClient, path: str) -> Any:
    body = {"inputs": [{"name": "measurements", "datatype": "FP32", "shape": [1, 2], "data": list(ADELIE.values())}]}
    return client.post(f"/v2/models/penguins{path}/infer", json=body)


def test_the_v2_protocol_addresses_the_shadow_by_its_version(model_dir: Path, tmp_path: Path) -> None:
    version = add_penguin_version(model_dir, tmp_path)
    with app(model_dir, shadow_sample_rate=1.0) as client:
        assert v2_penguin(client, f"/versions/{version}").status_code == 404  # not serving, not in shadow yet
        assert client.post(f"/models/penguins/versions/{version}/shadow", headers=AUTH).status_code == 200
        assert client.get("/v2/models/penguins").json()["versions"] == ["1", str(version)]
        assert client.get(f"/v2/models/penguins/versions/{version}").json()["versions"] == [str(version)]
        assert client.get(f"/v2/models/penguins/versions/{version}/ready").status_code == 200

        trial = v2_penguin(client, f"/versions/{version}").json()
        assert (trial["model_version"], trial["outputs"][0]["data"]) == (str(version), ["Chinstrap"])
        serving = v2_penguin(client, "").json()
        assert (serving["model_version"], serving["outputs"][0]["data"]) == ("1", ["Adelie"])
        # The trial is the shadow's own answer, not a comparison: only the serving request was compared.
        assert wait_for_shadow(client, "penguins", lambda s: s["shadow_requests_compared"] >= 1)
        asyncio.run(runner(client).flush())
        assert shadow_of(client, "penguins")["shadow_requests_compared"] == 1  # type: ignore[index]
        # Its prediction id is logged with the shadow's version, so feedback can name it.
        label = client.post(
            f"/predictions/{trial['parameters']['prediction_ids'][0]}/feedback", json={"label": "Adelie"}, headers=AUTH
        )
        assert label.status_code == 201

        assert client.delete("/models/penguins/shadow", headers=AUTH).status_code == 200
        ended = v2_penguin(client, f"/versions/{version}")
        assert ended.status_code == 404
        assert f"POST /models/penguins/versions/{version}/shadow" in ended.json()["error"]


def test_the_v2_protocol_runs_the_mnist_shadow_on_images_and_files(model_dir: Path) -> None:
    version = add_mnist_copy(model_dir)
    image = np.zeros((1, 28, 28), dtype=np.uint8)
    image[0, 6:22, 13:15] = 255  # a one
    with app(model_dir) as client:
        assert client.post(f"/models/mnist/versions/{version}/shadow", headers=AUTH).status_code == 200
        for inputs in (
            [{"name": "image", "datatype": "UINT8", "shape": [1, 28, 28], "data": image.flatten().tolist()}],
            [{"name": "image_file", "datatype": "BYTES", "shape": [1, 1], "data": [base64.b64encode(DIGIT).decode()]}],
        ):
            answers = {}
            for path in ("", f"/versions/{version}"):
                response = client.post(f"/v2/models/mnist{path}/infer", json={"inputs": inputs})
                assert response.status_code == 200, response.text
                answers[response.json()["model_version"]] = response.json()["outputs"][0]["data"]
            assert answers["1"] == answers[str(version)]  # a copy of version 1: the same digit
        unreadable = [
            {"name": "image_file", "datatype": "BYTES", "shape": [1, 1], "data": [base64.b64encode(b"no").decode()]}
        ]
        refused = [
            client.post(f"/v2/models/mnist{path}/infer", json={"inputs": unreadable})
            for path in ("", f"/versions/{version}")
        ]
        assert [response.status_code for response in refused] == [415, 415]  # as the serving version refuses it
        assert refused[0].json() == refused[1].json()
