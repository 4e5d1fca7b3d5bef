"""Weight averaging (`--average`): the mean of the weights over the end of a run, validated and kept in best/."""

import json

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from bilm.checkpoint import load_trainer_state
from bilm.cli import cli
from bilm.data import DataConfig, prepare
from bilm.evaluate import stream_perplexity
from bilm.predict import Predictor
from bilm.train import Trainer, train

from .conftest import run_records, tiny_model, tiny_train


def _snapshots(monkeypatch) -> list[tuple[int, dict]]:
    """(steps done, weights) after every training step of the runs that follow."""
    taken, real_step = [], Trainer.train_step

    def step(self, batch, window):
        out = real_step(self, batch, window)
        taken.append((self.step, {k: p.detach().clone() for k, p in self.model.named_parameters()}))
        return out

    monkeypatch.setattr(Trainer, "train_step", step)
    return taken


def _mean(weights: list[dict]) -> dict:
    return {k: torch.stack([w[k] for w in weights]).mean(0) for k in weights[0]}


def _valid(run) -> list[dict]:
    return run_records(run, "valid")


def _losses(run) -> list[float]:
    return [r["loss"] for r in run_records(run, "train")]


def test_averaged_weights_are_the_mean_of_the_snapshots_and_are_what_validation_scores(
    corpus, data_dir, tmp_path, monkeypatch
):
    snapshots = _snapshots(monkeypatch)
    out = tmp_path / "run"
    cfg = tiny_train(max_steps=20, average=0.25)
    train(DataConfig(str(corpus)), tiny_model("uni"), cfg, out, data_dir=data_dir, log=lambda s: None)
    # step s (1-based) ran with progress (s - 1) / 20: the last quarter is steps 16..20
    mean = _mean([w for s, w in snapshots if (s - 1) / 20 >= 0.75])
    average = load_trainer_state(out / "last")["average"]
    assert average.keys() == mean.keys()
    for k in mean:
        torch.testing.assert_close(average[k], mean[k])
    hh = next(k for k in mean if "weight_hh" in k)
    assert not torch.equal(mean[hh], snapshots[-1][1][hh])
    last = load_file(str(out / "last" / "model.safetensors"))  # last/ resumes: the run's own weights
    torch.testing.assert_close(last[hh], snapshots[-1][1][hh])

    model = Predictor.load(out / "last").model
    with torch.no_grad():
        for k, p in model.named_parameters():  # named_parameters, as averaged: a tied weight once
            p.copy_(mean[k])
    data = prepare(DataConfig(str(corpus)), data_dir=data_dir, log=lambda s: None)
    scored = stream_perplexity(model, data.stream("valid"), torch.device("cpu"), bptt=cfg.bptt)
    final = _valid(out)[-1]
    assert final["averaged_steps"] == 5
    assert final["loss"] == pytest.approx(scored["loss"], rel=1e-6)


@pytest.mark.parametrize("kind", ["uni", "bi"])
def test_averaging_leaves_the_training_itself_unchanged(kind, corpus, data_dir, tmp_path):
    """Validation swaps the averaged weights in and the run's own ones back: the loss curve is the same."""
    runs = {}
    for average in (0.0, 0.5):
        runs[average] = tmp_path / str(average)
        cfg = tiny_train(max_steps=30, eval_every=5, log_every=1, average=average)
        model = tiny_model(kind, dropout=0.3)
        train(DataConfig(str(corpus)), model, cfg, runs[average], data_dir=data_dir, log=lambda s: None)
    curves = [_losses(run) for run in runs.values()]
    assert curves[0] == pytest.approx(curves[1], rel=1e-6)
    averaged = [r for r in _valid(runs[0.5]) if "averaged_steps" in r]
    steps = {r["step"] for r in averaged}
    plain = {r["step"]: r["loss"] for r in _valid(runs[0.0])}
    # averaging begins with step 16 (progress 15 / 30): every validation from then on scores it, none before
    assert steps == {s for s in plain if s >= 16} and len(steps) >= 3 and 30 in steps
    assert all(r["loss"] != plain[r["step"]] for r in averaged)


def test_a_run_interrupted_while_averaging_resumes_to_the_same_average(corpus, data_dir, tmp_path, monkeypatch):
    cfg = tiny_train(max_steps=40, eval_every=10, average=0.5)
    whole, part = tmp_path / "whole", tmp_path / "part"
    model = tiny_model("uni", dropout=0.3)
    train(DataConfig(str(corpus)), model, cfg, whole, data_dir=data_dir, log=lambda s: None)
    real_step = Trainer.train_step

    def interrupted(self, batch, window):
        if self.step == 26:  # ten steps into the average
            raise KeyboardInterrupt
        return real_step(self, batch, window)

    monkeypatch.setattr(Trainer, "train_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(DataConfig(str(corpus)), model, cfg, part, data_dir=data_dir, log=lambda s: None)
    monkeypatch.setattr(Trainer, "train_step", real_step)
    train(out=part, data_dir=data_dir, resume=True, log=lambda s: None)
    a, b = (load_trainer_state(run / "last") for run in (whole, part))
    assert a["counters"]["averaged_steps"] == b["counters"]["averaged_steps"] == 20
    for k in a["average"]:
        torch.testing.assert_close(a["average"][k], b["average"][k], rtol=1e-5, atol=1e-6)


def test_cli_passes_average_and_refuses_a_share_above_one(corpus, data_dir, tmp_path):
    args = ["train", "--corpus", str(corpus), "--max-steps", "5", "--layers", "1", "--hidden", "16", "--emb", "16"]
    env = {"BILM_DATA_DIR": str(data_dir)}
    result = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "run"), "--average", "0.4"], env=env)
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "run" / "last" / "config.json").read_text())
    assert config["train"]["average"] == 0.4
    result = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "bad"), "--average", "1.5"], env=env)
    assert result.exit_code == 2 and "1.5" in result.output
