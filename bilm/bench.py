"""What the benchmarks in `scripts/` share: the baseline, FLOPs from model shape, A/B timing, memory.

Figures on a small shared machine drift with whatever else runs, so the scripts never compare a
number with one measured at another time: every configuration is built in the same process and
timed in alternating blocks (A B C A B C ...), and each reports the median of its blocks.

The baseline is the PyTorch `word_language_model` example's configuration (2x200 tied LSTM, full
softmax, SGD lr 20, clip 0.25, batch 20, BPTT 35, dropout 0.2, lr / 4 on a plateau), rebuilt with
bilm's own model and trainer so that only the configuration differs.
"""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace

import numpy as np
import torch

from .data import PreparedData, unigram_counts
from .distributed import ONE, Group
from .models import Batch, ModelConfig, adaptive_cutoffs
from .train import TrainConfig, Trainer, _task, _Window, model_for


def baseline_configs(kind: str = "uni") -> tuple[ModelConfig, TrainConfig]:
    """The PyTorch example's model and training settings (`--tied --dropout 0.2 --lr 20`)."""
    model = ModelConfig(
        kind=kind,
        emb_size=200,
        hidden_size=200,
        layers=2,
        dropout=0.2,
        locked_dropout=False,
        output="full",
        unigram_bias=False,
    )
    train = TrainConfig(optimizer="sgd", lr=20.0, batch_size=20, bptt=35, clip=0.25, schedule="plateau")
    return model, train


def peak_rss_mb(children: bool = False) -> float:
    """Peak resident memory of this process (or of its finished children), in MiB."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF)
    return usage.ru_maxrss / (1024 * 1024 if sys.platform == "darwin" else 1024)


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def gemm_peak(dtype: torch.dtype = torch.float32, n: int = 2048, seconds: float = 1.0) -> float:
    """GFLOP/s of an n x n matmul on the current thread setting: the ceiling the models are held to."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    a @ b
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        runs += 1
    return 2 * n**3 * runs / (time.perf_counter() - start) / 1e9


# -- FLOPs from model shape ---------------------------------------------------------------


def cluster_shares(ids: np.ndarray, cutoffs: list[int], vocab_size: int) -> list[float]:
    """Share of target tokens in each adaptive-softmax tail cluster (the head sees every token)."""
    counts = unigram_counts(ids, vocab_size).numpy()
    bounds = [*cutoffs, vocab_size]
    return [float(counts[a:b].sum() / max(counts.sum(), 1)) for a, b in zip(bounds, bounds[1:], strict=False)]


