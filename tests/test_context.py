"""Context beyond one sentence: bi trained on running text, and every method reading a sentence's document."""

import json
import random

import numpy as np
import pytest
from click.testing import CliRunner

from bilm.cli_eval import evaluate as evaluate_command
from bilm.data import DataConfig, context_windows, document_spans
from bilm.errors import BilmError
from bilm.models import ModelConfig
from bilm.train import TrainConfig, train

KEYS = 6  # each article "k_i . k_i w ." names its key k_i twice, in two sentences


def test_document_spans_run_from_each_documents_first_sentence_to_its_last():
    spans = np.array([[1, 4], [4, 6], [7, 9], [9, 12], [13, 15]])
    assert document_spans(spans, np.array([0, 0, 1, 1, 2])).tolist() == [[1, 6], [7, 12], [13, 15]]
    assert document_spans(spans, None).tolist() == [[1, 15]]


def test_context_windows_hold_the_sentence_and_never_cross_a_document():
    ids = np.arange(100, 116)
    spans = np.array([[0, 3], [3, 6], [6, 8], [9, 12], [12, 16]])
    docs = np.array([0, 0, 0, 1, 1])
    windows, offsets = context_windows(ids, spans, docs, 2)
    assert windows[1] == [101, 102, 103, 104, 105, 106, 107] and offsets[1] == 2  # 2 each side
    assert windows[2] == [104, 105, 106, 107] and offsets[2] == 2  # the document ends at 8
    assert windows[3] == [109, 110, 111, 112, 113] and offsets[3] == 0  # not 107, 108: another article
    for (a, b), w, o in zip(spans, windows, offsets, strict=True):
        assert w[o : o + b - a] == ids[a:b].tolist()
    alone, at = context_windows(ids, spans, docs, 0)
    assert alone == [ids[a:b].tolist() for a, b in spans] and not at.any()


def write_keyed_wikitext(root, articles: dict[str, int], seed: int = 0):
    """WikiText-style articles in which a sentence's first word is decided only by another sentence."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    for split, n in articles.items():
        text = ""
        for a in range(n):
            k = rng.randrange(KEYS)
            text += f" = Article {a} = \n \n k{k} . k{k} w{rng.randrange(3)} . \n"
        (root / f"{split}.txt").write_text(text)
    return root


@pytest.fixture(scope="module")
def keyed_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("keyed")
    write_keyed_wikitext(root / "wikitext-2", {"train": 4000, "valid": 40, "test": 150})
    runs = {}
    for kind, context in (("uni", "sentence"), ("bi", "document")):
        # untied: a tied full softmax starts without the unigram bias and can sit on a plateau (test_models.py)
        model = ModelConfig(kind=kind, emb_size=16, hidden_size=32, layers=1, dropout=0.0, tie_weights=False)
        cfg = TrainConfig(lr=2e-2, batch_size=32, bptt=12, max_len=16, context=context, max_steps=300, early_stop=0)
        cfg.precision, cfg.device, cfg.log_every = "fp32", "cpu", 50
        runs[kind] = root / kind
        train(DataConfig("wikitext-2"), model, cfg, runs[kind], root, root / "data", log=lambda _: None)
    return root, runs


def start_top1(root, runs, context: int) -> dict:
    out = root / f"report-{context}"
    args = ["--uni", str(runs["uni"]), "--bi", str(runs["bi"]), "--out", str(out), "--device", "cpu"]
    args += ["--corpus-dir", str(root), "--data-dir", str(root / "data"), "--context", str(context)]
    args += ["--rescore-sample", "200", "--bootstrap", "0"]
    result = CliRunner().invoke(evaluate_command, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    fill = json.loads((out / "report.json").read_text())["sections"]["fill"]
    assert fill["config"]["context"] == context
    return {m: fill["methods"][m]["position"]["start"]["top1"] for m in fill["methods"]}


def test_a_bi_model_trained_on_documents_fills_from_the_next_sentence(keyed_runs):
    root, runs = keyed_runs
    alone, read = start_top1(root, runs, 0), start_top1(root, runs, 12)
    # Every sentence starts with the key, which only the other sentence decides (1 in 6 without it).
    assert read["bi"] > alone["bi"] + 0.5
    # uni-left knows the second key once it reads the sentence before; bi knows both.
    assert read["uni-left"] > alone["uni-left"] + 0.3
    assert read["bi"] > read["uni-left"] + 0.2


def test_context_is_for_bi_models(keyed_runs, tmp_path):
    root, _ = keyed_runs
    cfg = TrainConfig(context="document", max_steps=1, precision="fp32")
    with pytest.raises(BilmError, match="--context document is for bi models"):
        train(DataConfig("wikitext-2"), ModelConfig(kind="uni"), cfg, tmp_path, root, root / "data", log=print)


@pytest.fixture(scope="module")
def sentence_bi(keyed_runs):
    """A bi model trained on sentences alone: it cannot know a sentence's key, its cache can."""
    root, _ = keyed_runs
    model = ModelConfig(kind="bi", emb_size=16, hidden_size=32, layers=1, dropout=0.0, tie_weights=False)
    cfg = TrainConfig(lr=2e-2, batch_size=32, max_steps=300, early_stop=0, precision="fp32", device="cpu")
    train(DataConfig("wikitext-2"), model, cfg, root / "bi-sentence", root, root / "data", log=lambda _: None)
    return root / "bi-sentence"


