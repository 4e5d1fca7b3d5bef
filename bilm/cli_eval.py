"""`bilm evaluate` and `bilm mscc`: module-level click commands that cli.py registers.

    bilm evaluate --uni checkpoints/wt2-uni --bi checkpoints/wt2-bi --split test --out reports/wt2
    bilm mscc --uni checkpoints/gut-uni --bi checkpoints/gut-bi --out reports/mscc

Each command is a thin layer over `run_evaluate` / `run_mscc`, which tests and
notebooks call directly.
"""

from __future__ import annotations

import time
from pathlib import Path

import click

from .errors import BilmError
from .options import count, device_option
from .threads import threads_option

# torch, matplotlib and the models load inside the functions: `bilm --help` stays instant.

CACHED_METHODS = {"bi": "bi", "uni-left": "uni"}  # fill-in methods that take a cache, and the model each reads


def _load(paths: dict[str, str | None], device) -> dict:
    """Checkpoints by role (uni, bi), each checked to hold the model its role names."""
    from .checkpoint import load_checkpoint

    ckpts = {role: load_checkpoint(p, device) for role, p in paths.items() if p}
    if not ckpts:
        raise BilmError("give at least one checkpoint: --uni and/or --bi")
    for role, c in ckpts.items():
        if c.model.cfg.kind != role:
            raise BilmError(f"--{role} {c.path} holds a {c.model.cfg.kind} model")
    return ckpts


def run_evaluate(
    uni: str | None,
    bi: str | None,
    split: str,
    out: str | Path,
    cfg,
    corpus_dir: str | None = None,
    data_dir: str | None = None,
    device: str = "auto",
    log=print,
    gradients: str | Path | None = None,
    text: str | Path | None = None,
    ledger: str | Path | None = None,
    cache: bool = False,
) -> dict:
    """Perplexity and fill-in accuracy on `split` of the models' corpus; writes the report into `out`.

    `cfg` is an `evaluate.FillConfig`. `gradients`: a `bilm gradients --out` folder whose
    section joins the report. `text`: a text file to evaluate on instead of `split`.
    `ledger`: a `bilm ledger --out` folder whose verdict table joins the report.
    `cache`: also each model with a continuous cache over the document so far (uni: its stream perplexity and
    uni-left+cache; bi: bi+cache), θ and λ chosen on the corpus's valid split.
    Returns the report paths and every figure.
    """
    from .data import DataConfig, context_windows, prepare, prepare_text
    from .evaluate import fill_in, lm_quality, summarize
    from .machine import resolve_device
    from .report import Report, cache_section, curves_section, fill_section, lm_section, run_meta

    started = time.perf_counter()
    dev = resolve_device(device)
    ckpts = _load({"uni": uni, "bi": bi}, dev)
    lab = None
    if gradients is not None:
        from .lab_plots import lab_section

        lab = lab_section(gradients)  # before the long evaluation: a wrong folder fails at once
    verdicts = None
    if ledger is not None:
        from .ledger import ledger_from

        verdicts = ledger_from(ledger)
    first = next(iter(ckpts.values()))
    if (
        len({str(sorted(c.config["data"].items())) for c in ckpts.values()}) > 1
        or len({c.tokenizer.to_str() for c in ckpts.values()}) > 1
    ):
        raise BilmError(
            "the checkpoints were trained on different corpora or vocabularies: their ranks would not compare"
        )
    corpus_dir = corpus_dir or first.config.get("corpus_dir")
    corpus = None
    if text is None or cache:  # a cache's θ and λ are chosen on the corpus's valid split
        corpus = prepare(DataConfig(**first.config["data"]), corpus_dir, data_dir, log=log)
    if text is not None:  # the user's own held-out text, read with the checkpoints' tokenizer
        data, split = prepare_text(text, first.tokenizer, data_dir), "text"
    else:
        data = corpus
    if data.tokenizer.to_str() != first.tokenizer.to_str():
        raise BilmError(f"{data.path}: the prepared vocabulary differs from the checkpoint's (corpus files changed?)")
    ids, spans = data.stream(split), data.spans(split)
    quality = {role: lm_quality(c.model, ids, spans, dev) for role, c in ckpts.items()}
    for role, q in quality.items():
        log(
            f"{role}: {split} {'pseudo-perplexity' if role == 'bi' else 'perplexity'} {q['ppl']:.2f} over "
            f"{q['tokens']:,} tokens ({100 * q['unk_rate']:.2f} % <unk>)"
        )
    cached = None
    if cache and "uni" in ckpts:
        from .cache import cache_perplexity

        cached = cache_perplexity(ckpts["uni"].model, corpus.stream("valid"), ids, dev, split=split)
        log(
            f"uni + cache: {split} perplexity {cached['eval']['cache_ppl']:.2f} (θ {cached['theta']:g}, "
            f"λ {cached['lam']:g}, chosen on valid: {cached['tune']['ppl']:.2f} -> {cached['tune']['cache_ppl']:.2f})"
        )
    fill_caches = _tune_fill_caches(ckpts, corpus, cfg, dev, log) if cache else {}
    sentences, documents = list(data.sentences(split)), data.documents(split)
    windows = None
    if cfg.context:
        windows = context_windows(ids, spans, documents, cfg.context)
        unit = data.document_unit or "text"
        log(f"fill-in: each sentence read with up to {cfg.context} tokens of its {unit} on either side")
    models = dict(uni=_model(ckpts, "uni"), bi=_model(ckpts, "bi"))
    result = fill_in(sentences, dev, cfg, **models, windows=windows, keep_features=tuple(fill_caches))
    if fill_caches:
        from .cache import rank_with_cache

        for label, tuned in fill_caches.items():
            model = models[CACHED_METHODS[label]]
            rank_with_cache(model, result, label, documents, tuned["theta"], tuned["lam"], tuned["window"])
        result.features.clear()
    summary = summarize(result, data.tokenizer, cfg, documents, data.document_unit)
    r = summary["resampled"]
    note = f" ({r['note']})" if r["note"] else ""
    log(f"intervals: {r['resamples']} bootstrap resamples of {r['units']:,} {r['unit']}s{note}")
    for method, groups in summary["methods"].items():
        a = groups["all"]["all"]
        log(f"{method:<12} top-1 {100 * a['top1']:5.1f} %  top-5 {100 * a['top5']:5.1f} %  ({a['n']:,} blanks)")
    meta = run_meta(
        ckpts, corpus=data.config.corpus, split=split, seed=cfg.seed, seconds=round(time.perf_counter() - started, 1)
    )
    sections = [
        lm_section(quality, split),
        (cached or fill_caches) and cache_section(cached, fill_caches),
        fill_section(summary, cfg.to_dict()),
        curves_section(ckpts),
        lab,
        verdicts,
    ]
    title = f"bilm evaluation: {data.config.corpus} {split}"
    paths = Report(title, meta, [s for s in sections if s]).write(out)
    log(f"report: {paths['md']}, {paths['html']}, {paths['json']} ({meta['seconds']:.0f} s)")
    return dict(paths=paths, quality=quality, summary=summary, meta=meta, cache=cached, fill_caches=fill_caches)


