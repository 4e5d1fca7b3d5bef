import json
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from bilm import ledger as L
from bilm.errors import BilmError
from bilm.experiments import bi_gain, crossing, derivative_sup, esn_adding, init_profiles, radius_sweep
from bilm.gradients import probes, summarize, tail_shape
from bilm.lab_cli import ledger as ledger_command
from bilm.synthetic import AddingModel, adding_batch

# -- the experiments' measurements -------------------------------------------------------


@pytest.mark.parametrize("rho", [0.3, 0.6, 0.9])
def test_radius_sweep_puts_a_linear_rnns_half_life_exactly_at_ln2_over_minus_ln_rho(rho):
    sweep = radius_sweep(activations=("linear",), radii=(rho,), hidden=6, length=12, count=4)
    (row,) = sweep["rows"]
    assert row["rate"] == pytest.approx(rho, rel=1e-9)
    assert row["half_life"] == pytest.approx(math.log(2) / -math.log(rho), rel=1e-9)
    assert row["exp_r2"] == pytest.approx(1.0)


def test_radius_sweep_finds_a_linear_rnn_stops_decaying_at_radius_one():
    sweep = radius_sweep(activations=("linear",), radii=(0.5, 1.0, 2.0), hidden=6, length=12, count=4)
    assert [r["half_life"] is None for r in sweep["rows"]] == [False, True, True]
    assert sweep["crossing"]["linear"] == pytest.approx(1.0)
    assert sweep["bound"]["linear"] == pytest.approx(1.0)


def test_squashing_makes_the_factor_smaller_than_the_radius_and_sigmoid_smallest():
    sweep = radius_sweep(activations=("sigmoid", "tanh"), radii=(0.9,), hidden=8, length=15, count=8)
    rate = {r["activation"]: r["rate"] for r in sweep["rows"]}
    assert rate["sigmoid"] < 0.25 * 0.9 + 1e-9 < rate["tanh"] <= 0.9
    assert sweep["bound"] == pytest.approx({"sigmoid": 4.0, "tanh": 1.0})


def test_activation_derivatives_peak_at_a_quarter_for_sigmoid_and_one_for_tanh():
    assert derivative_sup("sigmoid") == pytest.approx(0.25)
    assert derivative_sup("tanh") == pytest.approx(1.0)


def test_crossing_interpolates_where_the_factor_reaches_one_and_is_none_when_it_never_does():
    rows = [dict(radius=1.0, rate=0.5), dict(radius=4.0, rate=2.0)]
    assert crossing(rows) == pytest.approx(2.0)  # log-linear: rate = radius / 2
    assert crossing([dict(radius=1.0, rate=0.5), dict(radius=4.0, rate=0.9)]) is None


def test_init_profiles_measure_each_cell_at_each_depth():
    entries = init_profiles(("rnn-tanh", "irnn"), layers=(1, 2), hidden=6, length=6, count=4, vocab=30)
    assert [(e["cell"], e["layers"]) for e in entries] == [("rnn-tanh", 1), ("rnn-tanh", 2), ("irnn", 1), ("irnn", 2)]
    assert all(len(e["median"]) == 6 and "k_half" in e for e in entries)


def test_adding_batch_keeps_both_markers_min_distance_steps_before_the_end():
    batch = adding_batch(500, 20, torch.Generator().manual_seed(0), min_distance=8)
    markers = batch.inputs[..., 1]
    assert (markers[:, 12:] == 0).all() and (markers[:, :6].sum(1) == 1).all() and (markers[:, 6:12].sum(1) == 1).all()
    with pytest.raises(ValueError, match="no room"):
        adding_batch(2, 5, min_distance=4)


@torch.enable_grad()
def _input_gradient(model, batch):
    with probes(model, hidden=False) as found:
        loss, _ = model.loss(batch)
        (grad,) = torch.autograd.grad(loss, found["emb"][0])
    return grad.norm(dim=-1).sum(0)  # (T,)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn-tanh"])
