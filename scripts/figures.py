"""Regenerate the figures that the README and the docs quote, from what the current defaults produce.

    make figures                       # make demo + make report, then this script
    make figures-all                   # also make lab and make models (about 2.5 hours more)
    python scripts/figures.py          # render from the artifacts already there (+ the quick benchmarks)
    python scripts/figures.py --only demo,report --no-run

A figure is a block between `<!-- figure:NAME -->` and `<!-- /figure:NAME -->` in README.md
or docs/*.md. Each is rendered from the artifacts that produced it (checkpoints' metrics,
reports' JSON, a script's output), stamped with the CPU model, the threads, the torch version,
the date and the command, and written into every file that holds the block; all of them also
go to docs/figures.md. A figure whose artifacts are missing (`make models` not run, say) is
left as it is and listed at the end, so a stale figure is never silently presented as new.

Time-budgeted results (steps, perplexity after N minutes, tokens/s) depend on the machine:
the stamp says which one produced them.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from bilm.machine import describe

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
BLOCK = re.compile(r"(<!-- figure:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /figure:(?P=name) -->)", re.S)


def torch_version() -> str:
    try:
        from importlib.metadata import version

        return version("torch")
    except Exception:  # noqa: BLE001 - any failure: unknown
        return "?"


def stamp(command: str, threads: int | str | None, date: str | None = None, cpu: str | None = None) -> str:
    """Where a figure came from; `cpu` (model and logical CPUs) defaults to this machine's."""
    date = date or datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    threads = "?" if threads is None else threads
    cpu = cpu or describe()
    return f"*{cpu}, {threads} thread(s), torch {torch_version()}, {date}; `{command}`*"


def report_stamp(meta: dict) -> str:
    """The stamp of a report's figures: the processor the report names (reports since it was recorded
    name theirs as "<model>, <n> logical CPUs, <k> torch threads"), else this machine's."""
    machine = meta.get("machine", "")
    threads = re.search(r"(\d+) torch threads", machine)
    cpu = machine.rsplit(", ", 1)[0] if "logical CPUs" in machine else None
    return stamp(meta["command"], threads and threads.group(1), meta["date"], cpu)


def read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def run(cmd: list[str]) -> str:
    """stdout of a command run from the repository root (it must succeed)."""
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))  # bilm's default: 1 thread
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr.strip()[-500:]}")
    return proc.stdout


def pct(x) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


# -- renderers: each returns the block's markdown, or None when its artifacts are missing ----------


def demo(args) -> str | None:
    return runs_table(["demo-uni", "demo-bi"], "make demo (uni and bi side by side, one thread each)")


def predictions(args, prefix: str = "demo") -> str | None:
    uni, bi = f"checkpoints/{prefix}-uni", f"checkpoints/{prefix}-bi"
    if not (ROOT / bi).is_dir() or not (ROOT / uni).is_dir():
        return None
    cmd = [str(BIN / "python"), "scripts/show_predictions.py", uni, bi]
    return "```\n" + run(cmd).rstrip() + "\n```\n\n" + stamp(" ".join(cmd[1:]), 1)


def models(args) -> str | None:
    names = ["wt2-uni", "wt2-bi", "gut-uni", "gut-bi"]
    return runs_table(names, "make models (two runs side by side, one thread each)")


def runs_table(names: list[str], command: str) -> str | None:
    """Each run's model, budget, steps, tokens and best validation figure (bi: pseudo-perplexity)."""
    rows = []
    for name in names:
        run_dir = ROOT / "checkpoints" / name
        metrics, config = read_json(run_dir / "last" / "metrics.json"), read_json(run_dir / "last" / "config.json")
        if metrics is None or config is None:
            return None
        m, budget = config["model"], config["train"].get("max_minutes")
        what = "pseudo-perplexity" if m["kind"] == "bi" else "perplexity"
        rows.append(
            f"| {name} | {m['layers']}×{m['hidden_size']}, emb {m['emb_size']}, dropout {m['dropout']:g} "
            f"| {f'{budget:g} min' if budget else '–'} | {metrics['step']:,} | {metrics['train_tokens'] / 1e6:.1f} M "
            f"| {metrics['tokens_per_s']:,.0f} | {metrics['best_valid_ppl']:.1f} ({what}) |"
        )
    last = ROOT / "checkpoints" / names[-1] / "last" / "metrics.json"
    when = datetime.fromtimestamp(last.stat().st_mtime, timezone.utc)
    return "\n".join(
        [
            "| run | model | budget | steps | tokens | tokens/s | best valid |",
            "|---|---|---|---|---|---|---|",
            *rows,
            "",
            stamp(command, metrics.get("threads", 1), when.strftime("%Y-%m-%d %H:%M UTC"), metrics.get("machine")),
        ]
    )


