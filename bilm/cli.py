"""The `bilm` command: a thin layer over the Python API.

bilm prepare wikitext-2
bilm train --model uni --corpus wikitext-2 --max-minutes 20 --out checkpoints/wt2-uni
bilm predict checkpoints/wt2-uni "the boys went to the" -k 10
bilm fill checkpoints/wt2-bi "the boys went to the ___ and then got out of the pool ." -k 10
bilm repl checkpoints/wt2-bi --compare checkpoints/wt2-uni
bilm serve checkpoints/wt2-bi --compare checkpoints/wt2-uni
bilm evaluate --uni checkpoints/wt2-uni --bi checkpoints/wt2-bi --split test --out reports/wt2
bilm gradients checkpoints/wt2-uni --lengths 10,20,40,80 --out reports/gradients
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from .cells import CELLS, INITS
from .errors import BilmError
from .options import count, device_option, non_negative, positive, probability, rate, vocab_size
from .threads import threads_option


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
        "--max-vocab", type=vocab_size, default=None, help="Keep the N most frequent train words (incl. specials)."
    )(f)
    f = click.option(
        "--min-freq", type=positive, default=1, show_default=True, help="Drop train words seen fewer times."
    )(f)
    f = click.option("--lowercase/--keep-case", default=None, help="Lower-case the text (default: per corpus).")(f)
    return f


@cli.command()
@click.argument("corpus")
@data_options
@corpus_dir_option
@data_dir_option
@threads_option()
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
@click.option("--cell", type=click.Choice(CELLS), default="lstm", show_default=True)
@click.option("--init", type=click.Choice(INITS), default="default", show_default=True, help="Recurrent weights.")
@click.option(
    "--preset",
    "preset_name",
    type=click.Choice(["small", "large"]),
    default="small",
    show_default=True,
    help="Model size for the budget: small 1x200, dropout 0.1 (bi 0) (minutes); large 2x400, emb 400, dropout 0.4 "
    "(bi 0.25) (about an hour). --layers/--hidden/--emb/--dropout override it.",
)
@click.option("--layers", type=positive, default=None, help="[default: from --preset]")
@click.option("--hidden", type=positive, default=None, help="[default: from --preset]")
@click.option("--emb", type=positive, default=None, help="[default: from --preset]")
@click.option("--dropout", type=probability, default=None, help="[default: from --preset]")
@click.option(
    "--locked-dropout/--per-step-dropout",
    default=True,
    show_default=True,
    help="Embedding and output dropout: one mask per sequence, or a fresh mask at every step.",
)
@click.option(
    "--unigram-bias/--no-unigram-bias",
    default=None,
    help="Start the output bias at the train split's word frequencies [default: yes, except bi with a tied full "
    "softmax].",
)
@click.option(
    "--aux-lm",
    type=click.FloatRange(0),
    default=0.0,
    show_default=True,
    help="bi: add each stack's own next/previous-word loss (ELMo) with this weight.",
)
@click.option(
    "--embed-dropout",
    type=click.FloatRange(0, 1, max_open=True),
    default=0.0,
    show_default=True,
    help="Drop whole word types from a batch's embeddings (AWD-LSTM).",
)
@click.option(
    "--weight-drop",
    type=click.FloatRange(0, 1, max_open=True),
    default=0.0,
    show_default=True,
    help="DropConnect on the hidden-to-hidden weights (AWD-LSTM; lstm, gru, rnn cells).",
)
@click.option(
    "--combine",
    type=click.Choice(["linear", "mlp"]),
    default="linear",
    show_default=True,
    help="bi: how [left; right] become features: linear+tanh, or with a hidden ReLU layer first (context2vec).",
)
@click.option(
    "--tie/--no-tie",
    default=True,
    show_default=True,
    help="Tie input and output embeddings (full softmax; adaptive softmax with --adaptive-input).",
)
@click.option(
    "--adaptive-input/--no-adaptive-input",
    default=True,
    show_default=True,
    help="With the adaptive softmax and --tie: read each word's input vector from its output weights "
    "(tied adaptive input, Baevski & Auli 2019).",
)
@click.option("--output", type=click.Choice(["adaptive", "full"]), default="adaptive", show_default=True)
@click.option("--optimizer", type=click.Choice(["adamw", "sgd"]), default="adamw", show_default=True)
@click.option("--lr", type=rate, default=None, help="[default: from --preset: small 7e-3, large 3e-3]")
@click.option("--weight-decay", type=non_negative, default=0.0, show_default=True)
@click.option("--batch-size", type=positive, default=64, show_default=True)
@click.option("--bptt", type=positive, default=35, show_default=True, help="Truncated BPTT length (uni).")
@click.option(
    "--context",
    type=click.Choice(["sentence", "document"]),
    default="sentence",
    show_default=True,
    help="bi: read whole sentences, or pieces of --max-len tokens of running text that cross sentences within a "
    "document (then evaluate with --context N).",
)
@click.option("--max-len", type=positive, default=80, show_default=True, help="bi: longest piece read, in tokens.")
@click.option("--clip", type=non_negative, default=1.0, show_default=True, help="Max gradient norm (0: off).")
@click.option(
    "--clip-value", type=non_negative, default=0.0, show_default=True, help="Clip each gradient entry (0: off)."
)
@click.option(
    "--norm-penalty", type=non_negative, default=0.0, show_default=True, help="Pascanu et al.'s penalty weight."
)
@click.option("--log-input-grads", is_flag=True, help="Log ||dL/dx_t|| at the first/last step of each window (uni).")
@click.option("--epochs", type=positive, default=None, help="[default: 40]")
@click.option("--max-steps", type=positive, default=None)
@click.option("--max-minutes", type=rate, default=None, help="Wall-clock budget, validation included.")
@click.option("--patience", type=count, default=3, show_default=True, help="Early stop after N worse validations.")
@click.option(
    "--eval-every",
    type=count,
    default=0,
    show_default=True,
    help="Also validate N steps after the last validation (an epoch's end included).",
)
@click.option("--log-every", type=positive, default=100, show_default=True, help="Steps per metrics.jsonl record.")
@click.option(
    "--save-every-minutes",
    type=non_negative,
    default=2.0,
    show_default=True,
    help="Also write last/ this often (0: at validations only); never more than 2% of the time.",
)
@click.option(
    "--max-bad-steps",
    type=positive,
    default=10,
    show_default=True,
    help="Non-finite steps in a row (skipped) before rolling back to last/ with a lower learning rate.",
)
@click.option(
    "--schedule",
    type=click.Choice(["plateau", "warmdown", "cosine"]),
    default="warmdown",
    show_default=True,
    help="plateau: lr x0.25 when validation stalls; warmdown: plateau, then linearly to 0 over the last "
    "--warmdown share of the budget (steps, minutes or epochs); cosine: anneal to 0 over the budget.",
)
@click.option(
    "--warmdown",
    type=click.FloatRange(0, 1, min_open=True),
    default=0.3,
    show_default=True,
    help="With --schedule warmdown: the last share of the budget over which the learning rate falls to 0.",
)
@click.option(
    "--average",
    type=click.FloatRange(0, 1),
    default=0.0,
    show_default=True,
    help="Validate and keep the mean of the weights after every step over this last share of the budget "
    "(Polyak/SWA averaging; 0: off).",
)
@click.option(
    "--precision",
    type=click.Choice(["auto", "fp32", "bf16"]),
    default="auto",
    show_default=True,
    help="bf16: autocast the training step (validation stays fp32); auto: bf16 where the CPU (AVX512-BF16, AMX) "
    "or GPU has it natively, else fp32.",
)
@click.option("--seed", type=int, default=1234, show_default=True)
@device_option()
@data_options
@corpus_dir_option
@data_dir_option
@threads_option()
def train(
    kind,
    corpus,
    out,
    resume,
    cell,
    init,
    preset_name,
    layers,
    hidden,
    emb,
    dropout,
    locked_dropout,
    unigram_bias,
    aux_lm,
    embed_dropout,
    weight_drop,
    combine,
    tie,
    adaptive_input,
    output,
    optimizer,
    lr,
    weight_decay,
    batch_size,
    bptt,
    context,
    max_len,
    clip,
    clip_value,
    norm_penalty,
    log_input_grads,
    epochs,
    max_steps,
    max_minutes,
    patience,
    eval_every,
    log_every,
    save_every_minutes,
    max_bad_steps,
    schedule,
    warmdown,
    average,
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
    from .models import ModelConfig, preset
    from .train import PRESET_LR, TrainConfig
    from .train import train as run_train

    budget = dict(max_steps=max_steps, max_minutes=max_minutes, epochs=epochs)
    given = _given(click.get_current_context())
    if resume:  # what may change in a resumed run, when asked for
        budget.update({k: v for k, v in given.items() if k in RESUME_SETTINGS})
    data_cfg = DataConfig(corpus, max_vocab, min_freq, lowercase)
    sizes = preset(preset_name, kind)
    given_sizes = dict(layers=layers, hidden_size=hidden, emb_size=emb, dropout=dropout)
    sizes.update({k: v for k, v in given_sizes.items() if v is not None})
    model_cfg = ModelConfig(
        kind=kind,
        cell=cell,
        init=init,
        **sizes,
        locked_dropout=locked_dropout,
        unigram_bias=unigram_bias,
        aux_lm=aux_lm,
        embed_dropout=embed_dropout,
        weight_drop=weight_drop,
        combine=combine,
        tie_weights=tie,
        adaptive_input=adaptive_input,
        output=output,
    )
    train_cfg = TrainConfig(
        optimizer=optimizer,
        lr=PRESET_LR[preset_name] if lr is None else lr,
        weight_decay=weight_decay,
        batch_size=batch_size,
        bptt=bptt,
        context=context,
        max_len=max_len,
        clip=clip,
        clip_value=clip_value,
        norm_penalty=norm_penalty,
        log_input_grads=log_input_grads,
        early_stop=patience,
        eval_every=eval_every,
        log_every=log_every,
        schedule=schedule,
        warmdown=warmdown,
        average=average,
        precision=precision,
        seed=seed,
        device=device,
        save_every_minutes=save_every_minutes,
        max_bad_steps=max_bad_steps,
    )
    fields = {RUN_FIELDS.get(k, f"train.{k}"): v for k, v in given.items() if k not in RESUME_SETTINGS}
    if fields.pop("train.preset_name", None):  # a preset given with --resume must match the run's sizes
        fields.update({f"model.{k}": v for k, v in sizes.items() if f"model.{k}" not in fields})
    try:
        result = run_train(
            data_cfg, model_cfg, train_cfg, out, corpus_dir, data_dir, resume, budget, log=click.echo, given=fields
        )
    except KeyboardInterrupt:
        if not distributed.is_main():  # torchrun: rank 0 speaks for the job
            raise SystemExit(130) from None
        saved = "the last periodic save is in" if distributed.launched() else "progress saved in"
        raise BilmError(f"interrupted: {saved} {out}/last; continue with: bilm train --resume --out {out}") from None
    if distributed.is_main():
        click.echo(summary_line(result, out, _run_kind(out, model_cfg.kind)))


# `bilm train` options that a resumed run may change; every other one given with --resume must match the run.
RESUME_SETTINGS = {
    "out", "resume", "max_steps", "max_minutes", "epochs", "device", "save_every_minutes", "max_bad_steps",
    "corpus_dir", "data_dir",
}  # fmt: skip
# Options whose config field has another name (the rest: train.<option>).
RUN_FIELDS = {
    "kind": "model.kind",
    "cell": "model.cell",
    "init": "model.init",
    "layers": "model.layers",
    "hidden": "model.hidden_size",
    "emb": "model.emb_size",
    "dropout": "model.dropout",
    "locked_dropout": "model.locked_dropout",
    "unigram_bias": "model.unigram_bias",
    "aux_lm": "model.aux_lm",
    "embed_dropout": "model.embed_dropout",
    "weight_drop": "model.weight_drop",
    "combine": "model.combine",
    "tie": "model.tie_weights",
    "adaptive_input": "model.adaptive_input",
    "output": "model.output",
    "corpus": "data.corpus",
    "max_vocab": "data.max_vocab",
    "min_freq": "data.min_freq",
    "lowercase": "data.lowercase",
    "patience": "train.early_stop",
}


def _given(ctx: click.Context) -> dict:
    """The options the user typed (or set through the environment), not their defaults."""
    from click.core import ParameterSource

    typed = (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
    return {k: v for k, v in ctx.params.items() if ctx.get_parameter_source(k) in typed}


def _run_kind(out, default: str) -> str:
    """The model kind of the run in `out` (a resumed run's own, not the --model default)."""
    from .checkpoint import read_config

    try:
        return read_config(Path(out) / "last")["model"]["kind"]
    except (BilmError, KeyError, TypeError):
        return default


def summary_line(result: dict, out, kind: str = "uni") -> str:
    """The last line of `bilm train`; a run that never validated has no perplexity, shown as -.

    bi's figure is labelled a pseudo-perplexity: it is not comparable with uni's."""
    ppl = lambda x: "-" if x is None else f"{x:.2f}"  # noqa: E731
    label = "valid pseudo-ppl" if kind == "bi" else "valid ppl"
    return (
        f"done: {result['step']:,} steps, {label} {ppl(result.get('valid_ppl'))} "
        f"(best {ppl(result.get('best_valid_ppl'))}), {result.get('tokens_per_s') or 0:,.0f} tokens/s -> {out}"
    )


def _choices(value: str | None) -> list[str] | None:
    from .choices import split_choices

    return split_choices(value)


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
    click.argument("text", required=False),
    click.option("-k", "k", type=click.IntRange(1, 1000), default=10, show_default=True),
    click.option("--choices", help="Rank these comma-separated candidates instead of the top k."),
    click.option(
        "--input",
        "input_file",
        type=click.File("r", encoding="utf-8"),
        help="Answer every line of FILE (- : stdin), in batches; TEXT `-` is the same as --input -.",
    ),
    click.option(
        "--json",
        "as_json",
        is_flag=True,
        help="Machine-readable candidates with probabilities and the filled `sequence` (one JSON object a line "
        "with --input).",
    ),
    device_option("cpu"),
    threads_option(),
]
BATCH_LINES = 64  # lines answered in one forward pass with --input


