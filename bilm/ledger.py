"""The lab's ledger: each claim of the RNN notes, the experiment that tests it, and a verdict by rule.

A claim names the experiments it needs; `run_ledger` runs each experiment once (seeded,
sized for a CPU; `quick` for the tests), keeps its result as `<experiment>.json` in the
ledger folder, and writes the report (report.md / .html / .json, figures/) from every result
the folder holds, so one claim can be re-run alone. The verdict of a claim comes from its
`judge`, a rule over the measurements:

    holds                          what the notes say is what we measure
    holds with a qualification     it holds, but only in part or with a condition (said which)
    does not hold here             the measurements contradict it
    not shown within budget        a run needed for the verdict ran out of its time or steps first
    not run                        an experiment it needs is missing (e.g. no checkpoints for claim 7)
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .errors import BilmError
from .synthetic import run_bench

HOLDS, QUALIFIED, FAILS = "holds", "holds with a qualification", "does not hold here"
UNSHOWN, NOT_RUN = "not shown within budget", "not run"
VERDICTS = (HOLDS, QUALIFIED, FAILS, UNSHOWN, NOT_RUN)


@dataclass
class Verdict:
    verdict: str
    measured: str  # the figure behind it, in one line
    reason: str  # the rule's reading of the measurements


@dataclass
class Context:
    """What the experiments need besides their own settings."""

    out: Path
    quick: bool = False
    uni: str | None = None
    bi: str | None = None
    split: str = "test"
    corpus_dir: str | None = None
    data_dir: str | None = None
    max_sentences: int | None = None
    log: Callable[[str], None] = print


# -- experiments ------------------------------------------------------------------------


def _run(name: str, ctx: Context, **kwargs) -> dict:
    """One `run_bench` adding-problem run, its metrics under out/runs/<name>/, its curves kept in the result."""
    from .report import read_metrics

    out = ctx.out / "runs" / name
    result = run_bench("adding", out=out, log=lambda line: None, **kwargs)
    records = read_metrics(out / "metrics.jsonl")
    result["name"] = name
    result["curve"] = [[r["step"], r.get("loss")] for r in records if r.get("type") == "valid"]
    result["grad_norms"] = [[r["step"], r.get("grad_norm")] for r in records if r.get("type") == "train"]
    norms = [n for _, n in result["grad_norms"] if n is not None]
    result["max_grad_norm"] = max(norms) if norms else None
    finite = result["skipped_steps"] == 0 and not result["diverged"] and math.isfinite(result["loss"])
    result["finite"] = bool(finite)
    ctx.log(
        f"  {name}: {result['steps']} steps, test loss {result['loss']:.4f}"
        f"{' solved' if result['solved'] else ''}{'' if finite else ' (diverged)'}, {result['wall_seconds']:.0f} s"
    )
    return result


def exp_radius(ctx: Context) -> dict:
    from .experiments import radius_sweep

    if ctx.quick:
        return radius_sweep(radii=(0.5, 0.9, 1.0, 2.0, 4.0, 8.0), hidden=16, length=20, count=20)
    return radius_sweep()


def exp_init(ctx: Context) -> dict:
    from .experiments import init_profiles

    cells = ("rnn-sigmoid", "rnn-tanh", "rnn-relu", "irnn", "lstm")
    if ctx.quick:
        return dict(entries=init_profiles(cells, layers=(1, 2, 3), hidden=16, length=12, count=20, vocab=100))
    return dict(entries=init_profiles(cells, layers=(1, 2, 3, 4), hidden=64, length=30, count=100))


# The recipe for the adding problem at T = 200 (docs/gradients.md, "Why the LSTM did not solve T = 200"):
# 32 units (an LSTM step costs ~1/40 of 128 units' on CPU) and learning rate 1e-2; the forget-gate bias is
# no lever. The IRNN keeps Le et al.'s lr 1e-4 (faster rates explode it) and its 128 units (its step is cheap).
ADDING_CELLS = {
    "lstm": dict(hidden_size=32, lr=1e-2),
    "gru": dict(hidden_size=32, lr=1e-2),
    "irnn": dict(hidden_size=128, lr=1e-4),
    "rnn-tanh": dict(hidden_size=32, lr=1e-2),
}
# A leaky reservoir (leak 0.05) near the edge of stability remembers 200 steps (radius, leak and input scale
# chosen by a short search, docs/gradients.md); reservoirpy's option names.
ESN_SETTINGS = dict(hidden=500, sr=0.99, lr=0.05, input_scaling=0.5, input_connectivity=1.0, rc_connectivity=0.1)


def exp_adding(ctx: Context) -> dict:
    """The adding problem at T = 200 for every cell, one budget each; the ESN by ridge regression."""
    from .experiments import esn_adding

    T, steps, minutes = (20, 200, 0.1) if ctx.quick else (200, 6000, 3.0)
    rows = []
    for cell, settings in ADDING_CELLS.items():
        settings = dict(settings, hidden_size=8) if ctx.quick else settings
        rows.append(_run(f"adding-{cell}-T{T}", ctx, cell=cell, T=T, steps=steps, max_minutes=minutes, **settings))
    esn = dict(ESN_SETTINGS, hidden=32) if ctx.quick else ESN_SETTINGS
    rows.append(esn_adding(T, train=200 if ctx.quick else 3000, **esn))
    ctx.log(f"  esn (ridge readout): test MSE {rows[-1]['mse']:.4f}, {rows[-1]['seconds']:.0f} s")
    return dict(T=T, max_steps=steps, max_minutes=minutes, results=rows)


def exp_explode(ctx: Context) -> dict:
    """Plain SGD on an IRNN (identity recurrence: the gradient does not shrink): without and with each remedy."""
    T, steps, minutes = (20, 30, 0.1) if ctx.quick else (100, 600, 0.5)
    base = dict(cell="irnn", T=T, steps=steps, optimizer="sgd", lr=0.01, max_minutes=minutes, hidden_size=128)
    if ctx.quick:
        base.update(hidden_size=8, lr=1.0)
    tau = max(2, T // 10)
    remedies = {
        "none": dict(clip=0),
        "clipping (norm 1)": dict(clip=1),
        f"truncated BPTT ({tau} steps)": dict(clip=0, bptt=tau),
        "norm-preserving penalty (weight 1)": dict(clip=0, norm_penalty=1.0),
    }
    rows = []
    for remedy, settings in remedies.items():
        slug = remedy.split()[0].lower()
        rows.append(dict(_run(f"explode-{slug}", ctx, **base, **settings), remedy=remedy))
    return dict(settings=base, results=rows)


def exp_truncation(ctx: Context) -> dict:
    """The adding problem with both markers at least `min_distance` + 1 steps back, truncated shorter and not."""
    T, gap, short, steps, minutes = (12, 6, 3, 100, 0.1) if ctx.quick else (30, 10, 5, 3000, 1.5)
    base = dict(cell="gru", T=T, min_distance=gap, steps=steps, max_minutes=minutes, **ADDING_CELLS["gru"])
    if ctx.quick:
        base["hidden_size"] = 8
    rows = [_run(f"truncated-bptt{tau}", ctx, bptt=tau, **base) for tau in (short, T)]
    return dict(T=T, min_distance=gap, truncations=[short, T], results=rows)


def exp_bi(ctx: Context) -> dict | None:
    from .experiments import bi_gain

    if not (ctx.uni and ctx.bi):
        return None
    for path in (ctx.uni, ctx.bi):
        if not Path(path).is_dir():
            ctx.log(f"  {path}: no such checkpoint; claim 7 not run")
            return None
    limit = ctx.max_sentences if ctx.max_sentences is not None else (200 if ctx.quick else None)
    return bi_gain(
        ctx.uni,
        ctx.bi,
        ctx.split,
        max_sentences=limit,
        bootstrap=200 if ctx.quick else 1000,
        corpus_dir=ctx.corpus_dir,
        data_dir=ctx.data_dir,
        log=lambda line: None,
    )


EXPERIMENTS: dict[str, Callable[[Context], dict | None]] = {
    "radius": exp_radius,
    "init": exp_init,
    "explode": exp_explode,
    "truncation": exp_truncation,
    "adding": exp_adding,
    "bi": exp_bi,
}


# -- rules ----------------------------------------------------------------------------


def _f(x, spec: str = ".4f") -> str:
    """A figure of a saved result: NaN and infinities were saved as null (a diverged run)."""
    return "n/a (diverged)" if x is None else format(x, spec)


def _rows(sweep: dict, activation: str) -> list[dict]:
    return sorted((r for r in sweep["rows"] if r["activation"] == activation), key=lambda r: r["radius"])


def judge_geometric(r: dict) -> Verdict:
    """Claim 1: with radius < 1 the state gradient shrinks by a constant factor per step (log-linear, R^2 >= 0.99)."""
    sweep = r["radius"]
    small = [row for a in ("linear", "tanh") for row in _rows(sweep, a) if row["radius"] < 1]
    linear = [row for row in small if row["activation"] == "linear"]
    worst = max(abs(row["rate"] - row["radius"]) for row in linear)
    tanh = next(
        row for row in small if row["activation"] == "tanh" and row["radius"] == max(x["radius"] for x in small)
    )
    measured = (
        f"linear RNN: factor per step = ρ (largest deviation {worst:.1e}); tanh at ρ {tanh['radius']:g}: "
        f"r = {tanh['rate']:.3f}, half-life {tanh['half_life']:.2f} steps; min R² of the log-linear fit "
        f"{min(row['exp_r2'] for row in small):.4f}"
    )
    if any(row["rate"] >= 1 for row in small):
        return Verdict(FAILS, measured, "a radius below 1 kept the gradient from shrinking")
    if min(row["exp_r2"] for row in small) < 0.99:
        return Verdict(QUALIFIED, measured, "it shrinks, but not by one constant factor per step (R² < 0.99)")
    if worst > 0.01:
        return Verdict(QUALIFIED, measured, "geometric, but the linear RNN's factor is not the matrix's radius")
    return Verdict(
        HOLDS, measured, "every radius below 1 gives a geometric decay; without a non-linearity the factor is ρ exactly"
    )


def judge_bound(r: dict) -> Verdict:
    """Claim 2: sup f' is 1/4 (sigmoid), 1 (tanh); every radius below 1/sup f' vanishes; where the factor reaches 1."""
    sweep = r["radius"]
    bound, cross = sweep["bound"], sweep["crossing"]
    parts, failures, loose = [], [], []
    for a in ("sigmoid", "tanh"):
        sup = 1 / bound[a]
        below = [row for row in _rows(sweep, a) if row["radius"] < bound[a]]
        c = cross.get(a)
        reaches = f"never up to ρ = {_largest(sweep):g}" if c is None else f"at ρ ≈ {c:.2f}"
        parts.append(f"{a}: sup f' {sup:.4f}, factor reaches 1 {reaches}")
        if abs(sup - {"sigmoid": 0.25, "tanh": 1.0}[a]) > 1e-6:
            failures.append(f"{a}'s derivative peaks at {sup:.4f}")
        if any(row["rate"] >= 1 for row in below):
            failures.append(f"{a} kept the gradient below its bound {bound[a]:g}")
        if c is None or c > 1.2 * bound[a]:
            loose.append(f"{a} {bound[a]:g} → {'never in the sweep' if c is None else f'{c:.2f}'}")
    measured = "; ".join(parts) + " (orthogonal W: spectral radius = largest singular value = ρ)"
    if failures:
        return Verdict(FAILS, measured, "; ".join(failures))
    if loose:
        return Verdict(
            QUALIFIED,
            measured,
            "below each bound the gradient vanishes, as stated; but the bound is sufficient, not the threshold: "
            "the factor reaches 1 only well above it (" + ", ".join(loose) + "), since f' along the trajectory "
            "stays below its peak",
        )
    return Verdict(HOLDS, measured, "below each bound the gradient vanishes, and the factor reaches 1 near the bound")


def _largest(sweep: dict) -> float:
    return max(row["radius"] for row in sweep["rows"])


def _profiles(r: dict, cell: str) -> list[dict]:
    return sorted((e for e in r["init"]["entries"] if e["cell"] == cell), key=lambda e: e["layers"])


def judge_depth(r: dict) -> Verdict:
    """Claim 3: g(1) (input gradient at the nearest word) and k_half against the number of layers, squashing cells."""
    level, distance, parts = [], [], []
    for cell in ("rnn-sigmoid", "rnn-tanh"):
        es = _profiles(r, cell)
        g1 = [e["median"][0] for e in es]
        kh = [e["k_half"] or len(e["median"]) for e in es]
        level.append(all(b < a for a, b in zip(g1, g1[1:], strict=False)))
        distance.append(all(b <= a for a, b in zip(kh, kh[1:], strict=False)) and kh[-1] < kh[0])
        factor = (g1[-1] / g1[0]) ** (1 / max(len(g1) - 1, 1))
        parts.append(
            f"{cell}: g(1) ×{factor:.2f} per layer ({g1[0]:.1e} → {g1[-1]:.1e} at {es[-1]['layers']} layers), "
            f"k½ {kh[0]} → {kh[-1]} words"
        )
    measured = "; ".join(parts)
    if not all(level):
        return Verdict(FAILS, measured, "more layers did not shrink the gradient reaching the input")
    if all(distance):
        return Verdict(HOLDS, measured, "each layer shrinks the gradient and it falls off faster with distance")
    return Verdict(
        QUALIFIED,
        measured,
        "each extra layer multiplies the gradient by a factor below 1 (worse in level), but with distance it falls "
        "off more slowly in deeper stacks: the vanishing across layers adds to, not speeds up, the one across time",
    )


def judge_relu(r: dict) -> Verdict:
    """Claim 4: a ReLU RNN at PyTorch's default init against the identity-initialised IRNN (and tanh), the sweep."""
    relu, tanh, irnn = (_profiles(r, c)[0] for c in ("rnn-relu", "rnn-tanh", "irnn"))
    irnn_deep = _profiles(r, "irnn")[-1]
    n = len(relu["median"])
    cross = r["radius"]["crossing"].get("relu") if "radius" in r else None
    solved = next((x for x in r.get("adding", {}).get("results", []) if x["cell"] == "irnn"), None)
    k = lambda e: e["k_half"] or f"> {n - 1}"  # noqa: E731
    grow = max(irnn_deep["g_rel"].values())
    measured = (
        f"1 layer at init: rnn-relu k½ {k(relu)} words (tanh {k(tanh)}), irnn k½ {k(irnn)}; "
        f"irnn {irnn_deep['layers']} layers: max g(k)/g(1) {grow:.1f}"
        + (f"; relu factor reaches 1 at ρ ≈ {cross:.2f}" if cross else "")
        + (f"; irnn adding T={solved['T']}: MSE {_f(solved['loss'])}" if solved else "")
    )
    relu_keeps = relu["k_half"] is None
    irnn_keeps = irnn["k_half"] is None or (tanh["k_half"] is not None and irnn["k_half"] > 3 * tanh["k_half"])
    if not irnn_keeps:
        return Verdict(FAILS, measured, "even the identity-initialised ReLU RNN lost the gradient as fast as tanh")
    if relu_keeps:
        return Verdict(HOLDS, measured, "ReLU at the default init and with identity init both keep the gradient")
    why = (
        "not ReLU by itself: at PyTorch's default init the ReLU RNN vanishes like tanh (its factor is ρ times the "
        "share of active units); the identity init (IRNN) is what keeps the gradient"
    )
    if grow > 2:
        why += f", and in a stack it makes it grow instead (×{grow:.0f}): exploding replaces vanishing"
    if solved is not None and not solved["solved"]:
        why += "; the IRNN ran out of time on the adding problem" if solved.get("out_of_time") else ""
        why += "" if solved.get("out_of_time") else "; the IRNN did not solve the adding problem"
    return Verdict(QUALIFIED, measured, why)