def report(args, folder: str = "wt2") -> str | None:
    data = read_json(ROOT / "reports" / folder / "report.json")
    if data is None:
        return None
    meta, lm, fill = data["meta"], data["sections"].get("lm"), data["sections"].get("fill")
    lines = ["| | value |", "|---|---|"]
    for role, q in (lm or {}).get("models", {}).items():
        what = "test perplexity (stream" if role == "uni" else "fill-in pseudo-perplexity (not comparable"
        lines.append(
            f"| {role} {what}, {q['tokens']:,} targets, {100 * q['unk_rate']:.2f} % `<unk>`) | {q['ppl']:.1f} |"
        )
    cache = data["sections"].get("cache")
    if cache and "theta" in cache:  # the uni stream cache (a bi-only report has only the fill-in cache)
        lines.append(
            f"| uni + continuous cache (θ {cache['theta']:g}, λ {cache['lam']:g}, chosen on {cache['tune']['split']}: "
            f"{cache['tune']['ppl']:.1f} → {cache['tune']['cache_ppl']:.1f}) | {cache['eval']['cache_ppl']:.1f} |"
        )
    for t in (cache or {}).get("fill", {}).values():
        lines.append(
            f"| {t['method']}: θ {t['theta']:g}, λ {t['lam']:g}, chosen on {t['tune']['split']} (blank perplexity "
            f"{t['tune']['ppl']:.1f} → {t['tune']['cache_ppl']:.1f}) | fill-in below |"
        )
    if fill:
        labels = list(next(iter(fill["methods"].values()))["length"])
        lines += ["", "| top-1 % / top-5 % | all | " + " | ".join(labels) + " |", "|---|" + "---|" * (len(labels) + 1)]
        for method, groups in fill["methods"].items():
            cells = [groups["all"]["all"], *(groups["length"][lab] for lab in labels)]
            shown = [f"{pct(c['top1'])} / {pct(c['top5'])}" + (f" (n={c['n']})" if c["n"] < 30 else "") for c in cells]
            lines.append(f"| {method} ({cells[0]['n']:,} blanks) | " + " | ".join(shown) + " |")
        resampled = fill.get("resampled") or {"unit": "sentence", "units": fill["sentences"]}
        for d in fill.get("differences", []):
            lines.append(
                f"\n{d['a']} − {d['b']}: {100 * d['diff']:+.1f} top-1 points [{pct(d['ci'][0])}, {pct(d['ci'][1])}] "
                f"on {d['n']:,} blanks (95 % bootstrap resampling {resampled['units']:,} {resampled['unit']}s)."
            )
    lines += ["", f"{meta.get('seconds', 0):.0f} s in all. " + report_stamp(meta)]
    return "\n".join(lines)


def gradients(args) -> str | None:
    data = read_json(ROOT / "reports" / "gradients" / "gradients.json")
    if data is None:
        return None
    rows: dict[tuple[str, str], dict] = {}
    for e in data["entries"]:
        rows.setdefault((e["model"], e["direction"]), {})[e["length"]] = e
    lengths = sorted({e["length"] for e in data["entries"]})
    lines = [
        "| model | side | " + " | ".join(f"window {n}" for n in lengths) + f" | far/near at {lengths[-1]} |",
        "|---|---|" + "---|" * (len(lengths) + 1),
    ]
    for (model, side), by_length in rows.items():
        cells = [by_length.get(n, {}).get("half_life") for n in lengths]
        shown = ["no decay" if c is None else f"{c:.2f}" if c < 10 else f"{c:.1f}" for c in cells]
        far = by_length.get(lengths[-1], {}).get("far_near")
        lines.append(f"| {model} | {side} | " + " | ".join(shown) + f" | {'–' if far is None else f'{far:.1e}'} |")
    # The sentence about bi's two sides comes from the same numbers as the table (it once contradicted it).
    sides = {
        side: by_length.get(lengths[-1], {}).get("half_life")
        for (model, side), by_length in rows.items()
        if "bi" in model and by_length.get(lengths[-1], {}).get("half_life") is not None
    }
    if len(sides) == 2:
        (a, ha), (b, hb) = sorted(sides.items(), key=lambda kv: -kv[1])
        lines += [
            "",
            f"At window {lengths[-1]} the trained bi model's {a}-hand half-life is the longer: "
            f"{ha:.1f} against {hb:.1f} words on its {b} side.",
        ]
    lines += [
        "",
        stamp(
            "make report (bilm gradients ... --out reports/gradients)",
            data.get("threads"),
            datetime.fromtimestamp((ROOT / "reports/gradients/gradients.json").stat().st_mtime, timezone.utc).strftime(
                "%Y-%m-%d %H:%M UTC"
            ),
        ),
    ]
    return "\n".join(lines)


def adding(args) -> str | None:
    # `make lab` writes the ledger's adding-problem runs in bench form; older labs wrote reports/adding
    path = next(
        (p for p in (ROOT / "reports/ledger/runs/adding.json", ROOT / "reports/adding/adding.json") if p.is_file()),
        None,
    )
    data = read_json(path) if path else None
    if data is None:
        return None
    lines = ["| cell | T | final MSE | solved | steps | seconds |", "|---|---|---|---|---|---|"]
    for r in data["results"]:
        solved = "**yes**" if r["solved"] else "no"
        lines.append(f"| {r['cell']} | {r['T']} | {r['loss']:.4f} | {solved} | {r['steps']:,} | {r['seconds']:.0f} |")
    when = datetime.fromtimestamp(path.stat().st_mtime, timezone.utc)
    return "\n".join([*lines, "", stamp(data.get("command", "make lab"), None, when.strftime("%Y-%m-%d %H:%M UTC"))])


