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


def _ratio(entry: dict, k: int) -> str:
    value = entry.get("g_rel", {}).get(str(k))
    return "–" if value is None else f"{value:.2g}"


def _tail(entry: dict) -> str:
    t = entry.get("tail")
    if not t:
        return "–"
    if t["better"] == "exponential":
        return f"exponential, r {t['exp_rate']:.3f} (R² {t['exp_r2']:.3f} vs {t['power_r2']:.3f})"
    return f"power law, k^−{t['power_exponent']:.2f} (R² {t['power_r2']:.3f} vs {t['exp_r2']:.3f})"


def _reach(entry: dict, key: str) -> str:
    value = entry.get(key)
    return f"> {entry['length'] - 1}" if value is None else str(value)


def gradient_table(entries: list[dict]) -> str:
    """Window-independent measures at the longest window first; the one-exponential half-life per window last."""
    lengths = sorted({e["length"] for e in entries})
    longest = lengths[-1]
    rows = []
    for label in dict.fromkeys(_label(e) for e in entries):
        mine = {e["length"]: e for e in entries if _label(e) == label}
        last = mine[max(mine)]
        rows.append(
            [
                label,
                "trained" if last["trained"] else "init",
                _reach(last, "k_half"),
                _reach(last, "k_tenth"),
                *(_ratio(last, k) for k in (5, 20)),
                _tail(last),
                " / ".join(_fmt(mine[n]["half_life"]) if n in mine else "" for n in lengths),
                _fmt(last.get("hidden", {}).get("half_life")) if "hidden" in last else "–",
                f"{last['far_near']:.1e}",
            ]
        )
    headers = ["model", "weights", "k½ (words)", "k⅒", "g(5)/g(1)", "g(20)/g(1)", f"tail (k ≥ 5, n={longest})"]
    headers += [f"one-exponential half-life, n={'/'.join(map(str, lengths))} (window effect)"]
    return table([*headers, f"hidden h-l, n={longest}", f"far/near, n={longest}"], rows)


