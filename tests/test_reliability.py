"""Divergence, kills, full disks, hostile checkpoints and bad options: nothing lost, nothing crashes."""

import errno
import io
import json
import math
import random
import time

import pytest
import torch
from click.testing import CliRunner
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file

import bilm
from bilm import checkpoint
from bilm import train as train_module
from bilm.checkpoint import SaveError, load_checkpoint, lock_run, save_checkpoint
from bilm.choices import MAX_BATCH_TOKENS, token_batches
from bilm.cli import cli
from bilm.data import DataConfig, StreamBatches, prepare
from bilm.errors import BilmError
from bilm.predict import CUT_NOTE, Prediction, split_blank
from bilm.repl import Repl
from bilm.train import Trainer, train

from .conftest import animal_sentence, tiny_model, tiny_train

quiet = dict(log=lambda s: None)


def strict_records(run) -> list[dict]:
    """metrics.jsonl, parsed as strict JSON: NaN or Infinity tokens fail the test."""

    def refuse(token):
        raise AssertionError(f"non-JSON token {token} in metrics.jsonl")

    return [json.loads(line, parse_constant=refuse) for line in (run / "metrics.jsonl").read_text().splitlines()]


def finite_weights(path) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in load_file(str(path / "model.safetensors")).values())


# -- 1. numerical faults --------------------------------------------------------------------


def test_a_diverging_run_rolls_back_once_then_stops_with_the_likely_cause(corpus, data_dir, tmp_path):
    out, lines = tmp_path / "run", []
    cfg = tiny_train(optimizer="sgd", lr=50, clip=0, max_steps=60, eval_every=30, log_every=5)
    with pytest.raises(BilmError, match="diverged again after a rollback") as e:
        train(DataConfig(str(corpus)), tiny_model("uni"), cfg, out, data_dir=data_dir, log=lines.append)
    assert "clipping is off" in str(e.value) and "--lr 50" in str(e.value) and "\n" not in str(e.value)
    assert any("step skipped" in line for line in lines)
    assert any("rolled back to step 0" in line and "1.25e+01" in line for line in lines)
    records = strict_records(out)
    assert [r["type"] for r in records].count("rollback") == 1
    for tag in ("last", "best"):
        if (out / tag).exists():
            assert finite_weights(out / tag), tag


def fail_steps(monkeypatch, steps: set[int]):
    """The loss is NaN at these (1-based) training calls: a fault injected into a healthy run."""
    real = train_module.instrument
    calls = {"n": 0}

    def instrument(model, cfg):
        loss_fn, monitors = real(model, cfg)

        def loss(batch, state):
            calls["n"] += 1
            value, state = loss_fn(batch, state)
            return (value * math.nan if calls["n"] in steps else value), state

        return loss, monitors

    monkeypatch.setattr(train_module, "instrument", instrument)


def test_non_finite_steps_are_skipped_without_touching_the_weights(corpus, data_dir, tmp_path, monkeypatch):
    fail_steps(monkeypatch, {5, 6, 9})
    out = tmp_path / "run"
    result = train(DataConfig(str(corpus)), tiny_model("uni"), tiny_train(max_steps=30, log_every=10), out,
                   data_dir=data_dir, **quiet)  # fmt: skip
    assert result["skipped_steps"] == 3 and result["step"] == 30 and math.isfinite(result["valid_ppl"])
    first = strict_records(out)[0]
    assert first["type"] == "train" and first["skipped"] == 3 and math.isfinite(first["loss"])


def test_a_run_of_bad_steps_rolls_back_to_last_good_checkpoint_with_a_lower_lr(corpus, data_dir, tmp_path, monkeypatch):
    fail_steps(monkeypatch, set(range(26, 30)))
    out = tmp_path / "run"
    cfg = tiny_train(max_steps=40, log_every=1, eval_every=20, max_bad_steps=4, lr=1e-2)
    result = train(DataConfig(str(corpus)), tiny_model("uni"), cfg, out, data_dir=data_dir, **quiet)
    assert result["step"] == 40
    records = strict_records(out)
    [rollback] = [r for r in records if r["type"] == "rollback"]
    assert rollback["step"] == max(r["step"] for r in records if r["type"] == "valid" and r["step"] < 26)  # last/
    assert rollback["lr"] == pytest.approx(1e-2 * train_module.ROLLBACK_LR)
    steps = [r["step"] for r in records if r["type"] == "train"]
    assert steps == list(range(1, 41))  # the lost steps were dropped from the curve and trained again