def mscc(args) -> str | None:
    data = read_json(ROOT / "reports" / "mscc" / "report.json")
    if data is None:
        return None
    result, meta = data["sections"]["mscc"], data["meta"]
    lines = ["| model | accuracy % [95 %] | correct | OOV candidates (keys) |", "|---|---|---|---|"]
    for name, r in result["models"].items():
        lines.append(
            f"| {name} | {pct(r['accuracy'])} [{pct(r['ci'][0])}, {pct(r['ci'][1])}] | {r['correct']:g} / "
            f"{r['questions']:,} | {r['oov_candidates']} ({r['oov_keys']}) |"
        )
    return "\n".join([*lines, "", report_stamp(meta)])


def threads_bench(args) -> str | None:
    cmd = [str(BIN / "python"), "scripts/bench_threads.py", "--quick"]
    return "```\n" + run(cmd).rstrip() + "\n```\n\n" + stamp(" ".join(cmd[1:]), "1 and 2")


def fill_batch(args) -> str | None:
    if not (ROOT / "checkpoints/demo-bi").is_dir():
        return None
    cmd = [str(BIN / "python"), "scripts/bench_fill_batch.py", "checkpoints/demo-bi", "--quick"]
    return "```\n" + run(cmd).rstrip() + "\n```\n\n" + stamp(" ".join(cmd[1:]), 1)


@dataclass
class Figure:
    name: str
    render: Callable
    source: str  # what produces its artifacts


FIGURES = [
    Figure("demo", demo, "make demo"),
    Figure("predictions", predictions, "make demo"),
    Figure("report", report, "make report"),
    Figure("gradients", gradients, "make report"),
    Figure("adding", adding, "make lab"),
    Figure("mscc", mscc, "make models"),
    Figure("models", models, "make models"),
    Figure("models-report", lambda args: report(args, "wt2-models"), "make models"),
    Figure("models-predictions", lambda args: predictions(args, "wt2"), "make models"),
    Figure("threads", threads_bench, "scripts/bench_threads.py"),
    Figure("fill-batch", fill_batch, "make demo + scripts/bench_fill_batch.py"),
]


def replace_blocks(text: str, rendered: dict[str, str]) -> str:
    def sub(m: re.Match) -> str:
        body = rendered.get(m.group("name"))
        return m.group(0) if body is None else f"{m.group(1)}{body.rstrip()}\n{m.group(4)}"

    return BLOCK.sub(sub, text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", help="comma-separated figure names: " + ",".join(f.name for f in FIGURES))
    ap.add_argument("--no-run", action="store_true", help="skip the figures that run a benchmark or the models")
    ap.add_argument("--dry-run", action="store_true", help="print the blocks, write nothing")
    args = ap.parse_args()
    wanted = set(args.only.split(",")) if args.only else {f.name for f in FIGURES}
    unknown = wanted - {f.name for f in FIGURES}
    if unknown:
        sys.exit(f"unknown figure(s): {', '.join(sorted(unknown))}")
    rendered, missing = {}, []
    for f in FIGURES:
        if f.name not in wanted or (args.no_run and f.render in (predictions, threads_bench, fill_batch)):
            continue
        started = time.perf_counter()
        body = f.render(args)
        if body is None:
            missing.append(f"{f.name} (run {f.source})")
            continue
        rendered[f.name] = body
        print(f"{f.name}: rendered in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    targets = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    all_figures = ROOT / "docs" / "figures.md"
    if args.dry_run:
        for name, body in rendered.items():
            print(f"<!-- figure:{name} -->\n{body}\n<!-- /figure:{name} -->\n")
    else:
        for path in targets:
            text = path.read_text()
            new = replace_blocks(text, rendered)
            if new != text:
                path.write_text(new)
                print(f"updated {path.relative_to(ROOT)}", file=sys.stderr)
        old = all_figures.read_text() if all_figures.is_file() else ""
        blocks = {m.group("name"): m.group(0) for m in BLOCK.finditer(old)}
        for name, body in rendered.items():
            blocks[name] = f"<!-- figure:{name} -->\n{body.rstrip()}\n<!-- /figure:{name} -->"
        order = [f.name for f in FIGURES if f.name in blocks]
        all_figures.write_text(
            "# Figures\n\nEvery figure the README and the docs quote, as `scripts/figures.py` (`make figures`) last "
            "rendered it, each with the machine that produced it. Time-budgeted results depend on the machine.\n\n"
            + "\n\n".join(f"## {name}\n\n{blocks[name]}" for name in order)
            + "\n"
        )
    if missing:
        print("not regenerated (artifacts missing): " + ", ".join(missing), file=sys.stderr)


if __name__ == "__main__":
    main()