# A run stopped by its time cap still counts when it had this many times the steps the comparison needed.
FAIR_SHARE = 5


def _had_its_steps(run: dict, needed: int) -> bool:
    """Did `run` get its step budget, or at least FAIR_SHARE times the `needed` steps, before its time cap?"""
    return not run.get("out_of_time") or run["steps"] >= FAIR_SHARE * needed


def judge_explode(r: dict) -> Verdict:
    """Claim 5: does the plain run explode, which remedies keep it finite, does truncation give up long dependencies.

    A remedy counts as taming it when its run stayed finite (and near the trivial loss) for its whole step budget,
    or for FAIR_SHARE times the steps after which the plain run diverged; the truncated run counts as giving the
    dependency up when it had its budget or FAIR_SHARE times the steps full BPTT needed to solve it.
    """
    rows = {x["remedy"]: x for x in r["explode"]["results"]}
    plain = rows.pop("none")
    exploded = not plain["finite"] or (plain["max_grad_norm"] or 0) > 1e3
    stable = {name: x["finite"] and x["loss"] <= 2 * x["baseline"] for name, x in rows.items()}
    shown = {name: _had_its_steps(x, plain["steps"]) for name, x in rows.items()}
    short, full = r["truncation"]["results"]
    tau, T, gap = r["truncation"]["truncations"][0], r["truncation"]["T"], r["truncation"]["min_distance"]
    state = lambda n: "diverged" if not stable[n] else ("finite" if shown[n] else "finite, out of time")  # noqa: E731
    measured = (
        f"plain SGD: {'diverged at step ' + str(plain['steps']) if not plain['finite'] else 'finite'}; "
        + ", ".join(f"{name}: {state(name)} ({x['steps']} steps)" for name, x in rows.items())
        + f"; adding T={T}, markers > {gap} steps back: BPTT {tau} → MSE {_f(short['loss'], '.3f')} after "
        f"{short['steps']} steps, gradient at the first input {_f(short['grad_first'], '.1e')}; full BPTT → MSE "
        f"{_f(full['loss'], '.3f')} after {full['steps']}"
    )
    if not exploded:
        return Verdict(UNSHOWN, measured, "the plain run did not explode, so there was nothing to tame")
    if not full["solved"]:
        return Verdict(UNSHOWN, measured, "full BPTT did not solve the long-distance task within its budget")
    if short["solved"]:
        return Verdict(FAILS, measured, f"truncated to {tau} steps, the model learned the longer dependency anyway")
    if not _had_its_steps(short, full["steps"]):
        return Verdict(UNSHOWN, measured, "the truncated run ran out of time before it had a fair share of steps")
    tamed = [n for n in rows if stable[n] and shown[n]]
    failed = [n for n in rows if not stable[n]]
    unshown = [n for n in rows if stable[n] and not shown[n]]
    if not tamed:
        return Verdict(UNSHOWN if unshown else FAILS, measured, "no remedy was shown to keep the exploding run finite")
    give_up = f"truncation to {tau} steps gives up the dependency (no gradient reaches it), full BPTT solves it"
    notes = [f"not {', '.join(failed)} (diverged as well)"] if failed else []
    if unshown:
        notes.append(f"{', '.join(unshown)} ran out of time")
    if notes:
        return Verdict(
            QUALIFIED, measured, f"{give_up}; but only {', '.join(tamed)} tamed the explosion: " + "; ".join(notes)
        )
    return Verdict(HOLDS, measured, f"every remedy kept the run finite; {give_up}")


