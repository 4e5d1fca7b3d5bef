"""One trainer for every model.

`Trainer` knows nothing of the model: it calls `loss, state = model.loss(batch, state)`,
carries `state` (detached) to the next batch for truncated BPTT, and gets batches
from any callable `batches(epoch, start)`. `train()` wires a corpus, a model and
checkpoints around it; the CLI is a thin layer over `train()`.
"""

from __future__ import annotations

import json
import math
import shlex
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_model
from torch import nn
from tqdm import tqdm

from . import __version__, distributed
from .checkpoint import (
    SaveError,
    check_weights,
    load_trainer_state,
    lock_run,
    model_config,
    read_config,
    save_checkpoint,
)
from .data import (
    DataConfig,
    PreparedData,
    SentenceBatches,
    StreamBatches,
    document_spans,
    on_device,
    prepare,
    unigram_counts,
)
from .distributed import ONE, Group
from .errors import BilmError
from .evaluate import fill_perplexity, stream_perplexity
from .machine import cpu_flags, describe, resolve_device
from .models import Batch, LanguageModel, ModelConfig, build_model
from .remedies import instrument

# The peak learning rate of each model-size preset (`models.PRESETS`, docs/quality.md): in six minutes 2x200
# reaches a lower valid perplexity at 7e-3 than at 5e-3 (bi 59.4 against 61.8, uni 124.1 against 125.9; 1e-2
# overshoots: bi 63.1), and at 5e-3 than at 3e-3; an hour of 2x400 gained nothing from 5e-3 (uni test 105.7
# against 105.0; bi valid 82.6 against 76.9 after the first epoch), so `large` keeps 3e-3. One layer deep (the
# small preset's 1x200), 1e-2 gave bi the same first choice at equal steps and uni the same perplexity.
PRESET_LR = {"small": 7e-3, "large": 3e-3}


@dataclass
class TrainConfig:
    optimizer: str = "adamw"  # adamw | sgd
    lr: float = PRESET_LR["small"]
    weight_decay: float = 0.0
    momentum: float = 0.0  # sgd only
    batch_size: int = 64
    bptt: int = 35  # uni: truncated BPTT window
    max_len: int = 80  # bi: longer sentences (or documents, with context="document") are cut into pieces
    context: str = "sentence"  # bi: reads sentences, or pieces of running text of a document (data.document_spans)
    clip: float = 1.0  # max global gradient norm; 0 = off
    clip_value: float = 0.0  # clip each gradient entry to [-v, v]; 0 = off
    norm_penalty: float = 0.0  # weight of Pascanu et al.'s gradient-norm-preserving penalty (remedies.py); 0 = off
    log_input_grads: bool = False  # log ||dL/dx_t|| at the first and last steps of each window (uni, bench tasks)
    epochs: int = 40
    max_steps: int | None = None
    max_minutes: float | None = None
    lr_decay: float = 0.25  # multiply the learning rate by this when validation stops improving
    plateau_patience: int = 0
    schedule: str = "warmdown"  # plateau | warmdown | cosine (Trainer.anneal); docs/performance.md
    warmdown: float = 0.3  # share of the budget over which "warmdown" takes the learning rate linearly to 0
    average: float = 0.0  # validate and keep the mean of the weights over this last share of the budget; 0 = off
    precision: str = "auto"  # auto | fp32 | bf16: autocast for the training step (validation stays fp32)
    early_stop: int = 3  # stop after this many validations without improvement; 0 = never
    eval_every: int = 0  # also validate N steps after the last validation (an epoch's end included); 0 = per epoch
    log_every: int = 100
    seed: int = 1234
    device: str = "auto"  # auto | cpu | cuda
    max_bad_steps: int = 10  # non-finite steps in a row before rolling back to last/ (Trainer.skip_step)
    save_every_minutes: float = 2.0  # also write last/ this often (at least SAVE_COST x a save's time); 0 = off

    def to_dict(self) -> dict:
        return asdict(self)


def native_bf16(device: torch.device) -> bool:
    """Whether this device computes bf16 in hardware: a CUDA GPU that says so, or a CPU with AVX512-BF16 or AMX.

    Elsewhere bf16 is emulated: correct, but 3-4x slower than fp32 (an Intel Xeon without it; an AVX2-only AMD
    EPYC, where the LSTM itself stays fp32, `models.run_rnn`).
    """
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


def resolve_precision(name: str, device: torch.device) -> str:
    """`auto` is bf16 where the hardware has it natively (1.1-1.6x tokens/s on an AMX Xeon, docs/quality.md)."""
    if name == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    if name not in ("fp32", "bf16"):
        raise BilmError(f"unknown precision {name!r}; choose auto, fp32 or bf16")
    return name


