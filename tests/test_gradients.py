import json
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from bilm.cells import LoopRNN, make_rnn
from bilm.cli_eval import evaluate as evaluate_command
from bilm.errors import BilmError
from bilm.gradients import bi_norms, fit_decay, profile, uni_norms
from bilm.lab_cli import bench, gradients
from bilm.models import ModelConfig, build_model


def linear_rnn(size: int, a: float) -> LoopRNN:
    """h_t = a h_{t-1} + x_t: dh_T/dx_{T-k} = a^k I exactly."""
    rnn = LoopRNN(size, size, activation=lambda z: z).double()
    with torch.no_grad():
        rnn.weight_ih_l0.copy_(torch.eye(size))
        rnn.weight_hh_l0.copy_(a * torch.eye(size))
        rnn.bias_ih_l0.zero_()
        rnn.bias_hh_l0.zero_()
    return rnn


def linear_model(kind: str, a: float, size: int = 6):
    """A language model whose recurrent stacks are linear RNNs with per-step factor a."""
    torch.manual_seed(0)
    cfg = ModelConfig(
        kind=kind,
        vocab_size=40,
        cell="rnn-sigmoid",
        emb_size=size,
        hidden_size=size,
        layers=1,
        dropout=0.0,
        output="full",
    )
    model = build_model(cfg).double().eval()
    for name in ("rnn",) if kind == "uni" else ("fwd", "bwd"):
        setattr(model, name, linear_rnn(size, a))
    return model


def test_linear_rnn_jacobian_is_a_to_the_k():
    a, T = 0.7, 8
    rnn = linear_rnn(3, a)
    x = torch.randn(1, T, 3, dtype=torch.double, requires_grad=True)
    out, _ = rnn(x)
    for i in range(3):
        (row,) = torch.autograd.grad(out[0, -1, i], x, retain_graph=True)
        for k in range(T):
            expected = torch.zeros(3, dtype=torch.double)
            expected[i] = a**k
            torch.testing.assert_close(row[0, T - 1 - k], expected)


@pytest.mark.parametrize("a", [0.5, 0.9])
def test_measured_profile_of_a_linear_rnn_decays_by_exactly_a_per_word(a):
    windows = torch.randint(5, 40, (4, 13))
    measured = uni_norms(linear_model("uni", a), windows)["left"]
    powers = a ** torch.arange(12, dtype=torch.double)
    for what in ("emb", "hidden"):
        g = measured[what]
        torch.testing.assert_close(g / g[:, :1], powers.expand_as(g))


@pytest.mark.parametrize("a", [0.5, 0.9])
def test_bi_profile_of_a_linear_rnn_decays_by_a_on_both_sides_of_the_blank(a):
    windows = torch.randint(5, 40, (4, 10))
    measured = bi_norms(linear_model("bi", a), windows)
    powers = a ** torch.arange(10, dtype=torch.double)
    for side in ("left", "right"):
        for what in ("emb", "hidden"):
            g = measured[side][what]
            torch.testing.assert_close(g / g[:, :1], powers.expand_as(g))


@pytest.mark.parametrize("a", [0.5, 0.8, 0.95])
def test_measured_half_life_matches_the_known_per_step_factor(a):
    stream = torch.randint(5, 40, (2000,))
    (entry,) = profile(linear_model("uni", a), stream, [20], count=8)
    assert entry["rate_per_step"] == pytest.approx(a)
    assert entry["half_life"] == pytest.approx(math.log(2) / -math.log(a))
    assert entry["hidden"]["half_life"] == pytest.approx(math.log(2) / -math.log(a))
    assert entry["far_near"] == pytest.approx(a**19)


def test_identity_relu_rnn_preserves_the_gradient_norm_in_its_positive_regime():
    torch.manual_seed(0)
    irnn = make_rnn("irnn", 4, 8, 1, 0.0).double()
    with torch.no_grad():
        irnn.weight_ih_l0.abs_()
    x = torch.rand(3, 30, 4, dtype=torch.double, requires_grad=True)  # positive inputs: every unit stays active
    out, _ = irnn(x)
    (grad,) = torch.autograd.grad((out[:, -1] * torch.rand(8, dtype=torch.double)).sum(), x)
    norms = grad.norm(dim=-1)  # (B, T)
    torch.testing.assert_close(norms, norms[:, -1:].expand_as(norms))


def test_sigmoid_rnn_vanishes_faster_than_tanh_with_the_same_weights():
    torch.manual_seed(0)
    models = {}
    for cell in ("rnn-tanh", "rnn-sigmoid"):
        cfg = ModelConfig(vocab_size=40, cell=cell, emb_size=8, hidden_size=16, layers=1, dropout=0.0, output="full")
        models[cell] = build_model(cfg).double().eval()
    models["rnn-sigmoid"].load_state_dict(models["rnn-tanh"].state_dict())
    windows = torch.randint(5, 40, (16, 11))
    tanh, sigmoid = (uni_norms(models[c], windows)["left"]["hidden"] for c in ("rnn-tanh", "rnn-sigmoid"))
    bound = torch.linalg.matrix_norm(models["rnn-tanh"].rnn.weight_hh_l0, ord=2) / 4  # |W| max sigmoid'
    assert (sigmoid[:, 1:] <= bound * sigmoid[:, :-1] * (1 + 1e-9)).all()
    rate_tanh, _ = fit_decay(np.median(tanh.numpy(), 0))
    rate_sigmoid, _ = fit_decay(np.median(sigmoid.numpy(), 0))
    assert rate_sigmoid < rate_tanh / 2


