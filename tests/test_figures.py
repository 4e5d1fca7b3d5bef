"""scripts/figures.py: figures rendered from artifacts into the marked blocks of the docs."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "figures.py"


@pytest.fixture
def figures(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("figures", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "figures", module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "ROOT", tmp_path)
    return module


def write(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)


def fake_report(root: Path) -> None:
    cell = lambda top1, n: dict(top1=top1, top5=top1 + 0.1, n=n)  # noqa: E731
    methods = {
        m: {"all": {"all": cell(0.3, 1000)}, "length": {"1-10": cell(0.2, 12), "11-20": cell(0.4, 988)}}
        for m in ("bi", "uni-left")
    }
    fill = dict(
        methods=methods,
        sentences=50,
        differences=[dict(a="bi", b="uni-left", n=1000, diff=0.078, ci=[0.06, 0.09])],
        resampled=dict(unit="article", units=60, note=""),
    )
    lm = dict(
        models=dict(uni=dict(ppl=147.5, tokens=245560, unk_rate=0.062), bi=dict(ppl=117.5, tokens=220904, unk_rate=0.0))
    )
    meta = dict(
        command="bilm evaluate --out reports/wt2",
        date="2026-11-29T10:48:00+00:00",
        machine="x86_64, 1 torch threads",
        seconds=159.0,
    )
    write(root / "reports/wt2/report.json", dict(meta=meta, sections=dict(lm=lm, fill=fill)))


def test_report_figure_labels_pseudo_perplexity_counts_small_groups_and_names_the_unit(figures, tmp_path):
    assert figures.report(None) is None  # no artifacts: left alone
    fake_report(tmp_path)
    text = figures.report(None)
    assert "| bi fill-in pseudo-perplexity (not comparable, 220,904 targets" in text and "| 117.5 |" in text
    assert "20.0 / 30.0 (n=12)" in text  # a group under 30 blanks shows its n
    assert "+7.8 top-1 points [6.0, 9.0]" in text and "resampling 60 articles" in text
    assert "1 thread(s)" in text and "torch " in text and "`bilm evaluate --out reports/wt2`" in text
    assert "continuous cache" not in text
    report = json.loads((tmp_path / "reports/wt2/report.json").read_text())
    report["sections"]["cache"] = dict(
        theta=1.5, lam=0.2, tune=dict(split="valid", ppl=110.6, cache_ppl=80.1), eval=dict(cache_ppl=77.3)
    )
    write(tmp_path / "reports/wt2/report.json", report)
    assert "| uni + continuous cache (θ 1.5, λ 0.2, chosen on valid: 110.6 → 80.1) | 77.3 |" in figures.report(None)
    tuned = dict(method="bi+cache", theta=0.3, lam=0.25, tune=dict(split="valid", ppl=39.6, cache_ppl=26.1))
    report["sections"]["cache"] = dict(fill=dict(bi=tuned))  # a bi-only report: the fill-in cache alone
    write(tmp_path / "reports/wt2/report.json", report)
    text = figures.report(None)
    assert "| bi+cache: θ 0.3, λ 0.25, chosen on valid (blank perplexity 39.6 → 26.1) |" in text
    assert "uni + continuous cache" not in text


def test_a_report_figure_is_stamped_with_the_processor_the_report_ran_on(figures, tmp_path):
    fake_report(tmp_path)
    report = json.loads((tmp_path / "reports/wt2/report.json").read_text())
    report["meta"]["machine"] = "Some Other CPU, 64 logical CPUs, 2 torch threads"
    write(tmp_path / "reports/wt2/report.json", report)
    assert "*Some Other CPU, 64 logical CPUs, 2 thread(s), torch " in figures.report(None)


def test_blocks_are_replaced_in_every_doc_and_collected_in_figures_md(figures, tmp_path, monkeypatch):
    fake_report(tmp_path)
    write(tmp_path / "README.md", "intro\n<!-- figure:report -->\nold numbers\n<!-- /figure:report -->\nend\n")
    write(tmp_path / "docs/evaluate.md", "<!-- figure:report -->\nolder\n<!-- /figure:report -->\n")
    write(tmp_path / "docs/other.md", "<!-- figure:demo -->\nkept: no checkpoints\n<!-- /figure:demo -->\n")
    monkeypatch.setattr(sys, "argv", ["figures.py", "--no-run"])
    figures.main()
    readme = (tmp_path / "README.md").read_text()
    assert (
        "old numbers" not in readme and "117.5" in readme and readme.startswith("intro\n") and readme.endswith("end\n")
    )
    assert "117.5" in (tmp_path / "docs/evaluate.md").read_text()
    assert "kept: no checkpoints" in (tmp_path / "docs/other.md").read_text()
    collected = (tmp_path / "docs/figures.md").read_text()
    assert "## report" in collected and "117.5" in collected


def test_gradient_sentence_follows_the_table(figures, tmp_path):
    entries = [
        dict(model="demo-bi", direction=side, length=n, half_life=hl, far_near=0.01)
        for side, hls in (("left", (3.8, 13.0)), ("right", (3.3, 12.3)))
        for n, hl in zip((10, 80), hls, strict=True)
    ]
    write(tmp_path / "reports/gradients/gradients.json", dict(entries=entries, threads=1))
    text = figures.gradients(None)
    assert "| demo-bi | left | 3.80 | 13.0 | 1.0e-02 |" in text
    assert "left-hand half-life is the longer: 13.0 against 12.3 words on its right side" in text
