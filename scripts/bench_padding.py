"""Training tokens/s with the output layers' rows padded to a few sizes against unpadded (models.padded_rows).

    .venv/bin/python scripts/bench_padding.py                  # uni and bi, 3 rounds of 60 s each
    .venv/bin/python scripts/bench_padding.py --kinds bi --seconds 30 --rounds 2
    .venv/bin/python scripts/bench_padding.py --kinds bi --preset large   # the hour models' 2x400

oneDNN builds a kernel for every matrix-product shape it has not met in the process, and the rows
of a batch that fall in each adaptive-softmax cluster are a new count at almost every step. So
each configuration trains in a fresh process, from its first step (what `bilm train` pays), one
thread, the real Trainer on WikiText-2, and the two take turns (padded, unpadded, padded, ...).
Tokens/s is over the whole window and over its second half (once most shapes are built).
First, the cause on its own: one product, (n, 12) x (12, 23281) as in the rare-word cluster, timed with
a new row count n at every call and then with the same counts again.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys

import click

from bilm.machine import cpu_flags, cpu_model


def worker(kind: str, padded: bool, seconds: float, corpus: str, preset_name: str) -> dict:
    import torch

    from bilm import models
    from bilm.bench import StepBench
    from bilm.data import DataConfig, prepare
    from bilm.models import ModelConfig, preset
    from bilm.train import PRESET_LR, TrainConfig

    if not padded:
        models.padded_rows = lambda index, pad=True: index
    torch.set_num_threads(1)
    data = prepare(DataConfig(corpus), log=lambda s: None)
    model = ModelConfig(kind=kind, **preset(preset_name, kind))
    bench = StepBench(data, model, TrainConfig(lr=PRESET_LR[preset_name]), 1)
    first = bench.run(seconds / 2)
    second = bench.run(seconds / 2)
    return dict(first=first, second=second, whole=2 / (1 / first + 1 / second))


def median_ratio(a: list[float], b: list[float]) -> float:
    """The median over rounds of a's tokens/s over b's: each round's two ran in turn, on the same host load."""
    return statistics.median(x / y for x, y in zip(a, b, strict=True))


def kernel_builds(calls: int = 40) -> dict:
    """ms per product: each call a new row count, then the same counts again (kernels built)."""
    import time

    import torch

    torch.set_num_threads(1)
    out = {}
    for dtype in (torch.bfloat16, torch.float32):
        w = torch.randn(23281, 12).to(dtype)
        first = 300 if dtype == torch.bfloat16 else 400  # counts the bf16 loop has not built
        counts = range(first, first + calls)
        for label in ("new", "again"):
            start = time.perf_counter()
            for n in counts:
                torch.ones(n, 12, dtype=dtype) @ w.t()
            out[f"{str(dtype).removeprefix('torch.')} {label}"] = (time.perf_counter() - start) / calls * 1e3
    return out


@click.command()
@click.option("--kinds", default="uni,bi", show_default=True)
@click.option("--seconds", type=float, default=60.0, show_default=True, help="Training time per process.")
@click.option("--rounds", type=click.IntRange(1), default=3, show_default=True)
@click.option("--corpus", default="wikitext-2", show_default=True)
@click.option("--preset", "preset_name", type=click.Choice(["small", "large"]), default="small", show_default=True)
@click.option("--worker", "worker_args", hidden=True, default=None)
def main(kinds, seconds, rounds, corpus, preset_name, worker_args):
    if worker_args:
        kind, padded = worker_args.split(",")
        click.echo(json.dumps(worker(kind, padded == "padded", seconds, corpus, preset_name)))
        return
    bf16 = "with" if {"avx512_bf16", "amx_bf16"} & cpu_flags() else "without"
    click.echo(
        f"{cpu_model()} ({bf16} native bf16), one thread, preset {preset_name}, {seconds:.0f} s per fresh process"
    )
    k = kernel_builds()
    for dtype in ("bfloat16", "float32"):
        click.echo(
            f"(n, 12) x (12, 23281) {dtype}: new n each call {k[dtype + ' new']:.1f} ms, "
            f"the same n again {k[dtype + ' again']:.1f} ms"
        )
    results: dict[tuple[str, str], list[dict]] = {}
    for r in range(rounds):
        for kind in kinds.split(","):
            for mode in ("padded", "unpadded"):
                args = [sys.executable, __file__, "--worker", f"{kind},{mode}", "--seconds", str(seconds)]
                args += ["--corpus", corpus, "--preset", preset_name]
                out = subprocess.run(args, capture_output=True, text=True, check=True)
                figures = json.loads(out.stdout.strip().splitlines()[-1])
                results.setdefault((kind, mode), []).append(figures)
                click.echo(f"round {r + 1}/{rounds}: {kind} {mode} {figures['whole']:,.0f} tokens/s")
    click.echo(f"\n{'model':<6}{'rows':<10}{'whole':>10}{'2nd half':>10}{'padded / unpadded':>20}")
    for kind in kinds.split(","):
        for mode in ("padded", "unpadded"):
            runs = results[(kind, mode)]
            whole = statistics.median(f["whole"] for f in runs)
            late = statistics.median(f["second"] for f in runs)
            ratio = ""
            if mode == "padded":
                wholes = ([f["whole"] for f in results[(kind, m)]] for m in ("padded", "unpadded"))
                ratio = f"{median_ratio(*wholes):.2f}x"
            click.echo(f"{kind:<6}{mode:<10}{whole:>10,.0f}{late:>10,.0f}{ratio:>20}")


if __name__ == "__main__":
    main()