# The remedies the claim names; the GRU runs beside them (shown in the figures, not part of the rule).
REMEDY_CELLS = {"irnn": "initialisation (IRNN)", "esn": "echo state network", "lstm": "LSTM"}


def judge_adding(r: dict) -> Verdict:
    """Claim 6: adding at T=200 solved (MSE < 0.01) by IRNN, ESN and LSTM, not by the tanh RNN (GRU: shown only)."""
    a = r["adding"]
    rows = {x["cell"]: x for x in a["results"]}
    measured = f"T={a['T']}: " + ", ".join(
        f"{c} {_f(x['loss'])}{' ✓' if x['solved'] else (' (time)' if x.get('out_of_time') else '')}"
        for c, x in rows.items()
    )
    control = rows.get("rnn-tanh")
    remedies = {c: rows[c] for c in REMEDY_CELLS if c in rows}
    solved = [c for c, x in remedies.items() if x["solved"]]
    out_of_time = [c for c, x in remedies.items() if not x["solved"] and x.get("out_of_time")]
    failed = [c for c, x in remedies.items() if not x["solved"] and not x.get("out_of_time")]
    if control is not None and control["solved"]:
        return Verdict(FAILS, measured, "the plain tanh RNN solved it too: there was no vanishing to counter")
    if not solved:
        return Verdict(UNSHOWN if out_of_time else FAILS, measured, "no remedy solved it")
    needed = max(remedies[c]["steps"] for c in solved)  # 0 when only the ESN (no training steps) solved it
    notes = []
    if control is not None and not _had_its_steps(control, needed):
        notes.append(f"the tanh control ran out of time after {control['steps']} steps, so its failure is not shown")
    notes += [f"{REMEDY_CELLS[c]} did not (MSE {_f(remedies[c]['loss'], '.3f')})" for c in failed]
    notes += [f"{REMEDY_CELLS[c]} ran out of its time" for c in out_of_time]
    if not notes:
        return Verdict(HOLDS, measured, f"{', '.join(solved)} solved it; the tanh RNN did not")
    return Verdict(QUALIFIED, measured, f"{', '.join(solved)} solved it; " + "; ".join(notes))


