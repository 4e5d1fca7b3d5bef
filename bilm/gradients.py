"""How far back a prediction can feel its context: gradient norms against distance.

For a window of n words predicting one word w, distance k counts words back from w
(k = 1 is the word just before it; for the bi model's right side, the word just after):

    g(k) = ||d log p(w | context) / d e_k||       e_k: input embedding k words away   (B, n)
    h(k) = ||d log p(w | context) / d s_k||       s_k: recurrent state after reading that word
                                                    (all layers; for the LSTM both h and c)

Cost: the windows of a batch are independent, so the sum of their target log-probs has,
for each window, exactly that window's gradient. One forward and one backward per batch
measures every distance of every window. The embedding output is swapped for a leaf
tensor by a forward hook, so nothing in the model changes. Hidden states need one extra
thing: the recurrent stacks are wrapped to run one step at a time, so that each step's
state is a node of the graph (a fused kernel keeps them inside).

The bi model is measured with two blanks per window: the last word (its left context
spans all n words before it) and the first word (its right context spans all n after).

A per-step decay factor r gives g(k) ~ r^k; the fit of log median g(k) against k gives
r, reported as a half-life ln 2 / -ln r in words (None when the signal does not decay).
A trained model's g(k) is not one exponential (fast at first, slow later), so that
half-life grows with the window; `summarize` also gives measures that do not depend on it
(where g first falls below 1/2 and 1/10 of g(1), g(k)/g(1) at fixed k, the tail's shape).
"""

from __future__ import annotations

import math
from contextlib import contextmanager, nullcontext

import numpy as np
import torch
from torch import nn

STACKS = ("rnn", "fwd", "bwd")  # the recurrent stacks of UniLM / BiLM, see models.py
FIXED_DISTANCES = (1, 2, 5, 10, 20, 40, 80)  # g(k)/g(1) reported at these k (those inside the window)
TAIL_START = 5  # the tail of g(k), fitted as exponential and as power law, starts here


class StepRecorder(nn.Module):
    """Runs a recurrent stack one step at a time and keeps each step's hidden state.

    Returns the top layer of the state as the output, so the gradient reaching an
    output also reaches the recorded state: `states[t]`, a tuple of (layers, B, H)
    tensors (h, or h and c), carries the full dL/ds_t. `inputs` keeps the last input
    (B, T, I), so a step can be recomputed from its recorded state (see remedies.py).
    """

    def __init__(self, rnn: nn.Module):
        super().__init__()
        self.rnn = rnn
        self.states: list[tuple[torch.Tensor, ...]] = []
        self.inputs: torch.Tensor | None = None

    def forward(self, x: torch.Tensor, state=None):
        self.inputs = x
        outs = []
        for t in range(x.size(1)):
            _, state = self.rnn(x[:, t : t + 1], state)
            state = state if isinstance(state, tuple) else (state,)
            self.states.append(state)
            outs.append(state[0][-1])
            state = state if len(state) > 1 else state[0]
        return torch.stack(outs, 1), state


def stack_names(model: nn.Module) -> list[str]:
    """The recurrent stacks a model holds (uni and the synthetic models: rnn; bi: fwd, bwd)."""
    return [name for name in STACKS if isinstance(getattr(model, name, None), nn.Module)]


@contextmanager
def recording(model: nn.Module):
    """Swap every recurrent stack of `model` for a StepRecorder; yields {stack name: recorder}."""
    originals = {name: getattr(model, name) for name in stack_names(model)}
    recorders = {name: StepRecorder(rnn) for name, rnn in originals.items()}
    for name, recorder in recorders.items():
        setattr(model, name, recorder)
    try:
        yield recorders
    finally:
        for name, rnn in originals.items():
            setattr(model, name, rnn)