def test_metrics_and_summary_cope_with_a_run_that_never_validated():
    from bilm.cli import summary_line

    line = summary_line(dict(step=0, valid_ppl=None, best_valid_ppl=None, tokens_per_s=0.0), "runs/x")
    assert "valid ppl -" in line


# -- 2. checkpoint / config consistency ------------------------------------------------------


def edit_config(ckpt, **model):
    path = ckpt / "config.json"
    config = json.loads(path.read_text())
    config["model"].update(model)
    path.write_text(json.dumps(config))


@pytest.mark.parametrize(
    "edit, message",
    [
        (dict(hidden_size=2_000_000), "config.json says hidden_size=2000000 but model.safetensors holds the weights "
         "of hidden_size=32"),
        (dict(layers=3), "layers=3"),
        (dict(kind="bi"), "kind='bi'"),
        (dict(cell="gru"), "cell='gru'"),
        (dict(hidden_size=-5), "hidden_size=-5"),
    ],
)  # fmt: skip
def test_a_config_that_disagrees_with_its_weights_fails_in_one_line_before_any_allocation(
    trained, tmp_path, edit, message, monkeypatch
):
    ckpt = tmp_path / "ckpt"
    save_checkpoint(ckpt, *_parts(load_checkpoint(trained["uni"])))
    edit_config(ckpt, **edit)
    built, real = [], checkpoint.build_model

    def spy(cfg):  # models on the meta device (shapes only) are fine; a real one must not be built
        if torch.get_default_device().type != "meta":
            built.append(cfg)
        return real(cfg)

    monkeypatch.setattr(checkpoint, "build_model", spy)
    start = time.perf_counter()
    with pytest.raises(BilmError) as e:
        load_checkpoint(ckpt)
    assert message in str(e.value) and "\n" not in str(e.value)
    assert not built and time.perf_counter() - start < 5


def _parts(c):
    return c.model, c.tokenizer, c.config, c.metrics


def test_a_config_from_another_run_is_refused_by_fill(trained, tmp_path):
    ckpt = tmp_path / "mixed"
    save_checkpoint(ckpt, *_parts(load_checkpoint(trained["uni"])))
    (ckpt / "config.json").write_text((trained["bi"] / "best" / "config.json").read_text())
    result = CliRunner().invoke(cli, ["fill", str(ckpt), "the ___ barks ."])
    assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
    assert "kind='bi'" in result.output and "Traceback" not in result.output


def test_a_truncated_safetensors_header_is_a_one_line_error(trained, tmp_path):
    ckpt = tmp_path / "ckpt"
    save_checkpoint(ckpt, *_parts(load_checkpoint(trained["uni"])))
    (ckpt / "model.safetensors").write_bytes((10**12).to_bytes(8, "little") + b"{}")
    with pytest.raises(BilmError, match="model.safetensors is corrupt"):
        load_checkpoint(ckpt)


# -- 3. crash safety by time, kills ----------------------------------------------------------


def test_last_is_also_saved_by_time_between_validations(corpus, data_dir, tmp_path, monkeypatch):
    saves = []
    real = train_module.save_checkpoint
    monkeypatch.setattr(train_module, "save_checkpoint", lambda path, *a: (saves.append(a[-1]), real(path, *a)))
    monkeypatch.setattr(train_module, "SAVE_COST", 0)
    cfg = tiny_train(max_steps=15, save_every_minutes=1e-9, epochs=1000)
    train(DataConfig(str(corpus)), tiny_model("uni"), cfg, tmp_path / "run", data_dir=data_dir, **quiet)
    steps = [s["counters"]["step"] for s in saves if s is not None]
    assert steps[:3] == [0, 1, 2] and 14 in steps  # at the start, then after every step