def judge_bi(r: dict) -> Verdict:
    """Claim 7: bi beats uni-left (paired interval above 0), and the gain grows with the words to the right."""
    b = r["bi"]
    o, rows = b["overall"], {row["words"]: row for row in b["by_right"]}
    none = rows.get("0")
    some = [row for w, row in rows.items() if w != "0"]
    pct = lambda x: f"{100 * x:+.1f}"  # noqa: E731
    measured = (
        f"{b['checkpoints']['bi']} against {b['checkpoints']['uni']}, {b['blanks']:,} {b['split']} blanks "
        f"({b['sentences']:,} sentences): top-1 bi {100 * o['bi']:.1f} % vs uni-left {100 * o['uni_left']:.1f} % "
        f"({pct(o['gain'])} points [{pct(o['ci'][0])}, {pct(o['ci'][1])}]); gain with no word to the right "
        + (f"{pct(none['gain'])}" if none else "–")
        + ", with "
        + ", ".join(f"{row['words']}: {pct(row['gain'])}" for row in some)
    )
    if not o["ci"][0] > 0:
        return Verdict(FAILS, measured, "bi is not better than uni-left on these blanks")
    if none is None or not some:
        return Verdict(QUALIFIED, measured, "bi is better; no blanks to compare with and without right context")
    if all(none["ci"][1] < row["ci"][0] for row in some):
        return Verdict(HOLDS, measured, "bi is better, and its gain appears once words follow the blank")
    why = ["bi is better, but its gain does not grow with the words to the right as seeing them would explain"]
    if none["gain"] >= max(row["gain"] for row in some):
        why.append(
            "its largest gain is at the sentence's last word, where the only future it sees is that the sentence "
            "ends there (`<eos>`), which uni-left cannot know"
        )
    later = [row["gain"] for row in some[1:]]
    if len(later) > 1 and max(later) - min(later) < 0.02:
        why.append(f"from {some[1]['words']} words on, more right context adds nothing (gains within 2 points)")
    return Verdict(QUALIFIED, measured, "; ".join(why))


