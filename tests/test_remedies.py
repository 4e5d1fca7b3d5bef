import json
import math

import pytest
import torch

from bilm.data import DataConfig
from bilm.errors import BilmError
from bilm.gradients import InputGradientLog, recording
from bilm.models import Batch, ModelConfig, build_model
from bilm.remedies import NormPreservingPenalty, jacobian_norm_ratios
from bilm.synthetic import AddingModel, adding_batch, run_bench
from bilm.train import train
from tests.conftest import tiny_model, tiny_train
from tests.test_gradients import linear_model


def lm_batch(kind: str, B: int = 3, T: int = 9) -> Batch:
    """A uni stream window, or bi sentences of unequal length (padding included)."""
    torch.manual_seed(1)
    if kind == "uni":
        ids = torch.randint(5, 40, (B, T + 1))
        return Batch(ids[:, :-1], ids[:, 1:])
    lengths = torch.tensor([T, T - 3, T - 5])
    ids = torch.zeros(B, T + 2, dtype=torch.long)
    for row, n in enumerate(lengths.tolist()):
        ids[row, : n + 2] = torch.cat([torch.tensor([2]), torch.randint(5, 40, (n,)), torch.tensor([3])])
    return Batch(ids, lengths=lengths)


@pytest.mark.parametrize("kind", ["uni", "bi"])
def test_norm_penalty_is_zero_when_every_step_preserves_the_gradient_norm(kind):
    model = linear_model(kind, a=1.0).float()  # h_t = h_{t-1} + x_t: every one-step Jacobian is the identity
    _, omega, _ = NormPreservingPenalty(model, 1.0).omega(lm_batch(kind))
    assert omega.item() == pytest.approx(0.0, abs=1e-10)


def test_norm_penalty_counts_each_step_that_halves_the_gradient():
    T = 9
    model = linear_model("uni", a=0.5)  # each step multiplies the gradient by exactly 0.5
    _, omega, _ = NormPreservingPenalty(model, 1.0).omega(lm_batch("uni", T=T))
    assert omega.item() == pytest.approx((T - 1) * (0.5 - 1) ** 2)  # summed over step pairs, mean over rows


def test_norm_penalty_treats_the_backpropagated_gradient_as_a_constant():
    """With J = W = aI and g held fixed, d/dW (|gW|/|g| - 1)^2 = 2(a-1) g^T g/|g|^2, whose trace is 2(a-1)."""
    T, a = 9, 0.8
    model = linear_model("uni", a=a)
    _, omega, _ = NormPreservingPenalty(model, 1.0).omega(lm_batch("uni", T=T))
    (grad,) = torch.autograd.grad(omega, model.rnn.weight_hh_l0)
    assert torch.trace(grad).item() == pytest.approx(2 * (a - 1) * (T - 1))


def test_norm_penalty_of_an_lstm_is_positive_and_trains_only_the_recurrent_stack():
    torch.manual_seed(0)
    model = build_model(ModelConfig(vocab_size=40, emb_size=8, hidden_size=8, layers=2, output="full"))
    _, omega, _ = NormPreservingPenalty(model, 1.0).omega(lm_batch("uni"))
    assert omega.item() > 0
    names = [n for n, p in model.named_parameters()]
    grads = torch.autograd.grad(omega, list(model.parameters()), allow_unused=True)
    reached = {n for n, g in zip(names, grads, strict=True) if g is not None and g.abs().sum() > 0}
    assert {"rnn.weight_hh_l0", "rnn.weight_hh_l1", "rnn.weight_ih_l1"} <= reached
    assert not any(n.startswith(("embedding", "output")) for n in reached)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn-sigmoid"])
