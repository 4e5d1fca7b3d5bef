"""The vanishing-gradient lab in the report: its figures and its `Section`.

decay_curves       log g(k) against distance k at the longest window: cells at initialisation, trained models
half_lives         fitted half-life in words per model (and side), embedding and hidden-state gradients
far_near           g(far)/g(near) against window length, per model and side (uni against bi)
bench_losses       final test loss against T per cell, with the trivial baseline and the success line
input_gradients    ||dL/dx_t|| at the first and last steps of the training windows, over training steps
gradient_curves    every window length, one panel each (written beside gradients.json)

Figures are plain matplotlib `Figure`s (no pyplot: no global state); `save` writes a PNG,
`gradients_section` wraps them for `report.Report` (`bilm gradients --out`); `lab_section`
rebuilds it from a `bilm gradients --out` folder, so `bilm evaluate --gradients` plugs the
lab into the evaluation report.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from matplotlib.figure import Figure

from .errors import BilmError
from .report import Section, figure, read_metrics, table
from .synthetic import ADDING_SOLVED_MSE


def _label(entry: dict) -> str:
    side = f" ({entry['direction']})" if entry["kind"] == "bi" else ""
    name = Path(entry["model"]).name if entry.get("trained") else f"{entry['cell']} ({entry['init']})"
    return f"{name}{side}"


def _axes(columns: int, width: float = 5.5, height: float = 3.8):
    fig = Figure(figsize=(width * columns, height))
    return fig, fig.subplots(1, columns, squeeze=False)[0]


def _curves(ax, entries: list[dict]) -> None:
    for e in entries:
        k = range(1, len(e["median"]) + 1)
        (line,) = ax.plot(k, e["median"], label=_label(e))
        ax.fill_between(k, e["q25"], e["q75"], color=line.get_color(), alpha=0.15)
    ax.set_yscale("log")
    ax.set_xlabel("distance k (words)")
    ax.legend(fontsize=7)


def gradient_curves(entries: list[dict]) -> Figure:
    lengths = sorted({e["length"] for e in entries})
    fig, axes = _axes(len(lengths), 4.5)
    for ax, n in zip(axes, lengths, strict=True):
        _curves(ax, [e for e in entries if e["length"] == n])
        ax.set_title(f"windows of {n} words")
    axes[0].set_ylabel("|d log p / d e_k|  (median, quartiles)")
    return fig


def decay_curves(entries: list[dict]) -> Figure:
    n = max(e["length"] for e in entries)
    groups = [(t, [e for e in entries if e["length"] == n and e["trained"] == t]) for t in (False, True)]
    groups = [(t, g) for t, g in groups if g]
    fig, axes = _axes(len(groups))
    for ax, (trained, group) in zip(axes, groups, strict=True):
        _curves(ax, group)
        ax.set_title(f"{'trained' if trained else 'at initialisation'}: windows of {n} words")
    axes[0].set_ylabel("|d log p / d e_k|  (median, quartiles)")
    return fig


def half_lives(entries: list[dict]) -> Figure:
    n = max(e["length"] for e in entries)
    rows = [e for e in entries if e["length"] == n]
    fig, (ax,) = _axes(1, 7, 0.45 * len(rows) + 1.2)
    y = range(len(rows))
    for offset, (what, get) in enumerate(
        (
            ("input embedding", lambda e: e["half_life"]),
            ("hidden state", lambda e: e.get("hidden", {}).get("half_life")),
        )
    ):
        values = [get(e) for e in rows]
        bars = ax.barh([i + 0.4 * offset - 0.2 for i in y], [v or 0 for v in values], height=0.4, label=what)
        for bar, v in zip(bars, values, strict=True):
            note = "no decay" if v is None else f"{v:.1f}"
            ax.text(bar.get_width(), bar.get_y() + 0.2, f" {note}", va="center", fontsize=7)
    ax.set_yticks(list(y), [_label(e) for e in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(f"half-life of the fitted decay (words), windows of {n}")
    ax.legend(fontsize=7)
    return fig


def far_near(entries: list[dict]) -> Figure:
    fig, (ax,) = _axes(1)
    for label in dict.fromkeys(_label(e) for e in entries):
        points = sorted((e["length"], e["far_near"]) for e in entries if _label(e) == label)
        ax.plot(*zip(*points, strict=True), marker="o", label=label)
    ax.set_yscale("log")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("window length (words)")
    ax.set_ylabel("g(farthest) / g(nearest)  (median)")
    ax.legend(fontsize=7)
    return fig


def _bench_label(r: dict) -> str:
    return f"{r['cell']} (lr {r['lr']:g}, clip {r['clip']:g})"


def bench_losses(results: list[dict]) -> Figure:
    """The success line is drawn when every result is of the adding task (copy has none)."""
    fig, (ax,) = _axes(1)
    for label in dict.fromkeys(_bench_label(r) for r in results):
        points = sorted((r["T"], r["loss"]) for r in results if _bench_label(r) == label)
        ax.plot(*zip(*points, strict=True), marker="o", label=label)
    baseline = sorted({(r["T"], r["baseline"]) for r in results})
    ax.plot(*zip(*baseline, strict=True), "k--", marker="_", label="trivial answer")
    if all(r["task"] == "adding" for r in results):
        ax.axhline(ADDING_SOLVED_MSE, color="grey", lw=0.8, label="solved below")
    ax.set_yscale("log")
    ax.set_xlabel("sequence length T")
    ax.set_ylabel("final test loss")
    ax.legend(fontsize=7)
    return fig


def input_gradients(runs: dict[str, list[dict]]) -> Figure:
    """One panel per run: input gradient at the first and last steps, and the weights' gradient norm.

    A run whose loss turned NaN is marked at the first log interval that shows it.
    """
    runs = {name: [r for r in records if "input_grad_first" in r] for name, records in runs.items()}
    runs = {name: records for name, records in runs.items() if records}
    columns = min(len(runs), 4) or 1
    fig = Figure(figsize=(4.0 * columns, 3.4 * math.ceil(len(runs) / columns)))
    axes = fig.subplots(math.ceil(len(runs) / columns) or 1, columns, squeeze=False).flatten()
    for ax in axes[len(runs) :]:
        ax.set_visible(False)
    for ax, (name, records) in zip(axes, runs.items(), strict=False):
        steps = [r["step"] for r in records]
        ax.plot(steps, [r["input_grad_first"] for r in records], "C0.-", label="first step")
        ax.plot(steps, [r["input_grad_last"] for r in records], "C1.--", label="last step")
        ax.plot(steps, [r["grad_norm"] for r in records], "C2:", label="all weights (before clipping)")
        diverged = next((r["step"] for r in records if not math.isfinite(r["loss"])), None)
        if diverged is not None:
            ax.axvline(diverged, color="red", lw=0.8)
            ax.text(diverged, 0.5, f" NaN by step {diverged}", color="red", transform=ax.get_xaxis_transform())
        if any(math.isfinite(r["grad_norm"]) for r in records):
            ax.set_yscale("log")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("training step")
    axes[0].set_ylabel("gradient norm, mean over a log interval")
    axes[0].legend(fontsize=7)
    return fig


def save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path


def _fmt(x, spec: str = ".1f") -> str:
    if x is None:
        return "no decay"
    return "–" if isinstance(x, float) and not math.isfinite(x) else format(x, spec)


def gradient_table(entries: list[dict]) -> str:
    lengths = sorted({e["length"] for e in entries})
    longest = lengths[-1]
    rows = []
    for label in dict.fromkeys(_label(e) for e in entries):
        mine = {e["length"]: e for e in entries if _label(e) == label}
        last = mine[longest]
        rows.append(
            [
                label,
                "trained" if last["trained"] else "init",
                *(_fmt(mine[n]["half_life"]) if n in mine else "" for n in lengths),
                _fmt(last.get("hidden", {}).get("half_life")) if "hidden" in last else "–",
                f"{last['rate_per_step']:.3f}",
                f"{last['far_near']:.1e}",
            ]
        )
    headers = ["model", "weights", *(f"half-life, n={n}" for n in lengths), f"hidden h-l, n={longest}"]
    return table([*headers, f"decay per word, n={longest}", f"far/near, n={longest}"], rows)


def bench_table(results: list[dict]) -> str:
    rows = [
        [
            r["task"],
            r["T"],
            r["cell"],
            f"{r['lr']:g}",
            f"{r['clip']:g}",
            r["steps"],
            f"{r['loss']:.4f}",
            f"{r['baseline']:.4f}",
            "yes" if r["solved"] else "no",
            f"{r['grad_first']:.1e} / {r['grad_last']:.1e}",
            f"{r.get('wall_seconds', r['seconds']):.0f}",
        ]
        for r in results
    ]
    headers = ["task", "T", "cell", "lr", "clip", "steps", "test loss", "trivial", "solved", "grad first/last", "s"]
    return table(headers, rows)


def gradients_section(entries: list[dict], bench: list[dict] | None = None, runs: dict | None = None) -> Section:
    """The lab as one report section: gradient decay of the models, and the long-range benchmarks if given."""
    parts = [
        "g(k) = |d log p(w | context) / d e_k|: how strongly the prediction of a word w depends on the input "
        "embedding k words away (for bi, on both sides of the blank). Windows are cut from the split's token "
        "stream, so long ones span consecutive sentences. Half-life: ln 2 / -ln r for the per-word factor r of "
        "a least-squares fit of log median g(k) on k; far/near: median g(n)/g(1). Hidden h-l: the same fit for "
        "the gradient reaching the whole recurrent state.",
        gradient_table(entries),
    ]
    figures = [
        figure(decay_curves(entries), "decay", "log g(k) against distance: at initialisation and trained"),
        figure(half_lives(entries), "half_lives", "Half-life of the gradient decay per model"),
        figure(far_near(entries), "far_near", "Far/near gradient ratio against window length, uni against bi"),
    ]
    if bench:
        parts += [
            "**Long-range benchmarks** (`bilm bench`): trained until solved or out of steps; test loss on 500 "
            f"held-out sequences (adding: MSE, solved below {ADDING_SOLVED_MSE:g}; the trivial answer 1 scores 1/6). "
            "grad first/last: ||dL/dx_t|| at the first and last step on 100 test sequences at the end of training; "
            "s: wall seconds.",
            bench_table(bench),
        ]
        figures.append(figure(bench_losses(bench), "bench", "Final test loss against sequence length per cell"))
    if runs:
        figures.append(
            figure(input_gradients(runs), "input_gradients", "Input gradient at the first and last step over training")
        )
    return Section(
        "Vanishing gradients", "\n\n".join(parts), figures, dict(entries=entries, bench=bench), key="gradients"
    )


def load_bench(folders) -> tuple[list[dict], dict[str, list[dict]]]:
    """(results, training records by run) of `bilm bench ... --out` folders."""
    results, runs = [], {}
    for folder in map(Path, folders):
        found = [folder / f"{task}.json" for task in ("adding", "copy") if (folder / f"{task}.json").is_file()]
        if not found:
            raise BilmError(f"{folder}: no adding.json or copy.json (written by bilm bench ... --out)")
        results += [r for path in found for r in json.loads(path.read_text())["results"]]
        runs.update({p.parent.name: read_metrics(p) for p in sorted(folder.glob("*/metrics.jsonl"))})
    return results, runs


def lab_section(folder: str | Path) -> Section:
    """The gradients section again, from the gradients.json a `bilm gradients --out` run left in `folder`."""
    path = Path(folder) / "gradients.json"
    try:
        saved = json.loads(path.read_text())
        entries = saved["entries"]
    except (OSError, ValueError, KeyError) as e:
        raise BilmError(f"{path}: not a bilm gradients result ({type(e).__name__}); run bilm gradients --out") from None
    return gradients_section(entries, *load_bench(saved.get("bench", [])))
