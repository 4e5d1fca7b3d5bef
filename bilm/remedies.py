"""What the trainer can add to a model's own loss, switched on from TrainConfig.

norm penalty (Pascanu, Mikolov & Bengio 2013, "On the difficulty of training RNNs", eq. 9)
    Omega = sum_k ( ||g_{k+1} J_k|| / ||g_{k+1}|| - 1 )^2,   g_{k+1} = dE/ds_{k+1},  J_k = ds_{k+1}/ds_k

    pushes each one-step Jacobian to keep the norm of the gradient that actually flows
    back through it, so the error signal neither vanishes nor explodes on its way. As in
    the paper g is a constant (no gradient through it); Omega trains the weights only
    through J. The loss becomes E + weight * Omega, Omega summed over the steps of a
    window and averaged over its rows; s is the whole state (all layers; h and c for LSTM).

    How, for any stack with the nn.LSTM calling convention: the model's forward runs with
    its stacks swapped for `gradients.StepRecorder`, so every state s_k is a graph node;
    one `autograd.grad` gives every g_k; then all T-1 steps are recomputed as one batch of
    single steps from the recorded states (detached: J_k only, nothing behind it), and one
    vector-Jacobian product with `create_graph` gives every g_{k+1} J_k. The recomputation
    runs without inter-layer dropout (the Jacobian of the deterministic stack).

    Cost: the forward loses the fused kernel across time (one kernel call per step), plus
    one extra backward (for g), one batched one-step forward and its double backward. Timed
    in docs/gradients.md. Models whose stacks are not `rnn` / `fwd` / `bwd` are refused.

per-step input gradients
    `gradients.InputGradientLog` on the model's `embedding`: ||dL/dx_t|| at the first and
    last steps of each window, in every train record of metrics.jsonl.
"""

from __future__ import annotations

from itertools import islice

import torch
from torch import nn

from .errors import BilmError
from .gradients import InputGradientLog, StepRecorder, recording, stack_names


def jacobian_norm_ratios(recorder: StepRecorder, grads: list[tuple[torch.Tensor, ...]]) -> torch.Tensor:
    """||g_{k+1} J_k|| / ||g_{k+1}|| for every step pair of a recorded window: ((T-1) * B,), k-major.

    `grads[t]` is dE/ds_t (constants); rows whose gradient is zero (padding) come out as exactly 1.
    """
    states, x = recorder.states, recorder.inputs
    B, T = x.shape[:2]
    prev = [torch.cat([s[i] for s in states[:-1]], 1).detach().requires_grad_() for i in range(len(states[0]))]
    g = [torch.cat([gr[i] for gr in grads[1:]], 1) for i in range(len(prev))]  # (layers, (T-1) B, H) each
    steps = x[:, 1:].detach().transpose(0, 1).reshape((T - 1) * B, 1, x.size(-1))
    rnn = recorder.rnn
    training = rnn.training
    rnn.train(False)
    try:
        _, new = rnn(steps, tuple(prev) if len(prev) > 1 else prev[0])
    finally:
        rnn.train(training)
    new = new if isinstance(new, tuple) else (new,)
    vjp = torch.autograd.grad(new, prev, g, create_graph=True)
    num = sum(v.square().sum(dim=(0, 2)) for v in vjp)
    den = sum(gi.square().sum(dim=(0, 2)) for gi in g)
    flowing = den > 0
    return torch.where(flowing, num.clamp_min(1e-30).sqrt() / den.clamp_min(1e-30).sqrt(), 1.0)


class NormPreservingPenalty:
    """`loss, state = penalty(batch, state)`: the model's own loss + weight * Omega (module docstring).

    `flush()` returns the mean Omega since the previous call, for the trainer's log.
    """

    def __init__(self, model: nn.Module, weight: float):
        if not stack_names(model):
            raise BilmError(f"the norm penalty needs recurrent stacks named rnn, fwd or bwd; {type(model).__name__}")
        self.model, self.weight = model, weight
        self.total, self.count = 0.0, 0

    def omega(self, batch, state=None) -> tuple[torch.Tensor, torch.Tensor, object]:
        """(model loss, Omega, carried state)."""
        with recording(self.model) as recorders:
            loss, state = self.model.loss(batch, state)
        recorders = [r for r in recorders.values() if len(r.states) > 1]
        parts = [p for r in recorders for s in r.states for p in s]
        grads = iter(torch.autograd.grad(loss, parts, retain_graph=True, materialize_grads=True))
        omega = loss.new_zeros(())
        for r in recorders:
            mine = [tuple(islice(grads, len(s))) for s in r.states]  # dE/ds_t, shaped like s_t
            omega = omega + (jacobian_norm_ratios(r, mine) - 1).square().sum() / r.inputs.size(0)
        return loss, omega, state

    def __call__(self, batch, state=None):
        loss, omega, state = self.omega(batch, state)
        self.total += omega.item()
        self.count += 1
        return loss + self.weight * omega, state

    def flush(self) -> dict:
        out = dict(norm_penalty=self.total / self.count) if self.count else {}
        self.total, self.count = 0.0, 0
        return out


def instrument(model: nn.Module, cfg) -> tuple:
    """(loss function, monitors) for a TrainConfig: `model.loss` unless a remedy wraps it.

    Each monitor's `flush()` adds its figures to the trainer's train records.
    """
    loss, monitors = model.loss, []
    if cfg.norm_penalty:
        loss = NormPreservingPenalty(model, cfg.norm_penalty)
        monitors.append(loss)
    if cfg.log_input_grads:
        if getattr(getattr(model, "cfg", None), "kind", None) == "bi":
            raise BilmError("per-step input gradients need fixed windows (uni, bench tasks); bi rows are padded")
        monitors.append(InputGradientLog(model.embedding))
    return loss, monitors