def map_state(fn, state):
    """Apply `fn` to every tensor of a carried hidden state (tensor, tuple of tensors or None)."""
    if state is None:
        return None
    if isinstance(state, torch.Tensor):
        return fn(state)
    return type(state)(map_state(fn, s) for s in state)


def detach(state):
    """Cut the graph behind a carried hidden state."""
    return map_state(torch.Tensor.detach, state)


Batches = Callable[[int, int], Iterator[Batch]]

ROLLBACK_LR = 0.25  # the learning rate is multiplied by this after a rollback to the last good checkpoint
SAVE_COST = 50  # a periodic save waits at least this many times its own duration: at most 2 % of the time
MAX_FAILED_SAVES = 3  # saves that fail in a row (disk full) before the run stops


class _RolledBack(Exception):
    """Raised inside the loop after `rollback` so that the epoch loop restarts from the restored position."""


class Trainer:
    """Optimises `model.loss` over `batches`, validating with `evaluate(model) -> {"loss", "ppl"}`.

    Budgets (`max_steps`, `max_minutes`) count the whole run across resumes. `on_save(tag,
    trainer)` is called with tag "best" or "last" whenever a checkpoint is due: at each
    validation and every `save_every_minutes`, never with non-finite weights.

    Numerical faults: a step whose loss or gradient norm is not finite is skipped (the
    optimizer is untouched) and counted; after `max_bad_steps` in a row, `restore(trainer)`
    (the last good checkpoint) is loaded and the learning rate multiplied by ROLLBACK_LR;
    a second such failure stops the run with a `BilmError` naming the likely cause.
    Without `restore`, the run stops there instead (`summary()["diverged"]`).
    """

    def __init__(
        self,
        model: nn.Module,
        cfg: TrainConfig,
        batches: Batches,
        steps_per_epoch: int,
        evaluate: Callable[[nn.Module], dict],
        device: torch.device,
        on_save: Callable[[str, Trainer], None] = lambda tag, trainer: None,
        metrics_file: Path | None = None,
        log: Callable[[str], None] = print,
        restore: Callable[[Trainer], None] | None = None,
        group: Group = ONE,
    ):
        """`group`: the processes training together (distributed.py); every rank calls every method alike."""
        self.model, self.cfg, self.batches, self.evaluate = model.to(device), cfg, batches, evaluate
        self.group = group
        self.restore = restore
        self.steps_per_epoch, self.device, self.on_save, self.log = steps_per_epoch, device, on_save, log
        self.metrics_file = metrics_file
        params = [p for p in model.parameters() if p.requires_grad]
        if cfg.optimizer == "adamw":
            # The fused kernel updates all tensors at once: +10 % tokens/s on CPU (docs/performance.md).
            fused = device.type in ("cpu", "cuda")
            self.optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused)
        elif cfg.optimizer == "sgd":
            self.optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        else:
            raise BilmError(f"unknown optimizer {cfg.optimizer!r}; choose adamw or sgd")
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer, factor=cfg.lr_decay, patience=cfg.plateau_patience
        )
        if cfg.schedule not in ("plateau", "warmdown", "cosine"):
            raise BilmError(f"unknown schedule {cfg.schedule!r}; choose plateau, warmdown or cosine")
        self.precision = resolve_precision(cfg.precision, device)
        self.loss_fn, self.monitors = instrument(model, cfg)  # model.loss, or a remedy wrapping it
        self.forward = group.wrap(self.model, self.loss_fn)  # DistributedDataParallel with several processes
        self.step = self.epoch = self.batch_index = self.bad_evals = 0
        self.elapsed = 0.0  # wall-clock seconds (training + validation), across resumes
        self.train_seconds = 0.0  # seconds inside training steps, for tokens/s
        self.tokens = 0
        self.best = math.inf
        self.last_eval: dict = {}
        self.state = None  # carried hidden state (uni stream)
        self.average: dict[str, torch.Tensor] | None = None  # mean of the weights after each step (`accumulate`)
        self.averaged_steps = 0
        self.skipped = 0  # non-finite steps skipped over the whole run
        self.setup = dict(
            precision=self.precision, machine=describe(device), threads=torch.get_num_threads(), processes=group.world
        )  # where this process trains; `legs` keeps it for each stretch of the run (the first, then each resume)
        self.legs: list[dict] = []
        self.bad_in_row = self.rollbacks = self.failed_saves = 0  # this process only
        self.diverged = ""  # why the run stopped on numerical faults (no `restore`)
        self.save_seconds = 0.0  # how long the last save of last/ took
        self._saved_at = 0.0  # `elapsed` at the last save of last/
        self._clock = time.perf_counter()
        torch.manual_seed(cfg.seed)

    # -- state for resume ----------------------------------------------------------
    def state_dict(self) -> dict:
        counters = dict(step=self.step, epoch=self.epoch, batch_index=self.batch_index, bad_evals=self.bad_evals)
        counters.update(
            elapsed=self.elapsed,
            train_seconds=self.train_seconds,
            tokens=self.tokens,
            best=self.best,
            last_eval=self.last_eval,
            skipped=self.skipped,
            save_seconds=self.save_seconds,
            averaged_steps=self.averaged_steps,
            legs=self.legs,
        )
        layout = dict(rows=self.cfg.batch_size * self.group.world, steps_per_epoch=self.steps_per_epoch)
        state = dict(
            counters=counters,
            layout=layout,
            optimizer=self.optimizer.state_dict(),
            scheduler=self.scheduler.state_dict(),
            rng=torch.get_rng_state(),
            hidden=map_state(self.group.gather_rows, self.state),  # every rank's rows (a collective)
        )
        if self.average is not None:
            state["average"] = self.average
        if self.device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: dict) -> None:
        for k, v in state["counters"].items():
            setattr(self, k, v)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.restore_rng(state)
        average = state.get("average")
        self.average = None if average is None else {k: v.to(self.device) for k, v in average.items()}
        saved = state.get("layout", dict(rows=self.cfg.batch_size * self.group.world, steps_per_epoch=None))
        if saved["rows"] == self.cfg.batch_size * self.group.world:
            self.state = map_state(lambda t: self.group.rows(t).to(self.device), state["hidden"])
        else:  # another effective batch (resumed on another number of processes): the same share of the epoch
            self.state = None
            self.batch_index = self.batch_index * self.steps_per_epoch // max(saved["steps_per_epoch"] or 1, 1)
        self._saved_at = self.elapsed

    def restore_rng(self, state: dict) -> None:
        """CPU and (where saved and present) CUDA generators: dropout masks continue, not restart."""
        torch.set_rng_state(state["rng"])
        cuda = state.get("cuda_rng")
        if cuda and self.device.type == "cuda":
            n = min(len(cuda), torch.cuda.device_count())
            torch.cuda.set_rng_state_all(list(cuda)[:n])
        elif cuda:
            self.log("note: the run was saved on CUDA and resumes on the CPU: dropout masks differ from there on")

    # -- the loop ------------------------------------------------------------------
    def out_of_budget(self) -> bool:
        cfg = self.cfg
        if cfg.max_steps is not None and self.step >= cfg.max_steps:
            return True
        return cfg.max_minutes is not None and self.elapsed >= cfg.max_minutes * 60

    def fit(self) -> dict:
        """Train until the epochs, a budget or early stopping end it; returns the final metrics."""
        try:
            self._run()
        except KeyboardInterrupt:
            if self.group.world == 1:  # other ranks may be inside a collective: keep the last save instead
                self.save("last")
            raise
        if self.failed_saves:
            raise BilmError(f"training ended, but its last {self.failed_saves} save(s) failed: {self._save_error}")
        return self.summary()

    def _tick(self) -> None:
        """Advance `elapsed`; with several processes, by their mean, so that budgets and schedules agree."""
        now = time.perf_counter()
        self.elapsed = self.group.mean(self.elapsed + now - self._clock)
        self._clock = now

    def _run(self) -> None:
        self.legs.append(dict(from_step=self.step, **self.setup))
        self._clock = time.perf_counter()
        while True:
            try:
                self._epochs()
                if self.last_eval.get("step") != self.step:
                    self.validate(schedule=False)
                return
            except _RolledBack:
                continue

    def _epochs(self) -> None:
        cfg = self.cfg
        stopped = False
        while self.epoch < cfg.epochs and not stopped and not self.out_of_budget():
            bar = tqdm(
                total=self.steps_per_epoch,
                initial=self.batch_index,
                desc=f"epoch {self.epoch + 1}",
                disable=None if self.group.is_main else True,
                leave=False,
                dynamic_ncols=True,
            )
            window = _Window()
            for batch in self.batches(self.epoch, self.batch_index):
                if self.out_of_budget() or self.diverged:
                    stopped = bool(self.diverged)
                    break
                try:
                    loss, norm = self.train_step(batch, window)
                except _RolledBack:
                    bar.close()
                    raise
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{window.tokens_per_s:,.0f}")
                if cfg.log_every and self.step % cfg.log_every == 0:
                    monitored = {k: v for m in self.monitors for k, v in m.flush().items()}
                    figures = window.summary()
                    if figures["loss"] is not None:
                        figures["loss"] = self.group.mean(figures["loss"])  # each rank's share: the batch's loss
                    self.record(dict(type="train", **figures, **monitored, lr=self.lr))
                    window = _Window()
                if cfg.eval_every and self.step - self.last_eval.get("step", 0) >= cfg.eval_every:
                    stopped = self.validate(schedule=True)
                    if stopped:
                        break
                elif self.save_due():
                    self.save("last")
            else:
                self.epoch += 1
                self.batch_index = 0
                self.state = None
                bar.close()
                if self.last_eval.get("step") == self.step:  # --eval-every fell on the epoch's end: validated already
                    self.save("last")
                else:
                    stopped = self.validate(schedule=True)
                continue
            bar.close()

    def train_step(self, batch: Batch, window: _Window) -> tuple[float, float]:
        start = time.perf_counter()
        self.model.train()
        batch = batch.to(self.device)
        with torch.autocast(self.device.type, torch.bfloat16, enabled=self.precision == "bf16"):
            loss, state = self.forward(batch, self.state)
        loss, tokens = self.group.share(loss.float(), batch.num_tokens)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        params = [p for p in self.model.parameters() if p.grad is not None]
        if self.cfg.clip_value:
            nn.utils.clip_grad_value_(params, self.cfg.clip_value)
        norm = nn.utils.clip_grad_norm_(params, self.cfg.clip or math.inf).item()
        loss = loss.item()
        if not (math.isfinite(loss) and math.isfinite(norm)):
            window.skipped += 1
            self.skip_step(loss, norm)
            return loss, norm
        self.bad_in_row = 0
        self.anneal()
        self.optimizer.step()
        self.accumulate()
        self.state = detach(state)
        self.step += 1
        self.batch_index += 1
        self.tokens += tokens
        seconds = time.perf_counter() - start
        self.train_seconds += seconds
        self._tick()
        window.add(loss, norm, bool(self.cfg.clip and norm > self.cfg.clip), tokens, seconds)
        return loss, norm

    # -- weight averaging --------------------------------------------------------------
    def accumulate(self) -> None:
        """Over the last `average` share of the budget, keep the mean of the weights after every step.

        Polyak averaging, as in AWD-LSTM's NT-ASGD and SWA: the mean of the snapshots sits nearer the
        middle of the valley the last steps wander around than any one of them.
        """
        if not self.cfg.average or self.progress < 1 - self.cfg.average:
            return
        weights = {k: p.detach() for k, p in self.model.named_parameters()}
        if self.average is None:
            self.average, self.averaged_steps = {k: w.clone() for k, w in weights.items()}, 1
            return
        self.averaged_steps += 1
        for k, mean in self.average.items():
            mean.lerp_(weights[k], 1 / self.averaged_steps)

    @contextmanager
    def averaged_weights(self):
        """The model holds the averaged weights inside the block (validation, best/), its own ones again after."""
        if self.average is None:
            yield
            return
        params = dict(self.model.named_parameters())
        own = {k: p.detach().clone() for k, p in params.items()}
        with torch.no_grad():
            for k, p in params.items():
                p.copy_(self.average[k])
            try:
                yield
            finally:
                for k, p in params.items():
                    p.copy_(own[k])

    # -- numerical faults ------------------------------------------------------------
    def skip_step(self, loss: float, norm: float) -> None:
        """A non-finite loss or gradient norm: no update, the batch is passed over and counted."""
        self.optimizer.zero_grad(set_to_none=True)
        self.state = None  # the carried state may hold the overflow
        self.step += 1
        self.batch_index += 1
        self.skipped += 1
        self.bad_in_row += 1
        self._tick()
        if self.bad_in_row == 1:
            self.log(f"warning: step {self.step}: loss {loss}, gradient norm {norm}: step skipped")
        if self.bad_in_row >= max(self.cfg.max_bad_steps, 1):
            self.fault(f"{self.bad_in_row} steps in a row with a non-finite loss or gradient (step {self.step})")

    def fault(self, what: str) -> None:
        """Training went numerically wrong: roll back once with a lower learning rate, then give up."""
        self.record(dict(type="fault", what=what, skipped=self.skipped, lr=self.lr))
        if self.restore is None:
            self.diverged = what
            self.log(f"stopping: {what}")
            return
        if self.rollbacks:
            raise BilmError(f"training diverged again after a rollback: {what}; {self.likely_cause()}")
        rollbacks, skipped, legs = self.rollbacks + 1, self.skipped, self.legs
        self.restore(self)
        self.rollbacks, self.skipped, self.legs, self.bad_in_row = rollbacks, skipped, legs, 0
        self.forget_records_after(self.step)
        self.scale_lr(ROLLBACK_LR)
        self.log(f"warning: {what}; rolled back to step {self.step} (last/), learning rate lowered to {self.lr:.2e}")
        self.record(dict(type="rollback", what=what, skipped=self.skipped, lr=self.lr))
        raise _RolledBack

    def likely_cause(self) -> str:
        cfg, causes = self.cfg, []
        if not cfg.clip and not cfg.clip_value:
            causes.append("gradient clipping is off (try --clip 1)")
        causes.append(f"the learning rate is too high for this model (--lr {cfg.lr:g}; try a tenth of it)")
        if self.precision != "fp32":
            causes.append(f"{self.precision} overflows (try --precision fp32)")
        return "likely cause: " + ", or ".join(causes)

    def scale_lr(self, factor: float) -> None:
        """Lower the plateau rate (and so every schedule built on it) by `factor`, for the rest of the run."""
        self.scheduler._last_lr = [lr * factor for lr in self.scheduler.get_last_lr()]
        self.anneal()

    def weights_finite(self) -> bool:
        return all(bool(torch.isfinite(p).all()) for p in self.model.parameters())

    # -- checkpoints -----------------------------------------------------------------
    def save_due(self) -> bool:
        """Time for a periodic last/: every `save_every_minutes`, and never more than 1/SAVE_COST of the time."""
        every = self.cfg.save_every_minutes * 60
        return bool(every) and self.elapsed - self._saved_at >= max(every, SAVE_COST * self.save_seconds)

    def save(self, tag: str) -> None:
        """`on_save(tag)`, unless the weights are not finite; a failed save (disk full) warns, thrice in a row stops."""
        if not self.weights_finite():
            self.log(f"warning: step {self.step}: the weights are not finite; {tag}/ not saved")
            return
        start = time.perf_counter()
        try:
            self.on_save(tag, self)
        except SaveError as e:  # only the process that writes (rank 0) gets here
            self.failed_saves += 1
            self._save_error = str(e)
        else:
            self.failed_saves = 0
        if tag == "last":  # every rank agrees on the cost of a save, failed or not, so they decide alike
            self.save_seconds = self.group.mean(time.perf_counter() - start)
            self._tick()
        if self.failed_saves:
            if self.failed_saves >= MAX_FAILED_SAVES:
                raise BilmError(f"{self._save_error} ({self.failed_saves} saves failed in a row; stopping)")
            self.log(f"warning: {self._save_error}; training continues")
            return
        if tag == "last":
            self._saved_at = self.elapsed

    def forget_records_after(self, step: int) -> None:
        """Drop metrics.jsonl records past `step` (and any torn line): a resumed run's curve has no repeats."""
        f = self.metrics_file
        if f is None or not f.is_file():
            return
        kept = []
        for line in f.read_text().splitlines():
            try:
                if json.loads(line)["step"] <= step:
                    kept.append(line)
            except (json.JSONDecodeError, KeyError, TypeError):
                continue
        tmp = f.with_name(f.name + ".tmp")
        tmp.write_text("".join(line + "\n" for line in kept))
        tmp.replace(f)

    def validate(self, schedule: bool) -> bool:
        """Evaluate (the averaged weights, once averaging has begun); keep the best; with `schedule`, decay the
        lr / stop early. True = stop."""
        with self.averaged_weights():
            result = self.evaluate(self.model)
        self._tick()
        if not math.isfinite(result["loss"]):
            self.last_eval = dict(step=self.step, **result)
            self.record(dict(type="valid", epoch=self.epoch, **result))
            self.fault(f"validation loss {result['loss']} at step {self.step}")
            return True
        improved = result["loss"] < self.best
        self.best = min(self.best, result["loss"])
        self.last_eval = dict(step=self.step, **result)
        averaged = dict(averaged_steps=self.averaged_steps) if self.average is not None else {}
        self.record(dict(type="valid", epoch=self.epoch, **result, **averaged, best_ppl=math.exp(min(self.best, 50))))
        self.log(
            f"step {self.step:>6} | epoch {self.current_epoch} | {_ppl_label(self.model)} {result['ppl']:8.2f} | "
            f"lr {self.lr:.2e} | {self.tokens / max(self.train_seconds, 1e-9):,.0f} tok/s | {self.elapsed / 60:.1f} min"
        )
        stop = False
        if schedule:
            if self.cfg.schedule == "plateau" or (self.cfg.schedule == "warmdown" and not self.warming_down):
                self.set_lr(self.plateau_lr)  # the scheduler decays the optimizer's rate: give it the plateau's
                self.scheduler.step(result["loss"])
            self.bad_evals = 0 if improved else self.bad_evals + 1
            stop = bool(self.cfg.early_stop and self.bad_evals >= self.cfg.early_stop)
            if stop:
                self.log(f"early stop: no improvement in {self.bad_evals} validations")
        if improved:
            with self.averaged_weights():
                self.save("best")
        self.save("last")
        return stop

    @property
    def current_epoch(self) -> int:
        """The epoch (from 1) of the last step, as the progress bar and the resume line count it."""
        return self.epoch if self.batch_index == 0 and self.epoch > 0 else self.epoch + 1

    @property
    def progress(self) -> float:
        """Share of the budget spent: the largest of the step, wall-clock and epoch fractions.

        With `max_minutes` it follows the wall clock, so a cosine run is not bit-for-bit
        reproducible, and raising the budget on resume lifts the learning rate again.
        """
        cfg = self.cfg
        spent = [self.step / max(cfg.epochs * self.steps_per_epoch, 1)]
        if cfg.max_steps:
            spent.append(self.step / cfg.max_steps)
        if cfg.max_minutes:
            spent.append(self.elapsed / (cfg.max_minutes * 60))
        return min(max(spent), 1.0)

    @property
    def warming_down(self) -> bool:
        return self.progress >= 1 - self.cfg.warmdown

    def anneal(self) -> None:
        """Set the learning rate for the next step from the plateau rate and the budget as it stands now.

        plateau   the plateau rate: lr x lr_decay whenever validation stops improving (the example's rule)
        warmdown  the plateau rate until the last `warmdown` share of the budget; then linearly from
                  it to 0 (most of a short run's gain comes in this tail)
        cosine    lr0 (1 + cos(pi progress)) / 2 over the whole budget

        The rate is recomputed at every step from `progress`, never read back from the optimizer,
        so a run resumed with a larger budget follows the schedule of that budget from where it
        stands: before the new tail it trains at the plateau rate again, not at the annealed rate
        it was saved with (README, Reliability).
        """
        cfg = self.cfg
        lr = self.plateau_lr
        if cfg.schedule == "cosine":
            lr *= 0.5 * (1 + math.cos(math.pi * self.progress))
        elif cfg.schedule == "warmdown" and self.warming_down:
            lr *= (1 - self.progress) / max(cfg.warmdown, 1e-9)
        self.set_lr(lr)

    @property
    def plateau_lr(self) -> float:
        """The rate validation drives (ReduceLROnPlateau's); lr0 for cosine, lowered only by a rollback."""
        return float(self.scheduler.get_last_lr()[0])

    def set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def summary(self) -> dict:
        return dict(
            step=self.step,
            epoch=self.epoch,
            train_tokens=self.tokens,
            train_seconds=round(self.train_seconds, 2),
            wall_seconds=round(self.elapsed, 2),
            tokens_per_s=round(self.tokens / max(self.train_seconds, 1e-9), 1),
            valid_loss=self.last_eval.get("loss"),
            valid_ppl=self.last_eval.get("ppl"),
            best_valid_ppl=math.exp(min(self.best, 50)) if self.best < math.inf else None,
            lr=self.lr,
            **self.setup,
            legs=self.legs,
            skipped_steps=self.skipped,
            averaged_steps=self.averaged_steps,
            save_seconds=round(self.save_seconds, 3),
            diverged=self.diverged or None,
        )

    def record(self, entry: dict) -> None:
        """One strict-JSON line in metrics.jsonl: a non-finite figure is written as null."""
        if self.metrics_file is not None:
            entry = dict(entry, step=self.step, elapsed=round(self.elapsed, 3))
            with open(self.metrics_file, "a") as f:
                f.write(json.dumps(_finite(entry), allow_nan=False) + "\n")


