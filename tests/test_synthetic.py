import json
import math

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from bilm.lab_cli import bench
from bilm.synthetic import TASKS, AddingModel, CopyModel, adding_batch, copy_baseline, copy_batch, run_bench


def test_adding_batch_marks_one_value_in_each_half_and_targets_their_sum():
    batch = adding_batch(64, 20, torch.Generator().manual_seed(0))
    values, markers = batch.inputs[..., 0], batch.inputs[..., 1]
    assert batch.inputs.shape == (64, 20, 2)
    assert (markers[:, :10].sum(1) == 1).all() and (markers[:, 10:].sum(1) == 1).all()
    torch.testing.assert_close(batch.targets, (values * markers).sum(1))


def test_always_answering_one_scores_the_adding_baseline():
    batch = adding_batch(200_000, 4, torch.Generator().manual_seed(0))
    mse = F.mse_loss(torch.ones_like(batch.targets), batch.targets).item()
    assert mse == pytest.approx(TASKS["adding"].baseline(4), abs=2e-3)
    assert TASKS["adding"].baseline(4) == pytest.approx(1 / 6)


def test_copy_batch_shows_ten_symbols_then_asks_for_them_after_the_delimiter():
    T = 15
    batch = copy_batch(8, T, torch.Generator().manual_seed(0))
    assert batch.inputs.shape == batch.targets.shape == (8, T + 20)
    symbols = batch.inputs[:, :10]
    assert ((symbols >= 1) & (symbols <= 8)).all()
    assert (batch.inputs[:, 10 + T - 1] == 9).all()
    assert (batch.inputs[:, 10 : 10 + T - 1] == 0).all() and (batch.inputs[:, -10:] == 0).all()
    assert (batch.targets[:, :-10] == 0).all() and torch.equal(batch.targets[:, -10:], symbols)


def test_blanks_then_uniform_guesses_score_the_copy_baseline():
    T = 30
    batch = copy_batch(500, T, torch.Generator().manual_seed(0))
    logits = torch.full((500, T + 20, 9), -1e9)
    logits[:, :-10, 0] = 0.0  # certain blank
    logits[:, -10:, 1:] = 0.0  # uniform over the 8 symbols
    loss = F.cross_entropy(logits.flatten(0, 1), batch.targets.flatten()).item()
    assert loss == pytest.approx(copy_baseline(T), rel=1e-5)
    assert copy_baseline(T) == pytest.approx(10 * math.log(8) / (T + 20))


@pytest.mark.parametrize("model_class, make_batch", [(AddingModel, adding_batch), (CopyModel, copy_batch)])
@pytest.mark.parametrize("cell", ["lstm", "esn", "rnn-sigmoid"])
def test_task_models_own_their_loss_and_only_trainable_parts_get_gradients(model_class, make_batch, cell):
    model = model_class(cell, hidden_size=8)
    loss, state = model.loss(make_batch(4, 6))
    loss.backward()
    assert state is None and torch.isfinite(loss)
    assert model.head.weight.grad is not None
    assert all((p.grad is None) == (cell == "esn") for p in model.rnn.parameters())


def test_evaluation_reports_the_gradient_reaching_first_and_last_inputs():
    torch.manual_seed(0)
    model = AddingModel("rnn-sigmoid", hidden_size=8)
    result = TASKS["adding"].evaluate(model, adding_batch(32, 40), 40)
    assert result["grad_first"] < 1e-6 * result["grad_last"]  # 40 sigmoid steps: gone
    assert result["baseline"] == pytest.approx(1 / 6) and result["solved"] is False


def test_the_bilm_trainer_learns_a_short_adding_problem(tmp_path):
    result = run_bench(
        "adding",
        "lstm",
        T=3,
        steps=200,
        batch_size=32,
        hidden_size=16,
        lr=1e-2,
        eval_every=50,
        out=tmp_path,
        log=lambda line: None,
    )
    assert result["loss"] < result["baseline"] / 3
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert {"grad_norm", "clip_rate"} <= set(records[0]) and any("grad_first" in r for r in records)


def test_bench_command_prints_and_writes_the_table(tmp_path):
    args = [
        "--cells",
        "gru,irnn",
        "--lengths",
        "3",
        "--steps",
        "20",
        "--eval-every",
        "10",
        "--hidden",
        "8",
        "--out",
        str(tmp_path),
    ]
    result = CliRunner().invoke(bench, ["copy", *args])
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "copy.json").read_text())["results"]
    assert [(r["cell"], r["T"]) for r in results] == [("gru", 3), ("irnn", 3)]
    assert all(r["steps"] == 20 and r["baseline"] == pytest.approx(copy_baseline(3)) for r in results)
    assert (tmp_path / "gru-T3" / "metrics.jsonl").is_file()


def test_bench_command_takes_a_rate_per_cell_and_runs_each_clip_setting(tmp_path):
    args = ["--cells", "lstm,irnn", "--lengths", "4", "--steps", "4", "--eval-every", "2", "--hidden", "8"]
    args += ["--lr", "irnn=1e-4", "--clip", "0,1", "--out", str(tmp_path)]
    result = CliRunner().invoke(bench, ["adding", *args])
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "adding.json").read_text())["results"]
    assert [(r["cell"], r["lr"], r["clip"]) for r in results] == [
        ("lstm", 1e-3, 0.0),
        ("lstm", 1e-3, 1.0),
        ("irnn", 1e-4, 0.0),
        ("irnn", 1e-4, 1.0),
    ]
    assert (tmp_path / "irnn-T4-clip0" / "metrics.jsonl").is_file() and (tmp_path / "input_gradients.png").is_file()


def test_bench_command_rejects_a_rate_for_a_cell_it_does_not_run():
    result = CliRunner().invoke(bench, ["adding", "--cells", "lstm", "--lr", "gru=1e-3"])
    assert "--lr names cell(s) not in --cells: gru" in str(result.exception)
