"""Training tokens/s as PyTorch's large CPU tensors get their memory: kept by glibc, 2 MB pages, or fresh 4 kB pages.

    .venv/bin/python scripts/bench_hugepages.py                  # uni and bi, 3 rounds of 40 s each
    .venv/bin/python scripts/bench_hugepages.py --kinds bi --seconds 30 --rounds 2

Every tensor of 2 MB or more that PyTorch allocates on the CPU is, by glibc's default, a fresh mapping
from the kernel, faulted in page by page as it is first written and handed back on `free`: a bi step's
cluster logits alone are tens of MB. Three settings, each in a fresh process (all are read once):

- kept (`MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647`): glibc keeps freed blocks in its heap,
  so a step reuses the pages of the steps before once the heap has grown to its peak;
- 2 MB (`THP_MEM_ALLOC_ENABLE=1`): PyTorch advises the kernel to back such tensors with transparent
  huge pages (`madvise`), so one fault maps 512 times as much;
- 4 kB: glibc's and the kernel's defaults.

What a fault costs depends on the machine, and in a virtual machine on how busy its host is, so the
settings take turns, training from the first step, one thread, the real Trainer on WikiText-2. First the
cause on its own: one (512, 12) x (12, 23281) product, a fresh 47 MB output each call.
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

KEEP = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(2**31 - 1)}  # glibc reads these as it starts
SETTINGS = {  # the environment of each setting's fresh process
    "kept": {**KEEP, "THP_MEM_ALLOC_ENABLE": "0"},
    "2 MB": {"THP_MEM_ALLOC_ENABLE": "1"},
    "4 kB": {"THP_MEM_ALLOC_ENABLE": "0"},
}


def product_ms(calls: int = 20) -> float:
    import time

    import torch

    torch.set_num_threads(1)
    a, w = torch.randn(512, 12), torch.randn(23281, 12)
    for _ in range(10):  # a kept heap grows for a few calls: PyTorch's 64-byte alignment needs a little more each time
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
        env = {k: v for k, v in os.environ.items() if k not in KEEP} | SETTINGS[pages]
        args = [sys.executable, __file__, "--worker", what, "--seconds", str(seconds), "--corpus", corpus]
        out = subprocess.run(args, capture_output=True, text=True, check=True, env=env)
        return json.loads(out.stdout.strip().splitlines()[-1])

    settings = tuple(SETTINGS)
    for pages in settings + settings:
        click.echo(f"(512, 12) x (12, 23281), a new output each call, {pages}: {run('product', pages):.1f} ms")
    runs = {
        f"{kind} {pages}": (lambda k=kind, p=pages: run(k, p)["whole"])
        for kind in kinds.split(",")
        for pages in settings
    }
    tok_s = alternate(runs, rounds, log=click.echo)
    click.echo(f"\n{'model':<6}{'memory':<8}{'tokens/s':>10}{'/ 4 kB':>10}")
    for kind in kinds.split(","):
        for pages in settings:
            ratio = median_ratio(tok_s[f"{kind} {pages}"], tok_s[f"{kind} 4 kB"])
            click.echo(f"{kind:<6}{pages:<8}{statistics.median(tok_s[f'{kind} {pages}']):>10,.0f}{ratio:>9.2f}x")


if __name__ == "__main__":
    main()
