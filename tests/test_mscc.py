"""MSCC: the real files parse and align; a 3-question file gives the accuracy computed by hand."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from bilm.checkpoint import save_checkpoint
from bilm.cli_eval import mscc as mscc_command
from bilm.errors import BilmError
from bilm.models import ModelConfig, build_model
from bilm.mscc import accuracy, default_dir, evaluate_mscc, load_questions, score, score_both, wilson
from bilm.tokenizer import Tokenizer

# Probabilities of a context-free model; the other words share what is left.
PROBS = {"cat": 0.3, "dog": 0.2, "fish": 0.1, "bird": 0.05, "tea": 0.02, "-": 0.02, "cup": 0.01}
WORDS = ["the", "sat", ",", "on", "mat", ".", "a", "swam", "here", *PROBS]

QUESTIONS = """id,question,a),b),c),d),e)
1,"the _____ sat , on the mat .",cat,dog,fish,bird,xyzzy
2,a _____ swam .,fish,cat,tea-cup,bird,dog
3,"here , _____ .",qq,rr,ss,tt,uu
"""
ANSWERS = "id,answer\n1,a\n2,a\n3,b\n"
# By hand: Q1 cat is the most likely -> right. Q2 cat beats the key fish -> wrong.
# Q3 every choice is out of vocabulary: a 5-way tie, 1/5 expected. Accuracy (1 + 0 + 0.2) / 3 = 0.4.


def constant_model(kind: str, tok: Tokenizer):
    cfg = ModelConfig(kind=kind, vocab_size=len(tok), emb_size=4, hidden_size=4, layers=1, dropout=0.0)
    cfg.tie_weights, cfg.output = False, "full"
    model = build_model(cfg).eval()
    p = torch.full((len(tok),), (1 - sum(PROBS.values())) / (len(tok) - len(PROBS)))
    for w, q in PROBS.items():
        p[tok.id(w)] = q
    with torch.no_grad():
        model.output.decoder.weight.zero_()
        model.output.decoder.bias.copy_(p.log())
    return model


@pytest.fixture
def files(tmp_path) -> tuple[Path, Path]:
    (tmp_path / "q.csv").write_text(QUESTIONS)
    (tmp_path / "a.csv").write_text(ANSWERS)
    return tmp_path / "q.csv", tmp_path / "a.csv"


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return Tokenizer.train([WORDS], pretokenized=False)


def test_real_mscc_parses_and_aligns():
    folder = default_dir()
    if folder is None:
        pytest.skip("../shared/benchmarks/mscc not present")
    qs = load_questions(folder / "testing_data.csv", folder / "test_answer.csv")
    assert len(qs) == 1040 and [q.id for q in qs] == list(range(1, 1041))
    assert all(len(q.choices) == 5 and all(q.choices) for q in qs)
    assert Counter("abcde"[q.answer] for q in qs) == {"a": 207, "b": 203, "c": 201, "d": 225, "e": 204}
    # Question 2 is quoted in the file because it contains commas; its key is (a) daintily.
    assert qs[1].choices[qs[1].answer] == "daintily" and "bedroom , with" in qs[1].left


def test_three_questions_by_hand(files, tok):
    qs = load_questions(*files)
    assert qs[0].left == "the " and qs[0].right == " sat , on the mat ." and qs[2].answer == 1
    for kind in ("bi", "uni"):
        scores, counts = score(constant_model(kind, tok), tok, qs, "cpu")
        result = accuracy(scores, [q.answer for q in qs])
        assert result["accuracy"] == pytest.approx(0.4)
        assert result["predictions"][:2] == "ab" and result["tied_questions"] == 1
        assert counts["oov_candidates"] == 6 and counts["oov_keys"] == 1 and counts["multi_token_candidates"] == 1
    # bi-blank scores are the candidate's log-probability at the blank, summed over its tokens; bi's
    # pseudo-log-likelihoods add the same rest of the sentence to each (this model ignores the context).
    whole, span, _ = score_both(constant_model("bi", tok), tok, qs, "cpu")
    assert span[1, 0] == pytest.approx(math.log(0.1), abs=1e-5)
    assert span[1, 2] == pytest.approx(math.log(0.02 * 0.02 * 0.01), abs=1e-4)
    assert whole[1] - span[1] == pytest.approx(np.full(5, whole[1, 0] - span[1, 0]), abs=1e-4)
    assert whole[1, 0] < span[1, 0] - 1
    assert np.isneginf(whole[0, 4]) and np.isneginf(whole[2]).all() and np.isneginf(span[2]).all()
    # uni scores differ by exactly the candidates' log-probabilities (the rest of the sentence is shared).
    scores, _ = score(constant_model("uni", tok), tok, qs, "cpu")
    assert scores[0, 0] - scores[0, 1] == pytest.approx(math.log(0.3 / 0.2), abs=1e-4)


def test_wilson_by_hand():
    lo, hi = wilson(50, 100)
    assert (lo, hi) == pytest.approx((0.4038, 0.5962), abs=1e-4)


def test_loader_rejects_bad_files(tmp_path, files):
    bad = tmp_path / "bad.csv"
    bad.write_text("id,question,a),b),c),d),e)\n1,no blank here,a,b,c,d,e\n")
    with pytest.raises(BilmError, match="exactly one"):
        load_questions(bad)
    short = tmp_path / "short.csv"
    short.write_text("id,answer\n1,a\n2,a\n")
    with pytest.raises(BilmError, match="do not match"):
        load_questions(files[0], short)


def test_mscc_command(tmp_path, files, tok):
    model = constant_model("bi", tok)
    config = dict(data={"corpus": "test"}, model=model.cfg.to_dict(), train={"seed": 1}, command="test")
    save_checkpoint(tmp_path / "bi", model, tok, config, {})
    args = ["--bi", str(tmp_path / "bi"), "--questions", str(files[0]), "--answers", str(files[1])]
    result = CliRunner().invoke(mscc_command, [*args, "--out", str(tmp_path / "rep"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "MSCC accuracy 40.0 %" in result.output
    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert report["sections"]["mscc"]["models"]["bi"]["accuracy"] == pytest.approx(0.4)
    assert [a["accuracy"] for a in report["sections"]["mscc"]["anchors"]] == [20.0, 39.0, 55.4, 64.0]


def test_uni_and_bi_together_rank_by_the_sum_of_their_log_probabilities(files, tok):
    qs = load_questions(*files)
    uni, bi = constant_model("uni", tok), constant_model("bi", tok)
    with torch.no_grad():  # a bi model that prefers fish: alone it gets Q2 right and Q1 wrong
        bi.output.decoder.bias[tok.id("fish")] = math.log(0.9)
    result = evaluate_mscc({"uni": (uni, tok), "bi": (bi, tok)}, qs, torch.device("cpu"))
    both = score(uni, tok, qs, "cpu")[0] + score(bi, tok, qs, "cpu")[0]
    assert set(result["models"]) == {"uni", "bi", "bi-blank", "uni+bi"}
    assert result["models"]["uni+bi"]["kind"] == "uni+bi"
    expected = accuracy(both, [q.answer for q in qs])
    assert result["models"]["uni+bi"]["predictions"] == expected["predictions"]
    assert result["models"]["uni+bi"]["accuracy"] == pytest.approx(expected["accuracy"])
    assert result["models"]["uni+bi"]["predictions"] != result["models"]["uni"]["predictions"]
