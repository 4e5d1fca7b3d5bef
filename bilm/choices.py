"""Given candidates for a blank: how they are written, and how they are scored.

One rule for `bilm fill --choices`, the REPL's `:choices` and `bilm mscc`:

    split    commas separate choices (`river,pool,bank`); the REPL also takes spaces
             when there is no comma (`:choices river pool bank`)
    score    a choice is cut into tokens as the corpus was (`country-dance` is three
             WikiText tokens), put into the blank, and the filled sentence is scored:
               span  sum over the choice's tokens of log p(token | ...): for bi the rest of
                     the sentence (a one-token choice: exactly log p(choice | blank), what
                     `fill --choices` shows), for uni the words before (uni-left)
               whole the filled sentence: uni log p(sentence + <eos>) (uni-rescore and mscc);
                     bi its pseudo-log-likelihood, the sum over every word of
                     log p(word | all the others) (Salazar et al. 2020; mscc), so a choice
                     also counts by how well the words around it are predicted with it there
    rescore  a shortlist of the model's own candidates (`rescore`): uni by whole; bi by
             span + BI_SENTENCE_WEIGHT x (whole - span), the blank's own score with a
             share of the other words' votes. On a model's own top 5, the other words
             alone (whole) rank worse than the blank alone (span): they are many, and
             most say little about the blank
    combine  uni+bi: bi's rescore of its own shortlist plus UNI_WEIGHT x uni's log p of the
             filled sentence (`combine`), a product of the two models' experts; `bilm mscc`
             adds the two models' whole-sentence scores the same way
"""

from __future__ import annotations

import numpy as np
import torch

from .data import pad_sentences
from .models import BiLM, LanguageModel

# Tokens (rows x padded length) in one forward pass, so memory stays bounded: the adaptive softmax's
# tail cluster holds up to ~70 KB per token of rare words (scripts/bench_long_input.py).
MAX_BATCH_TOKENS = 4096
# bi-rescore: the weight of the other words' pseudo-log-likelihood against the blank's own log p,
# chosen on WikiText-2 valid (docs/quality.md, "Tenth CPU session").
BI_SENTENCE_WEIGHT = 0.2
# uni+bi: the weight of the uni model's log p(filled sentence) added to bi-rescore's score. On WikiText-2
# valid (docs/quality.md, "Sixteenth CPU session") top-1 was flat from 0.75 to 1.5: 1 is the plain sum.
UNI_WEIGHT = 1.0


def split_choices(text: str | None, spaces: bool = False) -> list[str] | None:
    """`a,b,c` -> [a, b, c]; with `spaces`, `a b c` too when there is no comma. Nothing: None."""
    if not text:
        return None
    parts = text.split(",") if "," in text or not spaces else text.split()
    return [c.strip() for c in parts if c.strip()] or None


def token_batches(lengths: list[int], budget: int | None = None, max_rows: int | None = None) -> list[list[int]]:
    """Row indices, shortest first, in passes of at most `budget` tokens (rows x longest row), one row at least."""
    budget = budget or MAX_BATCH_TOKENS
    batches: list[list[int]] = []
    longest = 0
    for i in sorted(range(len(lengths)), key=lambda i: lengths[i]):
        wider = max(longest, lengths[i], 1)
        if batches and wider * (len(batches[-1]) + 1) <= budget and len(batches[-1]) < (max_rows or len(lengths)):
            batches[-1].append(i)
            longest = wider
        else:
            batches.append([i])
            longest = max(lengths[i], 1)
    return batches


@torch.inference_mode()
def score_filled(
    model: LanguageModel, items: list[tuple[list[int], int, int]], device, batch_size: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """Scores of filled sentences: `items` are (ids, a, b), the choice at ids[a:b].

    Returns (span, whole), each (N,): the choice's tokens' log-probabilities summed, and the whole
    sentence's (uni: with its final `<eos>`; bi: the pseudo-log-likelihood). One forward pass gives both.
    """
    model.eval()
    cfg = model.cfg
    span, whole = np.zeros(len(items)), np.zeros(len(items))
    start = cfg.bos_id if isinstance(model, BiLM) else cfg.eos_id
    for rows in token_batches([len(ids) + 2 for ids, _, _ in items], max_rows=batch_size):
        batch = pad_sentences([items[r][0] for r in rows], start, cfg.eos_id, cfg.pad_id).to(device)
        logp = model.sequence_log_probs(batch.inputs, batch.lengths).float().cpu()  # bi (B, n), uni (B, n + 1)
        cols = torch.arange(logp.size(1))[None, :]
        a = torch.tensor([items[r][1] for r in rows])[:, None]
        b = torch.tensor([items[r][2] for r in rows])[:, None]
        span[rows] = (logp * ((cols >= a) & (cols < b))).sum(1).numpy()
        whole[rows] = logp.sum(1).numpy()
    return span, whole


def rescore(model: LanguageModel, span: np.ndarray, whole: np.ndarray) -> np.ndarray:
    """The score that ranks a shortlist by the whole filled sentence, from `score_filled`'s (span, whole)."""
    return span + BI_SENTENCE_WEIGHT * (whole - span) if isinstance(model, BiLM) else whole


def combine(bi_score: np.ndarray, uni_whole: np.ndarray) -> np.ndarray:
    """uni+bi: a bi-rescore score (`rescore`) with the uni model's log p of the same filled sentence."""
    return bi_score + UNI_WEIGHT * uni_whole