def _finite(obj):
    """`obj` with NaN and infinities replaced by None, for strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _ppl_label(model) -> str:
    """bi's validation figure is a pseudo-perplexity (each word from both sides): never to be read as uni's."""
    return "valid pseudo-ppl" if getattr(getattr(model, "cfg", None), "kind", None) == "bi" else "valid ppl"


class _Window:
    """Running figures over one logging interval.

    The loss is the mean over the interval's *tokens*: each batch's mean loss weighted by the
    words it predicts. bi batches are sorted by length, so a plain mean of batch means would
    weigh a batch of one-word sentences as much as one of 80-word sentences.
    """

    def __init__(self):
        self.losses, self.norms, self.clipped, self.tokens, self.seconds = [], [], 0, 0, 0.0
        self.skipped = 0  # non-finite steps (Trainer.skip_step), in no average
        self.loss_sum = 0.0  # sum over batches of mean loss x tokens

    def add(self, loss: float, norm: float, clipped: bool, tokens: int, seconds: float) -> None:
        self.loss_sum += loss * tokens
        self.losses.append(loss)
        self.norms.append(norm)
        self.clipped += clipped
        self.tokens += tokens
        self.seconds += seconds

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / max(self.seconds, 1e-9)

    def summary(self) -> dict:
        n = len(self.losses)
        figures = dict(
            loss=self.loss_sum / self.tokens if n and self.tokens else None,
            grad_norm=sum(self.norms) / n if n else None,
            clip_rate=self.clipped / max(n, 1),
            tokens_per_s=round(self.tokens_per_s, 1),
        )
        return dict(figures, skipped=self.skipped) if self.skipped else figures


def train(
    data_cfg: DataConfig | None = None,
    model_cfg: ModelConfig | None = None,
    train_cfg: TrainConfig | None = None,
    out: str | Path = "checkpoints/run",
    corpus_dir: str | Path | None = None,
    data_dir: str | Path | None = None,
    resume: bool = False,
    budget: dict | None = None,
    log: Callable[[str], None] = print,
    given: dict | None = None,
) -> dict:
    """Prepare the corpus, build the model, train it and write `out/{best,last}/`.

    With `resume`, everything comes from `out/last/` (configs, weights, optimizer, RNG,
    position in the epoch); `budget` may raise `max_steps` / `max_minutes` / `epochs` (and
    set `device`, `save_every_minutes`, `max_bad_steps`). `given`: settings the user asked
    for, as {"model.hidden_size": 400, ...}; with `resume`, one that differs from the saved
    run is an error, not silently ignored. One trainer at a time per `out` (`lock_run`).

    Under `torchrun` (distributed.py) every process calls this; rank 0 holds the lock and writes.
    """
    out = Path(out)
    if resume:
        read_config(out / "last")  # "not found" before any folder is made
    with lock_run(out) if distributed.is_main() else nullcontext():
        return _train(data_cfg, model_cfg, train_cfg, out, corpus_dir, data_dir, resume, budget, log, given)


def resume_conflicts(config: dict, given: dict) -> list[str]:
    """`section.field=value` settings in `given` that differ from the saved run's `config`."""
    conflicts = []
    for key, value in given.items():
        section, _, name = key.partition(".")
        saved = config.get(section, {}).get(name)
        if saved != value and not (isinstance(saved, list) and list(value or []) == saved):
            conflicts.append(f"{name}={value!r} (the run has {saved!r})")
    return conflicts


