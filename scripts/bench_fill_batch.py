"""Sentences per second: `bilm fill CKPT --input FILE` (one process, batches) vs one `bilm fill` per sentence.

Both run the real command line, start-up included, on the same raw sentences. Wall-clock and
CPU seconds (user + system of the child processes) are printed: on a shared machine the CPU
figure is the steadier one.

    .venv/bin/python scripts/bench_fill_batch.py checkpoints/demo-bi --quick      # 2 single runs, 64 lines
    .venv/bin/python scripts/bench_fill_batch.py checkpoints/demo-bi --single 10 --lines 1000
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bilm.machine import describe

SENTENCES = [
    "I don't know why the ___ is so expensive.",
    'He said "the ___ is red" and left.',
    "It's a well-known ___ in the north of England.",
    "The boys went to the ___ and then got out of the pool.",
    "In 1,000 cases the ___ was never found.",
    "She played the ___ in the 1990-91 season.",
    "The album was released in the ___ in 2004.",
    "After the war, the ___ returned to London.",
]


def run(cmd: list[str], stdin: str | None = None) -> tuple[float, float]:
    """Wall and CPU seconds of one command (which must succeed)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(cmd, input=stdin, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--quick", action="store_true", help="2 single runs and 64 lines")
    ap.add_argument("--single", type=int, default=5, help="sentences answered one process each")
    ap.add_argument("--lines", type=int, default=500, help="sentences answered by one --input run")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    single, lines = (2, 64) if args.quick else (args.single, args.lines)
    bilm = str(Path(sys.executable).with_name("bilm"))
    env_threads = ["--threads", str(args.threads)]
    wall_1 = cpu_1 = 0.0
    for i in range(single):
        w, c = run([bilm, "fill", args.checkpoint, SENTENCES[i % len(SENTENCES)], "--json", *env_threads])
        wall_1, cpu_1 = wall_1 + w, cpu_1 + c
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "sentences.txt"
        path.write_text("".join(SENTENCES[i % len(SENTENCES)] + "\n" for i in range(lines)))
        wall_b, cpu_b = run([bilm, "fill", args.checkpoint, "--input", str(path), "--json", *env_threads])
    print(
        f"{describe()}, load average {os.getloadavg()[0]:.2f}, {args.threads} thread(s), "
        f"Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}"
    )
    print(f"{'':<34}{'sentences':>10}{'wall s':>9}{'CPU s':>8}{'sent/s wall':>13}{'sent/s CPU':>12}")
    for name, n, w, c in (
        ("one process per sentence", single, wall_1, cpu_1),
        ("bilm fill --input (one process)", lines, wall_b, cpu_b),
    ):
        print(f"{name:<34}{n:>10}{w:>9.1f}{c:>8.1f}{n / w:>13.2f}{n / c:>12.2f}")
    print(
        f"batch vs one process per sentence: {(lines / wall_b) / (single / wall_1):.0f}x (wall), "
        f"{(lines / cpu_b) / (single / cpu_1):.0f}x (CPU)"
    )


if __name__ == "__main__":
    main()
