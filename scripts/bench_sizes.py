"""Tokens/s of each model size in fp32 and bf16, one thread: what a minute of training buys (docs/quality.md).

    python scripts/bench_sizes.py                                   # uni and bi; 2x200, 2x400, 1x650
    python scripts/bench_sizes.py --kinds bi --sizes 2x200,2x400 --rounds 2

Every configuration trains through the real Trainer in one process, timed in alternating blocks
(bilm/bench.py), so the ratios compare like with like. Run it alone: other processes on the cores
change every figure (two trainings side by side each got about 60 % of these on a 2-core VM).
"""

from __future__ import annotations

import statistics

import click
import torch

from bilm.bench import StepBench, alternate
from bilm.data import DataConfig, prepare
from bilm.machine import cpu_model
from bilm.models import ModelConfig
from bilm.train import TrainConfig


@click.command()
@click.option("--corpus", default="wikitext-2", show_default=True)
@click.option("--kinds", default="uni,bi", show_default=True)
@click.option("--sizes", default="2x200,2x400,1x650", show_default=True, help="LAYERSxHIDDEN (embedding = hidden).")
@click.option("--rounds", type=click.IntRange(1), default=3, show_default=True)
@click.option("--block", type=float, default=4.0, show_default=True, help="Seconds per timed block.")
def main(corpus, kinds, sizes, rounds, block):
    torch.set_num_threads(1)
    click.echo(f"{cpu_model()}, torch {torch.__version__}, 1 thread")
    data = prepare(DataConfig(corpus), log=click.echo)
    benches = {}
    for kind in kinds.split(","):
        for size in sizes.split(","):
            layers, hidden = map(int, size.split("x"))
            model = ModelConfig(kind=kind, layers=layers, hidden_size=hidden, emb_size=hidden)
            for precision in ("fp32", "bf16"):
                benches[f"{kind} {size} {precision}"] = StepBench(data, model, TrainConfig(precision=precision), 1)
    for b in benches.values():
        b.run(1.0)  # warm up
    tok_s = alternate({name: (lambda b=b: b.run(block)) for name, b in benches.items()}, rounds, log=click.echo)
    click.echo(f"\n{'configuration':<20}{'tokens/s':>10}{'bf16 / fp32':>13}")
    for name, values in tok_s.items():
        ratio = ""
        if name.endswith("bf16"):
            fp32 = tok_s[name.replace("bf16", "fp32")]
            ratio = f"{statistics.median(a / b for a, b in zip(values, fp32, strict=True)):.2f}x"
        click.echo(f"{name:<20}{statistics.median(values):>10,.0f}{ratio:>13}")


if __name__ == "__main__":
    main()
