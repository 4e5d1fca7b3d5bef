"""The ledger's experiments: one measurement per claim of the RNN notes (ledger.py judges them).

radius_sweep     per-step factor of the state gradient against the recurrent weight's spectral
                 radius, for linear, sigmoid, tanh and ReLU RNNs at initialisation (claims 1, 2, 4)
init_profiles    g(k) of freshly initialised language models per cell and number of layers (3, 4)
esn_adding       the adding problem for an echo state network with a ridge-regression readout (6)
bi_gain          fill-in accuracy of a bi model against uni-left by the context on each side (7)

The adding-problem runs of claims 5 and 6 are `synthetic.run_bench` calls (truncated BPTT,
clipping, the norm penalty and every cell are options of it). Everything is seeded and sized
for a CPU: the whole ledger fits `make lab` (20 minutes on 2 cores).
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from .cells import LoopRNN, make_esn
from .gradients import StepRecorder, fit_decay, line_fit, profile
from .models import ModelConfig, build_model
from .synthetic import ADDING_SOLVED_MSE, adding_batch

ACTIVATIONS = {"linear": lambda z: z, "sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu}


def derivative_sup(name: str, lo: float = -20.0, hi: float = 20.0, points: int = 400_001) -> float:
    """The largest derivative of an activation over a fine grid of [lo, hi] (autograd, float64)."""
    z = torch.linspace(lo, hi, points, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(ACTIVATIONS[name](z).sum(), z)
    return float(grad.max())


def orthogonal(size: int, generator: torch.Generator) -> torch.Tensor:
    """A random orthogonal matrix (QR of a Gaussian, signs fixed): every singular value and |eigenvalue| is 1."""
    q, r = torch.linalg.qr(torch.randn(size, size, generator=generator, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r))


def scaled_rnn(activation: str, radius: float, hidden: int, input_scale: float, generator) -> LoopRNN:
    """h_t = f(input_scale x_t + radius Q h_{t-1}), Q orthogonal, no biases: the factor per step is radius * f'."""
    rnn = LoopRNN(hidden, hidden, activation=ACTIVATIONS[activation]).double()
    with torch.no_grad():
        rnn.weight_ih_l0.copy_(input_scale * torch.eye(hidden, dtype=torch.float64))
        rnn.weight_hh_l0.copy_(radius * orthogonal(hidden, generator))
        rnn.bias_ih_l0.zero_()
        rnn.bias_hh_l0.zero_()
    return rnn


@torch.enable_grad()
def state_gradients(rnn: torch.nn.Module, x: torch.Tensor, generator: torch.Generator) -> np.ndarray:
    """||dL/ds_{T-k}|| (N, T) for k = 0..T-1, L = v . h_T with a random unit vector v per window.

    For a linear RNN with recurrent weights radius * Q (Q orthogonal) this is radius^k exactly.
    """
    recorder = StepRecorder(rnn)
    recorder(x)
    states = [s[0] for s in recorder.states]  # (layers, N, H) each
    v = torch.randn(states[-1].shape[1:], generator=generator, dtype=x.dtype)
    v = v / v.norm(dim=-1, keepdim=True)
    grads = torch.autograd.grad((states[-1][-1] * v).sum(), states)
    norms = torch.stack([g.square().sum(dim=(0, 2)).sqrt() for g in grads], 1)  # (N, T)
    return norms.flip(1).numpy()


