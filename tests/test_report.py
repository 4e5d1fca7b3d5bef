"""Reports: Markdown, self-contained HTML and JSON; sections plug in; Chromium renders the plots."""

from __future__ import annotations

import base64
import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest

from bilm.evaluate import FillConfig, FillResult, summarize
from bilm.report import Report, Section, figure, fill_section, jsonable, markdown_to_html, plot_curves, read_metrics
from bilm.tokenizer import Tokenizer

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "screenshot_report.py"


def fill_summary(sentences: int = 9) -> tuple[dict, FillConfig]:
    """A summary of `sentences` x 4 blanks with made-up ranks, through the real `summarize`."""
    n = 4 * sentences
    result = FillResult(
        sentence=np.repeat(np.arange(sentences), 4),
        index=np.tile(np.arange(4), sentences),
        length=np.full(n, 4),
        target=np.full(n, 5),
        n_sentences=sentences,
        excluded_unk=0,
    )
    result.ranks = {"bi": np.tile([1.0, 1, 2, 7], sentences), "uni-left": np.tile([9.0, 1, 2, 30], sentences)}
    result.log_probs = {m: -np.log(r + 1) for m, r in result.ranks.items()}
    result.seconds = {"bi": 1.0, "uni-left": 0.5}
    result.passes = {"bi": 3, "uni-left": 3}
    cfg = FillConfig(rescore_sample=0, bootstrap=100)
    return summarize(result, Tokenizer.train([["cat"]]), cfg), cfg


def sample_report() -> Report:
    fig, ax = plt.subplots()
    ax.plot([1, 2, 3], [3, 1, 2])
    summary, cfg = fill_summary()
    plug_in = Section(
        "Gradient study",
        "A *plugged-in* section with `code` and a list:\n\n- one\n- two",
        [figure(fig, "lab", "A lab plot")],
        {"decay": 0.9, "missing": math.nan},
    )
    return Report(
        "Test report",
        {"command": "bilm evaluate", "split": "test", "seed": 1},
        [fill_section(summary, cfg.to_dict()), plug_in],
    )


def test_markdown_subset_to_html():
    text = (
        "# Title\n\nSome **bold**, *italic* and `<code>` [link](page.html).\n\n"
        "| a | b |\n|---|---|\n| 1 | 2 |\n\n- x\n- y\n\n```\nraw <tag>\n```"
    )
    html = markdown_to_html(text)
    assert "<h1>Title</h1>" in html
    assert "<strong>bold</strong>" in html and "<em>italic</em>" in html and "<code>&lt;code&gt;</code>" in html
    assert '<a href="page.html">link</a>' in html
    assert "<thead><tr><th>a</th><th>b</th></tr></thead><tbody><tr><td>1</td><td>2</td></tr></tbody>" in html
    assert "<ul><li>x</li><li>y</li></ul>" in html and "<pre><code>raw &lt;tag&gt;</code></pre>" in html


def test_fill_section_numbers():
    summary, cfg = fill_summary()
    bi = summary["methods"]["bi"]["all"]["all"]
    # ranks 1, 1, 2, 7 in each sentence: top-1 1/2, top-5 3/4, top-10 1, MRR (1 + 1 + 1/2 + 1/7) / 4
    assert (bi["top1"], bi["top5"], bi["top10"]) == (0.5, 0.75, 1.0)
    assert bi["mrr"] == pytest.approx((2.5 + 1 / 7) / 4)
    # Identical sentences: every bootstrap resample gives the same mean, so the interval is a point.
    assert bi["top1_ci"] == pytest.approx((0.5, 0.5))
    section = fill_section(summary, cfg.to_dict())
    assert "| bi | 36 | 50.0 [50.0, 50.0] | 75.0 [75.0, 75.0] | 100.0 [100.0, 100.0] |" in section.markdown
    assert "resampling whole sentences (9 of them, 100 resamples)" in section.markdown
    assert [f.name for f in section.figures] == ["accuracy_by_length", "accuracy_by_position"]


def test_a_group_under_30_blanks_shows_its_n_and_no_interval():
    summary, cfg = fill_summary(sentences=3)
    bi = summary["methods"]["bi"]["all"]["all"]
    assert bi["n"] == 12 and all(math.isnan(x) for x in bi["top1_ci"])
    section = fill_section(summary, cfg.to_dict())
    assert "| bi | 12 | 50.0 (n=12) | 75.0 (n=12) | 100.0 (n=12) |" in section.markdown


def test_report_files_are_self_contained(tmp_path):
    paths = sample_report().write(tmp_path)
    html = paths["html"].read_text()
    images = re.findall(r'<img alt="[^"]*" src="([^"]+)"', html)
    assert len(images) == 3
    for src in images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert not re.search(r"(src|href)=\"(https?:|//)|<link|@import|url\(", html)
    md = paths["md"].read_text()
    for name in re.findall(r"\]\((figures/[^)]+)\)", md):
        assert (tmp_path / name).is_file()
    assert "## Gradient study" in md and "**command**: `bilm evaluate`" in md
    data = json.loads(paths["json"].read_text())
    assert data["meta"]["split"] == "test"
    assert data["sections"]["gradient_study"] == {"title": "Gradient study", "decay": 0.9, "missing": None}
    assert data["sections"]["fill"]["methods"]["bi"]["all"]["all"]["top1"] == 0.5


def test_jsonable():
    assert jsonable({"a": (1, np.float32(0.5)), "b": math.inf, 3: np.int64(2)}) == {"a": [1, 0.5], "b": None, "3": 2}


def test_curves_from_metrics(tmp_path):
    log = tmp_path / "metrics.jsonl"
    records = [{"type": "train", "loss": 5.0, "step": 10}, {"type": "valid", "loss": 4.0, "ppl": 54.6, "step": 10}]
    log.write_text("\n".join(json.dumps(r) for r in records) + '\n{"type": "tra')  # a torn last line
    assert read_metrics(log) == records
    curves = plot_curves({"uni": records})
    assert curves.png[:4] == b"\x89PNG" and curves.name == "curves"  # (a run's label once overwrote the name)
    assert "wall-clock minute" in curves.caption  # the panel that compares runs by what a CPU user pays


@pytest.mark.skipif(not any(map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), reason="no chromium")
def test_chromium_renders_every_image(tmp_path):
    paths = sample_report().write(tmp_path)
    shot = tmp_path / "shot.png"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(paths["html"]), "--out", str(shot), "--height", "1500"],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    assert "3 images decoded, 0 broken" in done.stdout
    assert shot.read_bytes()[:4] == b"\x89PNG"
