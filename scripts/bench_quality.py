"""Quality per CPU-minute: valid perplexity after the same wall-clock budget, side by side.

    python scripts/bench_quality.py --minutes 20          # the example's baseline vs bilm's defaults
    python scripts/bench_quality.py --minutes 3 --no-baseline \\
        --candidate plateau:schedule=plateau --candidate cosine:schedule=cosine

Every configuration trains at the same time in its own process on one thread (torch threads = 1),
so each gets one of the machine's cores for the same minutes; put at most as many side by side as
there are cores. The baseline is the PyTorch example's configuration (`bilm.bench.baseline_configs`).
`--candidate NAME:key=value,...` overrides ModelConfig / TrainConfig fields of bilm's defaults.
The figure is the valid perplexity at the end of the budget (stream, as the example counts it).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import fields, replace
from pathlib import Path

import click


def parse_overrides(spec: str) -> tuple[str, dict]:
    """`name:key=value,key=[1,2]` -> (name, {key: value}); values are read as JSON where they parse."""
    name, _, rest = spec.partition(":")
    overrides = {}
    for item in filter(None, re.split(r",(?![^\[]*\])", rest)):  # commas inside [...] belong to a list
        key, _, value = item.partition("=")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    return name, overrides


def configs(overrides: dict, baseline: bool):
    from bilm.bench import baseline_configs
    from bilm.models import ModelConfig
    from bilm.train import TrainConfig

    model, train = baseline_configs() if baseline else (ModelConfig(), TrainConfig())
    model_keys, train_keys = {f.name for f in fields(ModelConfig)}, {f.name for f in fields(TrainConfig)}
    unknown = set(overrides) - model_keys - train_keys
    if unknown:
        raise click.BadParameter(f"not a ModelConfig or TrainConfig field: {', '.join(sorted(unknown))}")
    model = replace(model, **{k: v for k, v in overrides.items() if k in model_keys})
    train = replace(train, **{k: v for k, v in overrides.items() if k in train_keys})
    return model, train


def run_one(spec: str, minutes: float, threads: int, out: Path) -> None:
    """Child process: train one configuration for `minutes`, write `out/NAME.json`."""
    import torch

    from bilm.bench import peak_rss_mb
    from bilm.data import DataConfig
    from bilm.train import train

    torch.set_num_threads(threads)
    name, overrides = parse_overrides(spec)
    model, train_cfg = configs(overrides, baseline=name == "baseline")
    train_cfg = replace(train_cfg, max_minutes=minutes)
    log = open(out / f"{name}.log", "w")
    result = train(DataConfig("wikitext-2"), model, train_cfg, out / name, log=lambda s: print(s, file=log, flush=True))
    result.update(name=name, model=model.to_dict(), train=train_cfg.to_dict(), peak_rss_mb=round(peak_rss_mb()))
    (out / f"{name}.json").write_text(json.dumps(result, indent=2))


@click.command()
@click.option("--minutes", type=float, default=20.0, show_default=True, help="Wall-clock budget of every run.")
@click.option("--candidate", "candidates", multiple=True, help="NAME:key=value,... (default: bilm's defaults).")
@click.option("--baseline/--no-baseline", default=True, show_default=True, help="Also run the example's baseline.")
@click.option("--threads", type=int, default=1, show_default=True, help="torch threads per run.")
@click.option("--out", type=click.Path(file_okay=False), default="checkpoints/quality", show_default=True)
@click.option("--child", hidden=True)
def main(minutes, candidates, baseline, threads, out, child):
    out = Path(out)
    if child:
        run_one(child, minutes, threads, out)
        return
    specs = (["baseline"] if baseline else []) + list(candidates or ["bilm"])
    out.mkdir(parents=True, exist_ok=True)
    for spec in specs:
        name = parse_overrides(spec)[0]
        if (out / name).exists():
            raise click.ClickException(f"{out / name} exists: choose another --out")
        configs(parse_overrides(spec)[1], baseline=name == "baseline")  # fail before starting anything
    click.echo(f"{len(specs)} runs side by side, {threads} thread(s) each, {minutes:g} min: {', '.join(specs)}")
    cmd = [sys.executable, __file__, "--minutes", str(minutes), "--threads", str(threads), "--out", str(out)]
    env = dict(os.environ, TQDM_DISABLE="1")  # progress bars of parallel runs would overwrite each other
    procs = [subprocess.Popen([*cmd, "--child", spec], env=env) for spec in specs]
    if any(p.wait() for p in procs):
        raise click.ClickException(f"a run failed; see the logs in {out}")

    results = [json.loads((out / f"{parse_overrides(s)[0]}.json").read_text()) for s in specs]
    click.echo(f"\n{'run':<14}{'steps':>8}{'tokens':>12}{'tokens/s':>10}{'valid ppl':>11}{'best':>9}{'RSS MiB':>9}")
    for r in results:
        click.echo(
            f"{r['name']:<14}{r['step']:>8,}{r['train_tokens']:>12,}{r['tokens_per_s']:>10,.0f}"
            f"{r['valid_ppl']:>11.2f}{r['best_valid_ppl']:>9.2f}{r['peak_rss_mb']:>9,}"
        )
    if baseline:
        base = results[0]
        for r in results[1:]:
            click.echo(f"ratio {r['name']} / baseline valid ppl: {r['valid_ppl'] / base['valid_ppl']:.3f}")


if __name__ == "__main__":
    main()
