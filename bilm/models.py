"""The two language models: `uni` (next word) and `bi` (fill in the blank).

Both own their loss (`model.loss(batch, state)`), so the trainer knows nothing
about either. Shapes are batch first: B sentences or stream rows, T time steps,
E embedding size, H hidden size, V vocabulary.

uni:  ids (B, T) -> embed (B, T, E) -> RNN stack -> (B, T, H) -> output layer -> p(w_{t+1} | w_<=t)

bi:   the word at position t is predicted from two separate stacks that never see it
      (ELMo / context2vec style; a stacked `bidirectional=True` RNN would leak, because
      its second layer sees both directions of the first):

          <bos>  w1   w2   w3   <eos>
      fwd  f0 -> f1 -> f2 -> f3            left context of w_t  = f_{t-1}
      bwd        b1 <- b2 <- b3 <- b4      right context of w_t = b_{t+1}

      [f_{t-1}; b_{t+1}] -> Linear(2H, H) -> tanh -> output layer -> p(w_t | rest)

      All positions of a sentence are trained in one pass per direction.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import cache
from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import nn

from .cells import make_rnn


@dataclass
class ModelConfig:
    kind: str = "uni"  # uni | bi
    vocab_size: int = 0
    cell: str = "lstm"
    init: str = "default"  # recurrent weight initialisation, see cells.py
    cell_options: dict = field(default_factory=dict)  # cell-specific settings, see cells.py
    emb_size: int = 200
    hidden_size: int = 200
    layers: int = 2
    dropout: float = 0.1
    locked_dropout: bool = True  # one dropout mask per sequence for embeddings and outputs (LockedDropout)
    tie_weights: bool = True  # with the full softmax; with the adaptive one only if `adaptive_input`
    output: str = "adaptive"  # adaptive | full
    # Tied adaptive input (Baevski & Auli 2019): with the adaptive softmax and `tie_weights`, each word's
    # input vector is its own output weights (cluster words through their cluster's projection). An hour of
    # 2x400 on WikiText-2 ran 1.48x (uni) and 1.23x (bi) the tokens/s and learnt more per step: uni test
    # perplexity 93.4 against 104.1 (docs/quality.md). Checkpoints from before it had a separate V x E
    # input embedding (False).
    adaptive_input: bool = True
    # A 1k-word head: 14 % fewer FLOPs per token than 2k, the same valid ppl at 20 minutes (docs/performance.md).
    cutoffs: list[int] = field(default_factory=lambda: [1000, 10000])
    # The output bias starts at the train split's word frequencies (the adaptive head gets a bias for it).
    # It cut uni's WikiText-2 valid ppl after one epoch from 305 to 201, and bi's pseudo-ppl after
    # 4,600 steps from 59.8 to 48.0 (docs/quality.md). None: on, except for bi with a tied full softmax
    # (tiny vocabularies), where it held the tests' bi model at pseudo-ppl 3.2 instead of 1.3.
    unigram_bias: bool | None = None
    # With the unigram start and the adaptive softmax: each tail cluster gets a bias over its words, started at
    # their frequencies within the cluster, so every word (not only the head's) starts at its unigram
    # probability. Checkpoints from before it had none (False).
    tail_bias: bool = True
    aux_lm: float = 0.0  # bi: weight of each stack's own next/previous-word loss (ELMo); 0 = off
    # AWD-LSTM's regularisers (Merity et al. 2018); 0 = off, as in checkpoints from before them.
    embed_dropout: float = 0.0  # drop whole word types from a batch's embeddings
    weight_drop: float = 0.0  # DropConnect on the hidden-to-hidden weights (LSTM, GRU, RNN)
    combine: str = "linear"  # bi: [left; right] -> features by linear+tanh, or context2vec's mlp
    pad_id: int = 0
    unk_id: int = 1
    bos_id: int = 2
    eos_id: int = 3
    blank_id: int = 4

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def wants_unigram_bias(self) -> bool:
        if self.unigram_bias is not None:
            return self.unigram_bias
        return self.kind == "uni" or not (self.tie_weights and not adaptive_cutoffs(self))

    @property
    def ties_output(self) -> bool:
        """Whether the input embeddings are the output layer's weights (full softmax, or adaptive input)."""
        return self.tie_weights and (self.adaptive_input or not adaptive_cutoffs(self))

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        """Read a saved config; fields missing from older checkpoints take the value that built them
        (no adaptive head bias before `unigram_bias`, a separate input embedding before `adaptive_input`,
        no tail biases before `tail_bias`)."""
        return cls(**{"unigram_bias": False, "adaptive_input": False, "tail_bias": False, **d})


