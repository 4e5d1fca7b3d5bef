"""Training throughput: bilm's defaults and each speed lever against the PyTorch example's configuration.

    python scripts/bench_train.py --quick              # baseline, uni and bi defaults (< 3 min)
    python scripts/bench_train.py                      # every lever
    python scripts/bench_train.py --only uni-fp32,uni-bf16 --ppl-tokens 500000   # and valid ppl after 0.5 M tokens

configurations: baseline (the PyTorch example, see bilm/bench.py), uni and bi (bilm's defaults), and
each lever changed alone from uni's defaults: uni-full-softmax (tied), uni-batch20, uni-batch128 (lr
4e-3), uni-fp32 / uni-bf16 / bi-fp32 / bi-bf16 (`--precision auto`, the default, is bf16 where the CPU
has it natively and fp32 elsewhere), uni-large / bi-large (`--preset large`), uni-1thread,
uni-adamw-loop / bi-adamw-loop (AdamW as a loop over parameters instead of the default fused kernel),
uni-dropout-per-step (a fresh dropout mask per time step instead of LockedDropout), uni-cutoffs-2k
(adaptive softmax head of 2,000 words instead of 1,000).

All configurations live in one process and are timed in alternating blocks (see bilm/bench.py);
each row is the median over the rounds, and "x base" the median of the per-round ratios to the
baseline. GFLOP/s counts the GEMMs of the model's shape (`train_flops_per_token`) against a
2048^2 matmul measured here on the same threads. The last line, `speedup: N.NNx`, is uni
(bilm defaults) over the baseline.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import replace

import click
import torch

from bilm.bench import (
    StepBench,
    alternate,
    baseline_configs,
    cluster_shares,
    gemm_peak,
    peak_rss_mb,
    train_flops_per_token,
)
from bilm.data import DataConfig, prepare
from bilm.models import ModelConfig, adaptive_cutoffs, preset
from bilm.train import TrainConfig


def variants(quick: bool, threads: int) -> dict[str, tuple]:
    """name -> (model, training settings, threads, fused AdamW: None keeps the trainer's). The first is the baseline."""
    base_model, base_train = baseline_configs()
    uni, bi, defaults = ModelConfig(kind="uni"), ModelConfig(kind="bi"), TrainConfig()
    out = {
        "baseline": (base_model, base_train, threads, None),
        "uni": (uni, defaults, threads, None),
        "bi": (bi, defaults, threads, None),
    }
    if not quick:
        out.update(
            {
                "uni-full-softmax": (replace(uni, output="full"), defaults, threads, None),
                "uni-batch20": (uni, replace(defaults, batch_size=20), threads, None),
                "uni-batch128": (uni, replace(defaults, batch_size=128, lr=4e-3), threads, None),
                "uni-fp32": (uni, replace(defaults, precision="fp32"), threads, None),
                "uni-bf16": (uni, replace(defaults, precision="bf16"), threads, None),
                "bi-fp32": (bi, replace(defaults, precision="fp32"), threads, None),
                "bi-bf16": (bi, replace(defaults, precision="bf16"), threads, None),
                "uni-large": (ModelConfig(kind="uni", **preset("large", "uni")), defaults, threads, None),
                "bi-large": (ModelConfig(kind="bi", **preset("large", "bi")), defaults, threads, None),
                "uni-1thread": (uni, defaults, 1, None),
                "uni-adamw-loop": (uni, defaults, threads, False),
                "uni-dropout-per-step": (replace(uni, locked_dropout=False), defaults, threads, None),
                "uni-cutoffs-2k": (replace(uni, cutoffs=[2000, 10000]), defaults, threads, None),
                "bi-adamw-loop": (bi, defaults, threads, False),
            }
        )
    return out


@click.command()
@click.option("--quick", is_flag=True, help="Baseline, uni and bi defaults only; about 2 minutes.")
@click.option("--corpus", default="wikitext-2", show_default=True)
@click.option("--rounds", type=int, default=5, show_default=True, help="A/B rounds.")
@click.option("--block", type=float, default=None, help="Seconds per timed block [default: 4, quick 5].")
@click.option("--threads", type=int, default=None, help="torch threads [default: torch's, i.e. the cores].")
@click.option("--only", help="Comma-separated configurations to run (the baseline always runs).")
@click.option("--ppl-tokens", type=int, default=0, help="Then train each one to N tokens and report its valid ppl.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Also write the figures here.")
def main(quick, corpus, rounds, block, threads, only, ppl_tokens, json_out):
    block = block or (5.0 if quick else 4.0)
    threads = threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    data = prepare(DataConfig(corpus), log=click.echo)
    chosen = variants(quick and not only, threads)
    if only:
        unknown = set(only.split(",")) - set(chosen)
        if unknown:
            raise click.BadParameter(f"unknown: {', '.join(sorted(unknown))}; choose from {', '.join(chosen)}")
        chosen = {k: v for k, v in chosen.items() if k == "baseline" or k in only.split(",")}
    benches = {name: StepBench(data, *v) for name, v in chosen.items()}
    peak = {}  # (dtype, threads) -> GFLOP/s of a 2048^2 matmul
    for n in sorted({b.threads for b in benches.values()}):
        torch.set_num_threads(n)
        for dtype in ("fp32", "bf16"):
            peak[dtype, n] = gemm_peak(getattr(torch, "float32" if dtype == "fp32" else "bfloat16"))
        click.echo(
            f"torch {torch.__version__}, {n} thread(s): 2048^2 matmul fp32 {peak['fp32', n]:.0f} GFLOP/s, "
            f"bf16 {peak['bf16', n]:.0f} GFLOP/s"
        )
    for b in benches.values():
        b.run(1.0)  # warm up: allocator, oneDNN kernels
    runs = {name: (lambda b=b: b.run(block)) for name, b in benches.items()}
    tok_s = alternate(runs, rounds, log=click.echo)

    base = next(iter(benches))
    rows = []
    train_ids = data.stream("train")
    for name, b in benches.items():
        cfg = b.model_cfg
        cutoffs = adaptive_cutoffs(cfg)
        shares = cluster_shares(train_ids, cutoffs, cfg.vocab_size) if cutoffs else None
        flops = train_flops_per_token(cfg, shares)
        median = statistics.median(tok_s[name])
        ratio = statistics.median(a / r for a, r in zip(tok_s[name], tok_s[base], strict=True))
        dtype = b.trainer.precision  # `auto` resolved: bf16 where the CPU has it natively
        gflops = median * flops / 1e9
        rows.append(
            dict(
                name=name,
                tokens_per_s=round(median),
                low=round(min(tok_s[name])),
                high=round(max(tok_s[name])),
                ratio=round(ratio, 2),
                mflop_per_token=round(flops / 1e6, 2),
                gflop_s=round(gflops, 1),
                peak_fraction=round(gflops / peak[dtype, b.threads], 3),
                threads=b.threads,
                batch_size=b.train_cfg.batch_size,
            )
        )

    if ppl_tokens:
        for name, b in benches.items():
            if name == base:
                continue
            b.train_tokens(ppl_tokens)
            row = next(r for r in rows if r["name"] == name)
            row["valid_ppl"] = round(b.valid_ppl(), 2)
            click.echo(f"{name}: valid ppl {row['valid_ppl']:.2f} after {b.trainer.tokens:,} tokens")

    click.echo(
        f"\n{'configuration':<22}{'tokens/s':>10}{'range':>16}{'x base':>8}{'MFLOP/tok':>10}"
        f"{'GFLOP/s':>9}{'of peak':>9}" + (f"{'valid ppl':>11}" if ppl_tokens else "")
    )
    for r in rows:
        span = f"{r['low']:,}-{r['high']:,}"
        click.echo(
            f"{r['name']:<22}{r['tokens_per_s']:>10,}{span:>16}{r['ratio']:>8.2f}"
            f"{r['mflop_per_token']:>10.2f}{r['gflop_s']:>9.1f}{100 * r['peak_fraction']:>8.0f}%"
            + (f"{r.get('valid_ppl', '-'):>11}" if ppl_tokens else "")
        )
    click.echo(f"peak RSS {peak_rss_mb():,.0f} MiB (this process, all configurations)")
    if json_out:
        peaks = {f"{d} {n} thread(s)": round(v, 1) for (d, n), v in peak.items()}
        summary = dict(threads=threads, rounds=rounds, block_s=block, gemm_peak_gflop_s=peaks, rows=rows)
        with open(json_out, "w") as f:
            json.dump(summary, f, indent=2)
    uni = next((r for r in rows if r["name"] == "uni"), None)
    if uni:
        click.echo(f"speedup: {uni['ratio']:.2f}x")


if __name__ == "__main__":
    main()