@dataclass(frozen=True)
class Claim:
    number: int
    text: str
    experiment: str
    title: str  # the experiment in a few words, for the table
    needs: tuple[str, ...]  # experiments it cannot be judged without (run by `bilm ledger --claim N`)
    judge: Callable[[dict], Verdict]
    figure: str  # lab_plots function name that draws it
    options: str = ""  # extra options of its command
    uses: tuple[str, ...] = ()  # experiments of other claims it also reads when the folder has them

    @property
    def command(self) -> str:
        return f"bilm ledger --claim {self.number}{self.options} --out reports/ledger"

    @property
    def short_command(self) -> str:
        return f"bilm ledger --claim {self.number}" + (" --uni U --bi B" if self.options else "")


CLAIMS = (
    Claim(
        1,
        "Gradients vanish because the same recurrent matrix multiplies the signal at every step: with small "
        "recurrent weights the gradient shrinks geometrically with distance.",
        "Linear and tanh RNNs with recurrent weights ρQ (Q random orthogonal), ρ < 1, at initialisation: "
        "‖∂L/∂h_{T−k}‖ per step back, median of 100 windows of 60 steps, log-linear fit.",
        "ρ sweep of linear and tanh RNNs, ρ < 1",
        ("radius",),
        judge_geometric,
        "ledger_geometric",
    ),
    Claim(
        2,
        "The derivative of tanh lies in (0, 1] and that of sigmoid in (0, 0.25]; with a recurrent weight below 4 a "
        "sigmoid RNN's factor sigmoid'·W stays below 1 and the gradient vanishes (tanh's threshold is 1).",
        "Sweep of ρ from 0.25 to 16 for linear, sigmoid, tanh and ReLU RNNs (inputs 0.5·N(0, 1), no biases): "
        "per-step factor and half-life against ρ; where it reaches 1 against Pascanu et al.'s bound 1/γ.",
        "ρ sweep 0.25–16: sigmoid, tanh, ReLU, linear",
        ("radius",),
        judge_bound,
        "ledger_bound",
    ),
    Claim(
        3,
        "Stacking more layers of squashing non-linearities makes the vanishing worse.",
        "Fresh sigmoid and tanh RNN language models (64 units, PyTorch's init) with 1–4 layers: g(k) of the input "
        "embedding k words back, 100 random windows of 30 words.",
        "fresh sigmoid / tanh RNNs, 1–4 layers",
        ("init",),
        judge_depth,
        "ledger_depth",
    ),
    Claim(
        4,
        "ReLU does not squash, and avoids the problem (identity initialisation: IRNN).",
        "g(k) at init for ReLU (PyTorch's init) against IRNN and tanh, 1–4 layers; the ReLU column of the ρ sweep; "
        "the IRNN on the adding problem (claim 6).",
        "ReLU (default init) vs IRNN vs tanh; ρ sweep",
        ("init", "radius"),
        judge_relu,
        "ledger_relu",
        uses=("adding",),
    ),
    Claim(
        5,
        "Exploding gradients are tamed by truncated backpropagation, gradient penalties and gradient clipping; "
        "truncation gives up dependencies longer than the truncation length.",
        "Adding problem T=100, IRNN, plain SGD lr 0.01: no remedy, clipping at norm 1, truncated BPTT (10 steps), "
        "the norm-preserving penalty. And T=30 with both markers > 10 steps back, GRU, BPTT 5 against full (30).",
        "adding: SGD IRNN ± remedies; truncated BPTT",
        ("explode", "truncation"),
        judge_explode,
        "ledger_explode",
    ),
    Claim(
        6,
        "Vanishing gradients are countered by weight initialisation, echo state networks and the LSTM.",
        "Adding problem T=200 (solved: test MSE < 0.01): LSTM, GRU, IRNN and the tanh RNN trained with AdamW "
        "(6,000 steps or 3 min each), an ESN of 500 units with a ridge-regression readout.",
        "adding problem at T = 200, five cells",
        ("adding",),
        judge_adding,
        "ledger_adding",
    ),
    Claim(
        7,
        'A bidirectional LSTM fills a word better because it also sees the future: "The boys went to ___ ... and '
        'then they got out of the pool."',
        "bi against uni-left top-1 on every WikiText-2 test blank, paired gain by the words to the right (and to "
        "the left) of the blank, bootstrap over sentences; the notes' sentence filled by both.",
        "bi vs uni-left on WikiText-2 test blanks",
        ("bi",),
        judge_bi,
        "ledger_bi",
        " --uni checkpoints/demo-uni --bi checkpoints/demo-bi",
    ),
)