@contextmanager
def probes(model: nn.Module, hidden: bool):
    """Make the embedding output a leaf and (with `hidden`) record every recurrent state.

    Yields a dict: "emb" -> list of embedding leaves, stack name -> StepRecorder.
    """
    found: dict = {"emb": []}

    def leaf(module, inputs, out):
        out = out.detach().requires_grad_()
        found["emb"].append(out)
        return out

    handle = model.embedding.register_forward_hook(leaf)
    try:
        with recording(model) if hidden else nullcontext({}) as recorders:
            found.update(recorders)
            yield found
    finally:
        handle.remove()


def _grad_norms(total: torch.Tensor, emb: torch.Tensor, states: list[tuple[torch.Tensor, ...]]):
    """Per-row gradient norms: embedding (B, T, E) -> (B, T); T states of (layers, B, H) parts -> (B, T)."""
    parts = [p for state in states for p in state]
    emb_grad, *grads = torch.autograd.grad(total, [emb, *parts], allow_unused=True)
    if not states:
        return emb_grad.norm(dim=-1), None
    squares = [torch.zeros(()) if g is None else g.square().sum(dim=(0, 2)) for g in grads]  # (B,) each
    per_state = len(states[0])
    hidden = torch.stack([sum(squares[i : i + per_state]) for i in range(0, len(squares), per_state)], 1).sqrt()
    return emb_grad.norm(dim=-1), hidden


@torch.enable_grad()
def uni_norms(model: nn.Module, windows: torch.Tensor, hidden: bool = True) -> dict:
    """Windows (B, n+1): the first n tokens predict the last one.

    Returns {"left": {"emb": (B, n), "hidden": (B, n)}}, column k-1 = distance k.
    """
    with probes(model, hidden) as found:
        h, _ = model(windows[:, :-1])
        logp = model.target_log_prob(h[:, -1], windows[:, -1])
        emb, states = _grad_norms(logp.sum(), found["emb"][0], found["rnn"].states if hidden else [])
    out = {"emb": emb.flip(1)}
    if hidden:
        out["hidden"] = states.flip(1)
    return {"left": out}


@torch.enable_grad()
def bi_norms(model: nn.Module, windows: torch.Tensor, hidden: bool = True) -> dict:
    """Windows (B, n) of words; each is measured with the last and with the first word blank.

    Returns {"left": {...}, "right": {...}}, each {"emb": (B, n), "hidden": (B, n)};
    column k-1 = distance k from the blank (k = n reaches <bos> / <eos>). Also checks
    that the blank itself got no gradient: the model must never see the word it predicts.
    """
    cfg = model.cfg
    B, n = windows.shape
    ends = lambda token: torch.full((B, 1), token, dtype=windows.dtype, device=windows.device)  # noqa: E731
    ids = torch.cat([ends(cfg.bos_id), windows, ends(cfg.eos_id)], 1).repeat(2, 1)  # (2B, n+2)
    lengths = torch.full((2 * B,), n, device=windows.device)
    with probes(model, hidden) as found:
        h = model(ids, lengths)  # (2B, n, H): position j predicts word j+1 of ids
        features = torch.cat([h[:B, -1], h[B:, 0]])
        logp = model.target_log_prob(features, torch.cat([windows[:, -1], windows[:, 0]]))
        states = found["fwd"].states + found["bwd"].states if hidden else []
        emb, states = _grad_norms(logp.sum(), found["emb"][0], states)  # (2B, n+2), (2B, 2(n+2))
    if emb[:B, n].any() or emb[B:, 1].any():
        raise AssertionError("the bi model's prediction depends on the blank word itself")
    left, right = {"emb": emb[:B, :n].flip(1)}, {"emb": emb[B:, 2:]}
    if hidden:
        fwd, bwd = states[:, : n + 2], states[:, n + 2 :]  # bwd in its reading order: step r reads n+1-r
        left["hidden"], right["hidden"] = fwd[:B, :n].flip(1), bwd[B:, :n].flip(1)
    return {"left": left, "right": right}