def _tune_fill_caches(ckpts: dict, corpus, cfg, dev, log) -> dict:
    """θ and λ of each fill-in method's cache ("bi", "uni-left"), chosen on the corpus's valid split."""
    from .cache import tune_fill_cache
    from .data import context_windows

    sentences, documents = list(corpus.sentences("valid")), corpus.documents("valid")
    windows = None
    if cfg.context:
        windows = context_windows(corpus.stream("valid"), corpus.spans("valid"), documents, cfg.context)
    tuned = {}
    for label, role in CACHED_METHODS.items():
        if role in ckpts:
            tuned[label] = t = tune_fill_cache(
                ckpts[role].model, label, sentences, documents, dev, cfg.batch_size, windows
            )
            log(
                f"{label} + cache: θ {t['theta']:g}, λ {t['lam']:g}, chosen on valid (blank perplexity "
                f"{t['tune']['ppl']:.2f} -> {t['tune']['cache_ppl']:.2f})"
            )
    return tuned


def run_mscc(
    uni: str | None,
    bi: str | None,
    questions: str | Path,
    answers: str | Path,
    out: str | Path,
    device: str = "auto",
    log=print,
) -> dict:
    """MSCC accuracy of each model; writes the report into `out`."""
    from .machine import resolve_device
    from .mscc import evaluate_mscc, load_questions
    from .report import Report, curves_section, mscc_section, run_meta

    started = time.perf_counter()
    dev = resolve_device(device)
    ckpts = _load({"uni": uni, "bi": bi}, dev)
    qs = load_questions(questions, answers)
    result = evaluate_mscc({role: (c.model, c.tokenizer) for role, c in ckpts.items()}, qs, dev)
    for role, r in result["models"].items():
        log(
            f"{role}: MSCC accuracy {100 * r['accuracy']:.1f} % ({r['correct']:g}/{r['questions']}), "
            f"{r['oov_candidates']} OOV candidates ({r['oov_keys']} of them keys)"
        )
    meta = run_meta(
        ckpts,
        questions=str(questions),
        answers=str(answers),
        seconds=round(time.perf_counter() - started, 1),
    )
    sections = [mscc_section(result), curves_section(ckpts)]
    paths = Report("bilm: MSR Sentence Completion Challenge", meta, [s for s in sections if s]).write(out)
    log(f"report: {paths['md']}, {paths['html']}, {paths['json']}")
    return dict(paths=paths, result=result, meta=meta)


def _model(ckpts: dict, role: str):
    return ckpts[role].model if role in ckpts else None


