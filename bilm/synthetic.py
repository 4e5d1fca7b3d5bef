"""Classic long-range benchmarks: the adding problem and the copy task.

Both put the information a model needs T steps before it is asked for, so they
test the same thing as the gradient measurements, with a pass/fail answer.

adding (Hochreiter & Schmidhuber 1997; Le et al. 2015)
    inputs (B, T, 2): a value ~ U(0, 1) and a marker; exactly two markers, one in
    each half. Target: the sum of the two marked values. Always answering 1 (the
    mean) gives MSE = Var(U + U) = 1/6 ~ 0.167. Solved: test MSE < 0.01.
copy (Hochreiter & Schmidhuber 1997; Arjovsky et al. 2016)
    inputs (B, T+20): 10 symbols from 1..8, T-1 blanks (0), a delimiter (9), 10 blanks.
    Targets: blanks for T+10 steps, then the 10 symbols. Predicting blanks and then
    uniform symbols gives cross-entropy 10 log 8 / (T+20). Solved: >= 99% of the
    recalled symbols right on the test batch.

The models own their loss (`model.loss(batch, state) -> (loss, None)`), so bilm's
Trainer trains them like any language model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .cells import make_rnn
from .gradients import probes
from .models import Batch
from .train import TrainConfig, Trainer

COPY_SYMBOLS, COPY_LENGTH, COPY_DELIMITER = 8, 10, 9
ADDING_SOLVED_MSE = 0.01
COPY_SOLVED_ACCURACY = 0.99
GRADIENT_PROBE = 100  # test sequences whose input gradients are measured at each evaluation


def adding_batch(batch_size: int, T: int, generator: torch.Generator | None = None, min_distance: int = 0) -> Batch:
    """inputs (B, T, 2) = (value, marker); targets (B,) the sum of the two marked values.

    The markers fall one in each half of the first T - `min_distance` steps, so with
    `min_distance` d both marked numbers lie at least d + 1 steps before the end
    (the last input is 1 step before the answer).
    """
    span = T - min_distance
    if span < 2:
        raise ValueError(f"min_distance {min_distance} leaves no room for two markers in T={T}")
    values = torch.rand(batch_size, T, generator=generator)
    half = span // 2
    first = torch.randint(0, half, (batch_size,), generator=generator)
    second = torch.randint(half, span, (batch_size,), generator=generator)
    markers = torch.zeros(batch_size, T)
    rows = torch.arange(batch_size)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    return Batch(torch.stack([values, markers], -1), (values * markers).sum(1))


def copy_batch(batch_size: int, T: int, generator: torch.Generator | None = None) -> Batch:
    """inputs and targets (B, T+20) of symbol ids; 0 blank, 1..8 symbols, 9 delimiter."""
    symbols = torch.randint(1, COPY_SYMBOLS + 1, (batch_size, COPY_LENGTH), generator=generator)
    inputs = torch.zeros(batch_size, T + 2 * COPY_LENGTH, dtype=torch.long)
    targets = torch.zeros_like(inputs)
    inputs[:, :COPY_LENGTH] = symbols
    inputs[:, COPY_LENGTH + T - 1] = COPY_DELIMITER
    targets[:, -COPY_LENGTH:] = symbols
    return Batch(inputs, targets)


def copy_baseline(T: int) -> float:
    return COPY_LENGTH * math.log(COPY_SYMBOLS) / (T + 2 * COPY_LENGTH)


class AddingModel(nn.Module):
    """RNN over (value, marker) pairs; a linear readout of the last state predicts the sum.

    The pairs pass through an identity `embedding`, the module the gradient probes hook
    in every model (gradients.py), so dL/dx_t is measured where a language model's is.

    `bptt` (truncated backpropagation through time): the state reaches the last `bptt`
    steps detached, so no gradient ever flows to an input more than `bptt` steps before
    the answer, by construction (the forward pass still carries everything). The loss
    sits at the end only, so cutting every `bptt` steps would give the same gradient.
    """

    def __init__(self, cell: str, hidden_size: int = 128, init: str = "default", bptt: int | None = None, **options):
        super().__init__()
        self.embedding = nn.Identity()
        self.rnn = make_rnn(cell, 2, hidden_size, 1, 0.0, init, **options)
        self.head = nn.Linear(hidden_size, 1)
        self.bptt = bptt

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        x = self.embedding(inputs)
        state, cut = None, x.size(1) - (self.bptt or x.size(1))
        if cut > 0:
            with torch.no_grad():
                _, state = self.rnn(x[:, :cut])
            x = x[:, cut:]
        out, _ = self.rnn(x, state)  # (B, T, H)
        return self.head(out[:, -1]).squeeze(-1)

    def loss(self, batch: Batch, state=None):
        return F.mse_loss(self(batch.inputs), batch.targets), None

    def score(self, batch: Batch) -> dict:
        mse = F.mse_loss(self(batch.inputs), batch.targets).item()
        return {"loss": mse, "mse": mse, "solved": mse < ADDING_SOLVED_MSE}


class CopyModel(nn.Module):
    """RNN over one-hot symbols (a frozen identity `embedding`); a linear readout at every step predicts the target."""

    def __init__(self, cell: str, hidden_size: int = 128, init: str = "default", **options):
        super().__init__()
        self.embedding = nn.Embedding.from_pretrained(torch.eye(COPY_DELIMITER + 1))
        self.rnn = make_rnn(cell, COPY_DELIMITER + 1, hidden_size, 1, 0.0, init, **options)
        self.head = nn.Linear(hidden_size, COPY_SYMBOLS + 1)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(self.embedding(inputs))  # (B, T+20, H)
        return self.head(out)  # (B, T+20, 9)

    def loss(self, batch: Batch, state=None):
        logits = self(batch.inputs)
        return F.cross_entropy(logits.flatten(0, 1), batch.targets.flatten()), None

    def score(self, batch: Batch) -> dict:
        logits = self(batch.inputs)
        loss = F.cross_entropy(logits.flatten(0, 1), batch.targets.flatten()).item()
        recalled = logits[:, -COPY_LENGTH:].argmax(-1) == batch.targets[:, -COPY_LENGTH:]
        accuracy = recalled.float().mean().item()
        return {"loss": loss, "accuracy": accuracy, "solved": accuracy >= COPY_SOLVED_ACCURACY}


@dataclass(frozen=True)
class Task:
    name: str
    make_batch: object  # (batch_size, T, generator) -> Batch
    make_model: type
    baseline: object  # T -> loss of the trivial answer

    def evaluate(self, model: nn.Module, batch: Batch, T: int) -> dict:
        """Test figures on a held-out batch, plus the gradient reaching the first and last inputs."""
        model.eval()
        with torch.no_grad():
            result = model.score(batch)
        probe = Batch(batch.inputs[:GRADIENT_PROBE], batch.targets[:GRADIENT_PROBE])
        result.update(input_gradients(model, probe), baseline=self.baseline(T))
        model.train()
        return result


TASKS = {
    "adding": Task("adding", adding_batch, AddingModel, lambda T: 1 / 6),
    "copy": Task("copy", copy_batch, CopyModel, copy_baseline),
}


@torch.enable_grad()
def input_gradients(model: nn.Module, batch: Batch) -> dict:
    """Mean ||dL/dx_t|| at the first and last time steps: the vanishing (or exploding) signal."""
    with probes(model, hidden=False) as found:
        loss, _ = model.loss(batch)
        (grad,) = torch.autograd.grad(loss, found["emb"][0])
    norms = grad.norm(dim=-1).mean(0)  # (T,)
    return {"grad_first": norms[0].item(), "grad_last": norms[-1].item()}


def run_bench(
    task: str,
    cell: str,
    T: int,
    steps: int = 2000,
    batch_size: int = 50,
    hidden_size: int = 128,
    lr: float = 1e-3,
    clip: float = 1.0,
    init: str = "default",
    options: dict | None = None,
    eval_every: int = 100,
    norm_penalty: float = 0.0,
    optimizer: str = "adamw",
    log_every: int | None = None,
    test_size: int = 500,
    max_minutes: float | None = None,
    bptt: int | None = None,
    min_distance: int = 0,
    seed: int = 0,
    out: Path | None = None,
    log=print,
) -> dict:
    """Train one cell on one task with bilm's Trainer; stop once solved or out of budget.

    An "epoch" is `eval_every` fresh random batches followed by a test on a fixed batch.
    Every figure is logged to `out/metrics.jsonl` when `out` is given, including the
    per-step input gradients of the training batches every `log_every` steps.
    Adding task only: `bptt` truncates backpropagation to the last `bptt` steps
    (AddingModel), `min_distance` keeps both markers that far from the end (adding_batch).
    """
    spec = TASKS[task]
    if task != "adding" and (bptt or min_distance):
        raise ValueError("bptt and min_distance apply to the adding task only")
    task_options = dict(min_distance=min_distance) if min_distance else {}
    torch.manual_seed(seed)
    model = spec.make_model(cell, hidden_size, init, **(dict(bptt=bptt) if bptt else {}), **(options or {}))
    test = spec.make_batch(test_size, T, torch.Generator().manual_seed(10_000 + seed), **task_options)

    def batches(epoch: int, start: int):
        g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        for _ in range(start, eval_every):
            yield spec.make_batch(batch_size, T, g, **task_options)

    def evaluate(m: nn.Module) -> dict:
        result = spec.evaluate(m, test, T)
        log(
            f"{task} T={T} {cell}: step {trainer.step:>6}  test loss {result['loss']:.4f} "
            f"(baseline {result['baseline']:.4f})  |g first| {result['grad_first']:.2e}  "
            f"|g last| {result['grad_last']:.2e}{'  solved' if result['solved'] else ''}"
        )
        return dict(result, ppl=math.exp(min(result["loss"], 50)))

    def stop_when_solved(tag: str, t: Trainer) -> None:
        if t.last_eval.get("solved"):
            t.cfg.max_steps = t.step

    cfg = TrainConfig(
        optimizer=optimizer,
        lr=lr,
        batch_size=batch_size,
        clip=clip,
        norm_penalty=norm_penalty,
        log_input_grads=True,
        epochs=math.ceil(steps / eval_every),
        max_steps=steps,
        max_minutes=max_minutes,
        plateau_patience=10**9,
        early_stop=0,
        log_every=log_every or eval_every,
        seed=seed,
        device="cpu",
    )
    metrics = None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        metrics = out / "metrics.jsonl"
        metrics.unlink(missing_ok=True)
    trainer = Trainer(
        model, cfg, batches, eval_every, evaluate, torch.device("cpu"), stop_when_solved, metrics, log=lambda line: None
    )
    summary = trainer.fit()
    final = trainer.last_eval
    return {
        "task": task,
        "cell": cell,
        "T": T,
        "init": init,
        "options": options or {},
        "lr": lr,
        "clip": clip,
        "norm_penalty": norm_penalty,
        "optimizer": optimizer,
        "bptt": bptt,
        "min_distance": min_distance,
        "hidden_size": hidden_size,
        "max_steps": steps,
        "max_minutes": max_minutes,
        "out_of_time": bool(not final["solved"] and max_minutes is not None and trainer.elapsed >= 60 * max_minutes),
        "skipped_steps": summary.get("skipped_steps", 0),  # non-finite steps the trainer passed over
        "diverged": summary.get("diverged") or None,
        "seed": seed,
        "steps": trainer.step,
        "seconds": summary["train_seconds"],
        "wall_seconds": summary["wall_seconds"],
        "loss": final["loss"],
        "baseline": final["baseline"],
        "solved": final["solved"],
        **{k: final[k] for k in ("mse", "accuracy", "grad_first", "grad_last") if k in final},
    }
