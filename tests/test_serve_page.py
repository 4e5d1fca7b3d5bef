"""`bilm serve`'s page in headless Chromium (Playwright for Python, the system browser).

Skipped where playwright or Chromium is missing (.ci/run installs chromium when root).
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import httpx
import pytest

pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.skipif(
    not any(map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), reason="no chromium"
)

from playwright.sync_api import sync_playwright  # noqa: E402

from bilm.serve import load_models, running  # noqa: E402
from bilm.serve_app import create_app  # noqa: E402

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
FILL = "the ___ then later meows ."


def load_script(name: str):
    sys.path.insert(0, str(SCRIPTS))  # screenshot_serve imports its sibling screenshot_report
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


shot = load_script("screenshot_serve")


@pytest.fixture(scope="module")
def served(trained):
    with running(create_app(load_models([trained["bi"], trained["uni"]]))) as url:
        yield url


@pytest.fixture(scope="module")
def page(served):
    with sync_playwright() as pw:
        chromium, page = shot.open_page(pw, served, 1100, 900)
        yield page
        chromium.close()


def api(url: str, endpoint: str, **body) -> dict:
    r = httpx.post(f"{url}{endpoint}", json=body, timeout=30)
    assert r.status_code == 200, r.text
    return {p["method"]: [(c["word"], c["prob"]) for c in p["candidates"]] for p in r.json()}


def test_typed_sentence_shows_each_models_candidates_exactly_as_the_api_answers(page, served):
    shown = shot.type_and_read(page, FILL)
    assert shown == {model: api(served, "/fill", text=FILL, k=5, model=model) for model in ("bi", "uni")}
    assert list(shown["bi"]) == ["bi", "bi-rescore"] and list(shown["uni"]) == ["uni-left", "uni-rescore"]
    assert page.locator("#status").inner_text() == "Candidates for the blank."


def test_each_model_says_what_it_is(page):
    about = page.locator("[data-model=bi] .about").inner_text()
    assert about.startswith("bidirectional") and "pseudo-perplexity" in about and "min" in about
    assert page.locator("[data-model=uni] .about").inner_text().startswith("left-to-right")


def test_unknown_words_are_highlighted(page):
    shot.type_and_read(page, "the ___ then zebrafish meows .")
    assert page.locator("[data-model=bi] mark").all_inner_texts() == ["zebrafish"]


def test_without_a_blank_it_shows_the_next_word(page, served):
    shown = shot.type_and_read(page, "the owl")
    assert shown["uni"] == api(served, "/predict", text="the owl", k=5, model="uni")
    assert list(shown["uni"]) == ["next"]


def test_two_blanks_show_the_servers_one_line_message(page):
    shot.type_and_read(page, "the ___ then ___ meows .")
    status = page.locator("#status")
    assert "2 blanks" in status.inner_text() and "error" in status.get_attribute("class")
    assert shot.read(page) == {"bi": {}, "uni": {}}


def test_k_and_choices_change_the_candidates(page, served):
    page.locator("#k").fill("2")
    page.locator("#choices").fill("dog, cat")
    try:
        shown = shot.type_and_read(page, FILL)
    finally:
        page.locator("#k").fill("5")
        page.locator("#choices").fill("")
    assert shown["bi"] == api(served, "/fill", text=FILL, k=2, choices=["dog", "cat"], model="bi")
    assert {w for w, _ in shown["bi"]["bi"]} == {"dog", "cat"}


def test_usable_with_the_keyboard_alone(page):
    shot.type_and_read(page, "the cat")
    page.locator("#text").focus()
    page.keyboard.press("End")
    page.keyboard.press("Alt+b")  # inserts a blank at the cursor
    page.wait_for_function("document.body.dataset.shown === 'the cat ___'")
    assert page.locator("#text").input_value() == "the cat ___"
    order = []
    for _ in range(3):
        page.keyboard.press("Tab")
        order.append(page.evaluate("document.activeElement.id"))
    assert order == ["k", "choices", "blank"]


def test_fits_a_phone_screen(page):
    page.set_viewport_size({"width": 360, "height": 740})
    try:
        shot.type_and_read(page, FILL)
        assert page.evaluate("document.documentElement.scrollWidth") <= 360
    finally:
        page.set_viewport_size({"width": 1100, "height": 900})