def test_bi_gradients_reach_both_sides_and_a_leak_of_the_blank_is_caught():
    model = build_model(ModelConfig(kind="bi", vocab_size=40, emb_size=8, hidden_size=8, layers=1, output="full"))
    model.eval()
    windows = torch.randint(5, 40, (3, 7))
    measured = bi_norms(model, windows)
    assert (measured["left"]["emb"][:, 0] > 0).all() and (measured["right"]["emb"][:, 0] > 0).all()
    honest = model.context
    model.context = lambda ids, lengths: tuple(t.roll(-1, 1) for t in honest(ids, lengths))  # sees w_t itself
    with pytest.raises(AssertionError, match="blank"):
        bi_norms(model, windows)


def test_decay_fit_skips_underflow_and_reports_no_half_life_without_decay():
    rate, half_life = fit_decay(np.array([1.0, 0.5, 0.25, 0.0, 0.0]))
    assert rate == pytest.approx(0.5) and half_life == pytest.approx(1.0)
    assert fit_decay(np.array([1.0, 1.0, 2.0]))[1] is None


def test_gradients_command_measures_untrained_cells_and_writes_half_lives(tmp_path):
    args = [
        "--untrained",
        "--cell",
        "rnn-tanh,esn",
        "--model",
        "bi",
        "--lengths",
        "5,9",
        "--sentences",
        "6",
        "--hidden",
        "8",
        "--emb",
        "8",
        "--vocab",
        "50",
        "--out",
        str(tmp_path),
    ]
    result = CliRunner().invoke(gradients, args)
    assert result.exit_code == 0, result.output
    entries = json.loads((tmp_path / "gradients.json").read_text())["entries"]
    assert {(e["cell"], e["length"], e["direction"]) for e in entries} == {
        (c, n, d) for c in ("rnn-tanh", "esn") for n in (5, 9) for d in ("left", "right")
    }
    assert all("half_life" in e and len(e["median"]) == e["length"] for e in entries)


def test_gradients_command_reads_trained_checkpoints(trained, tmp_path):
    args = [str(trained["uni"]), str(trained["bi"]), "--lengths", "4,8", "--sentences", "5", "--out", str(tmp_path)]
    result = CliRunner().invoke(gradients, args)
    assert result.exit_code == 0, result.output
    entries = json.loads((tmp_path / "gradients.json").read_text())["entries"]
    assert [(e["kind"], e["direction"]) for e in entries if e["length"] == 8] == [
        ("uni", "left"),
        ("bi", "left"),
        ("bi", "right"),
    ]
    assert all(e["trained"] for e in entries)


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "give checkpoint"),
        (["--untrained", "--cell", "tanh"], "unknown cell"),
        (["--untrained", "--lengths", "10,x"], "--lengths"),
        (["--untrained", "--option", "sr"], "NAME=NUMBER"),
    ],
)
def test_gradients_command_rejects_bad_input_with_a_clear_error(args, message):
    result = CliRunner().invoke(gradients, args)
    if args:  # a bad option value: a usage error (exit 2) while the command line is parsed
        assert result.exit_code == 2 and message in result.output, result.output
    else:
        assert isinstance(result.exception, BilmError)
        assert message in str(result.exception)


def test_gradients_report_puts_trained_and_untrained_models_and_the_benchmarks_in_one_section(trained, tmp_path):
    bench_dir = tmp_path / "adding"
    bench_args = ["--cells", "lstm", "--lengths", "4", "--steps", "2", "--eval-every", "2", "--hidden", "4"]
    assert CliRunner().invoke(bench, ["adding", *bench_args, "--out", str(bench_dir)]).exit_code == 0
    args = [str(trained["uni"]), "--untrained", "--cell", "rnn-sigmoid", "--vocab", "50", "--hidden", "8", "--emb", "8"]
    args += ["--lengths", "4,8", "--sentences", "5", "--bench", str(bench_dir), "--out", str(tmp_path / "report")]
    result = CliRunner().invoke(gradients, args)
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    section = report["sections"]["gradients"]
    assert {(e["cell"], e["trained"]) for e in section["entries"]} == {("lstm", True), ("rnn-sigmoid", False)}
    assert [r["cell"] for r in section["bench"]] == ["lstm"]
    text = (tmp_path / "report" / "report.md").read_text()
    assert "## Vanishing gradients" in text and "| rnn-sigmoid (default) | init |" in text
    assert "k½ (words)" in text and "(window effect)" in text
    figures = {p.name for p in (tmp_path / "report" / "figures").iterdir()}
    names = ("decay", "half_lives", "far_near", "window", "bench", "input_gradients")
    assert figures == {f"gradients_{n}.png" for n in names}


def test_evaluate_report_takes_the_gradient_section_from_a_gradients_folder(trained, data_dir, tmp_path):
    lab = tmp_path / "lab"
    args = [str(trained["uni"]), "--lengths", "4,8", "--sentences", "5", "--data-dir", str(data_dir), "--out", str(lab)]
    assert CliRunner().invoke(gradients, args).exit_code == 0
    out = tmp_path / "report"
    args = ["--uni", str(trained["uni"]), "--bi", str(trained["bi"]), "--data-dir", str(data_dir), "--device", "cpu"]
    args += ["--rescore-sample", "0", "--bootstrap", "10", "--max-sentences", "20", "--out", str(out)]
    result = CliRunner().invoke(evaluate_command, [*args, "--gradients", str(lab)])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert list(report["sections"]) == ["lm", "fill", "curves", "gradients"]
    assert report["sections"]["gradients"]["entries"] == json.loads((lab / "gradients.json").read_text())["entries"]
    assert (out / "figures" / "gradients_decay.png").is_file()

    result = CliRunner().invoke(evaluate_command, [*args, "--gradients", str(tmp_path)])
    assert result.exit_code != 0 and "not a bilm gradients result" in str(result.exception)
