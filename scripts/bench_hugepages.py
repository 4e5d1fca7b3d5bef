"""Training tokens/s with PyTorch's large CPU tensors on 2 MB pages (THP_MEM_ALLOC_ENABLE=1) or 4 kB.

    .venv/bin/python scripts/bench_hugepages.py                  # uni and bi, 3 rounds of 40 s each
    .venv/bin/python scripts/bench_hugepages.py --kinds bi --seconds 30 --rounds 2

Every tensor of 2 MB or more that PyTorch allocates on the CPU is a fresh mapping from the kernel,
faulted in page by page as it is first written: a bi step's cluster logits alone are tens of MB. With
THP_MEM_ALLOC_ENABLE=1 (an environment variable of PyTorch's) PyTorch advises the kernel to back such tensors with
transparent huge pages (`madvise`), so one fault maps 512 times as much. What a fault costs depends on
the machine, and in a virtual machine on how busy its host is, so the two settings take turns, each in a
fresh process (the variable is read once per process), training from its first step, one thread, the
real Trainer on WikiText-2. First the cause on its own: one (512, 12) x (12, 23281) product, a fresh 47 MB
output each call.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys

import click
from bench_padding import median_ratio, worker  # this folder is on sys.path

from bilm.bench import alternate
from bilm.machine import cpu_model


def product_ms(calls: int = 20) -> float:
    import time

    import torch

    torch.set_num_threads(1)
    a, w = torch.randn(512, 12), torch.randn(23281, 12)
    a @ w.t()
    start = time.perf_counter()
    for _ in range(calls):
        a @ w.t()
    return (time.perf_counter() - start) / calls * 1e3


def thp_mode() -> str:
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            return f.read().split("[")[1].split("]")[0]
    except (OSError, IndexError):
        return "unavailable"


@click.command()
@click.option("--kinds", default="uni,bi", show_default=True)
@click.option("--seconds", type=float, default=40.0, show_default=True, help="Training time per process.")
@click.option("--rounds", type=click.IntRange(1), default=3, show_default=True)
@click.option("--corpus", default="wikitext-2", show_default=True)
@click.option("--worker", "worker_args", hidden=True, default=None)
def main(kinds, seconds, rounds, corpus, worker_args):
    if worker_args:
        figures = product_ms() if worker_args == "product" else worker(worker_args, True, seconds, corpus, "small")
        click.echo(json.dumps(figures))
        return
    click.echo(f"{cpu_model()}, transparent huge pages: {thp_mode()}, one thread, {seconds:.0f} s per fresh process")

    def run(what: str, pages: str) -> dict | float:
        env = {**os.environ, "THP_MEM_ALLOC_ENABLE": "1" if pages == "2 MB" else "0"}
        args = [sys.executable, __file__, "--worker", what, "--seconds", str(seconds), "--corpus", corpus]
        out = subprocess.run(args, capture_output=True, text=True, check=True, env=env)
        return json.loads(out.stdout.strip().splitlines()[-1])

    settings = ("2 MB", "4 kB")
    for pages in settings + settings:
        click.echo(f"(512, 12) x (12, 23281), fresh output each call, {pages} pages: {run('product', pages):.1f} ms")
    runs = {
        f"{kind} {pages}": (lambda k=kind, p=pages: run(k, p)["whole"])
        for kind in kinds.split(",")
        for pages in settings
    }
    tok_s = alternate(runs, rounds, log=click.echo)
    click.echo(f"\n{'model':<6}{'pages':<8}{'tokens/s':>10}{'2 MB / 4 kB':>14}")
    for kind in kinds.split(","):
        for pages in settings:
            ratio = f"{median_ratio(tok_s[f'{kind} 2 MB'], tok_s[f'{kind} 4 kB']):.2f}x" if pages == "2 MB" else ""
            click.echo(f"{kind:<6}{pages:<8}{statistics.median(tok_s[f'{kind} {pages}']):>10,.0f}{ratio:>14}")


if __name__ == "__main__":
    main()
