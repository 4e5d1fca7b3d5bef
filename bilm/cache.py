"""The continuous cache (Grave, Joulin & Usunier 2017): a uni model's recent hidden states, each kept
with the word that followed it, as a second predictor of the next word that needs no training. The same
cache serves fill in the blank (`rank_with_cache`, at the end of this module).

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
import time

import numpy as np
import torch

from .data import StreamBatches, document_runs
from .evaluate import CHUNK, FillResult, blank_features, blank_positions, special_ids
from .models import LanguageModel, UniLM

WINDOW = 2000  # positions remembered per row (Grave et al.: 2,000 on WikiText-2)
THETAS = (0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 1.5, 2.0, 3.0)
LAMBDAS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4)
FILL_LAMBDAS = (*LAMBDAS, 0.5, 0.6)  # a blank's features know both sides: the cache may be trusted further


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


def mixed_nll(log_model: np.ndarray, cache: np.ndarray, lam) -> float:
    """Mean -log((1 - λ) p_model + λ p_cache) over the targets; λ may differ per target (0: an empty cache)."""
    return float(-np.mean(np.log((1 - lam) * np.exp(log_model) + lam * cache)))


def choose(log_model: np.ndarray, cache: np.ndarray, thetas=THETAS, lambdas=LAMBDAS, active=None) -> dict:
    """The (θ, λ) of the grid with the lowest perplexity, and the whole grid.

    `active` (N,): the targets whose cache holds anything; the others keep p_model (λ = 0 there)."""
    on = 1.0 if active is None else np.asarray(active, dtype=np.float64)
    grid = [
        dict(theta=t, lam=lam, ppl=math.exp(mixed_nll(log_model, cache[k], lam * on)))
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


# -- fill in the blank ----------------------------------------------------------------------------------
#
# A blank is predicted from features of its own sentence (bi: both sides; uni-left: the words before it).
# The cache adds the document so far: the features and words of its earlier blanks, up to `window` of
# them, in earlier sentences of the same document (the blank's own sentence the model reads already):
#
#     document   ... [ sentence s-2 ][ sentence s-1 ][ sentence s: w1 w2 ___ w4 ]
#     cache           <---- its last `window` blanks before sentence s ---->
#     p(w | ___) = (1 - λ) p_model(w) + λ Σ_{cached i, w_i = w} softmax_i(θ h_blank · h_i)
#
# λ applies where the cache holds anything: a document's first sentence keeps p_model.


def _cache_blocks(result: FillResult, documents: np.ndarray | None, window: int, device):
    """Per block of blanks [a, b): the range [lo, hi) of earlier blanks it may read, and which row may read
    which (R, hi - lo). Blanks are in sentence order, so a block's cache is one slice of the blanks."""
    sentence = result.sentence
    n = result.n_sentences
    doc = torch.from_numpy(document_runs(None if documents is None else documents[:n], n)[sentence]).to(device)
    first = np.searchsorted(sentence, sentence)  # the first blank of each blank's sentence
    for a in range(0, len(sentence), CHUNK):
        b = min(a + CHUNK, len(sentence))
        lo, hi = max(int(first[a]) - window, 0), int(first[b - 1])
        k = torch.arange(lo, hi, device=device)[None, :]
        start = torch.from_numpy(first[a:b]).to(device)[:, None]
        yield a, b, lo, hi, (k >= start - window) & (k < start) & (doc[lo:hi][None, :] == doc[a:b, None])


def _cache_weights(h: torch.Tensor, keys: torch.Tensor, seen: torch.Tensor, theta) -> torch.Tensor:
    """softmax over the cached blanks of θ h · h_i: (R, M), or (K, R, M) for K thetas; 0 where nothing is seen."""
    return (theta * (h @ keys.T)).masked_fill(~seen, -math.inf).softmax(-1).nan_to_num(0.0)