def radius_sweep(
    activations=("linear", "sigmoid", "tanh", "relu"),
    radii=(0.25, 0.5, 0.75, 0.9, 1.0, 1.1, 1.25, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 12.0, 16.0),
    hidden: int = 64,
    length: int = 60,
    count: int = 100,
    input_scale: float = 0.5,
    seed: int = 0,
) -> dict:
    """Per-step factor r of the state gradient (fit of log median ||dL/ds_{T-k}|| on k) per activation and radius.

    The same orthogonal direction Q and the same inputs serve every activation and radius, so
    the curves differ by the activation and the radius only. Half-life ln 2 / -ln r in steps.
    """
    rows = []
    x = torch.randn(count, length, hidden, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    for name in activations:
        for radius in radii:
            g = torch.Generator().manual_seed(seed + 1)
            rnn = scaled_rnn(name, radius, hidden, input_scale, g)
            norms = state_gradients(rnn, x, g)
            median = np.median(norms, axis=0)
            rate, half_life = fit_decay(median)
            keep = median > 0
            r2 = line_fit(np.flatnonzero(keep).astype(float), np.log(median[keep]))[1] if keep.sum() > 2 else None
            rows.append(
                dict(activation=name, radius=radius, rate=rate, half_life=half_life, exp_r2=r2, median=median.tolist())
            )
    bounds = {name: 1.0 / derivative_sup(name) for name in activations}
    crossings = {name: crossing([r for r in rows if r["activation"] == name]) for name in activations}
    settings = dict(hidden=hidden, length=length, count=count, input_scale=input_scale, seed=seed)
    return dict(rows=rows, bound=bounds, crossing=crossings, settings=settings)


def crossing(rows: list[dict]) -> float | None:
    """The radius at which the per-step factor reaches 1 (log-linear interpolation); None if it never does."""
    rows = sorted(rows, key=lambda r: r["radius"])
    for below, above in zip(rows, rows[1:], strict=False):
        if below["rate"] < 1 <= above["rate"]:
            a, b = math.log(max(below["rate"], 1e-300)), math.log(above["rate"])
            t = -a / (b - a) if b > a else 0.0
            return math.exp(math.log(below["radius"]) + t * (math.log(above["radius"]) - math.log(below["radius"])))
    return rows[0]["radius"] if rows and rows[0]["rate"] >= 1 else None


def fresh_model(
    cell: str,
    vocab: int,
    kind: str = "uni",
    init: str = "default",
    options: dict | None = None,
    emb: int = 200,
    hidden: int = 200,
    layers: int = 2,
):
    """An untrained language model of `cell` with a full softmax (what `bilm gradients --untrained` measures)."""
    cfg = ModelConfig(
        kind=kind,
        vocab_size=vocab,
        cell=cell,
        init=init,
        cell_options=dict(options or {}),
        emb_size=emb,
        hidden_size=hidden,
        layers=layers,
        output="full",
    )
    return build_model(cfg)


def init_profiles(
    cells=("rnn-sigmoid", "rnn-tanh"),
    layers=(1, 2, 3, 4),
    hidden: int = 64,
    length: int = 30,
    count: int = 100,
    vocab: int = 1000,
    seed: int = 0,
) -> list[dict]:
    """g(k) of fresh uni models (float64, random tokens) for each cell and depth: one entry each."""
    stream = torch.randint(5, vocab, (count * (length + 1) * 2,), generator=torch.Generator().manual_seed(seed))
    entries = []
    for cell in cells:
        for n_layers in layers:
            torch.manual_seed(seed)
            model = fresh_model(cell, vocab, emb=hidden, hidden=hidden, layers=n_layers).double()
            (entry,) = profile(model, stream, [length], count, hidden=False, seed=seed)
            entries.append(dict(cell=cell, layers=n_layers, **entry))
    return entries


@torch.no_grad()
def esn_adding(
    T: int,
    hidden: int = 400,
    train: int = 2000,
    test: int = 500,
    ridge: float = 1e-6,
    seed: int = 0,
    **options,
) -> dict:
    """The adding problem for a frozen reservoir whose linear readout of the last state is fitted by ridge regression.

    The reservoir is `cells.make_esn` (reservoirpy's option names); the readout is the closed
    form (F^T F + ridge I)^-1 F^T y over `train` sequences, tested on `test` fresh ones (the
    test batch of `synthetic.run_bench`'s seed). Returns a row like run_bench's.
    """
    started = time.perf_counter()
    torch.manual_seed(seed)
    rnn = make_esn(2, hidden, 1, 0.0, **options)

    def features(batch):
        out, _ = rnn(batch.inputs)
        last = out[:, -1].double()
        return torch.cat([last, torch.ones(len(last), 1, dtype=torch.float64)], 1)

    fit = adding_batch(train, T, torch.Generator().manual_seed(seed))
    held = adding_batch(test, T, torch.Generator().manual_seed(10_000 + seed))
    F = features(fit)
    w = torch.linalg.solve(F.T @ F + ridge * torch.eye(F.size(1), dtype=F.dtype), F.T @ fit.targets.double())
    mse = float((features(held) @ w - held.targets.double()).square().mean())
    return dict(
        task="adding",
        cell="esn",
        T=T,
        readout="ridge",
        options=options,
        hidden_size=hidden,
        train_sequences=train,
        loss=mse,
        mse=mse,
        baseline=1 / 6,
        solved=mse < ADDING_SOLVED_MSE,
        out_of_time=False,
        steps=0,
        seconds=round(time.perf_counter() - started, 2),
        wall_seconds=round(time.perf_counter() - started, 2),
    )


CONTEXT_BUCKETS = ((0, 0), (1, 1), (2, 3), (4, 7), (8, 15), (16, None))


def _bucket_label(lo: int, hi: int | None) -> str:
    return f"{lo}+" if hi is None else (str(lo) if lo == hi else f"{lo}-{hi}")


def gain_table(bi_ranks, uni_ranks, context, sentence, boot) -> list[dict]:
    """bi top-1, uni-left top-1 and the paired gain (with its bootstrap interval) per bucket of `context` words."""
    from .evaluate import metric_values

    bi_hit, uni_hit = metric_values(bi_ranks, "top1"), metric_values(uni_ranks, "top1")
    rows = []
    for lo, hi in CONTEXT_BUCKETS:
        inside = (context >= lo) & (context <= (hi if hi is not None else np.inf))
        if not inside.any():
            continue
        diff = bi_hit[inside] - uni_hit[inside]
        lo_ci, hi_ci = boot.interval(diff, sentence[inside])
        rows.append(
            dict(
                words=_bucket_label(lo, hi),
                n=int(inside.sum()),
                bi=float(bi_hit[inside].mean()),
                uni_left=float(uni_hit[inside].mean()),
                gain=float(diff.mean()),
                ci=[lo_ci, hi_ci],
            )
        )
    return rows


WORKED_EXAMPLE = "The boys went to ___ and then they got out of the pool ."


def bi_gain(
    uni_path: str,
    bi_path: str,
    split: str = "test",
    max_sentences: int | None = None,
    bootstrap: int = 1000,
    seed: int = 1234,
    corpus_dir: str | None = None,
    data_dir: str | None = None,
    example: str = WORKED_EXAMPLE,
    log=print,
) -> dict:
    """Top-1 of bi and uni-left on every blank of `split`, the gain by words to the right and to the left of the blank.

    If the bi model wins because it sees the future, its gain should be small with no word to
    the right of the blank and grow with the right context. Plus `example` filled by both models.
    """
    from .checkpoint import load_checkpoint
    from .data import DataConfig, prepare
    from .evaluate import Bootstrap, FillConfig, fill_in
    from .predict import Predictor

    started = time.perf_counter()
    uni, bi = load_checkpoint(uni_path), load_checkpoint(bi_path)
    if uni.tokenizer.to_str() != bi.tokenizer.to_str():
        raise ValueError(f"{uni_path} and {bi_path} have different vocabularies: their ranks would not compare")
    data = prepare(DataConfig(**uni.config["data"]), corpus_dir or uni.config.get("corpus_dir"), data_dir, log=log)
    sentences = list(data.sentences(split))
    cfg = FillConfig(rescore_sample=0, bootstrap=bootstrap, seed=seed, max_sentences=max_sentences)
    result = fill_in(sentences, torch.device("cpu"), cfg, uni=uni.model, bi=bi.model)
    boot = Bootstrap(result.n_sentences, bootstrap, seed)
    right = result.length - result.index - 1
    args = (result.ranks["bi"], result.ranks["uni-left"])
    overall = gain_table(*args, np.zeros_like(right), result.sentence, boot)[0]
    worked = {
        method.method: [dict(word=c.word, prob=c.prob) for c in method.candidates]
        for predictor in (Predictor(bi), Predictor(uni))
        for method in predictor.fill(example, k=5)
    }
    return dict(
        split=split,
        corpus=data.config.corpus,
        blanks=int(len(result.target)),
        sentences=result.n_sentences,
        overall=overall,
        by_right=gain_table(*args, right, result.sentence, boot),
        by_left=gain_table(*args, result.index, result.sentence, boot),
        example=example,
        worked=worked,
        checkpoints=dict(uni=str(uni_path), bi=str(bi_path)),
        seconds=round(time.perf_counter() - started, 1),
    )