def test_batched_recomputation_gives_the_jacobian_of_each_recorded_step(cell):
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=40, cell=cell, emb_size=5, hidden_size=6, layers=2, dropout=0.0, output="full")
    model = build_model(cfg).double()
    with recording(model) as recorders:
        loss, _ = model.loss(lm_batch("uni", T=6))
    states = recorders["rnn"].states
    grads = [torch.autograd.grad(loss, s, retain_graph=True, materialize_grads=True) for s in states]
    ratios = jacobian_norm_ratios(recorders["rnn"], grads).view(5, 3)  # (T-1, B)
    for k in range(5):  # s_{k+1} depends on s_k through one step only: autograd's answer is g_{k+1} J_k
        vjp = torch.autograd.grad(states[k + 1], states[k], grads[k + 1], retain_graph=True)
        norm = lambda parts: sum(p.square().sum(dim=(0, 2)) for p in parts).sqrt()  # noqa: E731
        torch.testing.assert_close(ratios[k], norm(vjp) / norm(grads[k + 1]))


def test_norm_penalty_refuses_a_model_without_named_recurrent_stacks():
    with pytest.raises(BilmError, match="recurrent stacks"):
        NormPreservingPenalty(torch.nn.Linear(2, 2), 1.0)


def test_input_gradient_log_records_the_per_step_gradient_of_each_backward():
    torch.manual_seed(0)
    model = AddingModel("rnn-tanh", hidden_size=8)
    log = InputGradientLog(model.embedding)
    batch = adding_batch(16, 12)
    x = batch.inputs.clone().requires_grad_()
    loss = torch.nn.functional.mse_loss(model.head(model.rnn(x)[0][:, -1]).squeeze(-1), batch.targets)
    (expected,) = torch.autograd.grad(loss, x)
    model.loss(batch)[0].backward()
    logged = log.flush()
    norms = expected.norm(dim=-1).mean(0)
    assert logged["input_grad_first"] == pytest.approx(norms[0].item())
    assert logged["input_grad_last"] == pytest.approx(norms[-1].item())
    assert logged["input_grad_by_step"] == pytest.approx(norms.tolist())
    assert log.flush() == {}  # flushed: the next window starts empty
    model.eval()
    model.loss(batch)[0].backward()
    assert log.flush() == {}  # evaluation is not logged


@pytest.mark.parametrize(
    "cell, options, vanishes",
    [("rnn-sigmoid", {}, True), ("irnn", {"scale": 1.3}, False)],
)
def test_bench_metrics_show_the_input_gradient_vanish_or_explode_across_the_window(tmp_path, cell, options, vanishes):
    run_bench("adding", cell, 30, steps=4, batch_size=8, hidden_size=8, options=options, eval_every=2, out=tmp_path)
    train_records = [
        r for r in map(json.loads, (tmp_path / "metrics.jsonl").read_text().splitlines()) if r["type"] == "train"
    ]
    ratio = train_records[0]["input_grad_first"] / train_records[0]["input_grad_last"]
    assert len(train_records) == 2 and len(train_records[0]["input_grad_by_step"]) == 30
    assert ratio < 1e-6 if vanishes else ratio > 1e3


def test_training_with_the_norm_penalty_logs_it_and_learns(corpus, data_dir, tmp_path):
    cfg = tiny_train(max_steps=40, log_every=20, norm_penalty=0.05, log_input_grads=True)
    result = train(DataConfig(str(corpus)), tiny_model("uni"), cfg, tmp_path, data_dir=data_dir, log=lambda s: None)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    first, last = [r for r in records if r["type"] == "train"]
    assert first["norm_penalty"] > 0 and last["input_grad_first"] > 0
    assert last["loss"] < first["loss"] and result["valid_ppl"] < 20


def test_bench_with_the_norm_penalty_runs_the_adding_problem(tmp_path):
    args = dict(steps=10, batch_size=8, hidden_size=8, eval_every=5, norm_penalty=1.0, out=tmp_path)
    result = run_bench("adding", "rnn-tanh", 6, **args)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert result["norm_penalty"] == 1.0 and result["steps"] == 10 and math.isfinite(result["loss"])
    assert all(r["norm_penalty"] > 0 for r in records if r["type"] == "train")
