"""Evaluation numbers on cases a person can check by hand, and on tiny trained models."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from bilm import machine
from bilm.cli_eval import evaluate as evaluate_command
from bilm.data import DataConfig
from bilm.evaluate import (
    Bootstrap,
    FillConfig,
    fill_in,
    fill_perplexity,
    length_bucket,
    rank_targets,
    relative_position,
    special_ids,
    stream_perplexity,
    summarize,
    target_ranks,
    word_classes,
)
from bilm.models import ModelConfig, build_model
from bilm.tokenizer import Tokenizer
from bilm.train import TrainConfig, train

WORDS = [f"w{i}" for i in range(15)]  # ids 5..19, after the 5 specials


def constant_model(kind: str, logits: torch.Tensor):
    """A model whose prediction ignores the context: log_softmax(logits) everywhere."""
    cfg = ModelConfig(kind=kind, vocab_size=len(logits), emb_size=4, hidden_size=4, layers=1, dropout=0.0)
    cfg.tie_weights, cfg.output = False, "full"
    model = build_model(cfg).eval()
    with torch.no_grad():
        model.output.decoder.weight.zero_()
        model.output.decoder.bias.copy_(logits)
    return model


def ranked_logits() -> torch.Tensor:
    """w0 most likely, then w1, ...; <eos> above them all, to check that specials never compete."""
    logits = torch.zeros(5 + len(WORDS))
    logits[5:] = -torch.arange(len(WORDS), dtype=torch.float)
    logits[3] = 10.0
    return logits


def test_target_ranks_by_hand():
    logp = torch.tensor([[0.0, 9.0, 0.5, 0.2, 0.1], [0.0, 0.0, 0.1, 0.3, 0.3]])
    # Row 0: target 3 (0.2) is beaten by 0.5 only (column 1 is excluded). Row 1: ties do not count.
    assert target_ranks(logp, torch.tensor([3, 4]), torch.tensor([1])).tolist() == [2, 1]


@pytest.mark.parametrize("output", ["adaptive", "full"])
def test_rank_targets_equals_ranking_the_full_distribution(output):
    torch.manual_seed(0)
    cfg = ModelConfig(kind="bi", vocab_size=3000, emb_size=32, hidden_size=32, output=output, cutoffs=[100, 1000])
    model = build_model(cfg).eval()
    h, targets = torch.randn(400, 32) * 3, torch.randint(5, 3000, (400,))
    targets[:50] = torch.randint(5, 100, (50,))  # some in the adaptive head
    with torch.inference_mode():
        ranks, logp = rank_targets(model, h, targets, special_ids(model))
        full = model.log_prob(h)
    assert torch.equal(ranks, target_ranks(full, targets, special_ids(model)))
    assert torch.allclose(logp, full[torch.arange(400), targets])


def test_stream_perplexity_by_hand():
    # p(a) = 1/2, p(b) = 1/4 whatever the context; the stream alternates a b a b ...
    p = torch.full((20,), 0.25 / 18)
    p[5], p[6] = 0.5, 0.25
    model = constant_model("uni", p.log())
    ids = np.array([5, 6] * 11 + [5], dtype=np.int64)  # 23 tokens; 2 rows of 11 predict ids[1:23]
    result = stream_perplexity(model, ids, "cpu", batch_size=2, bptt=5)
    assert result["tokens"] == 22
    assert result["ppl"] == pytest.approx(math.sqrt(2 * 4))  # exp((ln 2 + ln 4) / 2)


def test_fill_perplexity_by_hand():
    p = torch.full((20,), 0.25 / 18)
    p[5], p[6] = 0.5, 0.25
    model = constant_model("bi", p.log())
    ids = np.array([5, 5, 6, 3, 6, 3], dtype=np.int64)
    spans = np.array([[0, 3], [4, 5]])  # "a a b" and "b": 4 words, <eos> never a target
    result = fill_perplexity(model, ids, spans, "cpu")
    assert result["tokens"] == 4
    assert result["ppl"] == pytest.approx(math.exp((2 * math.log(2) + 2 * math.log(4)) / 4))


def test_topk_and_mrr_by_hand():
    # Ranks under ranked_logits: w_j has rank j + 1. One <unk> target, excluded.
    sentences = [[5 + 0, 5 + 3, 5 + 7], [5 + 12, 1, 5 + 1]]  # ranks 1, 4, 8 | 13, (unk), 2
    uni, bi = constant_model("uni", ranked_logits()), constant_model("bi", ranked_logits())
    cfg = FillConfig(rescore_sample=100, shortlist=5, bi_shortlist=5, bootstrap=50)
    result = fill_in(sentences, "cpu", cfg, uni=uni, bi=bi)
    assert result.excluded_unk == 1
    for method in ("bi", "uni-left"):
        assert result.ranks[method].tolist() == [1, 4, 8, 13, 2]
    # Rescoring a context-free model keeps the order (the other words score the same whatever fills
    # the blank); ranks 8 and 13 are outside the top-5 shortlist.
    for method in ("uni-rescore", "bi-rescore", "uni+bi"):
        assert result.ranks[method].tolist() == [1, 4, math.inf, math.inf, 2]
    tok = Tokenizer.train([WORDS])
    summary = summarize(result, tok, cfg)
    bi = summary["methods"]["bi"]["all"]["all"]
    assert (bi["n"], bi["top1"], bi["top5"], bi["top10"]) == (5, 1 / 5, 3 / 5, 4 / 5)
    assert bi["mrr"] == pytest.approx((1 + 1 / 4 + 1 / 8 + 1 / 13 + 1 / 2) / 5)
    rescore = summary["methods"]["uni-rescore"]["all"]["all"]
    assert (rescore["top5"], rescore["top10"]) == (3 / 5, 3 / 5)
    assert rescore["mrr"] == pytest.approx((1 + 1 / 4 + 1 / 2) / 5)
    assert summary["cost"]["uni-rescore"]["sentences_scored"] == summary["cost"]["bi-rescore"]["sentences_scored"] == 25
    assert summary["cost"]["uni+bi"]["sentences_scored"] == 50  # each candidate scored by both models
    assert set(summary["sample"]) == {"bi", "uni-left", "uni-rescore", "bi-rescore", "uni+bi"}
    # Word classes and length buckets: all targets are content words in short sentences.
    assert summary["methods"]["bi"]["length"]["1-10"]["n"] == 5
    assert summary["methods"]["bi"]["word"]["content"]["n"] == 5


def test_buckets_positions_classes():
    lengths = np.array([1, 10, 11, 20, 21, 40, 41, 131])
    assert length_bucket(lengths).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    # In a 3-word sentence, the words sit at 1/6, 1/2, 5/6: start, middle, end.
    assert relative_position(np.arange(3), np.full(3, 3)).tolist() == pytest.approx([1 / 6, 1 / 2, 5 / 6])
    tok = Tokenizer.train([["the", "cat", ",", "of", "sat"]])
    classes = word_classes(tok)
    assert [classes[tok.id(w)] for w in ("cat", "the", ",", "of")] == [0, 1, 2, 1]


def test_bootstrap_interval_brackets_the_mean():
    rng = np.random.default_rng(0)
    sentence = np.repeat(np.arange(200), 5)
    values = (rng.random(1000) < 0.3).astype(float)
    lo, hi = Bootstrap(200, 500, seed=1).interval(values, sentence)
    assert lo < values.mean() < hi and hi - lo < 0.15
    assert Bootstrap(200, 500, seed=1).interval(np.ones(1000), sentence) == (1.0, 1.0)


# -- tiny trained models ---------------------------------------------------------------

PAIRS = 6  # sentence "a_i m b_i .": a_i is decided by b_i, to its right; m is noise


def synthetic_sentences(n: int, rng: random.Random) -> list[str]:
    out = []
    for _ in range(n):
        i = rng.randrange(PAIRS)
        out.append(f"a{i} m{rng.randrange(3)} b{i} .")
    return out


@pytest.fixture(scope="module")
def pair_runs(tmp_path_factory):
    """A uni and a bi model (1 x 32 LSTM) trained a few hundred steps on the synthetic corpus."""
    root = tmp_path_factory.mktemp("synthetic")
    corpus = root / "corpus"
    corpus.mkdir()
    rng = random.Random(0)
    for split, n in (("train", 3000), ("valid", 60), ("test", 150)):
        (corpus / f"{split}.txt").write_text("\n\n".join(synthetic_sentences(n, rng)) + "\n")
    runs = {}
    for kind, steps, batch in (("uni", 300, 16), ("bi", 300, 32)):
        model = ModelConfig(kind=kind, emb_size=16, hidden_size=32, layers=1, dropout=0.0, output="full")
        cfg = TrainConfig(lr=2e-2, batch_size=batch, bptt=10, max_steps=steps, early_stop=0, log_every=50, device="cpu")
        cfg.precision = "fp32"
        runs[kind] = root / kind
        train(DataConfig(str(corpus)), model, cfg, runs[kind], data_dir=root / "data", log=lambda _: None)
    return root, runs


def test_bi_beats_uni_left_where_the_right_context_decides(pair_runs):
    root, runs = pair_runs
    out = root / "report"
    args = ["--uni", str(runs["uni"]), "--bi", str(runs["bi"]), "--out", str(out), "--device", "cpu"]
    args += ["--data-dir", str(root / "data"), "--rescore-sample", "300", "--bootstrap", "200"]
    result = CliRunner().invoke(evaluate_command, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    fill = report["sections"]["fill"]
    top1 = {m: fill["methods"][m]["all"]["all"]["top1"] for m in fill["methods"]}
    start = {m: fill["methods"][m]["position"]["start"]["top1"] for m in fill["methods"]}
    # The first word a_i is decided by b_i: bi sees it, uni-left cannot (1 in 6 by chance).
    assert start["bi"] > start["uni-left"] + 0.5
    assert top1["bi"] > top1["uni-left"] + 0.1
    bi_vs_left = next(d for d in fill["differences"] if (d["a"], d["b"]) == ("bi", "uni-left"))
    assert bi_vs_left["ci"][0] > 0
    # Rescoring with the whole sentence recovers some of the right context.
    assert start["uni-rescore"] > start["uni-left"] + 0.2
    assert fill["sample"]["uni-rescore"]["top1"] > fill["sample"]["uni-left"]["top1"]
    # bi-rescore keeps what bi reads from the right; its shortlist is bi's own.
    assert start["bi-rescore"] > start["uni-left"] + 0.5
    assert {("bi-rescore", "bi"), ("bi-rescore", "uni-rescore")} <= {(d["a"], d["b"]) for d in fill["differences"]}
    # uni+bi: bi's shortlist, so it keeps what bi reads from the right, scored by both models.
    assert start["uni+bi"] > start["uni-left"] + 0.5
    assert {("uni+bi", "bi"), ("uni+bi", "uni-rescore")} <= {(d["a"], d["b"]) for d in fill["differences"]}
    lm = report["sections"]["lm"]["models"]
    assert lm["uni"]["tokens"] > 0 and 1 < lm["uni"]["ppl"] < 30 and lm["uni"]["unk_rate"] == 0
    assert report["meta"]["split"] == "test" and len(report["meta"]["checkpoints"]["bi"]["config_sha256"]) == 12
    # A budget's figures depend on the processor: the report names the one it ran on and each model's.
    cpu = machine.cpu_model()
    assert cpu in report["meta"]["machine"] and "fp32" in report["meta"]["checkpoints"]["bi"]["trained_on"]
    assert cpu in report["meta"]["checkpoints"]["uni"]["trained_on"]
    assert "curves" in report["sections"]
    assert (out / "figures" / "fill_accuracy_by_length.png").is_file()


def test_evaluate_on_the_users_own_text_file(pair_runs, tmp_path):
    root, runs = pair_runs
    text = tmp_path / "mine.txt"  # one sentence per line, no blank lines, and one Latin-1 byte
    sentences = synthetic_sentences(40, random.Random(7))
    text.write_bytes(("\n".join(sentences) + "\n").encode() + b"caf\xe9 .\n")
    args = ["--uni", str(runs["uni"]), "--bi", str(runs["bi"]), "--text", str(text), "--out", str(tmp_path / "rep")]
    args += ["--device", "cpu", "--data-dir", str(tmp_path / "data"), "--rescore-sample", "0", "--bootstrap", "50"]
    result = CliRunner().invoke(evaluate_command, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert report["meta"]["split"] == "text"
    fill = report["sections"]["fill"]["methods"]
    assert fill["bi"]["all"]["all"]["n"] == 4 * 40 + 1  # every word of the 40 sentences and "." after <unk> "café"
    assert fill["bi"]["position"]["start"]["top1"] > fill["uni-left"]["position"]["start"]["top1"] + 0.5
    assert report["sections"]["lm"]["models"]["uni"]["unk_rate"] > 0

    (tmp_path / "empty.txt").write_text("\n\n")
    args[args.index(str(text))] = str(tmp_path / "empty.txt")
    result = CliRunner().invoke(evaluate_command, args)
    assert result.exit_code != 0 and "no sentences" in str(result.exception)


def test_cache_is_chosen_on_valid_and_reported_beside_the_plain_perplexity(pair_runs, tmp_path):
    root, runs = pair_runs
    args = ["--uni", str(runs["uni"]), "--out", str(tmp_path / "rep"), "--device", "cpu", "--cache"]
    args += ["--data-dir", str(root / "data"), "--rescore-sample", "0", "--bootstrap", "50"]
    result = CliRunner().invoke(evaluate_command, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    cache = report["sections"]["cache"]
    assert cache["tune"]["split"] == "valid" and cache["eval"]["split"] == "test"
    assert cache["tune"]["cache_ppl"] <= cache["tune"]["ppl"]  # λ = 0 is in the grid
    assert cache["eval"]["ppl"] == pytest.approx(report["sections"]["lm"]["models"]["uni"]["ppl"], rel=1e-6)
    assert (
        "uni + cache: test perplexity" in result.output
        and "Continuous cache" in (tmp_path / "rep" / "report.md").read_text()
    )


def test_evaluate_needs_a_checkpoint(tmp_path):
    result = CliRunner().invoke(evaluate_command, ["--out", str(tmp_path)])
    assert result.exit_code != 0 and "at least one checkpoint" in str(result.exception)
