"""The /ui dashboard in headless chromium with the network cut, used as a person would."""

import shutil
import time
from pathlib import Path

import pytest
from browser import offline_page, screenshot
from conftest import SAMPLES, TOKEN
from playwright.sync_api import expect
from servers import running_server
from test_server_processes import quick_env

pytestmark = pytest.mark.e2e


def draw(page, strokes: list[list[tuple[int, int]]]) -> None:
    """Draw on the canvas with the mouse, in canvas pixels (280 x 280)."""
    box = page.locator("#canvas").bounding_box()
    for stroke in strokes:
        x, y = stroke[0]
        page.mouse.move(box["x"] + x, box["y"] + y)
        page.mouse.down()
        for x, y in stroke[1:]:
            page.mouse.move(box["x"] + x, box["y"] + y, steps=12)
        page.mouse.up()


def chart_points(page) -> int:
    return page.locator("#loss-chart circle.train").count()


def test_every_panel_works_offline(tmp_path: Path, trained_store: Path) -> None:
    model_dir = tmp_path / "store"
    shutil.copytree(trained_store, model_dir)
    # Small batches: an epoch takes longer than the page's 0.5 s refresh, so the curves are seen growing.
    env = quick_env(model_dir, RETRAIN_EPOCHS="6", RETRAIN_BATCH_SIZE="16")
    with running_server(env, tmp_path / "server.log") as server, offline_page(tmp_path) as (page, outside):
        page.goto(f"{server.url}/ui")
        page.wait_for_selector("#models table[data-model=mnist]")
        page.wait_for_selector("#readiness.ready")

        # Penguins: the form, the species and its probabilities; then an error in the API's words.
        page.fill("#bill", "40.3")
        page.fill("#flipper", "195")
        page.click("#penguin-form button")
        expect(page.locator("#species")).to_have_text("Adelie")
        assert page.locator("#species-bars .bar").count() == 3
        page.fill("#bill", "-4")
        page.click("#penguin-form button")
        page.wait_for_selector("#penguin-error:not([hidden])")
        assert "greater than 0" in page.inner_text("#penguin-error")

        # Draw a 7: a bar across the top, then a stroke down to the lower left.
        draw(page, [[(70, 60), (210, 60), (130, 235)]])
        expect(page.locator("#digit")).to_have_text("7", timeout=15_000)
        assert page.locator("#digit-bars .bar").count() == 10
        assert "model version 1" in page.inner_text("#digit-detail")
        screenshot(page, "dashboard-try-it.png")

        # An image file through the picker.
        page.set_input_files("#image-input", str(SAMPLES / "digit_dark_on_light.jpg"))
        expect(page.locator("#digit")).to_have_text("9", timeout=15_000)

        # Training: refused without the token, in the API's words; then with it, curves that grow.
        page.set_input_files("#zip-input", str(SAMPLES / "retrain_img.zip"))
        page.wait_for_selector("#training-error:not([hidden])")
        assert "admin token" in page.inner_text("#training-error")
        page.fill("#token", TOKEN)
        page.dispatch_event("#token", "change")
        page.set_input_files("#zip-input", [])
        page.set_input_files("#zip-input", str(SAMPLES / "retrain_img.zip"))
        page.wait_for_selector("#job:not([hidden])")
        page.locator("#loss-chart circle.train").first.wait_for(timeout=90_000)
        seen = {chart_points(page)}
        deadline = time.monotonic() + 120
        while "succeeded" not in page.inner_text("#job-status") and time.monotonic() < deadline:
            seen.add(chart_points(page))
            time.sleep(0.2)
        assert page.inner_text("#job-status") == "succeeded"
        assert chart_points(page) == 6
        assert len(seen) >= 3  # the curves were drawn as the epochs came, not at the end
        assert "Published: version 2" in page.inner_text("#job-verdict")
        page.wait_for_selector("#models table[data-model=mnist] tr.serving[data-version='2']")
        assert page.locator("#jobs tbody tr").count() == 1
        screenshot(page, "dashboard-training.png")

        # Roll back to version 1 and see it serve.
        page.click("#models table[data-model=mnist] tr[data-version='1'] button.activate")
        page.wait_for_selector("#models table[data-model=mnist] tr.serving[data-version='1']")
        page.click("#predict-drawing")
        expect(page.locator("#digit-detail")).to_contain_text("model version 1")

        # "Wrong? It's a ...": the true label of the last penguin, as feedback; the models panel counts it.
        page.fill("#bill", "40.3")
        page.fill("#flipper", "195")
        page.click("#penguin-form button")
        expect(page.locator("#species")).to_have_text("Adelie")
        assert page.locator("#species-feedback button").all_inner_texts() == ["Chinstrap", "Gentoo"]
        page.click("#species-feedback button:has-text('Gentoo')")
        expect(page.locator("#species-feedback")).to_have_text("Thanks: recorded as Gentoo.")
        expect(page.locator(".learning[data-model=penguins] .examples")).to_contain_text(
            "since version 1: 1 (feedback 1", timeout=15_000
        )
        expect(page.locator(".learning[data-model=penguins] .next-retraining")).to_contain_text("1 of ")
        screenshot(page, "dashboard.png")
        assert outside == []