def _train(data_cfg, model_cfg, train_cfg, out: Path, corpus_dir, data_dir, resume, budget, log, given) -> dict:
    if resume:
        config = read_config(out / "last")
        conflicts = resume_conflicts(config, given or {})
        if conflicts:
            raise BilmError(
                f"--resume continues {out} as it was configured, but {', '.join(conflicts)}: leave these options "
                "out, or start a new run with another --out"
            )
        data_cfg = DataConfig(**config["data"])
        model_cfg = model_config(out / "last", config)
        check_weights(out / "last", model_cfg)  # before any allocation: the files must belong together
        train_cfg = TrainConfig(**config["train"])
        corpus_dir = corpus_dir or config.get("corpus_dir")
    else:
        data_cfg, model_cfg, train_cfg = (
            data_cfg or DataConfig(),
            model_cfg or ModelConfig(),
            train_cfg or TrainConfig(),
        )
        if (out / "last").exists():
            raise BilmError(f"{out} already holds a run: pass --resume to continue it, or choose another --out")
    for k, v in (budget or {}).items():
        if v is not None:
            setattr(train_cfg, k, v)
    group, device = distributed.setup(resolve_device(train_cfg.device))
    log = log if group.is_main else _quiet
    if group.world > 1 and train_cfg.norm_penalty:
        raise BilmError("--norm-penalty takes a second backward pass, which DistributedDataParallel does not allow")
    saved_world = config.get("world_size", 1) if resume else group.world
    if saved_world != group.world:
        effective = train_cfg.batch_size * saved_world
        train_cfg.batch_size = distributed.per_rank_batch(train_cfg.batch_size, saved_world, group.world)
        log(
            f"resuming a {saved_world}-process run on {group.world}: {train_cfg.batch_size} rows per process, "
            f"effective batch {effective} -> {train_cfg.batch_size * group.world}"
        )
    with group.main_first():  # one process per machine tokenizes; the others read its cache
        data = prepare(data_cfg, corpus_dir, data_dir, log=log)
    tok = data.tokenizer
    torch.manual_seed(train_cfg.seed)
    model_cfg, model = model_for(data, model_cfg, fresh=not resume)
    batches, evaluate = _task(model_cfg.kind, data, train_cfg, device, group)
    batches = on_device(batches, device)  # CUDA: pinned memory, copied a batch ahead
    if group.is_main:
        out.mkdir(parents=True, exist_ok=True)
    config = dict(
        bilm_version=__version__,
        data=data_cfg.to_dict(),
        model=model_cfg.to_dict(),
        train=train_cfg.to_dict(),
        corpus_dir=str(corpus_dir) if corpus_dir else None,
        data_cache=str(data.path),
        command=shlex.join(sys.argv),
        world_size=group.world,
    )

    def on_save(tag: str, trainer: Trainer) -> None:
        state = trainer.state_dict() if tag == "last" else None  # every rank: it gathers their hidden states
        if not group.is_main:
            return
        metrics = dict(trainer.summary(), data=data.meta["splits"], params=sum(p.numel() for p in model.parameters()))
        save_checkpoint(out / tag, model, tok, config, metrics, state)

    def restore(trainer: Trainer) -> None:
        """The last good checkpoint: weights, optimizer, schedule, RNG and position in the epoch."""
        load_model(trainer.model, str(out / "last" / "model.safetensors"))
        trainer.load_state_dict(load_trainer_state(out / "last"))
        distributed.seed_rank(train_cfg.seed, group.rank, trainer.step)  # rank 0's generator was restored

    metrics_file = out / "metrics.jsonl" if group.is_main else None
    trainer = Trainer(
        model, train_cfg, batches, len(batches), evaluate, device, on_save, metrics_file, log, restore, group
    )
    if resume:
        restore(trainer)
        trainer.forget_records_after(trainer.step)  # lost with the kill: they are trained again
        log(f"resuming {out} at step {trainer.step} (epoch {trainer.epoch + 1}, batch {trainer.batch_index})")
    else:
        trainer.save("last")  # a restore point from the start: rollback, kill -9
        distributed.seed_rank(train_cfg.seed, group.rank, trainer.step)
    n_params = sum(p.numel() for p in model.parameters())
    log(
        f"{model_cfg.kind} model: {model_cfg.layers}x{model_cfg.hidden_size} {model_cfg.cell}, "
        f"{n_params:,} parameters, vocab {len(tok):,}, {len(batches):,} batches/epoch, device {device}"
        + (f", {group.world} processes" if group.world > 1 else "")
    )
    done = False
    try:
        result, done = trainer.fit(), True
        return result
    finally:
        # DDP's reducer holds the process group: free it while every rank is still there (after a barrier
        # when all went well), or its gloo threads can wait forever for a peer that has gone.
        trainer.forward = None
        group.close(sync=done)


