"""Held-out metrics.

Perplexity is exp(mean negative log-likelihood per predicted token):

- uni (stream perplexity): the split is read as one token stream in B rows, T steps
  at a time, with the hidden state carried across windows, and every token,
  `<eos>` and `<unk>` included, is predicted once from all the text before it in
  its row. This is how the PyTorch example and the WikiText-2/PTB literature count
  (WikiText-2 valid: 217,646 tokens), so the figures are comparable.
- bi (fill-in perplexity): every word of every sentence is predicted from the rest
  of its sentence (pseudo-perplexity); `<bos>`/`<eos>` are context, never targets.
  It is not comparable with the uni figure: it sees both sides.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .data import SentenceBatches, StreamBatches
from .models import LanguageModel


@torch.inference_mode()
def stream_perplexity(model: LanguageModel, ids: np.ndarray, device, batch_size: int = 10, bptt: int = 35) -> dict:
    model.eval()
    total, count, state = 0.0, 0, None
    for batch in StreamBatches(ids, batch_size, bptt)():
        batch = batch.to(device)
        loss, state = model.loss(batch, state)
        total += loss.item() * batch.num_tokens
        count += batch.num_tokens
    return _summary(total, count)


@torch.inference_mode()
def fill_perplexity(model: LanguageModel, ids: np.ndarray, spans: np.ndarray, device, batch_size: int = 64) -> dict:
    model.eval()
    cfg = model.cfg
    batches = SentenceBatches(ids, spans, batch_size, 10**9, cfg.bos_id, cfg.eos_id, cfg.pad_id, shuffle=False)
    total, count = 0.0, 0
    for batch in batches():
        batch = batch.to(device)
        total -= model.sequence_log_probs(batch.inputs, batch.lengths).sum().item()
        count += batch.num_tokens
    return _summary(total, count)


def _summary(total_nll: float, count: int) -> dict:
    loss = total_nll / max(count, 1)
    return {"loss": loss, "ppl": math.exp(min(loss, 50)), "tokens": count}