def test_a_killed_run_resumes_from_its_last_timed_save_without_repeats_or_gaps(corpus, data_dir, tmp_path, monkeypatch):
    out = tmp_path / "run"
    real_step = Trainer.train_step

    def killed(self, batch, window):
        if self.step == 17:
            raise SystemExit("kill -9")  # nothing is saved on the way out, as with SIGKILL
        return real_step(self, batch, window)

    monkeypatch.setattr(Trainer, "train_step", killed)
    monkeypatch.setattr(train_module, "SAVE_COST", 0)
    cfg = tiny_train(max_steps=30, log_every=1, save_every_minutes=1e-9)
    with pytest.raises(SystemExit):
        train(DataConfig(str(corpus)), tiny_model("uni"), cfg, out, data_dir=data_dir, **quiet)
    with (out / "metrics.jsonl").open("a") as f:
        f.write('{"type": "train", "loss": 2.')  # a torn line, as a kill mid-write leaves
    monkeypatch.setattr(Trainer, "train_step", real_step)
    result = train(out=out, data_dir=data_dir, resume=True, **quiet)
    assert result["step"] == 30
    steps = [r["step"] for r in strict_records(out) if r["type"] == "train"]
    assert steps == list(range(1, 31))


def test_a_kill_between_the_two_renames_of_a_save_keeps_the_checkpoint(trained, tmp_path):
    run = tmp_path / "run"
    save_checkpoint(run / "last", *_parts(load_checkpoint(trained["uni"])))
    (run / "last").rename(run / ".last.old")  # the state a kill between path.rename(old) and tmp.rename(path) leaves
    assert bilm.load(run).predict("the dog then", k=1).candidates


# -- 4. one writer per run folder ------------------------------------------------------------


def test_a_second_trainer_on_a_running_folder_is_refused(corpus, data_dir, tmp_path):
    out = tmp_path / "run"
    with lock_run(out):
        with pytest.raises(BilmError, match="in use by a running bilm train"):
            train(DataConfig(str(corpus)), tiny_model("uni"), tiny_train(max_steps=2), out, data_dir=data_dir, **quiet)
    assert (out / ".lock").exists()  # what a crashed run leaves: it blocks nothing
    train(DataConfig(str(corpus)), tiny_model("uni"), tiny_train(max_steps=2), out, data_dir=data_dir, **quiet)


# -- 5. full disk ----------------------------------------------------------------------------


def test_a_full_disk_keeps_the_previous_checkpoint_and_leaves_no_half_written_one(trained, tmp_path, monkeypatch):
    ckpt = load_checkpoint(trained["uni"])
    save_checkpoint(tmp_path / "last", *_parts(ckpt))

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint, "save_model", full)
    with pytest.raises(SaveError, match="the disk is full; the previous .* is intact"):
        save_checkpoint(tmp_path / "last", *_parts(ckpt))
    assert [p.name for p in tmp_path.iterdir()] == ["last"]
    assert bilm.load(tmp_path / "last").predict("the dog then", k=1).candidates


def test_training_warns_on_a_failed_save_and_stops_after_three_in_a_row(corpus, data_dir, tmp_path, monkeypatch):
    real, lines = checkpoint.save_model, []
    calls = {"n": 0}

    def sometimes_full(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] >= 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(checkpoint, "save_model", sometimes_full)
    cfg = tiny_train(max_steps=200, eval_every=5)
    with pytest.raises(BilmError, match="3 saves failed in a row"):
        train(DataConfig(str(corpus)), tiny_model("uni"), cfg, tmp_path / "run", data_dir=data_dir, log=lines.append)
    assert any("the disk is full" in line and "training continues" in line for line in lines)
    assert finite_weights(tmp_path / "run" / "last")


# -- 6. resume continues the schedule it promises --------------------------------------------


