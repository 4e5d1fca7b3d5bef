"""Type a sentence into `bilm serve`'s page in headless Chromium and save a screenshot.

    python scripts/screenshot_serve.py checkpoints/demo-bi --compare checkpoints/demo-uni \
        --text "The film was released in ___ 2010 ." --out docs/serve-screenshot.png

Serves the checkpoints on a free local port, drives the page with Playwright for Python
in the system Chromium (`apt-get install -y chromium`; Playwright's own browser download
is not needed), types the text key by key, waits for the candidates, prints what the
page shows and writes the PNG. tests/test_serve_page.py drives the page with the same
functions.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from screenshot_report import browser

LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--headless"]


def open_page(playwright, url: str, width: int = 1200, height: int = 900):
    """(browser, page) with the served page loaded and its models listed."""
    exe = browser()
    if exe is None:
        raise SystemExit("chromium not found: apt-get install -y chromium")
    chromium = playwright.chromium.launch(executable_path=exe, args=LAUNCH_ARGS, headless=True)
    page = chromium.new_page(viewport={"width": width, "height": height})
    page.goto(url)
    page.wait_for_selector("article.model")
    page.wait_for_function("document.body.dataset.shown !== undefined")  # the first answer is in
    return chromium, page


def type_and_read(page, text: str, timeout_ms: int = 60_000) -> dict[str, dict[str, list[tuple[str, float | None]]]]:
    """Replace the sentence by typing `text`; once the page shows the answer for it:
    {model: {method: [(word, probability), ...]}} as the page lays them out."""
    box = page.locator("#text")
    box.fill("")
    box.press_sequentially(text)
    page.wait_for_function("(t) => document.body.dataset.shown === t", arg=text, timeout=timeout_ms)
    return read(page)


def read(page) -> dict[str, dict[str, list[tuple[str, float | None]]]]:
    shown = page.evaluate(
        """() => Object.fromEntries([...document.querySelectorAll("article.model")].map((card) => [
            card.dataset.model,
            Object.fromEntries([...card.querySelectorAll("section.method")].map((col) => [
                col.dataset.method,
                [...col.querySelectorAll("li.cand")].map((li) => [li.dataset.word, li.dataset.prob]),
            ])),
        ]))"""
    )
    return {
        model: {method: [(w, None if p == "null" else float(p)) for w, p in cands] for method, cands in methods.items()}
        for model, methods in shown.items()
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--compare", action="append", default=[])
    parser.add_argument("--text", default="The film was released in ___ 2010 .")
    parser.add_argument("--out", type=Path, default=Path("docs/serve-screenshot.png"))
    parser.add_argument("--width", type=int, default=1200)
    parser.add_argument("--height", type=int, default=900)
    args = parser.parse_args()

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from playwright.sync_api import sync_playwright

    from bilm.serve import load_models, running
    from bilm.serve_app import create_app
    from bilm.threads import set_threads

    set_threads(1)
    app = create_app(load_models([args.checkpoint, *args.compare]))
    with running(app) as url, sync_playwright() as pw:
        chromium, page = open_page(pw, url, args.width, args.height)
        shown = type_and_read(page, args.text)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(args.out), full_page=True)
        chromium.close()
    for model, methods in shown.items():
        for method, cands in methods.items():
            print(f"{model:<12} {method:<12} " + "  ".join(f"{w} {p:.3f}" for w, p in cands if p is not None))
    print(f"screenshot {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
