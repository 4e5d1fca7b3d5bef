"""Figures for the vanishing-gradient section of the report (matplotlib, no display needed).

gradient_curves    log g(k) against distance k, one panel per window length, median and quartiles
far_near           g(far)/g(near) against window length, per model and side
bench_losses       final test loss against T per cell, with the trivial baseline and the success line
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _label(entry: dict) -> str:
    side = f" ({entry['direction']})" if entry["kind"] == "bi" else ""
    return f"{entry['model']}{side}"


def gradient_curves(entries: list[dict], path: Path) -> Path:
    lengths = sorted({e["length"] for e in entries})
    fig, axes = plt.subplots(1, len(lengths), figsize=(4.5 * len(lengths), 3.8), squeeze=False)
    for ax, n in zip(axes[0], lengths, strict=True):
        for e in (e for e in entries if e["length"] == n):
            k = range(1, len(e["median"]) + 1)
            (line,) = ax.plot(k, e["median"], label=_label(e))
            ax.fill_between(k, e["q25"], e["q75"], color=line.get_color(), alpha=0.15)
        ax.set_yscale("log")
        ax.set_title(f"windows of {n} words")
        ax.set_xlabel("distance k (words)")
    axes[0][0].set_ylabel("|d log p / d e_k|  (median, quartiles)")
    axes[0][-1].legend(fontsize=7)
    return _save(fig, path)


def far_near(entries: list[dict], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for label in dict.fromkeys(_label(e) for e in entries):
        points = sorted((e["length"], e["far_near"]) for e in entries if _label(e) == label)
        ax.plot(*zip(*points, strict=True), marker="o", label=label)
    ax.set_yscale("log")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("window length (words)")
    ax.set_ylabel("g(farthest) / g(nearest)  (median)")
    ax.legend(fontsize=7)
    return _save(fig, path)


def bench_losses(results: list[dict], solved_line: float, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for cell in dict.fromkeys(r["cell"] for r in results):
        points = sorted((r["T"], r["loss"]) for r in results if r["cell"] == cell)
        ax.plot(*zip(*points, strict=True), marker="o", label=cell)
    baseline = sorted({(r["T"], r["baseline"]) for r in results})
    ax.plot(*zip(*baseline, strict=True), "k--", label="trivial answer")
    if solved_line:
        ax.axhline(solved_line, color="grey", lw=0.8, label="solved below")
    ax.set_yscale("log")
    ax.set_xlabel("sequence length T")
    ax.set_ylabel("final test loss")
    ax.legend(fontsize=7)
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
