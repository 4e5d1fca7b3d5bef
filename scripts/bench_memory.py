"""Memory: `prepare` of a 100 M-token corpus, and training memory against corpus size.

    python scripts/bench_memory.py --work /tmp/bilm-big          # 100 M tokens, ~0.5 GB of text
    python scripts/bench_memory.py --work /tmp/bilm-big --no-prepare   # training only, reusing WORK
    python scripts/bench_memory.py --quick --ddp 2     # 10 M tokens, 8 s; training as 2 torchrun processes

The big corpus is WikiText-2's train split repeated, each copy in a new (seeded) line order,
with WikiText-2's own valid and test splits, written as `WORK/wikitext-2/` so that it is read
exactly as WikiText-2 is. Each measurement runs in a fresh process and reports that process's
peak resident memory (ru_maxrss): prepare of the big corpus, then uni and bi training (bilm's defaults, the
real trainer and batches, no validation) for the same seconds on WikiText-2 and on the big corpus.
With `--ddp N` each training runs as N processes under torchrun (gloo), and every rank reports its own
memory: each maps the corpus files and reads its rows of them, none copies the corpus.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import click


def make_big_corpus(source: Path, out: Path, tokens: int, seed: int = 0) -> int:
    """Write `out/{train,valid,test}.txt`: the train lines shuffled and repeated to >= `tokens` tokens."""
    out.mkdir(parents=True, exist_ok=True)
    lines = (source / "train.txt").read_text(encoding="utf-8").splitlines()
    per_copy = sum(len(line.split()) + 1 for line in lines)  # + <eos>, as the stream counts
    copies = -(-tokens // per_copy)
    rng = random.Random(seed)
    with open(out / "train.txt", "w", encoding="utf-8") as f:
        for _ in range(copies):
            rng.shuffle(lines)
            f.write("\n".join(lines) + "\n")
    for split in ("valid", "test"):
        (out / f"{split}.txt").write_text((source / f"{split}.txt").read_text(encoding="utf-8"), encoding="utf-8")
    return copies * per_copy


def child(task: str, corpus_dir: str | None, data_dir: str | None, seconds: float) -> dict:
    """One measurement in this (fresh) process."""
    import torch

    from bilm import distributed
    from bilm.bench import StepBench, peak_rss_mb
    from bilm.data import DataConfig, prepare
    from bilm.models import ModelConfig
    from bilm.train import TrainConfig

    start = time.perf_counter()
    group, _ = distributed.setup(torch.device("cpu"))  # a group of one unless torchrun started this
    if task == "prepare":
        data = prepare(DataConfig("wikitext-2"), corpus_dir, data_dir, log=lambda s: None)
        result = dict(train_tokens=data.meta["splits"]["train"]["tokens"], vocab=data.meta["vocab_size"])
    else:
        with group.main_first():
            data = prepare(DataConfig("wikitext-2"), corpus_dir, data_dir, log=lambda s: None)
        bench = StepBench(data, ModelConfig(kind=task.removeprefix("train-")), TrainConfig(), group=group)
        tokens_per_s = bench.run(seconds)
        result = dict(
            steps=bench.trainer.step, tokens_per_s=round(tokens_per_s), train_tokens=len(data.stream("train"))
        )
    seconds = round(time.perf_counter() - start, 1)
    result.update(rank=group.rank, processes=group.world)
    group.close()
    return dict(task=task, seconds=seconds, peak_rss_mb=round(peak_rss_mb()), **resident_now(), **result)


def resident_now() -> dict:
    """This process's resident memory now, split into anonymous (its own allocations) and file-backed pages.

    File pages of the memory-mapped corpus count in the peak RSS but are page cache the kernel can
    drop; the anonymous part is what training itself holds. Linux only (empty elsewhere).
    """
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return {}
    kb = {k: int(v.split()[0]) for k, v in (line.split(":", 1) for line in status.splitlines()) if k.startswith("Rss")}
    return dict(anon_mb=round(kb.get("RssAnon", 0) / 1024), file_mb=round(kb.get("RssFile", 0) / 1024))


def measure(task: str, corpus_dir: Path | None, data_dir: Path | None, seconds: float, ddp: int = 1) -> list[dict]:
    """The measurement in fresh processes (`ddp` of them under torchrun): one result per process, by rank."""
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ddp}"] if ddp > 1 else []
    cmd = [sys.executable, *launcher, __file__, "--child", task, "--seconds", str(seconds)]
    if corpus_dir:
        cmd += ["--corpus-dir", str(corpus_dir), "--data-dir", str(data_dir)]
    env = dict(os.environ, OMP_NUM_THREADS="1") if ddp > 1 else None
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode:
        raise click.ClickException(f"{task} failed:\n{proc.stderr[-2000:]}")
    found = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return sorted(found, key=lambda r: r.get("rank", 0))


@click.command()
@click.option("--work", type=click.Path(file_okay=False), default="/tmp/bilm-big", show_default=True)
@click.option("--tokens", type=int, default=100_000_000, show_default=True, help="Size of the big train split.")
@click.option("--seconds", type=float, default=20, show_default=True, help="Training time per memory run.")
@click.option("--source", envvar="BILM_CORPUS_DIR", default="../shared/corpora", show_default=True)
@click.option("--prepare/--no-prepare", default=True, show_default=True, help="Measure prepare (else: reuse WORK).")
@click.option("--ddp", type=click.IntRange(1), default=1, show_default=True, help="Processes per training run.")
@click.option("--quick", is_flag=True, help="A 10 M-token corpus (in WORK-quick) and 8 s per training run.")
@click.option("--child", "task", hidden=True)
@click.option("--corpus-dir", hidden=True)
@click.option("--data-dir", hidden=True)
def main(work, tokens, seconds, source, prepare, ddp, quick, task, corpus_dir, data_dir):
    if task:
        click.echo(json.dumps(child(task, corpus_dir, data_dir, seconds)))
        return
    if quick:
        work, tokens, seconds = f"{work}-quick", 10_000_000, 8
    work = Path(work)
    big_dir, big_data = work / "corpora", work / "data"
    if not (big_dir / "wikitext-2" / "train.txt").is_file():
        start = time.perf_counter()
        n = make_big_corpus(Path(source) / "wikitext-2", big_dir / "wikitext-2", tokens)
        click.echo(f"wrote {n:,} train tokens to {big_dir / 'wikitext-2'} in {time.perf_counter() - start:.0f} s")
    if prepare:
        (r,) = measure("prepare", big_dir, big_data, seconds)
        tokens, rss = r["train_tokens"], r["peak_rss_mb"]
        click.echo(f"prepare {tokens:,} train tokens: {r['seconds']:.0f} s, peak RSS {rss:,} MiB")
    for kind in ("uni", "bi"):
        for corpus, data in ((None, None), (big_dir, big_data)):
            for r in measure(f"train-{kind}", corpus, data, seconds, ddp):
                who = f" rank {r['rank']}/{r['processes']}" if ddp > 1 else ""
                click.echo(
                    f"train {kind:<3}{who} on {r['train_tokens']:>11,} train tokens: "
                    f"peak RSS {r['peak_rss_mb']:,} MiB, "
                    f"at the end {r.get('anon_mb', '?')} MiB anonymous + {r.get('file_mb', '?')} MiB file-backed "
                    f"({r['steps']} steps, {r['tokens_per_s']:,} tokens/s, {r['seconds']:.0f} s incl. loading)"
                )


if __name__ == "__main__":
    main()
