import math

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from bilm.bench import (
    StepBench,
    alternate,
    baseline_configs,
    cluster_shares,
    output_flops,
    peak_rss_mb,
    rnn_flops,
    train_flops_per_token,
)
from bilm.data import DataConfig, prepare
from bilm.models import ModelConfig, build_model

from .conftest import tiny_model, tiny_train


def test_the_baseline_is_the_pytorch_example_and_costs_44_mflop_per_token():
    model, train = baseline_configs()
    assert (model.output, model.tie_weights, model.hidden_size, model.layers, model.dropout) == (
        "full",
        True,
        200,
        2,
        0.2,
    )
    assert (train.optimizer, train.lr, train.batch_size, train.bptt, train.clip) == ("sgd", 20.0, 20, 35, 0.25)
    model.vocab_size = 33_278
    assert rnn_flops(model) == 2 * (2 * 4 * 200 * 400)
    assert train_flops_per_token(model) / 1e6 == pytest.approx(43.8, abs=0.1)  # the "44 MFLOP per token"


@pytest.mark.parametrize("output", ["full", "adaptive"])
def test_output_flops_match_what_torch_counts(output):
    cfg = ModelConfig(vocab_size=3000, emb_size=64, hidden_size=64, output=output, cutoffs=[200, 1000])
    model = build_model(cfg)
    rng = np.random.default_rng(0)
    targets = torch.from_numpy(np.minimum(rng.zipf(1.3, 4000), 2999) - 1)
    h = torch.randn(len(targets), 64)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.output.target_log_prob(h, targets)
    shares = cluster_shares(targets.numpy(), [200, 1000], 3000) if output == "adaptive" else None
    assert counter.get_total_flops() / len(targets) == pytest.approx(output_flops(cfg, shares), rel=1e-6)


def test_cluster_shares_count_the_targets_in_each_tail():
    assert cluster_shares(np.array([0, 1, 5, 5, 9, 9, 9, 9]), [4, 8], 10) == [0.25, 0.5]


def test_adaptive_softmax_is_an_order_of_magnitude_cheaper_than_full():
    full = ModelConfig(vocab_size=33_278, output="full")
    adaptive = ModelConfig(vocab_size=33_278)
    assert output_flops(full) / output_flops(adaptive, [0.2, 0.05]) > 10


def test_alternate_interleaves_the_runs():
    calls = []
    runs = {name: (lambda name=name: calls.append(name) or len(calls)) for name in "ab"}
    results = alternate(runs, 3, log=lambda s: None)
    assert calls == ["a", "b"] * 3
    assert results == {"a": [1, 3, 5], "b": [2, 4, 6]}


@pytest.mark.parametrize("kind", ["uni", "bi"])
def test_step_bench_trains_through_the_trainer(kind, corpus, data_dir):
    data = prepare(DataConfig(str(corpus)), data_dir=data_dir, log=lambda s: None)
    bench = StepBench(data, tiny_model(kind), tiny_train(lr=1e-2), threads=1)
    assert bench.run(0.2) > 0
    before = bench.trainer.step
    bench.train_tokens(bench.trainer.tokens + 2000)
    assert bench.trainer.step > before
    assert math.isfinite(bench.valid_ppl())


def test_step_bench_can_swap_in_a_fused_adamw(corpus, data_dir):
    data = prepare(DataConfig(str(corpus)), data_dir=data_dir, log=lambda s: None)
    bench = StepBench(data, tiny_model("uni"), tiny_train(), threads=1, fused_adamw=True)
    assert bench.trainer.optimizer.defaults["fused"] is True
    assert bench.run(0.1) > 0


def test_peak_rss_is_reported_in_mib():
    assert 10 < peak_rss_mb() < 100_000
