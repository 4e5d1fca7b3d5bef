"""The continuous cache: exactly the model's perplexity at λ = 0, never sees the word it predicts,
and catches what a stream repeats."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bilm.cache import cache_perplexity, choose, target_probs
from bilm.evaluate import stream_perplexity
from bilm.models import ModelConfig, build_model

V = 60


def _model():
    torch.manual_seed(0)
    return build_model(ModelConfig(kind="uni", vocab_size=V, emb_size=16, hidden_size=24, cutoffs=[20, 40])).eval()


def test_without_the_cache_it_is_the_model_perplexity():
    ids = np.random.default_rng(0).integers(5, V, 2_000).astype(np.uint16)
    model = _model()
    log_model, _ = target_probs(model, ids, "cpu")
    assert math.exp(-log_model.mean()) == pytest.approx(stream_perplexity(model, ids, "cpu")["ppl"], rel=1e-5)


def test_the_cache_never_holds_the_word_it_predicts():
    ids = np.arange(5, V).astype(np.uint16)  # no word twice: the only match would be the target itself
    _, cache = target_probs(_model(), ids, "cpu", batch_size=2, bptt=7)
    assert np.all(cache == 0)


def test_a_repeated_passage_is_caught_and_the_mixture_is_chosen_on_the_tuning_stream():
    rng = np.random.default_rng(1)
    passage = rng.integers(5, V, 30)
    ids = np.tile(passage, 80).astype(np.uint16)  # an untrained model cannot know what comes next; the cache can
    result = cache_perplexity(_model(), ids, ids, "cpu", window=400)
    assert result["eval"]["cache_ppl"] < result["eval"]["ppl"] / 3
    assert result["lam"] > 0 and result["theta"] > 0
    best = min(result["grid"], key=lambda g: g["ppl"])
    assert (best["theta"], best["lam"]) == (result["theta"], result["lam"])


def test_choose_keeps_lambda_zero_when_the_cache_only_hurts():
    log_model = np.log(np.full(100, 0.5))
    cache = np.zeros((2, 100))  # the cache never matches
    assert choose(log_model, cache, thetas=(0.1, 0.2))["lam"] == 0.0