WEIGHT_DROP_CELLS = ("lstm", "gru", "rnn-tanh", "rnn-relu", "irnn")  # the torch.nn stacks

# Model sizes by training budget (docs/quality.md). `small`, the best per CPU-minute for runs of minutes
# (`make demo`), is ModelConfig's own default but one layer deep: on a CPU without bf16 four minutes of
# 1x200 read 1.3-1.4x the tokens of 2x200 and reach a lower validation (uni 164.9 against 180.9, bi
# 73.5 against 95.8), and on the Xeon with AMX a 1x300 bi had tied 2x200 at equal steps. `large` is for
# runs of about an hour (`make models`), with more dropout for uni, whose stream it sees several times. bi
# sees one or two epochs in minutes, and without dropout its six-minute validation falls from 59.4 to 53.8
# (uni's: 124.1 against 124.4, a tie).
PRESETS = {
    "small": dict(layers=1, hidden_size=200, emb_size=200, dropout=0.1),
    "large": dict(layers=2, hidden_size=400, emb_size=400, dropout=0.4),
}
PRESET_OVERRIDES = {("small", "bi"): dict(dropout=0.0), ("large", "bi"): dict(dropout=0.25)}


def preset(name: str, kind: str) -> dict:
    """The ModelConfig fields of a preset for a model kind."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose {' or '.join(PRESETS)}")
    return {**PRESETS[name], **PRESET_OVERRIDES.get((name, kind), {})}


@dataclass
class Batch:
    """A training or evaluation batch.

    uni: `inputs` (B, T) and `targets` (B, T), one step ahead in the stream.
    bi:  `inputs` (B, L) = <bos> w1..wn <eos> <pad>...; `lengths` (B,) counts w1..wn.
    """

    inputs: torch.Tensor
    targets: torch.Tensor | None = None
    lengths: torch.Tensor | None = None

    def to(self, device) -> Batch:
        move = lambda t: None if t is None else t.to(device, non_blocking=True)  # noqa: E731
        return Batch(move(self.inputs), move(self.targets), move(self.lengths))

    @property
    def num_tokens(self) -> int:
        """How many words this batch predicts (for tokens/s)."""
        if self.lengths is not None:
            return int(self.lengths.sum())
        return self.targets.numel()


class LockedDropout(nn.Module):
    """Dropout with one mask per sequence, shared by all its time steps (Gal & Ghahramani 2016).

    AWD-LSTM's choice for embeddings and LSTM outputs. It also draws T times fewer random
    numbers: a fresh mask per element was 10 % of a CPU training step (docs/performance.md).
    """

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, T, H): the same mask (B, 1, H) for every step t."""
        if not self.training or self.p == 0:
            return x
        mask = x.new_empty(x.size(0), 1, x.size(2)).bernoulli_(1 - self.p).div_(1 - self.p)
        return x * mask


