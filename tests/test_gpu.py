"""The GPU path's pieces that run anywhere: batches copied a step ahead (pinned memory on CUDA), the
recurrence kept out of autocast where its kernel cannot run it (CUDA's float16; oneDNN's bf16 LSTM on a
CPU without AVX-512); and on a CUDA machine, a few bf16 steps of both models."""

from __future__ import annotations

import pytest
import torch

from bilm import data, models
from bilm.data import DataConfig, DeviceBatches, StreamBatches, on_device
from bilm.models import run_rnn
from bilm.train import train
from tests.conftest import tiny_model, tiny_train


def test_batches_reach_the_device_in_order_one_ahead(monkeypatch):
    monkeypatch.setattr(data, "pinned", lambda batch: batch)  # pinning needs CUDA; the order does not
    source = StreamBatches(torch.arange(400).numpy(), 4, 7)
    moved = DeviceBatches(source, torch.device("cpu"))
    assert len(moved) == len(source)
    for a, b in zip(moved(0, 2), source(0, 2), strict=True):
        assert torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets)
    assert on_device(source, torch.device("cpu")) is source


def test_the_recurrence_runs_under_cpu_autocast_on_any_cpu(monkeypatch):
    rnn = torch.nn.LSTM(3, 5, batch_first=True)
    x = torch.randn(2, 4, 3)
    with torch.autocast("cpu", torch.bfloat16):
        out, _ = run_rnn(rnn, x)
    # bf16 where oneDNN has a bf16 LSTM (AVX-512); float32 on an AVX2-only CPU, where it has none.
    assert out.dtype == (torch.bfloat16 if models.cpu_bf16_rnn() else torch.float32)
    monkeypatch.setattr(models, "cpu_bf16_rnn", lambda: False)  # the AVX2 path, taken on every CPU
    with torch.autocast("cpu", torch.bfloat16):
        out32, _ = run_rnn(rnn, x)
    assert out32.dtype == torch.float32 and torch.allclose(out32, rnn(x)[0])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("kind", ["uni", "bi"])
def test_both_models_train_in_bf16_on_cuda_with_an_adaptive_head(kind, corpus, data_dir, tmp_path):
    model = tiny_model(kind, cutoffs=[8, 14])  # the animal corpus has ~20 words: a head and two clusters
    cfg = tiny_train(max_steps=20, precision="bf16", device="cuda")
    result = train(DataConfig(str(corpus)), model, cfg, tmp_path / kind, data_dir=data_dir, log=lambda s: None)
    assert result["valid_ppl"] < 20 and not result["skipped_steps"]