def _query_command(f):
    for option in reversed(query_options):
        f = option(f)
    return f


def _lines(text: str | None, input_file) -> object | None:
    """The input lines for a batch run (--input FILE, or TEXT `-` for stdin); None for one TEXT."""
    if text is not None and input_file is not None:
        raise BilmError("give TEXT or --input FILE, not both")
    if text == "-":
        return sys.stdin
    if input_file is None and text is None:
        raise BilmError("give the TEXT, or - to read one sentence a line from stdin, or --input FILE")
    return input_file


def _answer_lines(predictor, lines, fill: bool, k: int, choices, as_json: bool) -> None:
    """Answer a stream of lines BATCH_LINES at a time; a bad line gets an error record and exit status 1 at the end."""
    failed, total = [], 0

    def flush(batch):
        results = predictor.answer_lines([t for _, t in batch], fill, k, choices, BATCH_LINES)
        for (number, text), result in zip(batch, results, strict=True):
            error = str(result) if isinstance(result, BilmError) else None
            if error:
                failed.append(number)
            if as_json:
                record = dict(line=number, input=text)
                record.update(error=error) if error else record.update(predictions=[p.to_dict() for p in result])
                click.echo(json.dumps(record))
            else:
                click.echo(f"[{number}] {text}")
                click.echo(f"error: {error}") if error else _show(result, False)
        sys.stdout.flush()

    batch = []
    for number, line in enumerate(lines, 1):
        text = line.rstrip("\r\n")
        if not text.strip():
            continue
        total += 1
        batch.append((number, text))
        if len(batch) == BATCH_LINES:
            flush(batch)
            batch = []
    if batch:
        flush(batch)
    if failed:
        shown = ", ".join(map(str, failed[:10])) + (", ..." if len(failed) > 10 else "")
        raise BilmError(f"{len(failed)} of {total} lines failed (line {shown}); the others were answered")