def lr_by_step(run) -> dict[int, float]:
    return {r["step"]: r["lr"] for r in strict_records(run) if r["type"] == "train"}


@pytest.mark.parametrize("schedule", ["warmdown", "cosine"])
def test_resume_with_a_larger_budget_follows_the_schedule_of_that_budget(schedule, corpus, data_dir, tmp_path):
    """40 steps, then --max-steps 80: from step 41 the rate is the 80-step schedule's, not the annealed one."""
    out, lr0 = tmp_path / "run", 1e-2
    cfg = tiny_train(max_steps=40, log_every=1, lr=lr0, schedule=schedule, plateau_patience=10**6)
    train(DataConfig(str(corpus)), tiny_model("uni"), cfg, out, data_dir=data_dir, **quiet)
    assert lr_by_step(out)[40] < lr0 / 10  # annealed to almost nothing
    train(out=out, data_dir=data_dir, resume=True, budget=dict(max_steps=80), **quiet)
    lrs = lr_by_step(out)
    for step in range(41, 81):
        progress = (step - 1) / 80  # the rate of step s is set before it, at s - 1 steps done
        if schedule == "cosine":
            expected = lr0 * 0.5 * (1 + math.cos(math.pi * progress))
        else:
            expected = lr0 * min(1.0, (1 - progress) / 0.3)
        assert lrs[step] == pytest.approx(expected), step


def test_a_validation_at_an_epochs_last_step_runs_once(corpus, data_dir, tmp_path):
    data = prepare(DataConfig(str(corpus)), data_dir=data_dir)
    per_epoch = len(StreamBatches(data.stream("train"), 16, 12))
    out = tmp_path / "run"
    cfg = tiny_train(max_steps=2 * per_epoch, eval_every=per_epoch, log_every=0)
    train(DataConfig(str(corpus)), tiny_model("uni"), cfg, out, data_dir=data_dir, **quiet)
    valid = [r["step"] for r in strict_records(out) if r["type"] == "valid"]
    assert valid == [per_epoch, 2 * per_epoch]


def test_eval_every_counts_from_the_last_validation_so_an_epochs_end_resets_it(corpus, data_dir, tmp_path):
    """Two validations a few steps apart (the epoch's end, then a multiple of N) would compare noise and cut
    the learning rate for it: the mid-epoch ones start again from each epoch's end."""
    data = prepare(DataConfig(str(corpus)), data_dir=data_dir)
    per_epoch = len(StreamBatches(data.stream("train"), 16, 12))
    every = per_epoch * 2 // 3
    out = tmp_path / "run"
    cfg = tiny_train(max_steps=2 * per_epoch, eval_every=every, log_every=0)
    train(DataConfig(str(corpus)), tiny_model("uni"), cfg, out, data_dir=data_dir, **quiet)
    valid = [r["step"] for r in strict_records(out) if r["type"] == "valid"]
    assert valid == [every, per_epoch, per_epoch + every, 2 * per_epoch]


def test_resume_refuses_options_that_conflict_with_the_saved_run(trained, data_dir):
    with pytest.raises(BilmError, match=r"hidden_size=64 \(the run has 32\)"):
        train(out=trained["uni"], data_dir=data_dir, resume=True, given={"model.hidden_size": 64}, **quiet)
    result = CliRunner().invoke(
        cli, ["train", "--resume", "--out", str(trained["uni"]), "--hidden", "64", "--data-dir", str(data_dir)]
    )
    assert result.exit_code == 1 and "hidden_size=64" in result.output and result.output.count("\n") == 1


def test_epochs_are_numbered_alike_in_the_log_and_on_resume(corpus, data_dir, tmp_path):
    data = prepare(DataConfig(str(corpus)), data_dir=data_dir)
    per_epoch = len(StreamBatches(data.stream("train"), 16, 12))
    out, lines = tmp_path / "run", []
    cfg = tiny_train(max_steps=per_epoch)
    train(DataConfig(str(corpus)), tiny_model("uni"), cfg, out, data_dir=data_dir, log=lines.append)
    assert any(f"step {per_epoch:>6} | epoch 1 |" in line for line in lines), lines
    train(out=out, data_dir=data_dir, resume=True, budget=dict(max_steps=per_epoch + 3), log=lines.append)
    assert any("(epoch 2, batch 0)" in line for line in lines)
    assert any(f"step {per_epoch + 3:>6} | epoch 2 |" in line for line in lines)


