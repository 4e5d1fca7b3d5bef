"""Reports: Markdown, a self-contained HTML page, and JSON with every number.

A report is a list of `Section`s (title, Markdown text, figures, data), so any study
plugs its own in:

    Report("WikiText-2", run_meta(...), [lm_section(...), fill_section(...), my_section]).write("reports/wt2")

writes `report.md` (figures as `figures/*.png` beside it), `report.html` (the same
figures inlined as base64 PNG: it opens with no network and no other file) and
`report.json` (`meta` plus each section's `data`, NaN written as null).

The HTML renders the Markdown subset the sections use: headings, paragraphs, `-`
lists, pipe tables, fenced code, `code`, **bold**, *italic* and [links](url).
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import math
import os
import re
import shlex
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch
from matplotlib.figure import Figure as MplFigure  # no pyplot: no global backend, nothing to close

from . import __version__
from .checkpoint import Checkpoint
from .choices import BI_SENTENCE_WEIGHT, UNI_WEIGHT
from .evaluate import METRICS, MIN_CI_BLANKS
from .machine import describe

METHOD_STYLE = {
    "bi": ("C0", "o"),
    "uni-left": ("C1", "s"),
    "uni-rescore": ("C2", "^"),
    "bi-rescore": ("C3", "v"),
    "uni+bi": ("C4", "P"),
    "uni": ("C1", "s"),
}
METHOD_STYLE.update({f"{m}+cache": (color, "D") for m, (color, _) in METHOD_STYLE.items()})  # dashed lines


@dataclass
class Figure:
    name: str  # file stem: figures/<name>.png
    caption: str
    png: bytes


@dataclass
class Section:
    title: str
    markdown: str = ""
    figures: list[Figure] = field(default_factory=list)
    data: dict = field(default_factory=dict)
    key: str = ""  # its key in report.json; default: the title as a slug

    def __post_init__(self):
        self.key = self.key or re.sub(r"[^a-z0-9]+", "_", self.title.lower()).strip("_")


@dataclass
class Report:
    title: str
    meta: dict
    sections: list[Section]

    def markdown(self, inline: bool = False) -> str:
        parts = [f"# {self.title}", meta_markdown(self.meta)]
        for s in self.sections:
            parts += [f"## {s.title}", s.markdown.strip()]
            for f in s.figures:
                src = f"data:image/png;base64,{base64.b64encode(f.png).decode()}" if inline else figure_path(s, f)
                parts.append(f"![{f.caption}]({src})")
        return "\n\n".join(p for p in parts if p) + "\n"

    def html(self) -> str:
        body = markdown_to_html(self.markdown(inline=True))
        return HTML_PAGE.format(title=html.escape(self.title), style=STYLE, body=body, check=IMAGE_CHECK)

    def data(self) -> dict:
        return jsonable(
            dict(
                title=self.title, meta=self.meta, sections={s.key: {"title": s.title, **s.data} for s in self.sections}
            )
        )

    def write(self, out: str | Path) -> dict[str, Path]:
        out = Path(out)
        (out / "figures").mkdir(parents=True, exist_ok=True)
        for s in self.sections:
            for f in s.figures:
                write_atomic(out / figure_path(s, f), f.png)
        paths = dict(md=out / "report.md", html=out / "report.html", json=out / "report.json")
        write_atomic(paths["md"], self.markdown())
        write_atomic(paths["html"], self.html())
        write_atomic(paths["json"], json.dumps(self.data(), indent=2, allow_nan=False))
        return paths


def write_atomic(path: Path, data: str | bytes) -> Path:
    """Write via a temporary file and rename: a reader (or a Ctrl-C) never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    os.replace(tmp, path)
    return path


def figure_path(section: Section, fig: Figure) -> str:
    """Where a figure's PNG goes, relative to the report; the section key keeps names apart."""
    return f"figures/{section.key}_{fig.name}.png"


