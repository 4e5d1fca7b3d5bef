"""Prediction speed: fill-in latency per query, and a whole-test-set evaluation.

    python scripts/bench_predict.py checkpoints/demo-uni checkpoints/demo-bi

latency      30-token WikiText-2 test sentences with the middle word blanked, top 10, one thread,
             timed per query through `Predictor` (what `bilm fill` and the REPL call). Each
             checkpoint is timed against a baseline twin: the same kind and vocabulary in the
             PyTorch example's shape (2x200, tied full softmax, untrained: speed depends on shape
             only), alternating A/B each round; medians over all queries.
evaluation   `bilm evaluate --split test` on both checkpoints (perplexity of every test token,
             every test word blanked for bi and uni-left, a 1,000-blank uni-rescore sample), wall clock.
"""

from __future__ import annotations

import statistics
import tempfile
import time

import click
import torch

from bilm.bench import baseline_configs, peak_rss_mb, percentile
from bilm.checkpoint import Checkpoint, load_checkpoint
from bilm.data import DataConfig, prepare
from bilm.models import build_model
from bilm.predict import Predictor


def baseline_twin(ckpt: Checkpoint) -> Predictor:
    """The example's architecture for the checkpoint's kind and vocabulary, freshly initialised."""
    cfg, _ = baseline_configs(ckpt.model.cfg.kind)
    c = ckpt.model.cfg
    cfg.vocab_size, cfg.pad_id, cfg.unk_id, cfg.bos_id, cfg.eos_id, cfg.blank_id = (
        c.vocab_size,
        c.pad_id,
        c.unk_id,
        c.bos_id,
        c.eos_id,
        c.blank_id,
    )
    model = build_model(cfg).eval()
    return Predictor(Checkpoint(ckpt.path, model, ckpt.tokenizer, ckpt.config, {}))


def queries(ckpt: Checkpoint, n: int, length: int = 30) -> list[str]:
    """`n` test sentences of `length` words with the middle one blanked (the first ones found)."""
    data = prepare(DataConfig(**ckpt.config["data"]), ckpt.config.get("corpus_dir"), log=lambda s: None)
    out = []
    for ids in data.sentences("test"):
        if len(ids) == length:
            words = ckpt.tokenizer.decode(ids)
            words[length // 2] = "___"
            out.append(" ".join(words))
            if len(out) == n:
                break
    return out


@click.command()
@click.argument("checkpoints", nargs=-1, required=True)
@click.option("--queries", "n_queries", type=int, default=40, show_default=True)
@click.option("--rounds", type=int, default=5, show_default=True, help="A/B rounds over all queries.")
@click.option("-k", "k", type=int, default=10, show_default=True)
@click.option("--evaluate/--no-evaluate", default=True, show_default=True, help="Also time `bilm evaluate`.")
@click.option("--eval-threads", type=int, default=None, help="Threads for the evaluation [default: the cores].")
def main(checkpoints, n_queries, rounds, k, evaluate, eval_threads):
    eval_threads = eval_threads or torch.get_num_threads()
    torch.set_num_threads(1)
    ckpts = [load_checkpoint(p) for p in checkpoints]
    texts = queries(ckpts[0], n_queries)
    click.echo(f"{len(texts)} queries of 30 words, e.g. {texts[0]!r}; k={k}, 1 thread, {rounds} rounds")

    timers = {}
    for ckpt in ckpts:
        kind = ckpt.model.cfg.kind
        for label, predictor in ((f"{kind} {ckpt.path}", Predictor(ckpt)), (f"{kind} baseline", baseline_twin(ckpt))):
            predictor.fill(texts[0], k)  # warm up
            timers[label] = predictor
    times: dict[str, list[float]] = {label: [] for label in timers}
    for _ in range(rounds):
        for label, predictor in timers.items():
            for text in texts:
                start = time.perf_counter()
                predictor.fill(text, k)
                times[label].append(1000 * (time.perf_counter() - start))

    click.echo(f"\n{'fill latency (ms/query)':<48}{'median':>8}{'p90':>8}{'max':>8}{'x base':>8}")
    labels = list(times)
    for i, label in enumerate(labels):
        ms = times[label]
        base = times[labels[i + 1]] if "baseline" not in label else ms
        ratio = statistics.median(ms) / statistics.median(base)
        click.echo(f"{label:<48}{statistics.median(ms):>8.2f}{percentile(ms, 0.9):>8.2f}{max(ms):>8.2f}{ratio:>8.2f}")
    click.echo("(uni: left-context ranking plus 50 candidates rescored with the whole sentence, as `bilm fill`)")

    if evaluate:
        from bilm.cli_eval import run_evaluate
        from bilm.evaluate import FillConfig

        torch.set_num_threads(eval_threads)
        roles = {c.model.cfg.kind: str(c.path) for c in ckpts}
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            run_evaluate(roles.get("uni"), roles.get("bi"), "test", out, FillConfig(), log=lambda s: None)
            seconds = time.perf_counter() - start
        click.echo(f"\nbilm evaluate --split test ({', '.join(roles)}, {eval_threads} threads): {seconds:.1f} s")
    click.echo(f"peak RSS {peak_rss_mb():,.0f} MiB")


if __name__ == "__main__":
    main()