# -- running and reporting -----------------------------------------------------------------


@dataclass
class Entry:
    claim: Claim
    verdict: Verdict
    results: dict = field(default_factory=dict)


def load_results(out: Path) -> dict:
    """Every experiment result the ledger folder holds, by experiment name."""
    found = {}
    for name in EXPERIMENTS:
        path = Path(out) / f"{name}.json"
        if path.is_file():
            found[name] = json.loads(path.read_text())
    return found


def judge(claim: Claim, results: dict) -> Verdict:
    missing = [name for name in claim.needs if name not in results]
    if missing:
        return Verdict(NOT_RUN, "–", f"no {', '.join(missing)} results in the ledger folder: run `{claim.command}`")
    return claim.judge(results)


def entries(results: dict) -> list[Entry]:
    return [Entry(c, judge(c, results), results) for c in CLAIMS]


def run_ledger(ctx: Context, claims: list[int] | None = None) -> dict:
    """Run the experiments of `claims` (all by default), save each, and write the ledger report from the folder."""
    from .report import jsonable, write_atomic

    chosen = [c for c in CLAIMS if claims is None or c.number in claims]
    if claims and len(chosen) != len(set(claims)):
        raise BilmError(f"claims are numbered 1-{len(CLAIMS)}, got {claims}")
    ctx.out.mkdir(parents=True, exist_ok=True)
    names = list(dict.fromkeys(n for c in chosen for n in c.needs))
    seconds = {}
    for name in names:
        ctx.log(f"experiment {name} ...")
        started = time.perf_counter()
        result = EXPERIMENTS[name](ctx)
        seconds[name] = round(time.perf_counter() - started, 1)
        if result is None:
            continue
        result = dict(result, seconds=seconds[name], quick=ctx.quick)
        write_atomic(ctx.out / f"{name}.json", json.dumps(jsonable(result), indent=2))
        ctx.log(f"experiment {name}: {seconds[name]:.0f} s")
    write_bench(ctx.out)
    return dict(seconds=seconds, **write_report(ctx.out))