def _quiet(message: str) -> None:
    """The log of every process but rank 0."""


def model_for(data: PreparedData, cfg: ModelConfig, fresh: bool = True) -> tuple[ModelConfig, LanguageModel]:
    """The model for a prepared corpus: vocabulary and special ids from its tokenizer.

    A fresh model with `unigram_bias` starts from the train split's word frequencies; one about
    to be resumed gets its weights from the checkpoint instead.
    """
    tok = data.tokenizer
    ids = dict(pad_id=tok.pad_id, unk_id=tok.unk_id, bos_id=tok.bos_id, eos_id=tok.eos_id, blank_id=tok.blank_id)
    cfg = replace(cfg, vocab_size=len(tok), **ids)
    cfg = replace(cfg, unigram_bias=cfg.wants_unigram_bias)  # the checkpoint records what was done
    model = build_model(cfg)
    if fresh and cfg.unigram_bias:
        model.start_at_unigram(unigram_counts(data.stream("train"), len(tok)))
    return cfg, model


def _task(kind: str, data: PreparedData, cfg: TrainConfig, device, group: Group = ONE) -> tuple:
    """Batches and validation for a model kind, each rank its share.

    uni reads the stream; bi reads sentences, or with `context="document"` pieces of running text.
    """
    if cfg.context not in ("sentence", "document"):
        raise BilmError(f"unknown context {cfg.context!r}; choose sentence or document")
    if kind == "uni" and cfg.context != "sentence":
        raise BilmError("--context document is for bi models: uni always reads the running text")
    train_ids = data.stream("train")
    shard = dict(rank=group.rank, world=group.world)
    if kind == "uni":
        batches = StreamBatches(train_ids, cfg.batch_size, cfg.bptt, **shard)
        valid = data.stream("valid")
        return batches, lambda model: stream_perplexity(model, valid, device, bptt=cfg.bptt, group=group)

    def pieces(split: str) -> np.ndarray:
        spans = data.spans(split)
        return spans if cfg.context == "sentence" else document_spans(spans, data.documents(split))

    max_len = cfg.max_len if cfg.context == "document" else 10**9  # sentences are validated whole
    tok = data.tokenizer
    batches = SentenceBatches(
        train_ids,
        pieces("train"),
        cfg.batch_size,
        cfg.max_len,
        tok.bos_id,
        tok.eos_id,
        tok.pad_id,
        seed=cfg.seed,
        **shard,
    )
    valid, spans = data.stream("valid"), pieces("valid")
    return batches, lambda model: fill_perplexity(model, valid, spans, device, max_len=max_len, group=group)
