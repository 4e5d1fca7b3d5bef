"""`bilm gradients` and `bilm bench`: the vanishing-gradient lab on the command line.

bilm gradients checkpoints/wt2-uni checkpoints/wt2-bi --lengths 10,20,40,80 --out reports/grad
bilm gradients --untrained --cell rnn-sigmoid,rnn-tanh,lstm,esn --out reports/grad-init
bilm bench adding --cells lstm,gru,irnn,rnn-tanh --lengths 50,100,200 --out reports/adding
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


def _ints(text: str, what: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise BilmError(f"{what} must be comma-separated whole numbers, got {text!r}") from None
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
    if out is None:
        return
    out.mkdir(parents=True, exist_ok=True)
    (out / name).write_text(json.dumps(dict(payload, command=shlex.join(sys.argv)), indent=2))
    click.echo(f"wrote {out / name}")


def _fmt(x, spec=".2f") -> str:
    return "-" if x is None else format(x, spec)


threads = click.option(
    "--threads", type=int, default=None, help="CPU threads for torch (1 is fastest on a busy machine)."
)
option = click.option(
    "--option",
    "options",
    multiple=True,
    metavar="NAME=NUMBER",
    help="Cell or init option, repeatable: forget_bias=1, sr=0.95, lr=0.5 (esn leak), scale=1.",
)


@click.command()
@click.argument("checkpoints", nargs=-1)
@click.option("--untrained", is_flag=True, help="Measure freshly initialised models instead of checkpoints.")
@click.option("--cell", default="lstm", show_default=True, help="With --untrained: cell(s), comma-separated.")
@click.option("--model", "kind", type=click.Choice(["uni", "bi"]), default="uni", show_default=True)
@click.option("--init", type=click.Choice(INITS), default="default", show_default=True)
@option
@click.option("--layers", type=int, default=2, show_default=True)
@click.option("--hidden", type=int, default=200, show_default=True)
@click.option("--emb", type=int, default=200, show_default=True)
@click.option("--vocab", type=int, default=10_000, show_default=True, help="With --untrained: random token ids.")
@click.option("--corpus", default=None, help="With --untrained: real text from this prepared corpus instead.")
@click.option("--split", type=click.Choice(["train", "valid", "test"]), default="valid", show_default=True)
@click.option("--lengths", default="10,20,40,80", show_default=True, help="Window lengths in words.")
@click.option("--sentences", "count", type=int, default=250, show_default=True, help="Windows per length.")
@click.option("--batch-size", type=int, default=250, show_default=True)
@click.option("--no-hidden", is_flag=True, help="Skip the hidden-state gradients (fused kernels, faster).")
@click.option("--seed", type=int, default=0, show_default=True)
@threads
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write gradients.json, gradients.png and far_near.png here.",
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
    corpus_dir,
    data_dir,
):
    """How the gradient of a prediction decays with the distance to its context.

    For windows of each length, g(k) = |d log p(w | context) / d e_k| for the word k
    steps away (both sides for the bi model), its median and quartiles, the half-life
    in words of a fitted exponential decay, and the ratio g(far)/g(near).
    """
    from .gradients import profile

    if bool(checkpoints) == untrained:
        raise BilmError("give checkpoint(s) to measure, or --untrained (with --cell) for fresh models")
    windows = _ints(lengths, "--lengths")
    if threads:
        torch.set_num_threads(threads)
    models = (
        _untrained_models(
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
        if untrained
        else _checkpoint_models(checkpoints, split, corpus_dir, data_dir)
    )
    entries = []
    for label, model, stream in models:
        torch.manual_seed(seed)
        c = model.cfg
        for entry in profile(model, stream, windows, count, batch_size, hidden=not no_hidden, seed=seed):
            entries.append(
                dict(
                    model=label,
                    kind=c.kind,
                    cell=c.cell,
                    init=c.init,
                    cell_options=c.cell_options,
                    trained=not untrained,
                    **entry,
                )
            )
    click.echo(f"{'model':<28} {'side':<5} {'length':>6} {'half-life':>9} {'far/near':>9} {'hidden h-l':>10}")
    for e in entries:
        hidden_hl = e["hidden"]["half_life"] if "hidden" in e else None
        click.echo(
            f"{e['model'][:28]:<28} {e['direction']:<5} {e['length']:>6} {_fmt(e['half_life']):>9} "
            f"{e['far_near']:>9.1e} {_fmt(hidden_hl):>10}"
        )
    _write_json(out, "gradients.json", {"entries": entries})
    if out is not None:
        from .lab_plots import far_near, gradient_curves

        click.echo(f"wrote {gradient_curves(entries, out / 'gradients.png')}")
        click.echo(f"wrote {far_near(entries, out / 'far_near.png')}")


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
        yield f"{kind}-{name}-{init}-init", model, stream


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
        yield str(path), ckpt.model, torch.from_numpy(data.stream(split).astype("int64"))


@click.group()
def bench():
    """Classic long-range tasks: the adding problem and the copy task."""


def _bench_command(task: str, default_lengths: str, default_steps: int):
    @click.option("--cells", default="lstm,gru,irnn,rnn-tanh", show_default=True)
    @click.option("--lengths", default=default_lengths, show_default=True, help="Sequence lengths T.")
    @click.option("--steps", type=int, default=default_steps, show_default=True, help="Most training steps per run.")
    @click.option("--batch-size", type=int, default=50, show_default=True)
    @click.option("--hidden", type=int, default=128, show_default=True)
    @click.option("--lr", type=float, default=1e-3, show_default=True)
    @click.option("--clip", type=float, default=1.0, show_default=True, help="Max gradient norm (0: off).")
    @click.option("--init", type=click.Choice(INITS), default="default", show_default=True)
    @option
    @click.option("--eval-every", type=int, default=100, show_default=True)
    @click.option("--max-minutes", type=float, default=None, help="Wall-clock budget per run.")
    @click.option("--seed", type=int, default=0, show_default=True)
    @threads
    @click.option(
        "--out",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help=f"Write {task}.json, {task}.png and each run's metrics.jsonl.",
    )
    def command(
        cells, lengths, steps, batch_size, hidden, lr, clip, init, options, eval_every, max_minutes, seed, threads, out
    ):
        from .synthetic import run_bench

        if threads:
            torch.set_num_threads(threads)
        results = []
        for T in _ints(lengths, "--lengths"):
            for cell in _cells(cells):
                run_out = out / f"{cell}-T{T}" if out else None
                try:
                    results.append(
                        run_bench(
                            task,
                            cell,
                            T,
                            steps,
                            batch_size,
                            hidden,
                            lr,
                            clip,
                            init,
                            _options(options),
                            eval_every,
                            max_minutes=max_minutes,
                            seed=seed,
                            out=run_out,
                            log=click.echo,
                        )
                    )
                except ValueError as e:
                    raise BilmError(str(e)) from None
        click.echo(f"{'T':>5} {'cell':<12} {'loss':>8} {'baseline':>8} {'solved':>6} {'steps':>6} {'seconds':>8}")
        for r in results:
            click.echo(
                f"{r['T']:>5} {r['cell']:<12} {r['loss']:>8.4f} {r['baseline']:>8.4f} "
                f"{'yes' if r['solved'] else 'no':>6} {r['steps']:>6} {r['seconds']:>8.1f}"
            )
        _write_json(out, f"{task}.json", {"results": results})
        if out is not None:
            from .lab_plots import bench_losses
            from .synthetic import ADDING_SOLVED_MSE

            solved_line = ADDING_SOLVED_MSE if task == "adding" else 0.0
            click.echo(f"wrote {bench_losses(results, solved_line, out / f'{task}.png')}")

    return command


bench.command("adding", help="The adding problem: sum two marked numbers T steps apart (solved: MSE < 0.01).")(
    _bench_command("adding", "50,100,200", 3000)
)
bench.command("copy", help="The copy task: recall 10 symbols after T blanks (solved: 99% recalled).")(
    _bench_command("copy", "20,50,100", 3000)
)