def measure(model: nn.Module, windows: torch.Tensor, batch_size: int = 100, hidden: bool = True) -> dict:
    """Gradient norms for all windows (N, n+1) for uni, (N, n) for bi, in batches; numpy arrays (N, n)."""
    model.eval()
    norms = uni_norms if model.cfg.kind == "uni" else bi_norms
    parts = [norms(model, windows[i : i + batch_size], hidden) for i in range(0, len(windows), batch_size)]
    return {
        side: {what: torch.cat([p[side][what] for p in parts]).double().numpy() for what in parts[0][side]}
        for side in parts[0]
    }


def fit_decay(g: np.ndarray, k_min: int = 1) -> tuple[float, float | None]:
    """Least-squares fit of log g(k) = a + k log r over k >= k_min; returns (r, half-life in words).

    Zero entries (underflow: the signal is below float precision) are left out of the fit.
    The half-life is None when r >= 1 (no decay; within rounding, 1e-12 per step).
    """
    k = np.arange(1, len(g) + 1)
    keep = (k >= k_min) & (g > 0)
    if keep.sum() < 2:
        return 0.0, 0.0
    slope = np.polyfit(k[keep], np.log(g[keep]), 1)[0]
    rate = math.exp(slope)
    return rate, (float(math.log(2) / -slope) if slope < -1e-12 else None)  # rounding is not decay


def reach(median: np.ndarray, fraction: float) -> int | None:
    """The first distance k at which median g(k) falls below `fraction` of g(1); None if it never does."""
    below = np.flatnonzero(median < fraction * median[0])
    return int(below[0]) + 1 if len(below) else None