def write_bench(out: Path) -> None:
    """Every trained adding-problem run of the folder as a `bilm bench` result (runs/adding.json), for the
    gradients section's benchmark table (`bilm gradients --bench reports/ledger/runs`, `make report`)."""
    from .report import write_atomic

    runs = [r for found in load_results(out).values() for r in found.get("results", []) if "optimizer" in r]
    if runs:
        # as `bilm bench` writes them: a diverged run's figures as NaN (the experiment files hold null)
        nan = ("loss", "mse", "grad_first", "grad_last")
        keep = [
            {k: math.nan if k in nan and v is None else v for k, v in r.items() if k not in ("curve", "grad_norms")}
            for r in runs
        ]
        write_atomic(out / "runs" / "adding.json", json.dumps({"results": keep}, indent=2))


def write_report(out: Path) -> dict:
    from .report import Report, run_meta

    results = load_results(out)
    found = entries(results)
    seconds = {name: r.get("seconds") for name, r in results.items()}
    meta = run_meta({}, experiment_seconds=seconds, quick=any(r.get("quick") for r in results.values()))
    paths = Report("bilm: the ledger of the RNN notes", meta, [ledger_section(found)]).write(out)
    return dict(paths=paths, entries=found)


def verdict_table(found: list[Entry]) -> str:
    from .report import table

    rows = [
        [
            e.claim.number,
            e.claim.text,
            f"{e.claim.title}: `{e.claim.short_command}`",
            e.verdict.measured,
            "–" if e.verdict.verdict == NOT_RUN else f"claim {e.claim.number}",
            f"**{e.verdict.verdict}**: {e.verdict.reason}",
        ]
        for e in found
    ]
    headers = ["#", "claim (the notes)", "experiment and command", "measured", "plot", "verdict (by rule)"]
    return table(headers, rows)


