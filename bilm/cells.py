"""Recurrent cells and initialisations, chosen by name.

Every cell is a module with the `nn.LSTM` calling convention, batch first:

    out, state = rnn(x, state)      x: (B, T, I)   out: (B, T, H)   state: (layers, B, H) or (h, c)

so the models never care which cell they run. The fused PyTorch kernels are used
wherever a cell allows; only the sigmoid RNN and a leaky ESN need a loop over time.

cells
    lstm, gru            gated; `forget_bias` (lstm) sets the forget-gate bias (1.0 is the usual remedy)
    rnn-tanh, rnn-relu   Elman RNNs (fused)
    rnn-sigmoid          Elman RNN with the logistic activation, derivative <= 1/4: vanishes fastest
    irnn                 ReLU RNN with identity recurrent weights and zero biases (Le et al. 2015)
    esn                  echo state network: a fixed random sparse tanh reservoir scaled to a spectral
                         radius, frozen (requires_grad False); only what reads it out is trained
inits (recurrent weights, per gate block)
    default      PyTorch's U(-1/sqrt(H), 1/sqrt(H))
    xavier       Glorot uniform, input and recurrent weights; zero biases
    orthogonal   orthogonal recurrent blocks: every singular value is 1
    identity     identity recurrent blocks, zero biases (`scale` multiplies the identity)
    spectral     Gaussian recurrent blocks rescaled to spectral radius `sr` (default 1.0)

ESN options follow reservoirpy's names: `sr` spectral radius (default 0.9; reservoirpy leaves the
matrix unscaled unless given), `lr` leak rate in (0, 1] (x_t = (1-lr) x_{t-1} + lr tanh(...)),
`input_scaling`, `bias_scaling`, `rc_connectivity` and `input_connectivity` (fractions of non-zero
weights, default 0.1 each). reservoirpy draws input and bias weights as +-1 (Bernoulli); we draw
them U(-1, 1) — the same scale, denser in values.
"""

from __future__ import annotations

import math

import torch
from torch import nn

CELLS = ("lstm", "gru", "rnn-tanh", "rnn-relu", "rnn-sigmoid", "irnn", "esn")
INITS = ("default", "xavier", "orthogonal", "identity", "spectral")
GATES = {"lstm": 4, "gru": 3}  # recurrent weights are stacked gate blocks (4H, H) / (3H, H); others 1

ESN_DEFAULTS = dict(sr=0.9, lr=1.0, input_scaling=1.0, bias_scaling=1.0, rc_connectivity=0.1, input_connectivity=0.1)
OPTIONS = {"lstm": {"forget_bias"}, "irnn": {"scale"}, "esn": set(ESN_DEFAULTS)}
INIT_OPTIONS = {"identity": {"scale"}, "spectral": {"sr"}}


class LoopRNN(nn.Module):
    """A stacked Elman RNN with any activation and a leak rate, run step by step.

    h_t = (1 - leak) h_{t-1} + leak * act(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)

    Parameters carry nn.RNN's names (weight_hh_l0, ...) so one set of init code serves both.
    The input projection of a whole layer is one matmul; only the recurrence loops.
    """

    def __init__(self, input_size, hidden_size, num_layers=1, dropout=0.0, activation=torch.sigmoid, leak=1.0):
        super().__init__()
        self.hidden_size, self.num_layers, self.dropout = hidden_size, num_layers, dropout
        self.activation, self.leak = activation, leak
        bound = 1 / math.sqrt(hidden_size)
        for layer in range(num_layers):
            size_in = input_size if layer == 0 else hidden_size
            for name, shape in (
                ("weight_ih", (hidden_size, size_in)),
                ("weight_hh", (hidden_size, hidden_size)),
                ("bias_ih", (hidden_size,)),
                ("bias_hh", (hidden_size,)),
            ):
                self.register_parameter(f"{name}_l{layer}", nn.Parameter(torch.empty(shape).uniform_(-bound, bound)))

    def forward(self, x: torch.Tensor, state: torch.Tensor | None = None):
        B = x.size(0)
        if state is None:
            state = x.new_zeros(self.num_layers, B, self.hidden_size)
        finals = []
        for layer in range(self.num_layers):
            if layer > 0:
                x = nn.functional.dropout(x, self.dropout, self.training)
            w_ih, w_hh, b_ih, b_hh = layer_weights(self)[layer]
            drive = torch.addmm(b_ih + b_hh, x.reshape(-1, x.size(-1)), w_ih.t()).view(B, x.size(1), -1)  # (B, T, H)
            h, outs = state[layer], []
            for t in range(drive.size(1)):
                new = self.activation(torch.addmm(drive[:, t], h, w_hh.t()))
                h = new if self.leak == 1.0 else torch.lerp(h, new, self.leak)
                outs.append(h)
            x = torch.stack(outs, 1)
            finals.append(h)
        return x, torch.stack(finals)


