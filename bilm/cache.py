"""The continuous cache (Grave, Joulin & Usunier 2017): a uni model's recent hidden states, each kept
with the word that followed it, as a second predictor of the next word that needs no training.

    p(w | h_t) = (1 - λ) p_model(w | h_t) + λ Σ_{i in the last W positions before t, y_i = w} softmax_i(θ h_t · h_i)

θ (how sharply a state must match) and λ (how far the cache is trusted) are chosen by a grid on the
valid split, and the other split is reported with them. It is the classic remedy for what recurrence
forgets: the LSTM's gradient half-life is a few words (`bilm gradients`), yet a name seen 500 tokens
back is one dot product away.

The stream is read as `evaluate.stream_perplexity` reads it (B rows, BPTT windows, the state carried),
so with λ = 0 the figure is exactly the model's perplexity; each row remembers its own last W positions:

    keys   [ h_{t-M} ... h_{t-1} | h_t ... ]   (B, M + T, H): memory, then this window
    scores θ h_t · keys, only at positions before t   -> softmax -> summed where the next word is y_t
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .data import StreamBatches
from .models import UniLM

WINDOW = 2000  # positions remembered per row (Grave et al.: 2,000 on WikiText-2)
THETAS = (0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 1.5, 2.0, 3.0)
LAMBDAS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4)


@torch.inference_mode()
def target_probs(
    model: UniLM, ids: np.ndarray, device, thetas=THETAS, window: int = WINDOW, batch_size: int = 10, bptt: int = 35
) -> tuple[np.ndarray, np.ndarray]:
    """log p_model(y_t) (N,) and p_cache(y_t) for each θ (len(thetas), N), for every target of the stream."""
    model.eval()
    log_model, cache = [], []
    mem_h = mem_y = state = None
    thetas = torch.tensor(thetas, device=device)[:, None, None, None]
    for batch in StreamBatches(ids, batch_size, bptt)():
        batch = batch.to(device)
        h, state = model(batch.inputs, state)  # (B, T, H)
        y = batch.targets
        B, T, H = h.shape
        log_model.append(model.target_log_prob(h.reshape(-1, H), y.reshape(-1)).view(B, T))
        keys = h if mem_h is None else torch.cat([mem_h, h], 1)  # (B, M + T, H)
        values = y if mem_y is None else torch.cat([mem_y, y], 1)
        M = keys.size(1) - T
        before = torch.arange(M + T, device=device)[None, :] < (M + torch.arange(T, device=device))[:, None]
        scores = (thetas * (h.float() @ keys.float().transpose(1, 2))).masked_fill(~before, -math.inf)
        weights = scores.softmax(-1).nan_to_num(0.0)  # (K, B, T, M + T); no position before: all 0
        cache.append((weights * (values[:, None, :] == y[:, :, None])).sum(-1))  # (K, B, T)
        mem_h, mem_y = keys[:, -window:], values[:, -window:]
    log_model = torch.cat(log_model, 1).reshape(-1)
    cache = torch.cat(cache, 2).reshape(len(thetas), -1)
    return log_model.double().cpu().numpy(), cache.double().cpu().numpy()


def mixed_nll(log_model: np.ndarray, cache: np.ndarray, lam: float) -> float:
    """Mean -log((1 - λ) p_model + λ p_cache) over the targets."""
    return float(-np.mean(np.log((1 - lam) * np.exp(log_model) + lam * cache)))


def choose(log_model: np.ndarray, cache: np.ndarray, thetas=THETAS, lambdas=LAMBDAS) -> dict:
    """The (θ, λ) of the grid with the lowest perplexity, and the whole grid."""
    grid = [
        dict(theta=t, lam=lam, ppl=math.exp(mixed_nll(log_model, cache[k], lam)))
        for k, t in enumerate(thetas)
        for lam in lambdas
    ]
    return dict(min(grid, key=lambda g: g["ppl"]), grid=grid)


def cache_perplexity(
    model: UniLM, tune_ids: np.ndarray, ids: np.ndarray, device, window: int = WINDOW, tune_split="valid", split="test"
) -> dict:
    """Choose θ and λ on `tune_ids`; the perplexity of both streams without and with the cache."""
    tuned = choose(*target_probs(model, tune_ids, device, window=window))
    plain = next(g["ppl"] for g in tuned["grid"] if g["lam"] == 0)
    log_model, cache = target_probs(model, ids, device, thetas=(tuned["theta"],), window=window)
    return dict(
        window=window,
        theta=tuned["theta"],
        lam=tuned["lam"],
        tune=dict(split=tune_split, ppl=plain, cache_ppl=tuned["ppl"]),
        eval=dict(
            split=split,
            ppl=math.exp(mixed_nll(log_model, cache[0], 0.0)),
            cache_ppl=math.exp(mixed_nll(log_model, cache[0], tuned["lam"])),
            tokens=len(log_model),
        ),
        grid=tuned["grid"],
    )