class FullSoftmax(nn.Module):
    """A linear layer over the whole vocabulary, optionally tied to the embedding."""

    def __init__(self, in_features: int, vocab_size: int):
        super().__init__()
        self.decoder = nn.Linear(in_features, vocab_size)

    def log_prob(self, h: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(self.decoder(h), dim=-1)

    def target_log_prob(self, h: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return -F.cross_entropy(self.decoder(h), targets, reduction="none")

    def set_bias(self, logp: torch.Tensor) -> None:
        self.decoder.bias.copy_(logp)


class AdaptiveSoftmax(nn.Module):
    """Grave et al. 2017: frequent words in a small head, rare ones in cheaper clusters.

    Exact probabilities (not sampled), so perplexities are comparable with the full softmax;
    it needs a frequency-sorted vocabulary, which our tokenizer guarantees. The parameters are
    those of `nn.AdaptiveLogSoftmaxWithLoss`; the forward passes are ours, with rows padded to a
    few sizes (`padded_rows`).
    """

    def __init__(
        self, in_features: int, vocab_size: int, cutoffs: list[int], head_bias: bool = False, tail_bias: bool = False
    ):
        super().__init__()
        self.asm = nn.AdaptiveLogSoftmaxWithLoss(
            in_features, vocab_size, cutoffs, div_value=4.0 if in_features >= 64 else 2.0, head_bias=head_bias
        )
        edges = self.asm.cutoffs
        sizes = [hi - lo for lo, hi in zip(edges[:-1], edges[1:], strict=True)]
        self.tail_bias = nn.ParameterList([torch.zeros(n) for n in sizes]) if tail_bias else None

    def cluster_logits(self, i: int, h: torch.Tensor) -> torch.Tensor:
        """Logits (N, size_i) over the words of tail cluster i (0 = the first after the head)."""
        down, words = self.asm.tail[i]
        return F.linear(down(h), words.weight, None if self.tail_bias is None else self.tail_bias[i])

    def log_prob_blocks(self, h: torch.Tensor) -> list[torch.Tensor]:
        """log p in vocabulary order, a block per cut: the head's words (N, shortlist), then each cluster's
        words (N, size_i), their log-probability within the cluster plus the cluster's own."""
        short = self.asm.shortlist_size
        head = F.log_softmax(self.asm.head(h), dim=-1)
        clusters = [
            F.log_softmax(self.cluster_logits(i, h), dim=-1) + head[:, short + i, None]
            for i in range(len(self.asm.tail))
        ]
        return [head[:, :short], *clusters]

    def log_prob(self, h: torch.Tensor) -> torch.Tensor:
        """log p (N, V) over the whole vocabulary."""
        n = h.size(0)
        h = h.index_select(0, padded_rows(torch.arange(n, device=h.device), reduced_precision(h)))
        return torch.cat(self.log_prob_blocks(h), dim=1)[:n]

    def target_log_prob(self, h: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """log p(target) (N,): the head's log-probability of the word, or of its cluster plus the word's
        within the cluster; each cluster's rows are scored together."""
        if h.is_cuda and torch.is_autocast_enabled("cuda"):
            # CUDA autocast returns log_softmax in float32; bf16 features would mix dtypes below.
            h = h.float()
        asm, n, pad = self.asm, h.size(0), reduced_precision(h)
        rows = padded_rows(torch.arange(n, device=h.device), pad)
        h, targets = h.index_select(0, rows), targets.index_select(0, rows)
        cluster = torch.bucketize(targets, torch.tensor(asm.cutoffs[:-1], device=h.device), right=True)
        head_index = torch.where(cluster == 0, targets, asm.shortlist_size + cluster - 1)
        out = F.log_softmax(asm.head(h), dim=-1).gather(1, head_index[:, None]).squeeze(1)
        for i in range(1, len(asm.tail) + 1):
            mine = (cluster[:n] == i).nonzero().squeeze(1)
            if mine.numel() == 0:
                continue
            sub = padded_rows(mine, pad)
            within = F.log_softmax(self.cluster_logits(i - 1, h.index_select(0, sub)), dim=-1)
            word = within.gather(1, (targets.index_select(0, sub) - asm.cutoffs[i - 1])[:, None]).squeeze(1)
            out = out.index_add(0, mine, word[: mine.numel()].to(out.dtype))
        return out[:n]

    def set_bias(self, logp: torch.Tensor) -> None:
        """Head words get their own log p; each cluster the log of its words' total p, and (with tail biases)
        each cluster word its log p within the cluster."""
        short, edges = self.asm.shortlist_size, self.asm.cutoffs
        spans = list(zip(edges[:-1], edges[1:], strict=True))
        clusters = [logp[lo:hi].logsumexp(0) for lo, hi in spans]
        self.asm.head.bias.copy_(torch.cat([logp[:short], torch.stack(clusters)]))
        if self.tail_bias is not None:
            for bias, (lo, hi), total in zip(self.tail_bias, spans, clusters, strict=True):
                bias.copy_(logp[lo:hi] - total)


def padded_rows(index: torch.Tensor, pad: bool = True) -> torch.Tensor:
    """`index` (n,) lengthened to one of eight sizes per octave by repeating its first entry (with `pad`).

    oneDNN builds a bf16 matrix-product kernel for each new shape it meets (about 45 ms for an
    (n, 12) x (12, 23281) product on a Xeon with AMX, against 3-7 ms to run it), and the rows of a
    batch that fall in each cluster are a new count at almost every step. Padded, the products
    take a few dozen shapes, each built once; the extra rows cost at most 1/8 more work and
    their results are dropped. fp32 products pay nothing per shape, so they are not padded
    (`reduced_precision`). `python scripts/bench_padding.py` measures both.
    """
    n = index.numel()
    if not pad or n <= 16:
        return index
    step = 1 << (n.bit_length() - 4)
    return torch.cat([index, index[:1].expand(-n % step)])


def reduced_precision(x: torch.Tensor) -> bool:
    """Whether products with `x` run in bf16 or fp16: autocast on its device, or `x` itself."""
    return x.dtype in (torch.bfloat16, torch.float16) or torch.is_autocast_enabled(x.device.type)


class AdaptiveInput(nn.Module):
    """Word vectors (..., E) read from an adaptive softmax's own weights (tied adaptive input).

    A head word's vector is its row of the head; a word of cluster i is its row of the cluster's
    (size_i, E/4^(i+1)) output matrix, mapped back to E by the cluster's projection, transposed.
    Rare words then learn from being read and from being predicted, in fewer parameters: the tail
    clusters hold E/4 and E/16 numbers a word instead of E.
    """

    def __init__(self, asm: nn.AdaptiveLogSoftmaxWithLoss):
        super().__init__()
        self.edges = [0, *asm.cutoffs]  # asm.cutoffs ends with the vocabulary size
        self.head = asm.head.weight  # (shortlist + clusters, E), the same Parameter
        self.words = nn.ParameterList([tail[1].weight for tail in asm.tail])  # (size_i, d_i)
        self.projections = nn.ParameterList([tail[0].weight for tail in asm.tail])  # (d_i, E)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (...) -> vectors (..., E), each cluster's words looked up in one gather."""
        flat = ids.reshape(-1)
        out = self.head.new_zeros(flat.numel(), self.head.size(1))
        pad = reduced_precision(out)
        for i, (lo, hi) in enumerate(pairwise(self.edges)):
            rows = ((flat >= lo) & (flat < hi)).nonzero().squeeze(1)
            if rows.numel() == 0:
                continue
            if i == 0:
                vectors = F.embedding(flat[rows], self.head)
            else:
                words = flat[padded_rows(rows, pad)] - lo  # a product per cluster: few shapes (padded_rows)
                vectors = (F.embedding(words, self.words[i - 1]) @ self.projections[i - 1])[: rows.numel()]
            out = out.index_copy(0, rows, vectors.to(out.dtype))
        return out.view(*ids.shape, -1)


def adaptive_cutoffs(cfg: ModelConfig) -> list[int]:
    """The cutoffs the adaptive softmax will use; empty means a full softmax (tiny vocabularies)."""
    if cfg.output not in ("adaptive", "full"):
        raise ValueError(f"unknown output layer {cfg.output!r}; choose adaptive or full")
    if cfg.output == "full":
        return []
    return sorted({c for c in cfg.cutoffs if 0 < c < cfg.vocab_size - 1})


def make_output(cfg: ModelConfig, in_features: int) -> nn.Module:
    cutoffs = adaptive_cutoffs(cfg)
    if cutoffs:
        biased = cfg.wants_unigram_bias
        return AdaptiveSoftmax(
            in_features, cfg.vocab_size, cutoffs, head_bias=biased, tail_bias=biased and cfg.tail_bias
        )
    return FullSoftmax(in_features, cfg.vocab_size)


class LanguageModel(nn.Module):
    """What both models share: embedding, dropout, output layer, sequence scoring."""

    def __init__(self, cfg: ModelConfig, features: int):
        super().__init__()
        self.cfg = cfg
        self.drop = LockedDropout(cfg.dropout) if cfg.locked_dropout else nn.Dropout(cfg.dropout)
        if cfg.weight_drop and cfg.cell not in WEIGHT_DROP_CELLS:
            raise ValueError(f"weight drop needs one of the cells {', '.join(WEIGHT_DROP_CELLS)}, not {cfg.cell}")
        self.tied = cfg.ties_output
        adaptive_input = self.tied and bool(adaptive_cutoffs(cfg))
        if not adaptive_input:
            self.embedding = nn.Embedding(cfg.vocab_size, cfg.emb_size)
            nn.init.uniform_(self.embedding.weight, -0.1, 0.1)
        # Tying needs the output layer's input to be E wide: project H -> E if they differ.
        self.proj = nn.Linear(features, cfg.emb_size) if self.tied and features != cfg.emb_size else None
        self.output = make_output(cfg, cfg.emb_size if self.tied else features)
        if adaptive_input:
            self.embedding = AdaptiveInput(self.output.asm)
        elif self.tied:
            self.output.decoder.weight = self.embedding.weight

    @torch.no_grad()
    def start_at_unigram(self, counts: torch.Tensor) -> None:
        """Set the output bias to log word frequencies (add-one), so training starts from the unigram model.

        Otherwise the first few hundred steps only learn the frequencies (loss stuck near 7 on WikiText-2).
        """
        counts = counts.double() + 1
        self.output.set_bias((counts / counts.sum()).log().float())

    def recurrent_stack(self) -> nn.Module:
        c = self.cfg
        return make_rnn(c.cell, c.emb_size, c.hidden_size, c.layers, c.dropout, c.init, **c.cell_options)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (B, T) -> dropped-out embeddings (B, T, E).

        With `embed_dropout`, a word type is dropped everywhere in the batch at once (AWD-LSTM's dropoute),
        so the model cannot lean on any one word; the mask is drawn per type and indexed, (V,) not (V, E).
        """
        x = self.embedding(ids)
        p = self.cfg.embed_dropout
        if self.training and p:
            keep = x.new_empty(self.cfg.vocab_size).bernoulli_(1 - p).div_(1 - p)
            x = x * keep[ids].unsqueeze(-1)
        return self.drop(x)

    def recur(self, rnn: nn.Module, x: torch.Tensor, state=None):
        """Run a recurrent stack; in training with `weight_drop`, through DropConnect'ed hidden-to-hidden weights.

        One mask per weight matrix and batch, shared by every time step (AWD-LSTM's weight drop). The
        parameters themselves are never touched: the dropped copies are passed in for this call only,
        so the state dict and checkpoints stay those of a plain stack.
        """
        p = self.cfg.weight_drop
        if not (self.training and p):
            return run_rnn(rnn, x, state)
        dropped = {n: F.dropout(w, p) for n, w in rnn.named_parameters() if n.startswith("weight_hh")}
        return run_rnn(lambda x, state: torch.func.functional_call(rnn, dropped, (x, state)), x, state)

    def output_features(self, h: torch.Tensor) -> torch.Tensor:
        """What the output layer reads: features (dropped out in `forward`), projected if tied."""
        return self.proj(h) if self.proj is not None else h

    def log_prob(self, h: torch.Tensor) -> torch.Tensor:
        """Full log-distribution (N, V) over the vocabulary from features (N, H)."""
        return self.output.log_prob(self.output_features(h))

    def target_log_prob(self, h: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """log p(target) (N,) from features (N, H); cheaper than `log_prob` with adaptive softmax.

        Always float32: under bf16 autocast the adaptive head answers in bf16, and sums of log-probabilities
        (losses, sentence scores) want the precision.
        """
        return self.output.target_log_prob(self.output_features(h), targets).float()


class UniLM(LanguageModel):
    """Next-word model; trained on the token stream with truncated BPTT."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg, cfg.hidden_size)
        self.rnn = self.recurrent_stack()

    def forward(self, ids: torch.Tensor, state=None):
        """ids (B, T) -> features (B, T, H), final state (carried across BPTT windows)."""
        out, state = self.recur(self.rnn, self.embed(ids), state)
        return self.drop(out), state

    def loss(self, batch: Batch, state=None):
        h, state = self(batch.inputs, state)
        logp = self.target_log_prob(h.reshape(-1, h.size(-1)), batch.targets.reshape(-1))
        return -logp.mean(), state

    def sequence_log_probs(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """log p(w_i | w_<i) for each position of `<eos> w1..wn <eos>` rows (B, L).

        Returns (B, L-1): entry i scores ids[:, i+1]; positions past each row's n+1 are 0.
        The stream separates lines with <eos>, so <eos> also serves as the start symbol.
        """
        h, _ = self(ids[:, :-1])
        B, T, H = h.shape
        logp = self.target_log_prob(h.reshape(-1, H), ids[:, 1:].reshape(-1)).view(B, T)
        mask = torch.arange(T, device=ids.device)[None, :] < (lengths[:, None] + 1)
        return logp * mask


class BiLM(LanguageModel):
    """Fill-in-the-blank model; the prediction at t never sees the token at t."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg, cfg.hidden_size)
        self.fwd = self.recurrent_stack()
        self.bwd = self.recurrent_stack()
        if cfg.combine not in ("linear", "mlp"):
            raise ValueError(f"unknown combine {cfg.combine!r}; choose linear or mlp")
        # mlp (context2vec): a hidden ReLU layer over [left; right] before the linear+tanh.
        self.mix = nn.Linear(2 * cfg.hidden_size, 2 * cfg.hidden_size) if cfg.combine == "mlp" else None
        self.combine = nn.Linear(2 * cfg.hidden_size, cfg.hidden_size)

    def context(self, ids: torch.Tensor, lengths: torch.Tensor):
        """Left and right context states (B, L-2, H) for the words w1..w_{L-2}.

        The backward stack reads each row reversed within its own length, so padding
        always comes after the real tokens and cannot reach them.
        """
        B, L = ids.shape
        x = self.embed(ids)
        f, _ = self.recur(self.fwd, x)
        rev = _reverse_index(lengths + 2, L)  # rows hold n+2 real tokens incl. <bos>, <eos>
        b, _ = self.recur(self.bwd, x.gather(1, rev[..., None].expand_as(x)))
        b = b.gather(1, rev[..., None].expand_as(b))
        return f[:, :-2], b[:, 2:]

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """ids (B, L) = <bos> w1..wn <eos> -> features (B, L-2, H) predicting w1..wn."""
        return self.features(*self.context(ids, lengths))

    def features(self, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
        both = torch.cat([left, right], dim=-1)
        if self.mix is not None:
            both = torch.relu(self.mix(both))
        return self.drop(torch.tanh(self.combine(both)))

    def loss(self, batch: Batch, state=None):
        """Mean -log p(w_t | both sides) over the words; with `aux_lm`, plus that weight times the mean of
        each stack's own language-model loss (ELMo): f_{t-1} alone predicts w_t, and so does b_{t+1}."""
        left, right = self.context(batch.inputs, batch.lengths)
        mask = _length_mask(batch.lengths, left.size(1))
        targets = batch.inputs[:, 1:-1][mask]
        loss = -self.target_log_prob(self.features(left, right)[mask], targets).mean()
        if self.cfg.aux_lm:
            sides = [-self.target_log_prob(self.drop(h)[mask], targets).mean() for h in (left, right)]
            loss = loss + self.cfg.aux_lm * (sides[0] + sides[1]) / 2
        return loss, None

    def sequence_log_probs(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """log p(w_t | all other words) for every word; (B, L-2), 0 past each row's length."""
        h = self(ids, lengths)
        B, T, H = h.shape
        mask = _length_mask(lengths, T)
        logp = torch.zeros(B, T, device=ids.device)
        logp[mask] = self.target_log_prob(h[mask], ids[:, 1:-1][mask])
        return logp


def run_rnn(rnn: nn.Module, x: torch.Tensor, state=None):
    """`rnn(x, state)`; in float32 where autocast would hand the recurrence to a kernel that cannot run it.

    - CUDA: PyTorch's autocast runs cuDNN RNNs in float16 whatever the autocast dtype (ATen's
      AutocastRNN casts them to half), and float16 gradients would need a gradient scaler.
    - CPU: autocast sends an LSTM to oneDNN's bf16 kernel, which exists only on CPUs with AVX-512
      (native bf16 or emulated); on an AVX2-only CPU it fails to build ("could not create a primitive
      descriptor for the LSTM"), so `--precision bf16` runs its recurrence in float32 there.

    Either way the output layers, the larger share of the work, still run in bf16.
    """
    if torch.is_autocast_enabled(x.device.type) and (x.is_cuda or x.device.type == "cpu" and not cpu_bf16_rnn()):
        with torch.autocast(x.device.type, enabled=False):
            return rnn(x.float(), state)
    return rnn(x, state)


@cache
def cpu_bf16_rnn() -> bool:
    """Whether this CPU's oneDNN has bf16 recurrent kernels (PyTorch's own check: AVX-512 core)."""
    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def _length_mask(lengths: torch.Tensor, T: int) -> torch.Tensor:
    return torch.arange(T, device=lengths.device)[None, :] < lengths[:, None]


def _reverse_index(lengths: torch.Tensor, L: int) -> torch.Tensor:
    """Index (B, L) that reverses each row's first `lengths[b]` entries and keeps the rest."""
    pos = torch.arange(L, device=lengths.device)[None, :].expand(lengths.numel(), L)
    return torch.where(pos < lengths[:, None], lengths[:, None] - 1 - pos, pos)


def build_model(cfg: ModelConfig) -> LanguageModel:
    if cfg.kind == "uni":
        return UniLM(cfg)
    if cfg.kind == "bi":
        return BiLM(cfg)
    raise ValueError(f"unknown model kind {cfg.kind!r}; choose uni or bi")
