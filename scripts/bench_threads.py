"""One vs two torch threads, side by side, on the default model size: inference and a train step.

Each setting runs in its own process (OpenMP sizes its pool once), the settings take turns
(1, 2, 1, 2, ...) so that both see the same load, and the machine's load average is printed
with the figures: run it on a busy machine to see what a shared CPU does to two threads.

    .venv/bin/python scripts/bench_threads.py --quick        # ~30 s idle; minutes on a loaded machine
    .venv/bin/python scripts/bench_threads.py --rounds 5 --seconds 10
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

from bilm.machine import describe

VOCAB = 33_278  # WikiText-2


def worker(threads: int, seconds: float) -> dict:
    import torch

    from bilm.models import Batch, ModelConfig, build_model

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    out = {}
    for kind in ("uni", "bi"):
        model = build_model(ModelConfig(kind=kind, vocab_size=VOCAB))
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        if kind == "uni":
            x = torch.randint(5, VOCAB, (64, 35))
            batch = Batch(x, torch.randint(5, VOCAB, (64, 35)))
        else:
            lengths = torch.full((64,), 25)
            x = torch.randint(5, VOCAB, (64, 27))
            batch = Batch(x, lengths=lengths)
        for mode in ("infer", "train"):
            steps, started = 0, time.perf_counter()
            while time.perf_counter() - started < seconds / 4 or steps < 2:
                if mode == "infer":
                    model.eval()
                    with torch.inference_mode():
                        model.loss(batch)
                else:
                    model.train()
                    loss, _ = model.loss(batch)
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                steps += 1
            out[f"{kind} {mode}"] = (time.perf_counter() - started) / steps * 1000
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1 round of 2 s per setting")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=8.0, help="per setting and round (4 jobs share it)")
    ap.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker is not None:
        print(json.dumps(worker(args.worker, args.seconds)))
        return
    rounds, seconds = (1, 2.0) if args.quick else (args.rounds, args.seconds)
    env = dict(os.environ)
    env.pop("OMP_NUM_THREADS", None)
    results: dict[int, list[dict]] = {1: [], 2: []}
    load = []
    for _ in range(rounds):
        for threads in (1, 2):
            load.append(os.getloadavg()[0])
            cmd = [sys.executable, __file__, "--worker", str(threads), "--seconds", str(seconds)]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
            results[threads].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    import torch

    print(f"{describe()}, torch {torch.__version__}, {platform.python_version()}")
    print(f"load average during the runs: {min(load):.2f}-{max(load):.2f}; {rounds} rounds, {seconds:g} s each")
    print(f"{'job (ms/step, median)':<24}{'1 thread':>10}{'2 threads':>11}{'2 vs 1':>9}")
    for job in results[1][0]:
        one = statistics.median(r[job] for r in results[1])
        two = statistics.median(r[job] for r in results[2])
        print(f"{job:<24}{one:>10.1f}{two:>11.1f}{one / two:>8.2f}x")


if __name__ == "__main__":
    main()