def worked_example(bi: dict | None) -> str:
    """The notes' own sentence filled by both models (claim 7), as a paragraph; empty without results."""
    if not bi or not bi.get("worked"):
        return ""
    shown = lambda c: f"{c['word']} {100 * c['prob']:.1f} %" if c["prob"] is not None else c["word"]  # noqa: E731
    lines = [f"- **{method}**: " + ", ".join(map(shown, cands)) for method, cands in bi["worked"].items()]
    return f"\n\n**The notes' sentence**, `{bi['example']}` (top 5 of each):\n\n" + "\n".join(lines)


def ledger_section(found: list[Entry]):
    """The ledger as one report section: the table, then one figure per claim that has its measurements."""
    from . import lab_plots
    from .report import Section, figure

    figures = []
    for e in found:
        if e.verdict.verdict == NOT_RUN:
            continue
        fig = getattr(lab_plots, e.claim.figure)(e.results)
        figures.append(figure(fig, f"claim{e.claim.number}", f"Claim {e.claim.number}: {e.verdict.verdict}"))
    text = (
        "Each claim of the RNN notes bilm follows, the experiment that tests it (seeded, CPU-sized; one command "
        "each, all of them `make lab`), what it measured, and the verdict a rule in `bilm/ledger.py` reads from "
        "the measurements: *holds*, *holds with a qualification* (which one is said), *does not hold here*, "
        "*not shown within budget* (a run it needs ran out of time first) or *not run*.\n\n"
        + verdict_table(found)
        + "\n\n**The experiments** (all `--out reports/ledger`; U, B: the uni and bi checkpoints):\n\n"
        + "\n".join(f"- **{e.claim.number}.** {e.claim.experiment} `{e.claim.command}`" for e in found)
        + worked_example(found[0].results.get("bi") if found else None)
    )
    data = {str(e.claim.number): dict(claim=e.claim.text, command=e.claim.command, **vars(e.verdict)) for e in found}
    return Section("Ledger: the claims of the RNN notes", text, figures, data, key="ledger")


def ledger_from(folder: str | Path):
    """The ledger section rebuilt from a `bilm ledger --out` folder (for `bilm evaluate --ledger`)."""
    results = load_results(Path(folder))
    if not results:
        raise BilmError(f"{folder}: no ledger results (run bilm ledger --out {folder}, or make lab)")
    return ledger_section(entries(results))