def jsonable(obj):
    """Plain JSON types: tuples become lists, numpy scalars numbers, NaN/inf null."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


# -- provenance ----------------------------------------------------------------------


def sha256_file(path: Path, chars: int = 12) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:chars]


def checkpoint_info(ckpt: Checkpoint) -> dict:
    """What identifies a checkpoint: its path and the sha256 of its config and weights."""
    cfg, m = ckpt.config, ckpt.config.get("model", {})
    return dict(
        path=str(ckpt.path),
        kind=m.get("kind"),
        model=f"{m.get('layers')}x{m.get('hidden_size')} {m.get('cell')}, emb {m.get('emb_size')}",
        config_sha256=sha256_file(ckpt.path / "config.json"),
        weights_sha256=sha256_file(ckpt.path / "model.safetensors"),
        corpus=cfg.get("data", {}).get("corpus"),
        train_seed=cfg.get("train", {}).get("seed"),
        step=ckpt.metrics.get("step"),
        best_valid_ppl=ckpt.metrics.get("best_valid_ppl"),
        trained_with=cfg.get("command"),
        trained_on=trained_on(ckpt.metrics),
    )


def trained_on(metrics: dict) -> str:
    """How long, in what precision and on which processor a checkpoint trained: a budget's figures
    depend on all three. A resumed run names each setup it trained on from the step it began; checkpoints
    from before the machine was recorded give what they have."""
    minutes = metrics.get("wall_seconds")
    setups: list[tuple[int, str]] = []  # (first step, setup), a new one only where the setup changed
    for leg in metrics.get("legs") or [metrics]:
        parts = [
            leg.get("precision"),
            leg.get("machine"),
            f"{leg['threads']} thread(s)" if leg.get("threads") else None,
            f"{leg['processes']} processes" if (leg.get("processes") or 1) > 1 else None,
        ]
        setup = ", ".join(p for p in parts if p)
        if not setups or setups[-1][1] != setup:
            setups.append((leg.get("from_step", 0), setup))
    head = f"{minutes / 60:.1f} min" if minutes is not None else None
    if len(setups) > 1:
        body = "; ".join(f"from step {step:,}: {setup}" for step, setup in setups)
        return f"{head}; {body}" if head else body
    return ", ".join(p for p in (head, setups[0][1]) if p) or "not recorded"


def run_meta(checkpoints: dict[str, Checkpoint], **extra) -> dict:
    """Command, date, versions and checkpoints of this report, plus e.g. split and seed."""
    return dict(
        command=shlex.join(["bilm", *sys.argv[1:]]) if Path(sys.argv[0]).name == "bilm" else shlex.join(sys.argv),
        date=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        bilm=__version__,
        torch=torch.__version__,
        machine=f"{describe()}, {torch.get_num_threads()} torch threads",
        checkpoints={role: checkpoint_info(c) for role, c in checkpoints.items()},
        **extra,
    )


def meta_markdown(meta: dict) -> str:
    lines = [f"- **command**: `{meta.get('command', '')}`"]
    lines += [f"- **{k}**: {v}" for k, v in meta.items() if k not in ("command", "checkpoints")]
    rows = [
        [
            role,
            f"`{c['path']}`",
            c["model"],
            c["corpus"],
            c["step"],
            f"`{c['config_sha256']}`",
            f"`{c['weights_sha256']}`",
            c.get("trained_on", "not recorded"),
        ]
        for role, c in meta.get("checkpoints", {}).items()
    ]
    headers = ["role", "checkpoint", "model", "corpus", "steps", "config sha256", "weights sha256", "trained"]
    return "\n".join(lines) + ("\n\n" + table(headers, rows) if rows else "")


# -- Markdown ------------------------------------------------------------------------


def fmt(x, digits: int = 1, percent: bool = True) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{100 * x:.{digits}f}" if percent else f"{x:,.{digits}f}"


def with_ci(cell: dict, metric: str) -> str:
    """`41.2 [40.1, 42.3]` (percent) for a metric and its interval; `100.0 (n=1)` for a group too small for one."""
    if not cell.get("n"):
        return "–"
    if cell["n"] < MIN_CI_BLANKS:
        return f"{fmt(cell.get(metric))} (n={cell['n']})"
    lo, hi = cell.get(f"{metric}_ci", (None, None))
    return f"{fmt(cell.get(metric))} [{fmt(lo)}, {fmt(hi)}]"


def top1_top5(cell: dict) -> str:
    return f"{with_ci(cell, 'top1')} / {fmt(cell['top5'])}" if cell.get("n") else "–"


def table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join("" if c is None else str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


_INLINE = [
    (re.compile(r"`([^`]+)`"), r"<code>\1</code>"),
    (re.compile(r"!\[([^\]]*)\]\(([^)\s]+)\)"), r'<figure><img alt="\1" src="\2"><figcaption>\1</figcaption></figure>'),
    (re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)"), r'<a href="\2">\1</a>'),
    (re.compile(r"\*\*([^*]+)\*\*"), r"<strong>\1</strong>"),
    (re.compile(r"(?<![\w*])\*([^*\s][^*]*)\*(?![\w*])"), r"<em>\1</em>"),
]


def inline(text: str) -> str:
    """Escape, then apply the inline rules; code spans are protected from the others."""
    codes: list[str] = []

    def stash(m):
        codes.append(f"<code>{m.group(1)}</code>")
        return f"\x00{len(codes) - 1}\x00"

    out = _INLINE[0][0].sub(stash, html.escape(text, quote=False))
    for pattern, repl in _INLINE[1:]:
        out = pattern.sub(repl, out)
    return re.sub(r"\x00(\d+)\x00", lambda m: codes[int(m.group(1))], out)


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def markdown_to_html(text: str) -> str:
    """The Markdown subset of the module docstring, block by block."""
    out, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
        elif line.startswith("```"):
            j = next((k for k in range(i + 1, len(lines)) if lines[k].startswith("```")), len(lines))
            out.append(f"<pre><code>{html.escape(chr(10).join(lines[i + 1 : j]))}</code></pre>")
            i = j + 1
        elif m := re.match(r"(#{1,6})\s+(.*)", line):
            n = len(m.group(1))
            out.append(f"<h{n}>{inline(m.group(2))}</h{n}>")
            i += 1
        elif line.startswith("|") and i + 1 < len(lines) and re.match(r"^\|[\s:|-]+$", lines[i + 1]):
            head = "".join(f"<th>{inline(c)}</th>" for c in _cells(line))
            rows, i = [], i + 2
            while i < len(lines) and lines[i].startswith("|"):
                rows.append("<tr>" + "".join(f"<td>{inline(c)}</td>" for c in _cells(lines[i])) + "</tr>")
                i += 1
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>")
        elif re.match(r"[-*]\s", line):
            items = []
            while i < len(lines) and re.match(r"[-*]\s", lines[i]):
                items.append(f"<li>{inline(lines[i][2:])}</li>")
                i += 1
            out.append(f"<ul>{''.join(items)}</ul>")
        else:
            para = []
            while i < len(lines) and lines[i].strip() and not re.match(r"(#{1,6}\s|```|\||[-*]\s)", lines[i]):
                para.append(lines[i])
                i += 1
            body = inline(" ".join(para))
            out.append(body if body.startswith("<figure>") else f"<p>{body}</p>")
    return "\n".join(out)


STYLE = """
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1080px; margin: 2em auto;
       padding: 0 1em; color: #222; }