def test_the_cache_fills_a_key_named_in_an_earlier_sentence_of_the_article(keyed_runs, sentence_bi):
    root, runs = keyed_runs
    out = root / "report-cache"
    args = ["--uni", str(runs["uni"]), "--bi", str(sentence_bi), "--out", str(out), "--device", "cpu", "--cache"]
    args += ["--corpus-dir", str(root), "--data-dir", str(root / "data"), "--rescore-sample", "0", "--bootstrap", "50"]
    result = CliRunner().invoke(evaluate_command, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    fill = report["sections"]["fill"]
    start = {m: fill["methods"][m]["position"]["start"]["top1"] for m in fill["methods"]}
    # Half the sentence starts are the article's second sentence, whose key the first names (1 in 6 without).
    assert start["bi+cache"] > start["bi"] + 0.3 and start["uni-left+cache"] > start["uni-left"] + 0.3
    tuned = report["sections"]["cache"]["fill"]
    assert set(tuned) == {"bi", "uni-left"} and tuned["bi"]["lam"] > 0
    assert tuned["bi"]["tune"]["cache_ppl"] < tuned["bi"]["tune"]["ppl"]  # chosen on valid's blanks
    pairs = {(d["a"], d["b"]) for d in fill["differences"]}
    assert ("bi+cache", "uni-left+cache") in pairs
    assert "bi + cache: θ" in result.output and "Fill in the blank with the cache" in (out / "report.md").read_text()


def test_the_cache_reads_only_earlier_sentences_of_the_same_document(keyed_runs, sentence_bi):
    """A document's first sentence, and every sentence when each is its own document, keep the model's ranks."""
    from bilm.cache import rank_with_cache
    from bilm.data import prepare
    from bilm.evaluate import FillConfig, fill_in
    from bilm.predict import Predictor

    root, _ = keyed_runs
    data = prepare(DataConfig("wikitext-2"), root, root / "data", log=lambda _: None)
    sentences, docs = list(data.sentences("test")), data.documents("test")
    bi = Predictor.load(sentence_bi).model
    result = fill_in(sentences, "cpu", FillConfig(rescore_sample=0), bi=bi, keep_features=("bi",))
    rank_with_cache(bi, result, "bi", docs, theta=1.0, lam=0.5)
    plain, cached = result.ranks["bi"], result.ranks["bi+cache"]
    first = np.r_[True, docs[1:] != docs[:-1]][result.sentence]  # blanks in each document's first sentence
    assert np.array_equal(plain[first], cached[first]) and not np.array_equal(plain[~first], cached[~first])
    rank_with_cache(bi, result, "bi", np.arange(len(sentences)), theta=1.0, lam=0.5)
    assert np.array_equal(plain, result.ranks["bi+cache"])
