"""The `bilm` command: a thin layer over the Python API.

bilm prepare wikitext-2
bilm train --model uni --corpus wikitext-2 --max-minutes 20 --out checkpoints/wt2-uni
bilm predict checkpoints/wt2-uni "the boys went to the" -k 10
bilm fill checkpoints/wt2-bi "the boys went to the ___ and then got out of the pool ." -k 10
bilm repl checkpoints/wt2-bi --compare checkpoints/wt2-uni
bilm evaluate --uni checkpoints/wt2-uni --bi checkpoints/wt2-bi --split test --out reports/wt2
bilm gradients checkpoints/wt2-uni --lengths 10,20,40,80 --out reports/gradients
"""

from __future__ import annotations

import json
import sys

import click

from .errors import BilmError


class BilmGroup(click.Group):
    """Turns a `BilmError` into a one-line `Error: ...` and exit status 1, never a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except BilmError as e:
            raise click.ClickException(str(e)) from None
        except KeyboardInterrupt:
            click.echo("\ninterrupted", err=True)
            sys.exit(130)


@click.group(cls=BilmGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="bilm")
def cli():
    """Predict words from both sides: uni- vs bidirectional LSTM language models."""


corpus_dir_option = click.option(
    "--corpus-dir",
    envvar="BILM_CORPUS_DIR",
    type=click.Path(file_okay=False),
    help="Folder holding the named corpora (env BILM_CORPUS_DIR; default ../shared/corpora when present).",
)
data_dir_option = click.option(
    "--data-dir", envvar="BILM_DATA_DIR", type=click.Path(file_okay=False), help="Cache folder (default ./data)."
)


def data_options(f):
    f = click.option(
        "--max-vocab", type=int, default=None, help="Keep the N most frequent train words (incl. specials)."
    )(f)
    f = click.option("--min-freq", type=int, default=1, show_default=True, help="Drop train words seen fewer times.")(f)
    f = click.option("--lowercase/--keep-case", default=None, help="Lower-case the text (default: per corpus).")(f)
    return f


@cli.command()
@click.argument("corpus")
@data_options
@corpus_dir_option
@data_dir_option
def prepare(corpus, max_vocab, min_freq, lowercase, corpus_dir, data_dir):
    """Tokenize CORPUS once into the cache: wikitext-2, ptb, gutenberg, a folder of .txt, or hf:NAME."""
    from .data import DataConfig
    from .data import prepare as run_prepare

    data = run_prepare(DataConfig(corpus, max_vocab, min_freq, lowercase), corpus_dir, data_dir, log=click.echo)
    meta = data.meta
    click.echo(f"{corpus}: vocabulary {meta['vocab_size']:,} (train split only), cached in {data.path}")
    for split, s in meta["splits"].items():
        click.echo(
            f"  {split:<5} {s['tokens']:>10,} tokens  {s['sentences']:>8,} sentences  "
            f"<unk> {100 * s['unk'] / max(s['tokens'], 1):.2f}%"
        )


@cli.command()
@click.option("--model", "kind", type=click.Choice(["uni", "bi"]), default="uni", show_default=True)
@click.option("--corpus", default="wikitext-2", show_default=True)
@click.option(
    "--out", type=click.Path(file_okay=False), required=True, help="Run folder (best/, last/, metrics.jsonl)."
)
@click.option("--resume", is_flag=True, help="Continue the run in --out where it stopped.")
@click.option("--cell", default="lstm", show_default=True, help="lstm, gru, rnn-tanh, rnn-relu, ...")
@click.option("--init", default="default", show_default=True, help="Recurrent weight initialisation.")
@click.option("--layers", type=int, default=2, show_default=True)
@click.option("--hidden", type=int, default=200, show_default=True)
@click.option("--emb", type=int, default=200, show_default=True)
@click.option("--dropout", type=float, default=0.1, show_default=True)
@click.option(
    "--locked-dropout/--per-step-dropout",
    default=True,
    show_default=True,
    help="Embedding and output dropout: one mask per sequence, or a fresh mask at every step.",
)
@click.option(
    "--unigram-bias/--no-unigram-bias",
    default=None,
    help="Start the output bias at the word frequencies [default: uni yes, bi no].",
)
@click.option("--tie/--no-tie", default=True, show_default=True, help="Tie input and output embeddings (full softmax).")
@click.option("--output", type=click.Choice(["adaptive", "full"]), default="adaptive", show_default=True)
@click.option("--optimizer", type=click.Choice(["adamw", "sgd"]), default="adamw", show_default=True)
@click.option("--lr", type=float, default=3e-3, show_default=True)
@click.option("--weight-decay", type=float, default=0.0, show_default=True)
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--bptt", type=int, default=35, show_default=True, help="Truncated BPTT length (uni).")
@click.option("--clip", type=float, default=1.0, show_default=True, help="Max gradient norm (0: off).")
@click.option("--clip-value", type=float, default=0.0, show_default=True, help="Clip each gradient entry (0: off).")
@click.option("--norm-penalty", type=float, default=0.0, show_default=True, help="Pascanu et al.'s penalty weight.")
@click.option("--log-input-grads", is_flag=True, help="Log ||dL/dx_t|| at the first/last step of each window (uni).")
@click.option("--epochs", type=int, default=None, help="[default: 40]")
@click.option("--max-steps", type=int, default=None)
@click.option("--max-minutes", type=float, default=None, help="Wall-clock budget, validation included.")
@click.option("--patience", type=int, default=3, show_default=True, help="Early stop after N worse validations.")
@click.option("--eval-every", type=int, default=0, show_default=True, help="Also validate every N steps.")
@click.option(
    "--schedule",
    type=click.Choice(["plateau", "warmdown", "cosine"]),
    default="warmdown",
    show_default=True,
    help="plateau: lr x0.25 when validation stalls; warmdown: plateau, then linearly to 0 over the last 30% of "
    "the budget (steps, minutes or epochs); cosine: anneal to 0 over the budget.",
)
@click.option(
    "--precision",
    type=click.Choice(["fp32", "bf16"]),
    default="fp32",
    show_default=True,
    help="bf16: autocast the training step (validation stays fp32).",
)
@click.option("--seed", type=int, default=1234, show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@data_options
@corpus_dir_option
@data_dir_option
def train(
    kind,
    corpus,
    out,
    resume,
    cell,
    init,
    layers,
    hidden,
    emb,
    dropout,
    locked_dropout,
    unigram_bias,
    tie,
    output,
    optimizer,
    lr,
    weight_decay,
    batch_size,
    bptt,
    clip,
    clip_value,
    norm_penalty,
    log_input_grads,
    epochs,
    max_steps,
    max_minutes,
    patience,
    eval_every,
    schedule,
    precision,
    seed,
    device,
    max_vocab,
    min_freq,
    lowercase,
    corpus_dir,
    data_dir,
):
    """Train a uni (next word) or bi (fill in the blank) model. Ctrl-C saves last/ for --resume."""
    from . import distributed
    from .data import DataConfig
    from .models import ModelConfig
    from .train import TrainConfig
    from .train import train as run_train

    budget = dict(max_steps=max_steps, max_minutes=max_minutes, epochs=epochs)
    data_cfg = DataConfig(corpus, max_vocab, min_freq, lowercase)
    model_cfg = ModelConfig(
        kind=kind,
        cell=cell,
        init=init,
        emb_size=emb,
        hidden_size=hidden,
        layers=layers,
        dropout=dropout,
        locked_dropout=locked_dropout,
        unigram_bias=unigram_bias,
        tie_weights=tie,
        output=output,
    )
    train_cfg = TrainConfig(
        optimizer=optimizer,
        lr=lr,
        weight_decay=weight_decay,
        batch_size=batch_size,
        bptt=bptt,
        clip=clip,
        clip_value=clip_value,
        norm_penalty=norm_penalty,
        log_input_grads=log_input_grads,
        early_stop=patience,
        eval_every=eval_every,
        schedule=schedule,
        precision=precision,
        seed=seed,
        device=device,
    )
    try:
        result = run_train(data_cfg, model_cfg, train_cfg, out, corpus_dir, data_dir, resume, budget, log=click.echo)
    except KeyboardInterrupt:
        if not distributed.is_main():  # torchrun: rank 0 speaks for the job
            raise SystemExit(130) from None
        saved = "the last periodic save is in" if distributed.launched() else "progress saved in"
        raise BilmError(f"interrupted: {saved} {out}/last; continue with: bilm train --resume --out {out}") from None
    if distributed.is_main():
        click.echo(
            f"done: {result['step']:,} steps, valid ppl {result['valid_ppl']:.2f} "
            f"(best {result['best_valid_ppl']:.2f}), {result['tokens_per_s']:,.0f} tokens/s -> {out}"
        )


def _choices(value: str | None) -> list[str] | None:
    return [c.strip() for c in value.split(",") if c.strip()] if value else None


def _show(predictions, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps([p.to_dict() for p in predictions], indent=2))
        return
    for p in predictions:
        if p.unknown:
            click.echo(f"note: not in the vocabulary (read as <unk>): {', '.join(p.unknown)}")
            break
    for p in predictions:
        click.echo(f"{p.method}" + (f"  ({p.note})" if p.note else ""))
        for c in p.candidates:
            prob = "   (out of vocabulary)" if c.prob is None else f"{c.prob:8.4f}"
            click.echo(f"  {c.word:<20}{prob}")


query_options = [
    click.argument("checkpoint", type=click.Path()),
    click.argument("text"),
    click.option("-k", "k", type=click.IntRange(1, 1000), default=10, show_default=True),
    click.option("--choices", help="Rank these comma-separated candidates instead of the top k."),
    click.option("--json", "as_json", is_flag=True, help="Machine-readable candidates with probabilities."),
    click.option("--device", default="cpu", show_default=True),
]


def _query_command(f):
    for option in reversed(query_options):
        f = option(f)
    return f


@cli.command()
@_query_command
def predict(checkpoint, text, k, choices, as_json, device):
    """Next word after TEXT (uni model; a bi model fills a blank at the end)."""
    from .predict import Predictor

    _show([Predictor.load(checkpoint, device).predict(text, k, _choices(choices))], as_json)


@cli.command()
@_query_command
def fill(checkpoint, text, k, choices, as_json, device):
    """Fill the one blank (___) in TEXT: bi directly; uni by left context and by rescoring."""
    from .predict import Predictor

    _show(Predictor.load(checkpoint, device).fill(text, k, _choices(choices)), as_json)


def _register() -> None:
    """Commands that live beside the modules they drive (each imports torch lazily)."""
    from .cli_eval import evaluate, mscc
    from .lab_cli import bench, gradients
    from .repl import repl

    for command in (repl, evaluate, mscc, gradients, bench):
        cli.add_command(command)


_register()


def main():
    cli(prog_name="bilm")


if __name__ == "__main__":
    main()