h1, h2, h3 { line-height: 1.2; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: 1em 0; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
code { background: #f3f3f3; padding: 0 .2em; border-radius: 3px; font-size: 90%; }
pre code { display: block; padding: .6em; overflow-x: auto; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: 13px; }
"""

# Marks the page once loaded, so a headless browser can tell that every image decoded.
IMAGE_CHECK = """<script>
window.addEventListener("load", () => {
  const imgs = [...document.images];
  const broken = imgs.filter(i => !(i.complete && i.naturalWidth > 0)).length;
  document.body.dataset.images = `${imgs.length - broken} ok, ${broken} broken`;
});
</script>"""

HTML_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>{style}</style></head>
<body>
{body}
{check}
</body></html>
"""


# -- figures -------------------------------------------------------------------------


def figure(fig, name: str, caption: str) -> Figure:
    """A matplotlib figure as PNG bytes; a pyplot figure is closed afterwards."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    if fig.canvas.manager is not None:
        import matplotlib.pyplot as plt

        plt.close(fig)
    return Figure(name, caption, buf.getvalue())


def plot_groups(summary: dict, grouping: str, xlabel: str, name: str, caption: str) -> Figure:
    """Top-1 and top-5 accuracy per group, one line per method, with 95 % intervals."""
    fig = MplFigure(figsize=(11, 3.8))
    axes = fig.subplots(1, 2, sharex=True)
    for ax, metric in zip(axes, ("top1", "top5"), strict=True):
        for method, groupings in summary["methods"].items():
            cells = groupings[grouping]
            labels = list(cells)
            y = [100 * _num(cells[g][metric]) for g in labels]
            lo = [100 * _num(cells[g][f"{metric}_ci"][0]) for g in labels]
            hi = [100 * _num(cells[g][f"{metric}_ci"][1]) for g in labels]
            err = [
                [max(a - b, 0) for a, b in zip(y, lo, strict=True)],
                [max(b - a, 0) for a, b in zip(y, hi, strict=True)],
            ]
            color, marker = METHOD_STYLE.get(method, (None, "o"))
            style = "--" if method.endswith("+cache") else "-"
            ax.errorbar(range(len(labels)), y, yerr=err, label=method, color=color, marker=marker, ls=style, capsize=3)
        ax.set_xticks(range(len(labels)), labels, rotation=30 if len(labels) > 5 else 0)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"top-{metric[3:]} accuracy (%)")
        ax.grid(alpha=0.3)
    axes[0].legend()
    return figure(fig, name, caption)


def _num(x) -> float:
    return math.nan if x is None else float(x)


def read_metrics(path: Path) -> list[dict]:
    """Records of a run's metrics.jsonl; a torn last line (run still writing) is skipped.

    The file is strict JSON, so a non-finite figure was written as null: it reads back as NaN.
    """
    out = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        out.append({k: math.nan if v is None else v for k, v in record.items()})
    return out


def plot_curves(runs: dict[str, list[dict]], name: str = "curves") -> Figure:
    """Per run: train and validation perplexity against step (left), validation against wall-clock minutes (right).

    Minutes are what a CPU user pays, so the right panel is the one to compare runs of different sizes by.
    """
    fig = MplFigure(figsize=(11, 4.2))
    by_step, by_minute = fig.subplots(1, 2)
    for i, (label, records) in enumerate(runs.items()):
        suffix = " (pseudo-perplexity)" if label.startswith("bi") else ""
        for kind, style in (("train", dict(lw=1, alpha=0.6)), ("valid", dict(marker="o", lw=2))):
            rows = [r for r in records if r.get("type") == kind]
            ppl = [r["ppl"] if "ppl" in r else math.exp(min(r["loss"], 50)) for r in rows]
            if rows:
                by_step.plot([r["step"] for r in rows], ppl, color=f"C{i}", label=f"{label} {kind}{suffix}", **style)
            if rows and kind == "valid":
                minutes = [r.get("elapsed", 0) / 60 for r in rows]
                by_minute.plot(minutes, ppl, color=f"C{i}", label=f"{label}{suffix}", **style)
    for ax, xlabel in ((by_step, "step"), (by_minute, "training minutes (wall clock, validation included)")):
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    by_step.set_ylabel("perplexity; bi: pseudo-perplexity (log scale)")
    by_minute.set_title("validation against training minutes", fontsize=10)
    return figure(
        fig,
        name,
        "Training curves: train perplexity per log interval and validation perplexity by step; validation by "
        "wall-clock minute (bi: pseudo-perplexity)",
    )


# -- sections ------------------------------------------------------------------------


def lm_section(quality: dict[str, dict], split: str) -> Section:
    rows = [
        [
            role,
            f"{fmt(q['ppl'], 2, False)}" + (" (pseudo-perplexity)" if role == "bi" else ""),
            f"{q['tokens']:,}",
            f"{100 * q['unk_rate']:.2f} %",
            q["method"],
            q["seconds"],
        ]
        for role, q in quality.items()
    ]
    text = (
        f"Perplexity on the **{split}** split: exp(mean negative log-likelihood per predicted token). "
        "The uni figure follows the WikiText-2/PTB convention (one stream, state carried, `<eos>` and `<unk>` "
        "counted), so it compares with published numbers; the bi figure predicts each word from both sides "
        "of its sentence (a pseudo-perplexity) and does not.\n\n"
        + table(["model", "perplexity", "targets", "<unk> among targets", "method", "seconds"], rows)
    )
    return Section("Language-model quality", text, data=dict(split=split, models=quality), key="lm")


def cache_section(stream: dict | None, fill: dict | None = None) -> Section:
    """The continuous cache: the uni model's stream perplexity, and each fill-in method's cache."""
    parts = []
    if stream:
        tune, ev = stream["tune"], stream["eval"]
        rows = [
            [tune["split"], fmt(tune["ppl"], 2, False), fmt(tune["cache_ppl"], 2, False), "θ and λ chosen here"],
            [
                ev["split"],
                fmt(ev["ppl"], 2, False),
                f"**{fmt(ev['cache_ppl'], 2, False)}**",
                f"{ev['tokens']:,} targets",
            ],
        ]
        parts.append(
            "The uni model with a continuous cache (Grave et al. 2017): its hidden states of the last "
            f"{stream['window']:,} positions of each row, each kept with the word that followed it, vote for the next "
            f"word by softmax(θ h_t · h_i), mixed in with weight λ. Chosen on the {tune['split']} split from a grid: "
            f"θ = {stream['theta']:g}, λ = {stream['lam']:g}. Nothing is trained; what it buys is what the LSTM "
            "forgets between a word and its next use.\n\n" + table(["split", "uni perplexity", "uni + cache", ""], rows)
        )
    if fill:
        rows = [
            [
                t["method"],
                f"{t['theta']:g}",
                f"{t['lam']:g}",
                fmt(t["tune"]["ppl"], 2, False),
                fmt(t["tune"]["cache_ppl"], 2, False),
                f"{t['tune']['blanks']:,}",
            ]
            for t in fill.values()
        ]
        window = next(iter(fill.values()))["window"]
        parts.append(
            "**Fill in the blank with the cache** (the methods `+cache` in the fill-in tables): a blank's features "
            f"are matched against those of the last {window:,} blanks of its document before its sentence, each kept "
            "with its word; the words of the matching contexts get softmax(θ h · h_i) of the weight λ. θ and λ "
            "minimise the perplexity of the valid split's blanks (λ = 0 in a document's first sentence, whose cache "
            "is empty).\n\n" + table(["method", "θ", "λ", "valid blank ppl", "with the cache", "valid blanks"], rows)
        )
    data = dict(stream or {}, fill=fill or {})  # the uni stream cache's figures at the top, as reports always had
    return Section("Continuous cache", "\n\n".join(parts), data=data, key="cache")


def _resampled(summary: dict, cfg: dict) -> str:
    """How the intervals were made: which unit was resampled, and why when it is not documents."""
    r = summary.get("resampled") or dict(unit="sentence", units=summary["sentences"], note="")
    text = f"resampling whole {r['unit']}s ({r['units']:,} of them, {cfg['bootstrap']} resamples)"
    return text + (f": {r['note']}" if r.get("note") else "")


def _rescored_note(methods: dict, cfg: dict) -> str:
    """What the rescoring methods in `methods` did, if any ran."""
    what = {
        "uni-rescore": f"uni-rescore ranks the uni-left top {cfg['shortlist']} by whole-sentence log-probability",
        "bi-rescore": f"bi-rescore ranks the bi top {cfg['bi_shortlist']} by log p(word | rest) + "
        f"{BI_SENTENCE_WEIGHT:g} × the other words' pseudo-log-likelihood with the word in the blank",
        "uni+bi": f"uni+bi adds {UNI_WEIGHT:g} × the uni model's log-probability of the filled sentence to "
        "bi-rescore's score of the same candidates",
    }
    ran = [text for m, text in what.items() if m in methods]
    if not ran:
        return ""
    return (
        f" {'; '.join(ran)}; on {'one' if len(ran) > 1 else 'a'} random sample of {cfg['rescore_sample']:,} blanks "
        f"(seed {cfg['seed']}); a target outside the shortlist is a miss."
    )


def fill_section(summary: dict, cfg: dict) -> Section:
    methods = summary["methods"]
    overall = [
        [
            m,
            f"{g['all']['all']['n']:,}",
            *(with_ci(g["all"]["all"], k) for k in METRICS),
            fmt(g["all"]["all"].get("ppl"), 1, False),
        ]
        for m, g in methods.items()
    ]
    parts = [
        f"Every word of every sentence blanked in turn: {summary['blanks']:,} blanks in {summary['sentences']:,} "
        f"sentences; {summary['excluded_unk']:,} `<unk>` targets excluded. Rank = 1 + the number of words "
        "scored strictly higher (special tokens never compete); MRR = mean 1/rank. Brackets: 95 % bootstrap "
        f"intervals {_resampled(summary, cfg)}; a group of fewer than {MIN_CI_BLANKS} blanks has none, its n "
        "instead." + _rescored_note(methods, cfg),
        table(
            ["method", "blanks", "top-1 %", "top-5 %", "top-10 %", "MRR %", "ppl of the blank (bi: pseudo)"], overall
        ),
    ]
    if "sample" in summary:
        rows = [[m, f"{c['n']:,}", *(with_ci(c, k) for k in METRICS)] for m, c in summary["sample"].items()]
        parts += [
            "**Same blanks for every method** (the rescoring sample):",
            table(["method", "blanks", "top-1 %", "top-5 %", "top-10 %", "MRR %"], rows),
        ]
    if summary["differences"]:
        rows = [
            [f"{d['a']} − {d['b']}", f"{d['n']:,}", f"{100 * d['diff']:+.1f} [{fmt(d['ci'][0])}, {fmt(d['ci'][1])}]"]
            for d in summary["differences"]
        ]
        parts += [
            "**Paired top-1 differences** (points, same blanks):",
            table(["difference", "blanks", "top-1 points [95 %]"], rows),
        ]
    for grouping, title in (
        ("length", "sentence length (words)"),
        ("position", "relative blank position"),
        ("word", "target word class"),
    ):
        labels = list(next(iter(methods.values()))[grouping])
        rows = [[m, *(top1_top5(g[grouping][lab]) for lab in labels)] for m, g in methods.items()]
        counts = ["blanks (full run)", *(f"{next(iter(methods.values()))[grouping][lab]['n']:,}" for lab in labels)]
        parts += [f"**Top-1 [95 %] / top-5 by {title}**:", table(["method", *labels], [*rows, counts])]
    cost = [
        [m, c["blanks"], c["sentences_scored"], c["seconds"], c["ms_per_blank"]] for m, c in summary["cost"].items()
    ]
    parts += [
        "**Cost** (wall-clock on this machine):",
        table(["method", "blanks", "sentence passes", "seconds", "ms per blank"], cost),
    ]
    figures = [
        plot_groups(
            summary,
            "length",
            "sentence length (words)",
            "accuracy_by_length",
            "Accuracy by sentence length (95 % intervals)",
        ),
        plot_groups(
            summary,
            "position_decile",
            "relative blank position",
            "accuracy_by_position",
            "Accuracy by relative blank position (95 % intervals)",
        ),
    ]
    return Section("Fill in the blank", "\n\n".join(parts), figures, dict(config=cfg, **summary), key="fill")


def curves_section(checkpoints: dict[str, Checkpoint]) -> Section | None:
    """Perplexity curves from each checkpoint's run folder (`<run>/metrics.jsonl`), if any."""
    runs = {}
    for role, c in checkpoints.items():
        path = c.path.parent / "metrics.jsonl"
        if path.is_file():
            runs[f"{role} ({c.path.parent.name})"] = read_metrics(path)
    if not runs:
        return None
    text = (
        "From each run's `metrics.jsonl`. uni validation is stream perplexity; "
        "bi validation is fill-in pseudo-perplexity."
    )
    return Section(
        "Training curves", text, [plot_curves(runs)], dict(runs={k: len(v) for k, v in runs.items()}), key="curves"
    )


def mscc_section(result: dict) -> Section:
    rows = [
        [
            name,
            f"{100 * r['accuracy']:.1f} [{fmt(r['ci'][0])}, {fmt(r['ci'][1])}]",
            f"{r['correct']:g} / {r['questions']}",
            r["oov_candidates"],
            r["oov_keys"],
            r["multi_token_candidates"],
            r["tied_questions"],
            r["seconds"],
        ]
        for name, r in result["models"].items()
    ]
    headers = ["model", "accuracy % [95 %]", "correct", "OOV candidates", "OOV keys", "multi-token", "ties", "seconds"]
    anchors = [[a["system"], f"{a['accuracy']:.1f}", a["source"]] for a in result["anchors"]]
    text = (
        f"{result['questions']:,} questions, 5 choices. uni: log-probability of the whole filled sentence; bi: "
        "its pseudo-log-likelihood (each word's log-probability given all the others, summed); bi-blank: the "
        "candidate's own log-probability at the blank (summed over its tokens when it has several). "
        "Out-of-vocabulary candidates are left unscored and counted; ties are split. "
        "Brackets: 95 % Wilson intervals.\n\n"
        + table(headers, rows)
        + "\n\n**Published** (same 1,040 questions, other training data and models):\n\n"
        + table(["system", "accuracy %", "source"], anchors)
    )
    return Section("MSR Sentence Completion Challenge", text, data=result, key="mscc")
