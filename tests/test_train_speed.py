"""The speed and per-minute options of the trainer: warmdown and cosine schedules, bf16 autocast."""

import json
import math

import pytest
import torch
from click.testing import CliRunner

from bilm.cli import cli
from bilm.data import DataConfig
from bilm.errors import BilmError
from bilm.predict import Predictor
from bilm.train import native_bf16, resolve_precision, train

from .conftest import run_records, tiny_model, tiny_train


def test_cosine_schedule_anneals_to_zero_over_max_steps(corpus, data_dir, tmp_path):
    cfg = tiny_train(max_steps=20, log_every=1, lr=1e-2, schedule="cosine")
    train(DataConfig(str(corpus)), tiny_model("uni"), cfg, tmp_path / "run", data_dir=data_dir, log=lambda s: None)
    lrs = [r["lr"] for r in run_records(tmp_path / "run", "train")]
    # step s (1-based) ran with progress (s - 1) / 20
    assert lrs == pytest.approx([1e-2 * 0.5 * (1 + math.cos(math.pi * s / 20)) for s in range(20)])


def test_warmdown_holds_the_rate_then_takes_it_linearly_to_zero_over_the_last_30_percent(corpus, data_dir, tmp_path):
    cfg = tiny_train(max_steps=20, log_every=1, lr=1e-2, schedule="warmdown", plateau_patience=10**9)
    train(DataConfig(str(corpus)), tiny_model("uni"), cfg, tmp_path / "run", data_dir=data_dir, log=lambda s: None)
    lrs = [r["lr"] for r in run_records(tmp_path / "run", "train")]
    assert lrs == pytest.approx([1e-2 if s < 14 else 1e-2 * (1 - s / 20) / 0.3 for s in range(20)])


def test_warmdown_starts_from_the_rate_the_plateau_rule_left(corpus, data_dir, tmp_path, monkeypatch):
    from bilm import train as train_module

    losses = iter([5.0, 4.0, 4.5] + [3.0 - 0.01 * i for i in range(100)])  # one stall (step 6): the rate halves
    monkeypatch.setattr(train_module, "stream_perplexity", lambda *a, **k: dict(loss=next(losses), ppl=1.0))
    cfg = tiny_train(max_steps=40, log_every=1, eval_every=2, lr=1e-2, schedule="warmdown", lr_decay=0.5)
    train(DataConfig(str(corpus)), tiny_model("uni"), cfg, tmp_path / "run", data_dir=data_dir, log=lambda s: None)
    lrs = [r["lr"] for r in run_records(tmp_path / "run", "train")]
    held = lrs[27]  # step 28 is the first of the warmdown (progress 0.7)
    assert held == pytest.approx(1e-2 * 0.5)
    assert lrs[28:] == pytest.approx([held * (1 - s / 40) / 0.3 for s in range(28, 40)])


def test_cosine_progress_follows_the_wall_clock_under_max_minutes(corpus, data_dir, tmp_path):
    cfg = tiny_train(max_steps=None, max_minutes=0.02, schedule="cosine", epochs=1000, log_every=1)
    train(DataConfig(str(corpus)), tiny_model("uni"), cfg, tmp_path / "run", data_dir=data_dir, log=lambda s: None)
    lrs = [r["lr"] for r in run_records(tmp_path / "run", "train")]
    assert lrs[0] > lrs[-1] and lrs[-1] < 0.05 * cfg.lr  # annealed to ~0 by the end of the 1.2 s budget


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("kind", ["uni", "bi"])
def test_both_models_learn_in_both_precisions_with_the_adaptive_head(kind, precision, corpus, data_dir, tmp_path):
    """bf16 runs on any CPU (emulated where it has no bf16 instructions: slow, but correct)."""
    cfg = tiny_train(max_steps=150, precision=precision)
    # An adaptive head even on the animal corpus's ~20 words. Its own input table: tied to an 8-wide tail, bi
    # learnt which animal makes which sound in 150 steps for 1 of 3 seeds (2 of 3 untied), and seed 0 still
    # said one animal everywhere at 600 steps (docs/quality.md).
    model = tiny_model(kind, cutoffs=[8], adaptive_input=False)
    result = train(DataConfig(str(corpus)), model, cfg, tmp_path / kind, data_dir=data_dir, log=lambda s: None)
    assert result["precision"] == precision
    assert result["valid_ppl"] < 6  # the animal corpus: ~30 words, a fraction of them predictable
    predictor = Predictor.load(tmp_path / kind)
    assert predictor.model.output.__class__.__name__ == "AdaptiveSoftmax"
    assert predictor.fill("the ___ then again hoots .", k=1)[0].candidates[0].word == "owl" or kind == "uni"


def test_auto_precision_is_bf16_only_where_the_hardware_has_it():
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == ("bf16" if native_bf16(cpu) else "fp32")
    assert resolve_precision("fp32", cpu) == "fp32" and resolve_precision("bf16", cpu) == "bf16"


def test_unknown_schedule_or_precision_is_a_one_line_error(corpus, data_dir, tmp_path):
    for bad in (dict(schedule="linear"), dict(precision="fp16")):
        with pytest.raises(BilmError, match="choose"):
            train(DataConfig(str(corpus)), tiny_model("uni"), tiny_train(**bad), tmp_path / str(bad), data_dir=data_dir)


def test_cli_passes_schedule_and_precision(corpus, data_dir, tmp_path):
    args = ["train", "--corpus", str(corpus), "--out", str(tmp_path / "run"), "--max-steps", "5"]
    args += ["--layers", "1", "--hidden", "16", "--emb", "16", "--schedule", "cosine", "--precision", "bf16"]
    result = CliRunner().invoke(cli, args, env={"BILM_DATA_DIR": str(data_dir)})
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "run" / "last" / "config.json").read_text())
    assert (config["train"]["schedule"], config["train"]["precision"]) == ("cosine", "bf16")


def test_cli_warmdown_sets_the_share_of_the_budget_the_rate_falls_over(corpus, data_dir, tmp_path):
    args = ["train", "--corpus", str(corpus), "--out", str(tmp_path / "run"), "--max-steps", "20", "--log-every", "1"]
    args += ["--layers", "1", "--hidden", "16", "--emb", "16", "--precision", "fp32", "--warmdown", "0.5"]
    result = CliRunner().invoke(cli, args, env={"BILM_DATA_DIR": str(data_dir)})
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "run" / "last" / "config.json").read_text())["train"]["warmdown"] == 0.5
    lrs = [r["lr"] for r in run_records(tmp_path / "run", "train")]
    held = lrs[9]  # step 11 is the first of the warmdown (progress 0.5)
    assert lrs[10:] == pytest.approx([held * (1 - s / 20) / 0.5 for s in range(10, 20)])
