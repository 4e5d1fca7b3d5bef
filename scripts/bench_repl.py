"""How fast `bilm repl` is ready, and how fast it answers (issue 3: ready <= 2 s, a query << 100 ms).

    python scripts/bench_repl.py checkpoints/wt2-bi --compare checkpoints/wt2-uni

time to ready   a fresh `python` running the REPL, from its start until the banner (printed just
                before the first prompt): interpreter, torch import, both checkpoints loaded
per query       one REPL line end to end (both models, table formatted), in this process after
                one warm-up line: median, p90 and max over --queries lines
"""

from __future__ import annotations

import io
import statistics
import subprocess
import sys
import time

import click

SENTENCES = [
    "the boys went to the ___ and then got out of the pool .",
    "she opened the ___ and looked outside .",
    "the ___ of the united states is elected every four years .",
    "he was born in a small ___ in the north of england .",
    "the film received positive ___ from critics .",
    "they ___ the game by three points .",
    "the river flows into the ___ near the city .",
    "after the war , he returned to his ___ and family .",
    "the album was released in ___ 2009 .",
    "the song reached number one on the ___ chart in the united kingdom and stayed there for weeks .",
    "___ is the largest city in the state .",
    "the team played their home games at the ___ .",
]
NEXT = ["the boys went to the", "in the early years of the", "the company was founded in"]


def time_to_ready(checkpoint: str, compare: str | None, threads: int) -> float:
    """Seconds from process start to the banner line of a fresh REPL process."""
    args = [checkpoint, "--threads", str(threads)] + (["--compare", compare] if compare else [])
    code = f"import sys; from bilm.repl import repl; repl({args!r})"
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    banner = proc.stdout.readline()
    ready = time.perf_counter() - start
    proc.communicate(":quit\n", timeout=60)
    if not banner.startswith("bilm repl:"):
        raise click.ClickException(f"the REPL did not start: {banner}{proc.stderr}")
    return ready


@click.command()
@click.argument("checkpoint")
@click.option("--compare", help="The second checkpoint, as for `bilm repl --compare`.")
@click.option("--queries", type=int, default=50, show_default=True)
@click.option("-k", "k", type=int, default=10, show_default=True)
@click.option("--starts", type=int, default=3, show_default=True, help="Fresh processes timed for time-to-ready.")
@click.option("--threads", type=int, default=1, show_default=True, help="As `bilm repl --threads`.")
def main(checkpoint, compare, queries, k, starts, threads):
    readies = [time_to_ready(checkpoint, compare, threads) for _ in range(starts)]

    start = time.perf_counter()
    import torch

    from bilm.predict import Predictor
    from bilm.repl import Repl

    imported = time.perf_counter()
    from bilm.bench import percentile

    torch.set_num_threads(threads)
    predictors = [Predictor.load(checkpoint)] + ([Predictor.load(compare)] if compare else [])
    loaded = time.perf_counter()

    repl = Repl(predictors, io.StringIO(), k, width=100)
    lines = [SENTENCES[i % len(SENTENCES)] for i in range(queries)]
    first = time.perf_counter()
    repl.handle(lines[0])
    first = time.perf_counter() - first
    fills = []
    for line in lines:
        t = time.perf_counter()
        repl.handle(line)
        fills.append(time.perf_counter() - t)
    nexts = []
    for line in NEXT * 3:
        t = time.perf_counter()
        repl.handle(line)
        nexts.append(time.perf_counter() - t)

    models = ", ".join(
        f"{p.kind} {p.ckpt.path} ({sum(x.numel() for x in p.model.parameters()):,} params, vocab {len(p.tokenizer):,})"
        for p in predictors
    )
    ms = lambda s: f"{1000 * s:.1f} ms"  # noqa: E731
    click.echo(f"models          {models}")
    click.echo(
        f"cpu threads     {torch.get_num_threads()} (torch), python {sys.version.split()[0]}, torch {torch.__version__}"
    )
    click.echo(
        f"time to ready   median {statistics.median(readies):.2f} s over {starts} fresh processes "
        f"(min {min(readies):.2f}, max {max(readies):.2f})"
    )
    click.echo(
        f"  in process    import torch+bilm {imported - start:.2f} s, load checkpoints {loaded - imported:.2f} s"
    )
    click.echo(f"first query     {ms(first)}")
    click.echo(
        f"fill a blank    median {ms(statistics.median(fills))}, p90 {ms(percentile(fills, 0.9))}, "
        f"max {ms(max(fills))} over {len(fills)} lines (k={k})"
    )
    click.echo(
        f"next word       median {ms(statistics.median(nexts))}, p90 {ms(percentile(nexts, 0.9))}, "
        f"max {ms(max(nexts))} over {len(nexts)} lines"
    )


if __name__ == "__main__":
    main()