def line_fit(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(slope, R^2) of the least-squares line y = a + slope x."""
    slope, intercept = np.polyfit(x, y, 1)
    total = float(np.square(y - y.mean()).sum())
    residual = float(np.square(y - (intercept + slope * x)).sum())
    return float(slope), (1.0 - residual / total) if total > 0 else 1.0


def tail_shape(median: np.ndarray, start: int = TAIL_START) -> dict | None:
    """Is the tail of g(k) (k >= `start`) an exponential r^k or a power law k^-a? Both fitted in log space.

    The better fit is the one with the larger R^2 of log g; None with fewer than 4 usable distances.
    """
    k = np.arange(1, len(median) + 1)
    keep = (k >= start) & (median > 0)
    if keep.sum() < 4:
        return None
    y = np.log(median[keep])
    exp_slope, exp_r2 = line_fit(k[keep].astype(float), y)
    pow_slope, pow_r2 = line_fit(np.log(k[keep]), y)
    return {
        "start": int(k[keep][0]),
        "end": int(k[keep][-1]),
        "exp_rate": math.exp(exp_slope),
        "exp_r2": exp_r2,
        "power_exponent": -pow_slope,
        "power_r2": pow_r2,
        "better": "power law" if pow_r2 > exp_r2 else "exponential",
    }


def summarize(g: np.ndarray) -> dict:
    """Median and quartiles over windows (N, n) of each distance, and what describes the decay.

    Window-independent: `k_half` / `k_tenth`, the first distance at which median g(k) falls
    below 1/2 and 1/10 of g(1); `g_rel`, g(k)/g(1) at the fixed distances that fit the window;
    `tail`, exponential against power law for k >= TAIL_START. Window-dependent: the
    half-life of one exponential fitted over the whole window, which grows with the window
    when the decay is fast at first and slow later. Every fit leaves out k = n, the window's
    first word: it is read from the zero state with nothing before it to compete with, so its
    gradient rises again (a boundary effect of the window, not memory).
    """
    q25, median, q75 = np.quantile(g, [0.25, 0.5, 0.75], axis=0)
    body = median[:-1] if len(median) > 2 else median  # k = n left out: the boundary word
    rate, half_life = fit_decay(body)
    with np.errstate(divide="ignore", invalid="ignore"):
        far_near = np.median(g[:, -1] / g[:, 0])
        g_rel = {str(k): float(body[k - 1] / median[0]) for k in FIXED_DISTANCES if k <= len(body)}
    return {
        "median": median.tolist(),
        "q25": q25.tolist(),
        "q75": q75.tolist(),
        "rate_per_step": rate,
        "half_life": half_life,
        "far_near": float(far_near),
        "k_half": reach(body, 0.5),
        "k_tenth": reach(body, 0.1),
        "g_rel": g_rel,
        "tail": tail_shape(body),
    }


def windows_from_stream(stream: torch.Tensor, width: int, count: int, seed: int = 0) -> torch.Tensor:
    """`count` non-overlapping windows (count, width) cut at random places from a 1-D token stream.

    Consecutive sentences joined by <eos> give windows longer than any one sentence.
    """
    slots = len(stream) // width
    if slots < 1:
        raise ValueError(f"the token stream ({len(stream)} tokens) is shorter than one window of {width}")
    g = torch.Generator().manual_seed(seed)
    starts = torch.randperm(slots, generator=g)[: min(count, slots)] * width
    return torch.stack([stream[s : s + width] for s in starts.tolist()])


def profile(
    model: nn.Module,
    stream: torch.Tensor,
    lengths,
    count: int,
    batch_size: int = 100,
    hidden: bool = True,
    seed: int = 0,
) -> list[dict]:
    """Measure and summarize windows of each length; one entry per (length, side)."""
    entries = []
    extra = 1 if model.cfg.kind == "uni" else 0  # the uni window also holds its target
    for n in lengths:
        measured = measure(model, windows_from_stream(stream, n + extra, count, seed), batch_size, hidden)
        for side, arrays in measured.items():
            entry = {"length": n, "direction": side, "windows": len(arrays["emb"])}
            entry.update(summarize(arrays["emb"]))
            if hidden:
                entry["hidden"] = summarize(arrays["hidden"])
            entries.append(entry)
    return entries


class InputGradientLog:
    """||dL/dx_t|| at every time step of every training step, averaged over the batch rows.

    A forward hook on `module` (a model's `embedding`) puts a tensor hook on its output
    (B, T, E), so the backward pass the trainer runs anyway hands over dL/dx_t for all t:
    one norm per step, and the fused kernels keep running. Only in training mode with
    grad enabled; an output that needs no gradient (a frozen or identity embedding) is
    made a leaf so that it gets one. With the loss at the end of a window (adding, copy)
    the first step shows the gradient that crossed the whole window, the last step the
    one that crossed nothing: their ratio is the vanishing (or exploding) factor.

    `flush()` returns the means since the previous flush: `input_grad_first`,
    `input_grad_last` and `input_grad_by_step` (the whole profile, steps of one window length).
    """

    def __init__(self, module: nn.Module):
        self.handle = module.register_forward_hook(self._hook)
        self._reset()

    def _reset(self) -> None:
        self.first = self.last = 0.0
        self.count = 0
        self.profile: torch.Tensor | None = None
        self.profile_count = 0

    def _hook(self, module, args, out):
        if not (module.training and torch.is_grad_enabled()):
            return None
        if not out.requires_grad:
            out = out.detach().requires_grad_()
        out.register_hook(self._record)
        return out

    def _record(self, grad: torch.Tensor) -> None:
        norms = grad.detach().float().norm(dim=-1).mean(0).cpu()  # (T,)
        self.first += norms[0].item()
        self.last += norms[-1].item()
        self.count += 1
        if self.profile is None:
            self.profile = torch.zeros_like(norms)
        if len(norms) == len(self.profile):
            self.profile += norms
            self.profile_count += 1

    def flush(self) -> dict:
        if not self.count:
            return {}
        out = dict(
            input_grad_first=self.first / self.count,
            input_grad_last=self.last / self.count,
            input_grad_by_step=(self.profile / self.profile_count).tolist(),
        )
        self._reset()
        return out

    def remove(self) -> None:
        self.handle.remove()