def window_effect(entries: list[dict]) -> Figure:
    """The window's effect, as such: the one-exponential half-life grows with the window, k½ and k⅒ need not."""
    fig, (left, right) = _axes(2, 5.2)
    for i, label in enumerate(dict.fromkeys(_label(e) for e in entries)):
        mine = sorted((e for e in entries if _label(e) == label), key=lambda e: e["length"])
        n = [e["length"] for e in mine]
        left.plot(n, [e["half_life"] or math.nan for e in mine], f"C{i % 10}o-", label=label)
        right.plot(n, [e.get("k_half") or math.nan for e in mine], f"C{i % 10}o-", label=f"{label}: k½")
        right.plot(n, [e.get("k_tenth") or math.nan for e in mine], f"C{i % 10}s--", label=f"{label}: k⅒")
    left.set_title("window effect: half-life of one exponential fitted over the window", fontsize=9)
    right.set_title("first distance where median g(k) < ½ and < ⅒ of g(1)", fontsize=9)
    for ax in (left, right):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("window length n (words)")
        ax.legend(fontsize=6)
    left.set_ylabel("words")
    return fig


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
        "stream, so long ones span consecutive sentences. g(k) is not one exponential for a trained model (it "
        "falls fast over the first words, then slowly), so the measures that do not depend on the window come "
        "first: k½ and k⅒, the first distance at which the median g(k) falls below ½ and ⅒ of g(1) ('> n−1': "
        "not within the window); g(k)/g(1) at fixed k; and the tail's shape for k ≥ 5, an exponential r^k and a "
        "power law k^−a both fitted to log g, the better one named. The half-life ln 2 / −ln r of one "
        "exponential fitted over the whole window grows with the window: it is kept as the window's effect, "
        "labelled as such (and plotted against the window). Every fit leaves out k = n, the window's first word: "
        "it is read from the zero state with nothing before it to compete with, so its gradient rises again (a "
        "boundary effect, not memory). far/near: median g(n)/g(1); hidden h-l: the one-exponential fit for the "
        "gradient reaching the whole recurrent state.",
        gradient_table(entries),
    ]
    figures = [
        figure(decay_curves(entries), "decay", "log g(k) against distance: at initialisation and trained"),
        figure(half_lives(entries), "half_lives", "Half-life of the gradient decay per model"),
        figure(far_near(entries), "far_near", "Far/near gradient ratio against window length, uni against bi"),
        figure(window_effect(entries), "window", "Window effect: what each measure says as the window grows"),
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


# -- the ledger's figures (ledger.py): one per claim, each from the results of its experiments --------


def _sweep_rows(sweep: dict, activation: str) -> list[dict]:
    return sorted((r for r in sweep["rows"] if r["activation"] == activation), key=lambda r: r["radius"])


def ledger_geometric(results: dict) -> Figure:
    """Claim 1: ||dL/dh_{T-k}|| against k for radii below 1, linear (with rho^k dashed) and tanh."""
    sweep = results["radius"]
    fig, axes = _axes(2, 4.8)
    for ax, activation in zip(axes, ("linear", "tanh"), strict=True):
        for i, row in enumerate(r for r in _sweep_rows(sweep, activation) if r["radius"] < 1):
            k = range(len(row["median"]))
            ax.plot(k, row["median"], color=f"C{i}", label=f"ρ = {row['radius']:g}: r = {row['rate']:.3f}")
            if activation == "linear":
                ax.plot(k, [row["radius"] ** j for j in k], color="k", ls=":", lw=0.8)
        ax.set_yscale("log")
        ax.set_title(f"{activation} RNN, W = ρQ (dotted: ρ^k)" if activation == "linear" else "tanh RNN, W = ρQ")
        ax.set_xlabel("steps back k")
        ax.legend(fontsize=7)
    axes[0].set_ylabel("median ||∂L/∂h_{T−k}||")
    return fig


def ledger_bound(results: dict) -> Figure:
    """Claim 2: per-step factor and half-life against the spectral radius, with each activation's bound 1/sup f'."""
    sweep = results["radius"]
    fig, (left, right) = _axes(2, 5.2)
    for i, activation in enumerate(dict.fromkeys(r["activation"] for r in sweep["rows"])):
        rows = _sweep_rows(sweep, activation)
        radii = [r["radius"] for r in rows]
        left.plot(radii, [r["rate"] for r in rows], f"C{i}.-", label=activation)
        bound = sweep["bound"][activation]
        if activation in ("sigmoid", "tanh"):
            left.axvline(bound, color=f"C{i}", ls="--", lw=0.8)
            left.text(bound, 0.02, f" 1/γ = {bound:g}", color=f"C{i}", fontsize=7, transform=left.get_xaxis_transform())
        decaying = [(r["radius"], r["half_life"]) for r in rows if r["half_life"]]
        if decaying:
            right.plot(*zip(*decaying, strict=True), f"C{i}.-", label=activation)
    linear = [r["radius"] for r in _sweep_rows(sweep, "linear") if r["radius"] < 1]
    right.plot(linear, [math.log(2) / -math.log(x) for x in linear], "k:", label="ln 2 / −ln ρ")
    left.axhline(1, color="grey", lw=0.8)
    radii = sorted({r["radius"] for r in sweep["rows"]})
    ticks = [t for t in (0.25, 0.5, 1, 2, 4, 8, 16) if radii[0] <= t <= radii[-1]]
    for ax in (left, right):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.minorticks_off()
        ax.set_xlabel("spectral radius ρ of the recurrent weights")
        ax.legend(fontsize=7)
    left.set_ylabel("per-step factor r of the state gradient")
    right.set_ylabel("half-life (steps); no point: no decay")
    return fig


def _by_cell(results: dict, cell: str) -> list[dict]:
    return sorted((e for e in results["init"]["entries"] if e["cell"] == cell), key=lambda e: e["layers"])


def ledger_depth(results: dict) -> Figure:
    """Claim 3: median g(k) (absolute) of fresh sigmoid and tanh RNN language models per number of layers."""
    cells = ("rnn-sigmoid", "rnn-tanh")
    fig, axes = _axes(len(cells), 4.8)
    for ax, cell in zip(axes, cells, strict=True):
        for e in _by_cell(results, cell):
            body = e["median"][:-1]
            ax.plot(range(1, len(body) + 1), body, marker=".", label=f"{e['layers']} layer(s): k½ {e['k_half']}")
        ax.set_yscale("log")
        ax.set_title(f"{cell}, at initialisation")
        ax.set_xlabel("distance k (words)")
        ax.legend(fontsize=7)
    axes[0].set_ylabel("median |d log p / d e_k|")
    return fig


def ledger_relu(results: dict) -> Figure:
    """Claim 4: g(k)/g(1) of ReLU (default init), IRNN and tanh at initialisation, one and most layers."""
    fig, axes = _axes(2, 4.8)
    depth = [1, max(e["layers"] for e in results["init"]["entries"])]
    for ax, layers in zip(axes, depth, strict=True):
        for cell in ("rnn-relu", "irnn", "rnn-tanh"):
            e = next(x for x in _by_cell(results, cell) if x["layers"] == layers)
            body = e["median"][:-1]
            ax.plot(range(1, len(body) + 1), [g / body[0] for g in body], marker=".", label=cell)
        ax.axhline(1, color="grey", lw=0.8)
        ax.set_yscale("log")
        ax.set_title(f"{layers} layer(s), at initialisation")
        ax.set_xlabel("distance k (words)")
        ax.legend(fontsize=7)
    axes[0].set_ylabel("median g(k) / g(1)")
    return fig


def _run_curves(ax, runs: list[dict], key: str, label) -> None:
    for i, run in enumerate(runs):
        points = [(s, v) for s, v in run[key] if v is not None and math.isfinite(v)]
        if points:
            ax.plot(*zip(*points, strict=True), f"C{i}.-", label=label(run), ms=3)
        if not run.get("finite", True):
            ax.axvline(run["steps"], color=f"C{i}", ls=":", lw=0.8, label=None if points else label(run))
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.legend(fontsize=7)


def ledger_explode(results: dict) -> Figure:
    """Claim 5: gradient norm before clipping per remedy (dotted: where a run diverged); truncation's test loss."""
    fig, (left, right) = _axes(2, 5.2)
    runs = results["explode"]["results"]
    _run_curves(left, runs, "grad_norms", lambda r: r["remedy"] + ("" if r["finite"] else " (diverged)"))
    s = results["explode"]["settings"]
    left.set_title(f"adding T={s['T']}, {s['cell']}, SGD lr {s['lr']:g}", fontsize=9)
    left.set_ylabel("gradient norm (mean per log interval)")
    t = results["truncation"]
    _run_curves(right, t["results"], "curve", lambda r: f"BPTT {r['bptt']} steps")
    right.axhline(ADDING_SOLVED_MSE, color="grey", lw=0.8)
    right.set_title(f"adding T={t['T']}, both markers > {t['min_distance']} steps back", fontsize=9)
    right.set_ylabel("test MSE")
    return fig


def ledger_adding(results: dict) -> Figure:
    """Claim 6: test MSE over training per cell at T=200; the ridge-read ESN as a level; the success line."""
    a = results["adding"]
    fig, (ax,) = _axes(1, 6.5)
    trained = [r for r in a["results"] if r.get("curve")]
    _run_curves(ax, trained, "curve", lambda r: f"{r['cell']} ({r['hidden_size']} units, lr {r['lr']:g})")
    for r in a["results"]:
        if r.get("readout") == "ridge":
            ax.axhline(r["mse"], color="C5", ls="--", label=f"esn, ridge readout ({r['hidden_size']} units)")
    ax.axhline(1 / 6, color="k", ls=":", lw=0.8, label="trivial answer")
    ax.axhline(ADDING_SOLVED_MSE, color="grey", lw=0.8, label="solved below")
    ax.set_title(f"adding problem, T = {a['T']}", fontsize=9)
    ax.set_ylabel("test MSE")
    ax.legend(fontsize=7)
    return fig


def ledger_bi(results: dict) -> Figure:
    """Claim 7: top-1 gain of bi over uni-left, with its interval, by the words right and left of the blank."""
    b = results["bi"]
    fig, axes = _axes(2, 4.8)
    for ax, key, side in zip(axes, ("by_right", "by_left"), ("right", "left"), strict=True):
        rows = b[key]
        x = range(len(rows))
        gains = [100 * r["gain"] for r in rows]
        low = [100 * (r["gain"] - r["ci"][0]) for r in rows]
        high = [100 * (r["ci"][1] - r["gain"]) for r in rows]
        ax.errorbar(x, gains, yerr=[low, high], fmt="o", capsize=3)
        ax.set_xticks(list(x), [r["words"] for r in rows])
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xlabel(f"words to the {side} of the blank")
    axes[0].set_ylabel("top-1 gain of bi over uni-left (points)")
    return fig