@torch.inference_mode()
def fill_cache_probs(
    features: torch.Tensor, result: FillResult, documents, thetas=THETAS, window: int = WINDOW
) -> tuple[np.ndarray, np.ndarray]:
    """p_cache(target) of every blank for each θ (len(thetas), N), and whether its cache holds anything (N,)."""
    device = features.device
    words = torch.from_numpy(result.target).to(device)
    theta = torch.tensor(thetas, device=device)[:, None, None]
    probs = np.zeros((len(thetas), len(words)))
    active = np.zeros(len(words), dtype=bool)
    for a, b, lo, hi, seen in _cache_blocks(result, documents, window, device):
        w = _cache_weights(features[a:b], features[lo:hi], seen, theta)  # (K, R, M)
        probs[:, a:b] = (w * (words[lo:hi][None, :] == words[a:b, None])).sum(-1).double().cpu().numpy()
        active[a:b] = seen.any(1).cpu().numpy()
    return probs, active


@torch.inference_mode()
def tune_fill_cache(
    model: LanguageModel,
    label: str,
    sentences: list,
    documents,
    device,
    batch_size: int = 256,
    windows=None,
    window: int = WINDOW,
) -> dict:
    """θ and λ of `label`'s cache ("bi" or "uni-left"), chosen by the perplexity of the blanks of `sentences`
    (the valid split): every word of every sentence blanked in turn, as `evaluate.fill_in` blanks them."""
    result = blank_positions(sentences, model.cfg.unk_id)
    features = None
    log_model = np.zeros(len(result.target))
    targets = torch.from_numpy(result.target).to(device)
    for dest, h in blank_features(model, sentences, result, device, batch_size, windows):
        at = torch.from_numpy(dest).to(device)
        if features is None:
            features = h.new_zeros(len(log_model), h.size(1), dtype=torch.float32)
        features[at] = h.float()
        log_model[dest] = model.target_log_prob(h, targets[at]).double().cpu().numpy()
    probs, active = fill_cache_probs(features, result, documents, window=window)
    tuned = choose(log_model, probs, THETAS, FILL_LAMBDAS, active)
    plain = next(g["ppl"] for g in tuned["grid"] if g["lam"] == 0)
    return dict(
        method=f"{label}+cache",
        window=window,
        theta=tuned["theta"],
        lam=tuned["lam"],
        tune=dict(split="valid", blanks=len(log_model), ppl=plain, cache_ppl=tuned["ppl"]),
        grid=tuned["grid"],
    )


@torch.inference_mode()
def rank_with_cache(
    model: LanguageModel, result: FillResult, label: str, documents, theta: float, lam: float, window: int = WINDOW
) -> None:
    """Rank every blank under `label`'s distribution mixed with its cache: the method `label`+cache.

    Needs `result.features[label]` (evaluate.fill_in with keep_features). Ranks count as `rank_targets`
    counts them: 1 + the words scored strictly higher, special tokens never competing.
    """
    started = time.perf_counter()
    features = result.features[label]
    device = features.device
    words = torch.from_numpy(result.target).to(device)
    excluded = special_ids(model).to(device)
    ranks = np.full(len(words), np.nan)
    logps = np.full(len(words), np.nan)
    for a, b, lo, hi, seen in _cache_blocks(result, documents, window, device):
        h = features[a:b]
        lam_row = lam * seen.any(1, keepdim=True).float()  # (R, 1)
        mixed = (1 - lam_row) * model.log_prob(h).float().exp()
        weights = lam_row * _cache_weights(h, features[lo:hi], seen, theta)
        mixed.scatter_add_(1, words[lo:hi].expand(b - a, -1), weights)
        mixed[:, excluded] = -1.0
        target = mixed.gather(1, words[a:b, None])
        ranks[a:b] = ((mixed > target).sum(1) + 1).double().cpu().numpy()
        logps[a:b] = target.squeeze(1).log().double().cpu().numpy()
    method = f"{label}+cache"
    result.ranks[method], result.log_probs[method] = ranks, logps
    result.seconds[method] = result.seconds.get(label, 0.0) + time.perf_counter() - started
    result.passes[method] = result.passes.get(label, 0)