def test_truncated_bptt_cannot_see_an_input_further_back_than_its_truncation(cell):
    T, tau = 12, 4
    batch = adding_batch(8, T, torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    truncated = AddingModel(cell, 6, bptt=tau)
    full = AddingModel(cell, 6)
    full.load_state_dict(truncated.state_dict())
    g_truncated, g_full = _input_gradient(truncated, batch), _input_gradient(full, batch)
    assert (g_truncated[: T - tau] == 0).all() and (g_truncated[T - tau :] > 0).all()
    assert (g_full > 0).all()
    torch.testing.assert_close(truncated(batch.inputs), full(batch.inputs))  # the forward pass still sees it all


def test_esn_ridge_readout_beats_the_trivial_answer_on_a_short_adding_problem():
    row = esn_adding(10, hidden=60, train=600, test=200, sr=0.9, lr=0.5, input_connectivity=1.0)
    assert row["readout"] == "ridge" and row["mse"] < 0.5 * row["baseline"]
    assert row["solved"] == (row["mse"] < 0.01)


# -- half-lives that do not depend on the window -----------------------------------------------


def test_tail_shape_tells_an_exponential_from_a_power_law():
    k = np.arange(1, 41, dtype=float)
    exp = tail_shape(0.8**k)
    power = tail_shape(k**-1.5)
    assert exp["better"] == "exponential" and exp["exp_rate"] == pytest.approx(0.8)
    assert power["better"] == "power law" and power["power_exponent"] == pytest.approx(1.5)
    assert tail_shape(0.8 ** np.arange(1, 6)) is None  # too short for a tail


def test_summary_leaves_the_boundary_word_out_of_the_fit_and_reads_where_g_falls_below_a_half_and_a_tenth():
    k = np.arange(1, 21)
    g = np.tile(0.8 ** (k - 1), (3, 1))
    g[:, -1] = 5.0  # the window's first word: read from the zero state, its gradient rises again
    s = summarize(g)
    assert s["half_life"] == pytest.approx(math.log(2) / -math.log(0.8))
    assert s["k_half"] == 5 and s["k_tenth"] == 12  # 0.8^4 = 0.41 < 1/2; 0.8^11 = 0.086 < 1/10
    assert s["g_rel"]["10"] == pytest.approx(0.8**9) and "20" not in s["g_rel"]
    assert s["tail"]["better"] == "exponential"


def test_k_half_is_none_when_the_gradient_never_halves():
    s = summarize(np.ones((2, 10)))
    assert s["k_half"] is None and s["k_tenth"] is None and s["half_life"] is None


# -- verdicts by rule ---------------------------------------------------------------------------


def _run(cell="lstm", solved=True, out_of_time=False, loss=None, **extra):
    return dict(
        cell=cell,
        solved=solved,
        out_of_time=out_of_time,
        loss=loss if loss is not None else (0.005 if solved else 0.16),
        baseline=1 / 6,
        finite=True,
        steps=100,
        grad_first=0.0,
        max_grad_norm=1.0,
        **extra,
    )


def _adding(**overrides):
    cells = {"lstm": _run("lstm"), "gru": _run("gru"), "irnn": _run("irnn"), "rnn-tanh": _run("rnn-tanh", False)}
    cells["esn"] = _run("esn")
    cells.update(overrides)
    return {"adding": dict(T=200, results=list(cells.values()))}


@pytest.mark.parametrize(
    "overrides, verdict",
    [
        ({}, L.HOLDS),
        ({"esn": _run("esn", solved=False, loss=0.08)}, L.QUALIFIED),
        ({"rnn-tanh": _run("rnn-tanh", solved=True)}, L.FAILS),  # a contradicted claim is reported as contradicted
        ({c: _run(c, solved=False, out_of_time=True) for c in ("lstm", "gru", "irnn", "esn")}, L.UNSHOWN),
        ({c: _run(c, solved=False) for c in ("lstm", "gru", "irnn", "esn")}, L.FAILS),
    ],
)
def test_adding_verdict_follows_from_which_cells_solved_it(overrides, verdict):
    assert L.judge_adding(_adding(**overrides)).verdict == verdict


def test_a_run_that_ran_out_of_time_is_not_called_a_failure():
    v = L.judge_adding(_adding(lstm=_run("lstm", solved=False, out_of_time=True)))
    assert v.verdict == L.QUALIFIED and "ran out of its time" in v.reason and "(time)" in v.measured


def test_a_tanh_control_stopped_by_time_before_the_remedies_steps_does_not_count_as_failing():
    quick = dict(_run("rnn-tanh", solved=False, out_of_time=True), steps=50)  # remedies needed 100 steps
    v = L.judge_adding(_adding(**{"rnn-tanh": quick}))
    assert v.verdict == L.QUALIFIED and "tanh control ran out of time" in v.reason
    fair = dict(quick, steps=L.FAIR_SHARE * 100)
    assert L.judge_adding(_adding(**{"rnn-tanh": fair})).verdict == L.HOLDS


def test_a_diverged_run_whose_loss_was_saved_as_null_is_judged_and_shown():
    diverged = dict(_run("lstm", solved=False), loss=None, finite=False)
    v = L.judge_adding(_adding(lstm=diverged))
    assert v.verdict == L.QUALIFIED and "lstm n/a (diverged)" in v.measured


def _explode(plain_finite=False, tamed=(True, True, True), short_solved=False, full_solved=True, full_time=False):
    names = ["clipping (norm 1)", "truncated BPTT (10 steps)", "norm-preserving penalty (weight 1)"]
    rows = [dict(_run(solved=False), remedy="none", finite=plain_finite, max_grad_norm=1.0)]
    rows += [dict(_run(solved=False), remedy=n, finite=ok) for n, ok in zip(names, tamed, strict=True)]
    short = _run(solved=short_solved, bptt=5)
    full = _run(solved=full_solved, out_of_time=full_time, bptt=30)
    return {
        "explode": dict(settings={}, results=rows),
        "truncation": dict(T=30, min_distance=10, truncations=[5, 30], results=[short, full]),
    }


@pytest.mark.parametrize(
    "kwargs, verdict",
    [
        ({}, L.HOLDS),
        ({"tamed": (True, False, False)}, L.QUALIFIED),
        ({"tamed": (False, False, False)}, L.FAILS),
        ({"plain_finite": True}, L.UNSHOWN),
        ({"short_solved": True}, L.FAILS),
        ({"full_solved": False, "full_time": True}, L.UNSHOWN),
    ],
)
def test_explosion_and_truncation_verdicts(kwargs, verdict):
    assert L.judge_explode(_explode(**kwargs)).verdict == verdict


def test_runs_stopped_by_time_count_only_with_a_fair_share_of_steps():
    results = _explode()
    short = results["truncation"]["results"][0]
    short.update(out_of_time=True, steps=L.FAIR_SHARE * 100 - 1)  # full BPTT solved in 100 steps
    assert L.judge_explode(results).verdict == L.UNSHOWN
    short.update(steps=L.FAIR_SHARE * 100)
    assert L.judge_explode(results).verdict == L.HOLDS
    clipped = results["explode"]["results"][1]
    clipped.update(out_of_time=True, steps=10)  # the plain run diverged after 100
    v = L.judge_explode(results)
    assert v.verdict == L.QUALIFIED and "clipping (norm 1) ran out of time" in v.reason


def _sweep(sigmoid_rates, tanh_rates, radii=(0.5, 2.0, 8.0)):
    rows = [
        dict(activation=a, radius=r, rate=rate, half_life=None if rate >= 1 else 1.0, exp_r2=1.0)
        for a, rates in (("sigmoid", sigmoid_rates), ("tanh", tanh_rates), ("linear", [r for r in radii]))
        for r, rate in zip(radii, rates, strict=True)
    ]
    bound = {"sigmoid": 4.0, "tanh": 1.0, "linear": 1.0}
    by = {a: [r for r in rows if r["activation"] == a] for a in bound}
    return {"radius": dict(rows=rows, bound=bound, crossing={a: crossing(by[a]) for a in bound})}


def test_bound_verdict_is_qualified_when_the_factor_reaches_one_far_above_the_bound_and_contradicted_below_it():
    assert L.judge_bound(_sweep([0.1, 0.4, 0.9], [0.4, 1.1, 1.5])).verdict == L.QUALIFIED  # sigmoid never crosses
    assert L.judge_bound(_sweep([0.1, 0.4, 1.2], [0.4, 1.1, 1.5])).verdict == L.QUALIFIED  # crosses at ~6.6 > 4.8
    contradicted = L.judge_bound(_sweep([0.1, 1.2, 1.5], [0.4, 1.1, 1.5]))  # sigmoid at 2 < 4 does not vanish
    assert contradicted.verdict == L.FAILS and "sigmoid" in contradicted.reason


def _bi(gain_none, gain_some, lo_all=0.05):
    row = lambda words, g: dict(words=words, n=100, bi=0.3, uni_left=0.3 - g, gain=g, ci=[g - 0.01, g + 0.01])  # noqa: E731
    overall = dict(words="0+", n=200, bi=0.3, uni_left=0.25, gain=0.05, ci=[lo_all, 0.06])
    rows = [row("0", gain_none), row("1", gain_some)]
    where = dict(uni="u", bi="b")
    return {"bi": dict(split="test", blanks=200, sentences=20, overall=overall, by_right=rows, checkpoints=where)}


def test_bi_verdict_needs_a_positive_gain_that_appears_with_the_right_context():
    assert L.judge_bi(_bi(0.0, 0.1)).verdict == L.HOLDS
    assert L.judge_bi(_bi(0.1, 0.1)).verdict == L.QUALIFIED
    assert L.judge_bi(_bi(0.0, 0.1, lo_all=-0.01)).verdict == L.FAILS


def test_a_claim_whose_experiment_is_missing_is_not_run_and_says_how_to_run_it():
    v = L.judge(L.CLAIMS[6], {})
    assert v.verdict == L.NOT_RUN and "bilm ledger --claim 7" in v.reason


# -- the command and the report -------------------------------------------------------------------


def test_ledger_command_runs_the_chosen_claims_and_writes_the_report(tmp_path):
    result = CliRunner().invoke(ledger_command, ["--claim", "1", "--quick", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.glob("*.json")) == ["radius.json", "report.json"]
    report = json.loads((tmp_path / "report.json").read_text())["sections"]["ledger"]
    assert report["1"]["verdict"] == L.HOLDS
    assert report["2"]["verdict"] in (L.HOLDS, L.QUALIFIED)  # judged too: it needs the same sweep
    assert {report[str(n)]["verdict"] for n in range(3, 8)} == {L.NOT_RUN}
    text = (tmp_path / "report.md").read_text()
    assert "## Ledger: the claims of the RNN notes" in text and "`bilm ledger --claim 1 --out reports/ledger`" in text
    assert {p.name for p in (tmp_path / "figures").iterdir()} == {"ledger_claim1.png", "ledger_claim2.png"}
    result = CliRunner().invoke(ledger_command, ["--report-only", "--out", str(tmp_path)])
    assert result.exit_code == 0 and "claim 1: holds " in result.output and "claim 3: not run" in result.output


@pytest.mark.parametrize(
    "args, message",
    [(["--claim", "9"], "numbered 1-7"), (["--claim", "x"], "--claim"), (["--uni", "a"], "both --uni and --bi")],
)
def test_ledger_command_rejects_bad_input_with_a_clear_error(args, message, tmp_path):
    result = CliRunner().invoke(ledger_command, [*args, "--out", str(tmp_path)])
    assert isinstance(result.exception, BilmError) and message in str(result.exception)


def test_ledger_folder_without_results_is_a_clear_error(tmp_path):
    with pytest.raises(BilmError, match="no ledger results"):
        L.ledger_from(tmp_path)


def test_bi_gain_compares_both_models_on_the_same_blanks_and_fills_the_worked_example(trained, data_dir):
    result = bi_gain(
        str(trained["uni"]), str(trained["bi"]), "valid", max_sentences=20, bootstrap=50, data_dir=data_dir
    )
    assert sum(r["n"] for r in result["by_right"]) == sum(r["n"] for r in result["by_left"]) == result["blanks"]
    assert result["overall"]["n"] == result["blanks"] > 0
    assert set(result["worked"]) == {"bi", "bi-rescore", "uni-left", "uni-rescore"}
    assert all(len(c) == 5 for c in result["worked"].values())
    assert "- **bi**: " in L.worked_example(result) and "- **uni-left**: " in L.worked_example(result)
    verdict = L.judge_bi({"bi": result})
    assert verdict.verdict in L.VERDICTS and str(result["blanks"]) in verdict.measured.replace(",", "")


def test_evaluate_report_takes_the_ledger_from_a_ledger_folder(trained, data_dir, tmp_path):
    from bilm.cli_eval import evaluate as evaluate_command

    ledger_dir = tmp_path / "ledger"
    assert CliRunner().invoke(ledger_command, ["--claim", "1", "--quick", "--out", str(ledger_dir)]).exit_code == 0
    out = tmp_path / "report"
    args = ["--uni", str(trained["uni"]), "--bi", str(trained["bi"]), "--data-dir", str(data_dir), "--device", "cpu"]
    args += ["--rescore-sample", "0", "--bootstrap", "10", "--max-sentences", "10", "--out", str(out)]
    result = CliRunner().invoke(evaluate_command, [*args, "--ledger", str(ledger_dir)])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert list(report["sections"])[-1] == "ledger" and report["sections"]["ledger"]["1"]["verdict"] == L.HOLDS
    assert (out / "figures" / "ledger_claim1.png").is_file()


def test_plain_sgd_on_an_irnn_diverges_and_clipping_keeps_it_finite(tmp_path):
    ctx = L.Context(tmp_path, quick=True, log=lambda line: None)
    settings = dict(cell="irnn", T=20, steps=30, optimizer="sgd", lr=1.0, hidden_size=8, eval_every=10)
    plain, clipped = (L._run(f"clip{c}", ctx, clip=c, **settings) for c in (0, 1))
    assert not plain["finite"] and plain["steps"] < 30
    assert clipped["finite"] and clipped["steps"] == 30 and clipped["max_grad_norm"] > 1  # clipped, not small
    assert [s for s, _ in clipped["curve"]] == [10, 20, 30]
    L.write_bench(tmp_path)  # no experiment result yet: nothing to write
    assert not (tmp_path / "runs" / "adding.json").exists()
    from bilm.lab_plots import bench_table, load_bench
    from bilm.report import jsonable

    plain = dict(plain, loss=math.nan)  # as a run whose test loss overflowed
    (tmp_path / "explode.json").write_text(json.dumps(jsonable(dict(results=[plain, clipped]))))  # NaN -> null
    L.write_bench(tmp_path)
    results, runs = load_bench([tmp_path / "runs"])  # what `bilm gradients --bench` reads
    assert [math.isnan(r["loss"]) for r in results] == [True, False] and set(runs) == {"clip0", "clip1"}
    assert "| nan |" in bench_table(results)