@cli.command()
@_query_command
def predict(checkpoint, text, k, choices, input_file, as_json, device):
    """Next word after TEXT (uni model; a bi model fills a blank at the end).

    TEXT `-` or --input FILE: one text a line, answered in batches.
    """
    from .predict import Predictor

    lines = _lines(text, input_file)
    predictor = Predictor.load(checkpoint, device)
    if lines is not None:
        return _answer_lines(predictor, lines, False, k, _choices(choices), as_json)
    _show([predictor.predict(text, k, _choices(choices))], as_json)


@cli.command()
@_query_command
@click.option(
    "--uni",
    "uni_checkpoint",
    type=click.Path(),
    default=None,
    help="A uni checkpoint of the same vocabulary: a bi CHECKPOINT's blank is also ranked by both (uni+bi).",
)
def fill(checkpoint, text, k, choices, input_file, as_json, device, uni_checkpoint):
    """Fill the one blank (___, [MASK] or <mask>) in TEXT: bi directly; uni by left context and by rescoring.

    TEXT `-` or --input FILE: one sentence a line, answered in batches, e.g.
    bilm fill CKPT --input sentences.txt --json > answers.jsonl
    """
    from .predict import Predictor

    lines = _lines(text, input_file)
    predictor = Predictor.load(checkpoint, device, uni_checkpoint)
    if lines is not None:
        return _answer_lines(predictor, lines, True, k, _choices(choices), as_json)
    _show(predictor.fill(text, k, _choices(choices)), as_json)


def _register() -> None:
    """Commands that live beside the modules they drive (each imports torch lazily)."""
    from .cli_eval import evaluate, mscc
    from .lab_cli import bench, gradients, ledger
    from .repl import repl
    from .serve import serve

    for command in (repl, evaluate, mscc, gradients, bench, ledger, serve):
        cli.add_command(command)


_register()


def main():
    cli(prog_name="bilm")


if __name__ == "__main__":
    main()