def test_the_rng_state_is_saved_whole(trained):
    from bilm.checkpoint import load_trainer_state

    state = load_trainer_state(trained["uni"] / "last")
    assert torch.equal(state["rng"], state["rng"]) and state["rng"].dtype == torch.uint8
    if torch.cuda.is_available():  # pragma: no cover - CPU machines
        assert "cuda_rng" in state


# -- 7. every option validated before any work ------------------------------------------------

TRAIN = ["train", "--corpus", "/no/such/corpus", "--out", "/no/such/run"]


@pytest.mark.parametrize(
    "args, option",
    [
        (TRAIN + ["--cell", "lstn"], "--cell"),
        (TRAIN + ["--init", "orthogonl"], "--init"),
        (TRAIN + ["--batch-size", "0"], "--batch-size"),
        (TRAIN + ["--dropout", "1.5"], "--dropout"),
        (TRAIN + ["--lr", "-1"], "--lr"),
        (TRAIN + ["--hidden", "0"], "--hidden"),
        (TRAIN + ["--max-vocab", "3"], "--max-vocab"),
        (TRAIN + ["--min-freq", "0"], "--min-freq"),
        (TRAIN + ["--device", "gpu"], "--device"),
        (["prepare", "/no/such/corpus", "--max-vocab", "-5"], "--max-vocab"),
        (["fill", "/no/such/ckpt", "the ___ .", "-k", "0"], "-k"),
        (["fill", "/no/such/ckpt", "the ___ .", "--device", "tpu"], "--device"),
        (["predict", "/no/such/ckpt", "the", "--device", "gpu"], "--device"),
        (["repl", "/no/such/ckpt", "--device", "gpu"], "--device"),
        (["evaluate", "--uni", "/no/such/ckpt", "--out", "/tmp/r", "--device", "gpu"], "--device"),
        (["evaluate", "--uni", "/no/such/ckpt", "--out", "/tmp/r", "--rescore-sample", "-1"], "--rescore-sample"),
        (["gradients", "/no/such/ckpt", "--lengths", "10,x"], "--lengths"),
        (["gradients", "--untrained", "--cell", "lstm,lstn"], "--cell"),
        (["gradients", "--untrained", "--vocab", "2"], "--vocab"),
        (["bench", "adding", "--cells", "gru,foo"], "--cells"),
        (["bench", "adding", "--lr", "fast"], "--lr"),
        (["bench", "adding", "--steps", "0"], "--steps"),
    ],
)
def test_a_bad_option_is_a_usage_error_before_anything_is_read(args, option):
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert f"Invalid value for '{option}'" in result.output and "Traceback" not in result.output