checkpoint_options = [
    click.option("--uni", type=click.Path(), help="uni checkpoint or run folder."),
    click.option("--bi", type=click.Path(), help="bi checkpoint or run folder."),
    device_option(),
    threads_option(),
]


def _with(options):
    def wrap(f):
        for option in reversed(options):
            f = option(f)
        return f

    return wrap


@click.command()
@_with(checkpoint_options)
@click.option("--split", type=click.Choice(["valid", "test"]), default="test", show_default=True)
@click.option(
    "--text",
    type=click.Path(dir_okay=False),
    default=None,
    help="Evaluate on this text file instead (UTF-8, paragraphs split into sentences as the corpus readers do).",
)
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Report folder.")
@click.option(
    "--rescore-sample",
    type=count,
    default=1000,
    show_default=True,
    help="Blanks that uni-rescore, bi-rescore and uni+bi rank (0: skip them).",
)
@click.option(
    "--shortlist", type=click.IntRange(1), default=None, help="uni-rescore candidates [default: as bilm fill]."
)
@click.option(
    "--bi-shortlist",
    type=click.IntRange(1),
    default=None,
    help="bi-rescore and uni+bi candidates [default: as bilm fill].",
)
@click.option(
    "--max-sentences",
    type=click.IntRange(1),
    default=None,
    help="Fill-in on the first N sentences only (perplexity uses the whole split).",
)
@click.option("--bootstrap", type=click.IntRange(0), default=1000, show_default=True, help="Resamples for the CIs.")
@click.option("--batch-size", type=click.IntRange(1), default=256, show_default=True, help="Sentences per pass.")
@click.option(
    "--context",
    type=click.IntRange(0),
    default=0,
    show_default=True,
    help="Fill-in: every method reads each sentence with up to N tokens of its document on either side (0: the "
    "sentence alone).",
)
@click.option("--seed", type=int, default=1234, show_default=True)
@click.option(
    "--gradients",
    type=click.Path(file_okay=False),
    default=None,
    help="A `bilm gradients --out` folder: its section (and benchmarks) join the report.",
)
@click.option(
    "--ledger",
    type=click.Path(file_okay=False),
    default=None,
    help="A `bilm ledger --out` folder (make lab): the claims and their verdicts join the report.",
)
@click.option(
    "--cache",
    is_flag=True,
    help="Also each model with a continuous cache over the document so far (Grave et al. 2017): uni perplexity, "
    "uni-left+cache and bi+cache fill-in; θ and λ chosen on the valid split.",
)
@click.option("--corpus-dir", envvar="BILM_CORPUS_DIR", type=click.Path(file_okay=False))
@click.option("--data-dir", envvar="BILM_DATA_DIR", type=click.Path(file_okay=False))
def evaluate(
    uni,
    bi,
    device,
    split,
    text,
    out,
    rescore_sample,
    shortlist,
    bi_shortlist,
    max_sentences,
    bootstrap,
    batch_size,
    context,
    seed,
    gradients,
    ledger,
    cache,
    corpus_dir,
    data_dir,
):
    """Perplexity and fill-in-the-blank accuracy (bi, bi-rescore, uni+bi, uni-left, uni-rescore) -> report.md/html/json.

    uni+bi needs both --uni and --bi."""
    from .evaluate import FillConfig

    cfg = FillConfig(
        rescore_sample,
        batch_size=batch_size,
        bootstrap=bootstrap,
        seed=seed,
        max_sentences=max_sentences,
        context=context,
    )
    if shortlist is not None:
        cfg.shortlist = shortlist
    if bi_shortlist is not None:
        cfg.bi_shortlist = bi_shortlist
    run_evaluate(
        uni,
        bi,
        split,
        out,
        cfg,
        corpus_dir,
        data_dir,
        device,
        log=click.echo,
        gradients=gradients,
        text=text,
        ledger=ledger,
        cache=cache,
    )


@click.command()
@_with(checkpoint_options)
@click.option("--questions", type=click.Path(dir_okay=False), help="testing_data.csv [default: shared MSCC folder]")
@click.option("--answers", type=click.Path(dir_okay=False), help="test_answer.csv [default: shared MSCC folder]")
@click.option("--out", type=click.Path(file_okay=False), default="reports/mscc", show_default=True)
def mscc(uni, bi, device, questions, answers, out):
    """Accuracy on the MSR Sentence Completion Challenge (1,040 questions, 5 choices)."""
    from .mscc import ANSWERS_FILE, QUESTIONS_FILE, default_dir

    if questions is None or answers is None:
        folder = default_dir()
        if folder is None:
            raise BilmError("MSCC files not found: pass --questions and --answers")
        questions = questions or folder / QUESTIONS_FILE
        answers = answers or folder / ANSWERS_FILE
    run_mscc(uni, bi, questions, answers, out, device, log=click.echo)