def make_rnn(
    cell: str, input_size: int, hidden_size: int, layers: int, dropout: float, init: str = "default", **options
) -> nn.Module:
    """Build a stacked recurrent network of the named cell.

    `init` names the recurrent weight initialisation (see INITS); `options` are cell- and
    init-specific settings from `ModelConfig.cell_options` (see the module docstring).
    """
    if cell not in CELLS:
        raise ValueError(f"unknown cell {cell!r}; choose one of {', '.join(CELLS)}")
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}; choose one of {', '.join(INITS)}")
    if cell in ("irnn", "esn") and init != "default":
        raise ValueError(f"{cell} sets its own recurrent weights; leave init at 'default'")
    allowed = OPTIONS.get(cell, set()) | INIT_OPTIONS.get(init, set())
    unknown = set(options) - allowed
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(sorted(unknown))} for cell {cell} with init {init}; "
            f"allowed: {', '.join(sorted(allowed)) or 'none'}"
        )
    dropout = dropout if layers > 1 else 0.0
    kwargs = dict(num_layers=layers, dropout=dropout, batch_first=True)
    if cell == "lstm":
        rnn = nn.LSTM(input_size, hidden_size, **kwargs)
    elif cell == "gru":
        rnn = nn.GRU(input_size, hidden_size, **kwargs)
    elif cell in ("rnn-tanh", "rnn-relu", "irnn"):
        rnn = nn.RNN(input_size, hidden_size, nonlinearity="tanh" if cell == "rnn-tanh" else "relu", **kwargs)
    elif cell == "rnn-sigmoid":
        rnn = LoopRNN(input_size, hidden_size, layers, dropout, torch.sigmoid)
    else:
        return make_esn(input_size, hidden_size, layers, dropout, **options)
    if cell == "irnn":
        init = "identity"
    initialise(rnn, init, GATES.get(cell, 1), **{k: v for k, v in options.items() if k != "forget_bias"})
    if "forget_bias" in options:
        set_forget_bias(rnn, options["forget_bias"])
    return rnn


def _layer_params(rnn: nn.Module, prefix: str) -> list[torch.Tensor]:
    return [p for name, p in rnn.named_parameters() if name.startswith(prefix)]


def layer_weights(rnn: nn.Module) -> list[tuple[torch.Tensor, ...]]:
    """(weight_ih, weight_hh, bias_ih, bias_hh) of each layer, bottom first."""
    names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
    return [tuple(getattr(rnn, f"{n}_l{layer}") for n in names) for layer in range(rnn.num_layers)]


@torch.no_grad()
def initialise(rnn: nn.Module, init: str, gates: int = 1, scale: float = 1.0, sr: float = 1.0) -> None:
    """Re-initialise the weights of `rnn` in place; each gate block is treated as its own matrix."""
    if init == "default":
        return
    for w in _layer_params(rnn, "weight_hh"):
        for block in w.chunk(gates):
            if init == "xavier":
                nn.init.xavier_uniform_(block)
            elif init == "orthogonal":
                nn.init.orthogonal_(block)
            elif init == "identity":
                block.copy_(scale * torch.eye(block.size(0)))
            else:
                block.normal_(0.0, 1.0 / math.sqrt(block.size(0)))
                scale_to_radius(block, sr)
    if init == "xavier":
        for w in _layer_params(rnn, "weight_ih"):
            for block in w.chunk(gates):
                nn.init.xavier_uniform_(block)
    if init in ("xavier", "identity"):
        for b in _layer_params(rnn, "bias"):
            b.zero_()


@torch.no_grad()
def set_forget_bias(rnn: nn.Module, value: float) -> None:
    """Total LSTM forget-gate bias = `value` (gate order i, f, g, o): remembers by default."""
    for name, b in rnn.named_parameters():
        if name.startswith("bias"):
            forget = b.chunk(4)[1]
            forget.fill_(value if name.startswith("bias_ih") else 0.0)


def spectral_radius(w: torch.Tensor) -> float:
    return float(torch.linalg.eigvals(w.detach().double()).abs().max())


@torch.no_grad()
def scale_to_radius(w: torch.Tensor, radius: float) -> None:
    """Rescale the square matrix `w` in place so that its largest |eigenvalue| is `radius`."""
    if w.is_meta:  # shapes only (checkpoint.check_weights builds models on the meta device)
        return
    current = spectral_radius(w)
    if current > 0:
        w.mul_(radius / current)


def _sparse_uniform(shape, density: float, scale: float) -> torch.Tensor:
    return torch.empty(shape).uniform_(-scale, scale) * (torch.rand(shape) < density)


def make_esn(input_size: int, hidden_size: int, layers: int, dropout: float, **options) -> nn.Module:
    """A frozen stack of random sparse tanh reservoirs (Jaeger 2001), reservoirpy's conventions.

    With lr = 1 the reservoir is exactly a tanh Elman RNN, so it runs on the fused nn.RNN kernel.
    """
    o = {**ESN_DEFAULTS, **options}
    if not 0 < o["lr"] <= 1:
        raise ValueError(f"esn leak rate lr must be in (0, 1], got {o['lr']}")
    if o["lr"] == 1.0:
        rnn = nn.RNN(input_size, hidden_size, num_layers=layers, dropout=dropout, batch_first=True)
    else:
        rnn = LoopRNN(input_size, hidden_size, layers, dropout, torch.tanh, leak=o["lr"])
    with torch.no_grad():
        for w_ih, w_hh, b_ih, b_hh in layer_weights(rnn):
            w_ih.copy_(_sparse_uniform(w_ih.shape, o["input_connectivity"], o["input_scaling"]))
            w_hh.copy_(torch.randn(w_hh.shape) * (torch.rand(w_hh.shape) < o["rc_connectivity"]))
            scale_to_radius(w_hh, o["sr"])
            b_ih.copy_(_sparse_uniform(hidden_size, 1.0, o["bias_scaling"]))
            b_hh.zero_()
    rnn.requires_grad_(False)
    return rnn
