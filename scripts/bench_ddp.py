"""One process with two threads against two processes with one thread each (torchrun, gloo), on WikiText-2.

    .venv/bin/python scripts/bench_ddp.py --quick          # one round, 8 timed seconds each (< 1 min idle)
    .venv/bin/python scripts/bench_ddp.py --rounds 3 --seconds 20 --kind bi

Both settings train the same global batch (1 x 64 rows against 2 x 32, so the same optimizer steps,
tests/test_distributed.py) through bilm's own Trainer (bench.StepBench), data-parallel as `bilm train`
under torchrun is (DDP, sharded batches, agreed loss and clock), minus validation and checkpoints. Each
setting starts fresh processes; the settings take turns (A B A B ...) so that both see the same load,
and the load average is printed with the figures. tokens/s counts every process's tokens over rank
0's time in its training steps, after a warm-up.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bilm.machine import cpu_model

SCRIPT = Path(__file__).resolve()


def worker(args) -> None:
    """One process of a setting (under torchrun, or alone): warm up, train `seconds`, print rank 0's tokens/s."""
    import torch

    from bilm import distributed
    from bilm.bench import StepBench
    from bilm.data import DataConfig, prepare
    from bilm.models import ModelConfig
    from bilm.train import TrainConfig

    torch.set_num_threads(args.threads)
    group, _ = distributed.setup(torch.device("cpu"))
    with group.main_first():
        data = prepare(DataConfig("wikitext-2"), args.corpus_dir, args.data_dir, log=lambda s: None)
    cfg = TrainConfig(batch_size=args.batch_size, save_every_minutes=0)
    bench = StepBench(data, ModelConfig(kind=args.kind), cfg, args.threads, group=group)
    bench.run(args.warmup)
    tokens_per_s = bench.run(args.seconds)
    if group.is_main:
        print(json.dumps(dict(tokens_per_s=tokens_per_s, precision=bench.trainer.precision)))
    group.close()


def run(setting: dict, args) -> dict:
    cmd = [sys.executable]
    if setting["processes"] > 1:
        cmd += ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={setting['processes']}"]
    cmd += [str(SCRIPT), "--worker", "--kind", args.kind, "--seconds", str(args.seconds), "--warmup", str(args.warmup)]
    cmd += ["--threads", str(setting["threads"]), "--batch-size", str(setting["batch_size"])]
    cmd += ["--data-dir", args.data_dir] + (["--corpus-dir", args.corpus_dir] if args.corpus_dir else [])
    env = dict(os.environ, OMP_NUM_THREADS=str(setting["threads"]))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode:
        sys.exit(f"{setting['name']} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="one round of 8 timed seconds")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=20, help="timed training per run")
    p.add_argument("--warmup", type=float, default=3, help="seconds of training before the timed part")
    p.add_argument("--kind", choices=["uni", "bi"], default="uni")
    p.add_argument("--batch", type=int, default=64, help="global batch: one process's rows")
    p.add_argument("--data-dir", default=os.environ.get("BILM_DATA_DIR", "data"))
    p.add_argument("--corpus-dir", default=os.environ.get("BILM_CORPUS_DIR"))
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--batch-size", type=int, default=64, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args)
        return
    if args.quick:
        args.rounds, args.seconds, args.warmup = 1, 8, 2
    settings = [
        dict(name="1 process x 2 threads", processes=1, threads=2, batch_size=args.batch),
        dict(name="2 processes x 1 thread", processes=2, threads=1, batch_size=args.batch // 2),
    ]
    cpu = cpu_model()
    print(f"{args.kind}, global batch {args.batch}, {args.seconds:g} s timed; {os.cpu_count()} CPUs, "
          f"{cpu or platform.processor()}, load average before {os.getloadavg()[0]:.2f}")  # fmt: skip
    results: dict[str, list[float]] = {s["name"]: [] for s in settings}
    start = time.perf_counter()
    for r in range(args.rounds):
        for s in settings:
            out = run(s, args)
            results[s["name"]].append(out["tokens_per_s"])
            print(f"round {r + 1}: {s['name']:<24} {out['tokens_per_s']:>9,.0f} tokens/s ({out['precision']}), "
                  f"load {os.getloadavg()[0]:.2f}", flush=True)  # fmt: skip
    medians = {name: statistics.median(v) for name, v in results.items()}
    (one, two) = medians.values()
    print(f"median: 1x2 {one:,.0f} tokens/s, 2x1 {two:,.0f} tokens/s, 2x1 / 1x2 = {two / one:.2f} "
          f"({time.perf_counter() - start:.0f} s)")  # fmt: skip


if __name__ == "__main__":
    main()