def output_flops(cfg: ModelConfig, shares: list[float] | None = None) -> float:
    """Forward GEMM FLOPs per predicted token of the output layer.

    Full softmax: one (in x V) product. Adaptive softmax (training, with targets): the head
    (cutoff + clusters) for every token, and cluster i's two products only for the tokens whose
    target lies in it (`shares`, see `cluster_shares`); without shares every cluster is counted,
    as when the whole distribution is asked for.
    """
    cutoffs = adaptive_cutoffs(cfg)
    tied = cfg.ties_output
    d = cfg.emb_size if tied else cfg.hidden_size
    proj = 2 * cfg.hidden_size * cfg.emb_size if tied and cfg.hidden_size != cfg.emb_size else 0
    if not cutoffs:
        return proj + 2 * d * cfg.vocab_size
    div = 4.0 if d >= 64 else 2.0
    flops = proj + 2 * d * (cutoffs[0] + len(cutoffs))
    bounds = [*cutoffs, cfg.vocab_size]
    shares = shares or [1.0] * len(cutoffs)
    for i, share in enumerate(shares):
        width = int(d // div ** (i + 1))
        flops += share * 2 * width * (d + bounds[i + 1] - bounds[i])
    return flops


def rnn_flops(cfg: ModelConfig) -> float:
    """Forward GEMM FLOPs per time step of one stack: gates x (input + recurrent) per layer."""
    gates = {"lstm": 4, "gru": 3}.get(cfg.cell, 1)
    total, size_in = 0, cfg.emb_size
    for _ in range(cfg.layers):
        total += 2 * gates * cfg.hidden_size * (size_in + cfg.hidden_size)
        size_in = cfg.hidden_size
    return total


def train_flops_per_token(cfg: ModelConfig, shares: list[float] | None = None) -> float:
    """Training GEMM FLOPs per predicted token: 3x forward (backward = one product for inputs, one for weights).

    bi counts two stacks and the combining layer per word; its `<bos>`/`<eos>`/padding steps are left out.
    """
    forward = rnn_flops(cfg) + output_flops(cfg, shares)
    if cfg.kind == "bi":
        forward += rnn_flops(cfg) + 2 * (2 * cfg.hidden_size) * cfg.hidden_size
    return 3 * forward


# -- timing ---------------------------------------------------------------------------------


class StepBench:
    """One configuration, trained through the real `Trainer` (the code `bilm train` runs), timed in blocks."""

    def __init__(
        self,
        data: PreparedData,
        model_cfg: ModelConfig,
        train_cfg: TrainConfig,
        threads: int | None = None,
        fused_adamw: bool | None = None,
        group: Group = ONE,
    ):
        """`fused_adamw`: True / False swaps in AdamW as one fused kernel / a loop over parameters; None keeps it.
        `group`: the processes training together under torchrun (distributed.py)."""
        self.train_cfg, self.threads = replace(train_cfg, device="cpu", log_every=0, eval_every=0), threads
        torch.manual_seed(self.train_cfg.seed)
        self.model_cfg, model = model_for(data, model_cfg)
        cpu = torch.device("cpu")
        batches, self.evaluate = _task(self.model_cfg.kind, data, self.train_cfg, cpu, group)
        self.trainer = Trainer(model, self.train_cfg, batches, len(batches), self.evaluate, cpu, group=group)
        self.trainer._clock = time.perf_counter()  # set by Trainer.fit, which the benchmark bypasses
        if fused_adamw is not None:
            t, params = self.train_cfg, [p for p in model.parameters() if p.requires_grad]
            self.trainer.optimizer = torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay, fused=fused_adamw)
        self.batches: Iterator[Batch] = self._forever(batches)

    @staticmethod
    def _forever(batches: Callable[[int, int], Iterator[Batch]]) -> Iterator[Batch]:
        epoch = 0
        while True:
            yield from batches(epoch, 0)
            epoch += 1

    def run(self, seconds: float) -> float:
        """Train for about `seconds`; tokens/s over the training steps alone.

        The trainer's clock decides (processes training together agree on it, so they stop at one step).
        """
        if self.threads:
            torch.set_num_threads(self.threads)
        self.trainer._clock = time.perf_counter()  # this block's time only
        window, end = _Window(), self.trainer.elapsed + seconds
        while self.trainer.elapsed < end:
            self.trainer.train_step(next(self.batches), window)
        return window.tokens_per_s

    def train_tokens(self, tokens: int) -> None:
        """Continue training until `tokens` tokens in all have been trained on."""
        if self.threads:
            torch.set_num_threads(self.threads)
        window = _Window()
        while self.trainer.tokens < tokens:
            self.trainer.train_step(next(self.batches), window)

    def valid_ppl(self) -> float:
        return self.evaluate(self.trainer.model)["ppl"]


def alternate(runs: dict[str, Callable[[], float]], rounds: int, log: Callable[[str], None] = print) -> dict:
    """Call every run once per round, in turn, `rounds` times; each run's list of results."""
    results: dict[str, list[float]] = {name: [] for name in runs}
    for r in range(rounds):
        for name, run in runs.items():
            results[name].append(run())
        log(f"round {r + 1}/{rounds}: " + ", ".join(f"{n} {v[-1]:,.0f}" for n, v in results.items()))
    return results
