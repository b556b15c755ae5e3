"""Swagger UI and ReDoc, opened in headless chromium with the network cut, used as a developer would."""

import shutil
from pathlib import Path

import pytest
from browser import offline_page, screenshot
from conftest import SAMPLES
from servers import running_server
from test_server_processes import quick_env

pytestmark = pytest.mark.e2e


def test_try_it_out_in_swagger_ui_without_the_internet(tmp_path: Path, trained_store: Path) -> None:
    model_dir = tmp_path / "store"
    shutil.copytree(trained_store, model_dir)
    with (
        running_server(quick_env(model_dir), tmp_path / "server.log") as server,
        offline_page(tmp_path) as (
            page,
            outside,
        ),
    ):
        page.goto(f"{server.url}/docs")
        page.wait_for_selector("text=Predict a penguin's species", timeout=30_000)
        assert page.locator("button.authorize").count() == 1

        penguin = page.locator("#operations-penguins-predict_penguin_predict_get")
        penguin.locator(".opblock-summary").click()
        penguin.get_by_role("button", name="Try it out").click()
        assert "Bill length in millimetres" in penguin.inner_text()
        penguin.locator('tr[data-param-name="bill_length_mm"] input').fill("40.3")
        penguin.locator('tr[data-param-name="flipper_length_mm"] input').fill("195")
        penguin.locator("button.execute").click()
        penguin_answer = penguin.locator(".live-responses-table .response-col_description pre").first
        penguin_answer.wait_for(timeout=30_000)
        assert '"result": "Adelie"' in penguin_answer.inner_text()

        digit = page.locator("#operations-digits-predict_image_predict_image_post")
        digit.locator(".opblock-summary").click()
        digit.get_by_role("button", name="Try it out").click()
        digit.locator('input[type="file"]').set_input_files(str(SAMPLES / "test_img0.png"))
        digit.locator("button.execute").click()
        digit_answer = digit.locator(".live-responses-table .response-col_description pre").first
        digit_answer.wait_for(timeout=30_000)
        answer = digit_answer.inner_text()
        assert '"filename": "test_img0.png"' in answer
        assert '"model_version": 1' in answer
        for code in ("413", "415", "422", "503"):
            assert digit.locator(f'tr.response[data-code="{code}"]').count() == 1, code
        screenshot(page, "swagger-ui.png")

        page.goto(f"{server.url}/redoc")
        page.wait_for_selector('h2:has-text("Predict the digit in an image")', timeout=30_000)
        screenshot(page, "redoc.png")
        assert outside == []