def test_cuda_asked_for_without_cuda_says_so(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    result = CliRunner().invoke(cli, ["fill", "/no/such/ckpt", "the ___ .", "--device", "cuda"])
    assert result.exit_code == 2 and "CUDA is not available" in result.output


# -- 8. bounded memory for any input ---------------------------------------------------------


def long_text(words: int, blank: bool = True) -> str:
    rng = random.Random(0)
    sentences = " ".join(animal_sentence(rng) for _ in range(words // 6 + 1)).split()[:words]
    if blank:
        sentences[words // 2] = "___"
    return " ".join(sentences)


@pytest.mark.parametrize("kind", ["uni", "bi"])
def test_a_20000_word_text_is_answered_in_passes_of_bounded_size(trained, kind, monkeypatch):
    predictor = bilm.load(trained[kind])
    sizes, cls = [], type(predictor.model)
    real = cls.forward

    def spy(self, ids, *args, **kwargs):
        sizes.append(ids.numel())
        return real(self, ids, *args, **kwargs)

    monkeypatch.setattr(cls, "forward", spy)
    preds = predictor.fill(long_text(20_000), k=3) + [predictor.predict(long_text(20_000, blank=False), k=3)]
    assert all(CUT_NOTE in p.note and p.candidates for p in preds), [p.note for p in preds]
    assert max(sizes) <= MAX_BATCH_TOKENS
    short = predictor.fill("the ___ then again barks .", k=3)
    assert all(CUT_NOTE not in p.note for p in short)


def test_passes_hold_at_most_the_token_budget():
    lengths = [5, 3000, 40, 40, 900, 1, 16_000, 17_000]
    batches = token_batches(lengths, budget=4096)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        assert len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 4096


# -- 9. fuzzing: arbitrary Unicode raises nothing but BilmError -------------------------------

FRAGMENTS = [
    "___", "_____", "[MASK]", "<mask>", "the", "cat", "barks", "meows", " ", "  ", ".", ",", "!?", "'", '"',
    "\x00", "\t", "\n", "\r", "\x1b[31m", "\u200b", "\u202e", "\ufeff", "\ud800", "\udfff", "שָׁלוֹם", "مرحبا",
    "日本語", "🐈", "e\u0301", "ﬁ", "zebra", "<unk>", "<eos>", "<blank>", ":k", ":choices", "|", "\\", "%s", "{}",
]  # fmt: skip
fuzz_text = st.one_of(
    st.text(st.characters(exclude_categories=()), max_size=60),
    st.lists(st.sampled_from(FRAGMENTS), max_size=25).map("".join),
)
fuzz = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
HUGE = "the cat " * 12_500 + "___ barks ."  # a 100,000-character line


def only_bilm_errors(call, *args):
    try:
        return call(*args)
    except BilmError as e:
        assert "\n" not in str(e)
        return None


@fuzz
@given(text=fuzz_text)
@example(text=HUGE)
@example(text="!!! ... ,,, ???")
@example(text="zyzzyva quokka ___ xylophone")
@example(text="\ud800___\udfff")
def test_the_blank_parser_takes_any_text(text):
    result = only_bilm_errors(split_blank, text)
    if result is not None:
        left, right = result
        assert len(left) + len(right) < len(text)


@pytest.fixture(scope="module")
def predictors(trained):
    return {kind: bilm.load(trained[kind]) for kind in ("uni", "bi")}


@fuzz
@given(text=fuzz_text)
@example(text=HUGE)
@example(text="\u202eshe said ___ \u202c")
def test_the_tokenizer_takes_any_text_and_round_trips_its_words(predictors, text):
    tok = predictors["uni"].tokenizer
    ids = only_bilm_errors(tok.encode, text)
    if ids is not None:
        assert all(0 <= i < len(tok) for i in ids)
        words = tok.decode(ids)
        assert tok.encode(" ".join(w for w in words if w != "<unk>")) == [i for i in ids if i != tok.unk_id]


@fuzz
@given(line=fuzz_text)
@example(line=":k 99999999999999999999")
@example(line=":choices \ud800 | | ,")
@example(line=":" + "k" * 1000)
def test_the_repl_answers_any_line_without_raising(predictors, line):
    out = io.StringIO()
    repl = Repl([predictors["bi"], predictors["uni"]], out, k=3, width=80)
    assert repl.handle(line) in (True, False)


@fuzz
@given(text=fuzz_text, kind=st.sampled_from(["uni", "bi"]))
@example(text=HUGE, kind="uni")
@example(text=HUGE, kind="bi")
@example(text="... ___ !!!", kind="uni")
def test_fill_and_predict_take_any_text(predictors, text, kind):
    p = predictors[kind]
    for call in (p.fill, p.predict):
        preds = only_bilm_errors(call, text, 3)
        for pred in [preds] if isinstance(preds, Prediction) else preds or []:
            assert all(c.prob is None or 0 <= c.prob <= 1 for c in pred.candidates)
