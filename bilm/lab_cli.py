"""`bilm gradients` and `bilm bench`: the vanishing-gradient lab on the command line.

bilm gradients checkpoints/wt2-uni checkpoints/wt2-bi --lengths 10,20,40,80 --out reports/grad
bilm gradients --untrained --cell rnn-sigmoid,rnn-tanh,lstm,esn --out reports/grad-init
bilm gradients checkpoints/wt2-uni --untrained --cell lstm,esn --corpus wikitext-2 --bench reports/adding --out r/
bilm bench adding --cells lstm,gru,irnn,rnn-tanh --lengths 50,100,200 --lr irnn=1e-4 --out reports/adding
bilm bench adding --cells irnn,rnn-tanh --lengths 100 --optimizer sgd --lr 0.01 --clip 0,1 --out reports/clipping
bilm bench copy --cells lstm,gru --lengths 20,50

Registered on the main group by cli.py (`cli.add_command(gradients)`, `cli.add_command(bench)`).
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import click
import torch

from .cells import CELLS, INITS
from .errors import BilmError
from .options import comma_list, count, non_negative, positive, rate, vocab_size
from .threads import threads_option


def _numbers(text: str, what: str, kind=float, noun: str = "numbers") -> list:
    try:
        return [kind(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise BilmError(f"{what} must be comma-separated {noun}, got {text!r}") from None


def _ints(text: str, what: str) -> list[int]:
    values = _numbers(text, what, int, "whole numbers")
    if not values or min(values) < 1:
        raise BilmError(f"{what} must be positive whole numbers, got {text!r}")
    return values


def _cells(text: str) -> list[str]:
    cells = [c.strip() for c in text.split(",") if c.strip()]
    unknown = [c for c in cells if c not in CELLS]
    if unknown or not cells:
        raise BilmError(f"unknown cell {', '.join(unknown) or text!r}; choose from {', '.join(CELLS)}")
    return cells


def _options(pairs: tuple[str, ...]) -> dict:
    """`--option sr=0.95 --option lr=0.5` -> {"sr": 0.95, "lr": 0.5}."""
    options = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        try:
            options[key.strip()] = float(value)
        except ValueError:
            raise BilmError(f"--option takes NAME=NUMBER (e.g. sr=0.95 or forget_bias=1), got {pair!r}") from None
    return options


def _write_json(out: Path | None, name: str, payload: dict) -> None:
    from .report import write_atomic

    if out is None:
        return
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / name, json.dumps(dict(payload, command=shlex.join(sys.argv)), indent=2))
    click.echo(f"wrote {out / name}")


def _fmt(x, spec=".2f") -> str:
    return "-" if x is None else format(x, spec)


threads = threads_option(expose_value=True)
option = click.option(
    "--option",
    "options",
    multiple=True,
    metavar="NAME=NUMBER",
    callback=comma_list(lambda v: _options(v)),
    help="Cell or init option, repeatable: forget_bias=1, sr=0.95, lr=0.5 (esn leak), scale=1.",
)


@click.command()
@click.argument("checkpoints", nargs=-1)
@click.option("--untrained", is_flag=True, help="Also (or only) measure freshly initialised models of --cell.")
@click.option(
    "--cell",
    default="lstm",
    show_default=True,
    callback=comma_list(lambda v: _cells(v)),
    help="With --untrained: cell(s), comma-separated.",
)
@click.option("--model", "kind", type=click.Choice(["uni", "bi"]), default="uni", show_default=True)
@click.option("--init", type=click.Choice(INITS), default="default", show_default=True)
@option
@click.option("--layers", type=positive, default=2, show_default=True)
@click.option("--hidden", type=positive, default=200, show_default=True)
@click.option("--emb", type=positive, default=200, show_default=True)
@click.option("--vocab", type=vocab_size, default=10_000, show_default=True, help="With --untrained: random token ids.")
@click.option("--corpus", default=None, help="With --untrained: real text from this prepared corpus instead.")
@click.option("--split", type=click.Choice(["train", "valid", "test"]), default="valid", show_default=True)
@click.option(
    "--lengths",
    default="10,20,40,80",
    show_default=True,
    callback=comma_list(lambda v: _ints(v, "--lengths")),
    help="Window lengths in words.",
)
@click.option("--sentences", "count", type=positive, default=250, show_default=True, help="Windows per length.")
@click.option("--batch-size", type=positive, default=250, show_default=True)
@click.option("--no-hidden", is_flag=True, help="Skip the hidden-state gradients (fused kernels, faster).")
@click.option("--seed", type=int, default=0, show_default=True)
@threads
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write gradients.json, gradients.png and the report (report.md/html/json, figures/) here.",
)
@click.option(
    "--bench",
    multiple=True,
    type=click.Path(file_okay=False),
    help="A `bilm bench ... --out` folder to include in the report (repeatable).",
)
@click.option("--corpus-dir", envvar="BILM_CORPUS_DIR", type=click.Path(file_okay=False), default=None)
@click.option("--data-dir", envvar="BILM_DATA_DIR", type=click.Path(file_okay=False), default=None)
def gradients(
    checkpoints,
    untrained,
    cell,
    kind,
    init,
    options,
    layers,
    hidden,
    emb,
    vocab,
    corpus,
    split,
    lengths,
    count,
    batch_size,
    no_hidden,
    seed,
    threads,
    out,
    bench,
    corpus_dir,
    data_dir,
):
    """How the gradient of a prediction decays with the distance to its context.

    For windows of each length, g(k) = |d log p(w | context) / d e_k| for the word k
    steps away (both sides for the bi model), its median and quartiles, the half-life
    in words of a fitted exponential decay, and the ratio g(far)/g(near). Checkpoints
    and --untrained cells can be measured side by side; --out also writes a report
    (report.md/html/json) with the long-range benchmarks of each --bench folder.
    """
    import time

    from .gradients import profile

    if not checkpoints and not untrained:
        raise BilmError("give checkpoint(s) to measure, and/or --untrained (with --cell) for fresh models")
    windows = _ints(lengths, "--lengths")
    if threads:
        torch.set_num_threads(threads)
    models = list(_checkpoint_models(checkpoints, split, corpus_dir, data_dir))
    if untrained:
        models += _untrained_models(
            _cells(cell),
            kind,
            init,
            _options(options),
            layers,
            hidden,
            emb,
            vocab,
            corpus,
            split,
            seed,
            corpus_dir,
            data_dir,
        )
    started = time.perf_counter()
    entries, seconds = [], {}
    for label, model, stream, ckpt in models:
        torch.manual_seed(seed)
        c = model.cfg
        clock = time.perf_counter()
        for entry in profile(model, stream, windows, count, batch_size, hidden=not no_hidden, seed=seed):
            entries.append(
                dict(
                    model=label,
                    kind=c.kind,
                    cell=c.cell,
                    init=c.init,
                    cell_options=c.cell_options,
                    trained=ckpt is not None,
                    **entry,
                )
            )
        seconds[label] = round(time.perf_counter() - clock, 1)
        click.echo(f"{label}: {count} windows x {len(windows)} lengths in {seconds[label]:.1f} s")
    click.echo(
        f"{'model':<28} {'side':<5} {'length':>6} {'k1/2':>5} {'k1/10':>5} {'tail':>11} "
        f"{'half-life*':>10} {'far/near':>9} {'hidden h-l':>10}"
    )
    for e in entries:
        hidden_hl = e["hidden"]["half_life"] if "hidden" in e else None
        tail = e["tail"]["better"] if e.get("tail") else "-"
        click.echo(
            f"{e['model'][-28:]:<28} {e['direction']:<5} {e['length']:>6} {_fmt(e['k_half'], 'd'):>5} "
            f"{_fmt(e['k_tenth'], 'd'):>5} {tail:>11} {_fmt(e['half_life']):>10} {e['far_near']:>9.1e} "
            f"{_fmt(hidden_hl):>10}"
        )
    click.echo("* one exponential fitted over the whole window: it grows with the window (k1/2, k1/10 do not)")
    bench = [str(Path(b).resolve()) for b in bench]
    payload = dict(entries=entries, seconds=seconds, threads=torch.get_num_threads(), bench=bench)
    _write_json(out, "gradients.json", payload)
    if out is not None:
        _write_report(out, entries, models, bench, split, seconds, time.perf_counter() - started)


def _write_report(out: Path, entries, models, bench_dirs, split, seconds, total) -> None:
    from .lab_plots import gradient_curves, gradients_section, load_bench, save
    from .report import Report, run_meta

    click.echo(f"wrote {save(gradient_curves(entries), out / 'gradients.png')}")
    results, runs = load_bench(bench_dirs)
    ckpts = {label: ckpt for label, _, _, ckpt in models if ckpt is not None}
    meta = run_meta(ckpts, split=split, seconds_per_model=seconds, seconds=round(total, 1))
    paths = Report("bilm: vanishing gradients", meta, [gradients_section(entries, results, runs)]).write(out)
    click.echo(f"report: {paths['md']}, {paths['html']}, {paths['json']}")


def _untrained_models(
    cells, kind, init, options, layers, hidden, emb, vocab, corpus, split, seed, corpus_dir, data_dir
):
    from .models import ModelConfig, build_model

    if corpus:
        from .data import DataConfig, prepare

        data = prepare(DataConfig(corpus=corpus), corpus_dir, data_dir)
        stream, vocab = torch.from_numpy(data.stream(split).astype("int64")), len(data.tokenizer)
    else:
        stream = torch.randint(5, vocab, (2_000_000,), generator=torch.Generator().manual_seed(seed))
    for name in cells:
        torch.manual_seed(seed)
        cfg = ModelConfig(
            kind=kind,
            vocab_size=vocab,
            cell=name,
            init=init,
            cell_options=dict(options),
            emb_size=emb,
            hidden_size=hidden,
            layers=layers,
            output="full",
        )
        try:
            model = build_model(cfg)
        except ValueError as e:
            raise BilmError(str(e)) from None
        yield f"{kind}-{name}-{init}-init", model, stream, None


def _checkpoint_models(paths, split, corpus_dir, data_dir):
    from .checkpoint import load_checkpoint
    from .data import DataConfig, PreparedData, prepare

    for path in paths:
        ckpt = load_checkpoint(path)
        cache = Path(ckpt.config.get("data_cache") or "")
        if (cache / "meta.json").is_file():
            data = PreparedData(cache)
        else:
            data = prepare(DataConfig(**ckpt.config["data"]), corpus_dir or ckpt.config.get("corpus_dir"), data_dir)
        yield str(path), ckpt.model, torch.from_numpy(data.stream(split).astype("int64")), ckpt


@click.group()
def bench():
    """Classic long-range tasks: the adding problem and the copy task."""


def _learning_rates(text: str, cells: list[str]) -> dict[str, float]:
    """`3e-3` for every cell, or `lstm=3e-3,irnn=1e-4` (cells not named keep the default 1e-3)."""
    if "=" not in text:
        rates = _numbers(text, "--lr")
        if len(rates) != 1:
            raise BilmError(f"--lr takes one rate, or NAME=RATE per cell (lstm=1e-3,irnn=1e-4), got {text!r}")
        return dict.fromkeys(cells, rates[0])
    named = _options(tuple(text.split(",")))
    unknown = set(named) - set(cells)
    if unknown:
        raise BilmError(f"--lr names cell(s) not in --cells: {', '.join(sorted(unknown))}")
    return {cell: named.get(cell, 1e-3) for cell in cells}


def _bench_command(task: str, default_lengths: str, default_steps: int):
    @click.option("--cells", default="lstm,gru,irnn,rnn-tanh", show_default=True, callback=comma_list(_cells))
    @click.option(
        "--lengths",
        default=default_lengths,
        show_default=True,
        callback=comma_list(lambda v: _ints(v, "--lengths")),
        help="Sequence lengths T.",
    )
    @click.option("--steps", type=positive, default=default_steps, show_default=True, help="Most steps per run.")
    @click.option("--batch-size", type=positive, default=50, show_default=True)
    @click.option("--hidden", type=positive, default=128, show_default=True)
    @click.option(
        "--lr",
        default="1e-3",
        show_default=True,
        callback=comma_list(lambda v: _learning_rates(v, list(CELLS))),
        help="One rate, or per cell: lstm=1e-3,irnn=1e-4.",
    )
    @click.option("--optimizer", type=click.Choice(["adamw", "sgd"]), default="adamw", show_default=True)
    @click.option(
        "--clip",
        default="1",
        show_default=True,
        callback=comma_list(lambda v: _numbers(v, "--clip")),
        help="Max gradient norm (0: off); several: 0,1 runs each.",
    )
    @click.option(
        "--norm-penalty", type=non_negative, default=0.0, show_default=True, help="Pascanu et al.'s penalty weight."
    )
    @click.option("--init", type=click.Choice(INITS), default="default", show_default=True)
    @option
    @click.option("--eval-every", type=positive, default=100, show_default=True)
    @click.option(
        "--log-every", type=count, default=None, help="Train records (input gradients) [default: eval-every]."
    )
    @click.option("--max-minutes", type=rate, default=None, help="Wall-clock budget per run.")
    @click.option("--seed", type=int, default=0, show_default=True)
    @threads
    @click.option(
        "--out",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help=f"Write {task}.json, {task}.png, input_gradients.png and each run's metrics.jsonl.",
    )
    def command(
        cells,
        lengths,
        steps,
        batch_size,
        hidden,
        lr,
        optimizer,
        clip,
        norm_penalty,
        init,
        options,
        eval_every,
        log_every,
        max_minutes,
        seed,
        threads,
        out,
    ):
        from .synthetic import run_bench

        if threads:
            torch.set_num_threads(threads)
        names, clips = _cells(cells), _numbers(clip, "--clip")
        rates = _learning_rates(lr, names)
        settings = dict(
            steps=steps,
            batch_size=batch_size,
            hidden_size=hidden,
            init=init,
            options=_options(options),
            eval_every=eval_every,
            norm_penalty=norm_penalty,
            optimizer=optimizer,
            log_every=log_every,
            max_minutes=max_minutes,
            seed=seed,
            log=click.echo,
        )
        results, runs = [], {}
        for T in _ints(lengths, "--lengths"):
            for cell in names:
                for c in clips:
                    name = f"{cell}-T{T}" + (f"-clip{c:g}" if len(clips) > 1 else "")
                    try:
                        results.append(
                            run_bench(
                                task, cell, T, lr=rates[cell], clip=c, out=out / name if out else None, **settings
                            )
                        )
                    except ValueError as e:
                        raise BilmError(str(e)) from None
                    runs[name] = out / name / "metrics.jsonl" if out else None
        click.echo(
            f"{'T':>5} {'cell':<12} {'lr':>8} {'clip':>5} {'loss':>8} {'baseline':>8} {'solved':>6} {'steps':>6} "
            f"{'seconds':>8}"
        )
        for r in results:
            click.echo(
                f"{r['T']:>5} {r['cell']:<12} {r['lr']:>8.0e} {r['clip']:>5g} {r['loss']:>8.4f} {r['baseline']:>8.4f} "
                f"{'yes' if r['solved'] else 'no':>6} {r['steps']:>6} {r['seconds']:>8.1f}"
            )
        _write_json(out, f"{task}.json", {"results": results})
        if out is not None:
            from .lab_plots import bench_losses, input_gradients, save
            from .report import read_metrics

            click.echo(f"wrote {save(bench_losses(results), out / f'{task}.png')}")
            records = {name: read_metrics(path) for name, path in runs.items()}
            click.echo(f"wrote {save(input_gradients(records), out / 'input_gradients.png')}")

    return command


bench.command("adding", help="The adding problem: sum two marked numbers T steps apart (solved: MSE < 0.01).")(
    _bench_command("adding", "50,100,200", 3000)
)
bench.command("copy", help="The copy task: recall 10 symbols after T blanks (solved: 99% recalled).")(
    _bench_command("copy", "20,50,100", 3000)
)


@click.command()
@click.option("--claim", "claims", default=None, help="Claim number(s) 1-7, comma-separated [default: all].")
@click.option("--quick", is_flag=True, help="Tiny settings (seconds, for tests): the verdicts then mean little.")
@click.option("--uni", type=click.Path(file_okay=False), default=None, help="Claim 7: the uni checkpoint.")
@click.option("--bi", type=click.Path(file_okay=False), default=None, help="Claim 7: the bi checkpoint.")
@click.option("--split", type=click.Choice(["valid", "test"]), default="test", show_default=True, help="Claim 7.")
@click.option("--max-sentences", type=click.IntRange(min=1), default=None, help="Claim 7: the first N sentences.")
@click.option("--report-only", is_flag=True, help="Run nothing: rewrite the report from the results in --out.")
@click.option("--threads", "n_threads", type=click.IntRange(min=1), default=None, help="CPU threads for torch.")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("reports/ledger"),
    show_default=True,
    help="One <experiment>.json per experiment, runs/ (metrics), and the report (report.md/html/json, figures/).",
)
@click.option("--corpus-dir", envvar="BILM_CORPUS_DIR", type=click.Path(file_okay=False), default=None)
@click.option("--data-dir", envvar="BILM_DATA_DIR", type=click.Path(file_okay=False), default=None)
def ledger(claims, quick, uni, bi, split, max_sentences, report_only, n_threads, out, corpus_dir, data_dir):
    """Test each claim of the RNN notes and give it a verdict by rule (bilm/ledger.py).

    Runs the experiments the chosen claims need, keeps each result in --out, and writes the
    ledger report from every result found there; claim 7 needs --uni and --bi checkpoints.
    """
    import time

    from .ledger import CLAIMS, Context, run_ledger, write_report

    chosen = None
    if claims:
        chosen = _ints(claims, "--claim")
        if max(chosen) > len(CLAIMS):
            raise BilmError(f"--claim: the claims are numbered 1-{len(CLAIMS)}, got {claims!r}")
    if (uni is None) != (bi is None):
        raise BilmError("claim 7 compares two models: give both --uni and --bi")
    if n_threads:
        torch.set_num_threads(n_threads)
    started = time.perf_counter()
    ctx = Context(out, quick, uni, bi, split, corpus_dir, data_dir, max_sentences, log=click.echo)
    result = write_report(out) if report_only else run_ledger(ctx, chosen)
    for e in result["entries"]:
        click.echo(f"claim {e.claim.number}: {e.verdict.verdict:<27} {e.verdict.measured}")
    paths = result["paths"]
    click.echo(f"report: {paths['md']}, {paths['html']}, {paths['json']} ({time.perf_counter() - started:.0f} s)")
