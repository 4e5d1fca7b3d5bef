import json
import random

import pytest
import torch

import bilm
from bilm.data import DataConfig
from bilm.errors import BilmError
from bilm.report import trained_on
from bilm.train import Trainer, train

from .conftest import ANIMALS, animal_sentence, tiny_model, tiny_train


def test_bi_model_learns_a_blank_only_the_right_context_decides(trained):
    bi, uni = bilm.load(trained["bi"]), bilm.load(trained["uni"])
    rng = random.Random(42)
    hits = {"bi": 0, "bi-rescore": 0, "uni-left": 0, "uni-rescore": 0}
    n = 40
    for _ in range(n):
        words = animal_sentence(rng).split()
        answer, words[1] = words[1], "___"
        text = " ".join(words)
        plain, voted = bi.fill(text, k=1)
        hits["bi"] += plain.candidates[0].word == answer
        hits["bi-rescore"] += voted.candidates[0].word == answer
        left, rescored = uni.fill(text, k=1)
        hits["uni-left"] += left.candidates[0].word == answer
        hits["uni-rescore"] += rescored.candidates[0].word == answer
    acc = {m: h / n for m, h in hits.items()}
    assert acc["bi"] >= 0.95 and acc["bi-rescore"] >= 0.95, acc
    assert acc["uni-left"] <= 0.5, acc  # 1 in 4 by chance: the left context says nothing
    assert acc["bi"] - acc["uni-left"] >= 0.45, acc
    assert acc["uni-rescore"] >= 0.9, acc  # the whole-sentence score does see the sound


def test_uni_model_predicts_the_sound_its_animal_makes(trained):
    uni = bilm.load(trained["uni"])
    for animal, sound in ANIMALS.items():
        top = uni.predict(f"the {animal} then later", k=1).candidates[0]
        assert top.word == sound
        assert top.prob > 0.5


def test_validation_perplexity_falls_during_training(trained):
    for run in trained.values():
        valid = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        valid = [r for r in valid if r["type"] == "valid"]
        assert valid[-1]["ppl"] < valid[0]["ppl"] < 50


def _train_losses(run):
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in records if r["type"] == "train"]


@pytest.mark.parametrize("kind", ["uni", "bi"])
def test_resumed_run_continues_the_same_loss_curve(kind, corpus, data_dir, tmp_path):
    cfg = dict(max_steps=40, log_every=1, eval_every=15, lr=3e-3)
    model = tiny_model(kind, dropout=0.3)  # dropout: the RNG state must resume too
    whole, part = tmp_path / "whole", tmp_path / "part"
    train(DataConfig(str(corpus)), model, tiny_train(**cfg), whole, data_dir=data_dir, log=lambda s: None)
    train(
        DataConfig(str(corpus)),
        model,
        tiny_train(**dict(cfg, max_steps=23)),
        part,
        data_dir=data_dir,
        log=lambda s: None,
    )
    train(out=part, data_dir=data_dir, resume=True, budget=dict(max_steps=40), log=lambda s: None)
    steps, losses = zip(*_train_losses(part), strict=True)
    assert steps == tuple(range(1, 41))
    assert losses == pytest.approx([loss for _, loss in _train_losses(whole)], rel=1e-5)


def test_a_run_resumed_on_another_setup_records_where_each_part_trained(corpus, data_dir, tmp_path):
    out, threads = tmp_path / "run", torch.get_num_threads()
    train(
        DataConfig(str(corpus)), tiny_model("uni"), tiny_train(max_steps=5), out, data_dir=data_dir, log=lambda s: None
    )
    torch.set_num_threads(threads + 1)  # the second part runs on another setup, as on another machine
    try:
        train(out=out, data_dir=data_dir, resume=True, budget=dict(max_steps=9), log=lambda s: None)
    finally:
        torch.set_num_threads(threads)
    metrics = json.loads((out / "last" / "metrics.json").read_text())
    assert [(leg["from_step"], leg["threads"]) for leg in metrics["legs"]] == [(0, threads), (5, threads + 1)]
    assert metrics["threads"] == threads + 1  # the top-level figures say where it trained last
    described = trained_on(metrics)
    assert f"from step 0: fp32, {metrics['machine']}, {threads} thread(s)" in described
    assert f"from step 5: fp32, {metrics['machine']}, {threads + 1} thread(s)" in described


def test_ctrl_c_saves_a_checkpoint_that_resumes(corpus, data_dir, tmp_path, monkeypatch):
    out = tmp_path / "run"
    real_step = Trainer.train_step

    def interrupted(self, batch, window):
        if self.step == 7:
            raise KeyboardInterrupt
        return real_step(self, batch, window)

    monkeypatch.setattr(Trainer, "train_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(
            DataConfig(str(corpus)),
            tiny_model("uni"),
            tiny_train(max_steps=20),
            out,
            data_dir=data_dir,
            log=lambda s: None,
        )
    monkeypatch.setattr(Trainer, "train_step", real_step)
    state = json.loads((out / "last" / "trainer.json").read_text())
    assert any(pair[0] == "counters" for pair in state["__dict__"])
    result = train(out=out, data_dir=data_dir, resume=True, log=lambda s: None)
    assert result["step"] == 20


def test_training_into_an_existing_run_asks_for_resume(trained, data_dir, corpus):
    with pytest.raises(BilmError, match="--resume"):
        train(DataConfig(str(corpus)), tiny_model("uni"), tiny_train(), trained["uni"], data_dir=data_dir)


def test_every_parameter_gets_a_gradient(trained):
    for kind in ("uni", "bi"):
        model = bilm.load(trained[kind]).model.train()
        from bilm.data import pad_sentences
        from bilm.models import Batch

        if kind == "uni":
            ids = torch.randint(5, model.cfg.vocab_size, (3, 9))
            loss, _ = model.loss(Batch(ids[:, :-1], ids[:, 1:]))
        else:
            loss, _ = model.loss(pad_sentences([[5, 6, 7], [8, 9]], 2, 3, 0))
        loss.backward()
        missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
        assert not missing, missing


def test_logged_train_loss_is_the_mean_over_tokens_not_over_batches():
    from bilm.train import _Window

    window = _Window()
    window.add(loss=4.0, norm=1.0, clipped=False, tokens=10, seconds=0.1)  # a batch of short sentences
    window.add(loss=1.0, norm=1.0, clipped=False, tokens=90, seconds=0.1)  # a batch of long ones
    assert window.summary()["loss"] == pytest.approx((4.0 * 10 + 1.0 * 90) / 100)
