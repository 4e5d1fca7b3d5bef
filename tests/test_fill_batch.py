"""Many sentences at once (`-`, --input, JSON lines), filled sequences, choices, --threads."""

import dataclasses
import json

import pytest
import torch
from click.testing import CliRunner

from bilm.choices import split_choices
from bilm.cli import cli
from bilm.errors import BilmError
from bilm.predict import Predictor
from bilm.tokenizer import Tokenizer


@pytest.fixture
def run(data_dir):
    def invoke(*args, input=None, env=None):
        env = dict({"BILM_DATA_DIR": str(data_dir)}, **(env or {}))
        return CliRunner().invoke(cli, [str(a) for a in args], input=input, env=env)

    return invoke


LINES = "the ___ then then moos .\nthe cow then barks .\n\nthe ___ softly later hoots .\n"


@pytest.mark.parametrize("source", ["stdin", "file"])
def test_fill_answers_every_line_and_a_bad_line_gets_its_own_error(run, trained, tmp_path, source):
    if source == "stdin":
        result = run("fill", trained["bi"], "-", "--json", "-k", 2, input=LINES)
    else:
        (tmp_path / "in.txt").write_text(LINES)
        result = run("fill", trained["bi"], "--input", tmp_path / "in.txt", "--json", "-k", 2)
    assert result.exit_code == 1
    records = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [r["line"] for r in records] == [1, 2, 4]
    assert records[1]["input"] == "the cow then barks ." and "no blank" in records[1]["error"]
    first = records[0]["predictions"][0]["candidates"][0]
    assert first["word"] == "cow" and first["sequence"] == "the cow then then moos ."
    assert records[2]["predictions"][0]["candidates"][0]["word"] == "owl"
    assert "1 of 3 lines failed (line 2)" in result.output


def test_batch_answers_equal_one_at_a_time(trained):
    for kind in ("uni", "bi"):
        p = Predictor.load(trained[kind])
        texts = ["the ___ then then moos .", "the dog ___ loudly barks .", "___ cat"]
        batch = p.answer_lines(texts, True, 3, None, batch_size=2)
        for text, preds in zip(texts, batch, strict=True):
            single = p.fill(text, 3)
            for a, b in zip(preds, single, strict=True):
                assert [c.word for c in a.candidates] == [c.word for c in b.candidates]
                assert [c.prob for c in a.candidates] == pytest.approx([c.prob for c in b.candidates], rel=1e-4)
        # Without the rescoring, only the first ranking comes back, and it is the same.
        plain = p.fill_many(texts, 3, rescore=False)
        assert [[pred.method for pred in preds] for preds in plain] == [[batch[0][0].method]] * len(texts)
        assert [c.word for c in plain[0][0].candidates] == [c.word for c in batch[0][0].candidates]


def test_predict_reads_lines_and_says_to_use_fill_for_a_blank(run, trained):
    result = run("predict", trained["uni"], "-", "--json", "-k", 1, input="the dog then again\n")
    assert result.exit_code == 0, result.output
    [record] = [json.loads(line) for line in result.output.splitlines()]
    cand = record["predictions"][0]["candidates"][0]
    assert cand["word"] == "barks" and cand["sequence"] == "the dog then again barks"
    result = run("predict", trained["uni"], "the ___ then barks")
    assert result.exit_code == 1 and "bilm fill" in result.output


def test_fill_needs_text_or_input(run, trained, tmp_path):
    result = run("fill", trained["bi"])
    assert result.exit_code == 1 and result.output.startswith("Error: give the TEXT")
    (tmp_path / "in.txt").write_text("the ___ .\n")
    result = run("fill", trained["bi"], "the ___ .", "--input", tmp_path / "in.txt")
    assert result.exit_code == 1 and "not both" in result.output


def test_mask_token_is_a_blank_too(trained):
    p = Predictor.load(trained["bi"])
    assert p.fill("the <mask> softly later hoots .", 1)[0].candidates[0].word == "owl"
    assert p.fill("the [MASK] softly later hoots .", 1)[0].candidates[0].word == "owl"


def test_choices_split_on_commas_and_in_the_repl_on_spaces_too():
    assert split_choices("river,pool, bank") == ["river", "pool", "bank"]
    assert split_choices("river pool bank") == ["river pool bank"]
    assert split_choices("river pool bank", spaces=True) == ["river", "pool", "bank"]
    assert split_choices("new york, paris", spaces=True) == ["new york", "paris"]
    assert split_choices("", spaces=True) is None


def test_a_multi_token_choice_is_scored_over_its_span_as_mscc_does(trained):
    from bilm.choices import score_filled

    p = Predictor.load(trained["bi"])
    pred, voted = p.fill("the ___ then then moos .", choices=["cow", "cow then", "zebra"])
    assert {c.word for c in voted.candidates if c.prob} == {"cow", "cow then"}  # ranked by choices.rescore
    by_word = {c.word: c for c in pred.candidates}
    assert by_word["cow then"].known and by_word["cow then"].tokens == 2
    assert by_word["zebra"].prob is None
    left, right = p.tokenizer.encode("the"), p.tokenizer.encode("then then moos .")
    span, _ = score_filled(p.model, [(left + p.tokenizer.encode("cow then") + right, 1, 3)], "cpu")
    assert by_word["cow then"].prob == pytest.approx(float(torch.tensor(span[0]).exp()), rel=1e-5)
    # one token: the same probability as the blank's own distribution
    top = {c.word: c.prob for c in p.fill("the ___ then then moos .", 20)[0].candidates}
    assert by_word["cow"].prob == pytest.approx(top["cow"], rel=1e-4)
    for kind in ("uni",):
        q = Predictor.load(trained[kind])
        left_only, rescored = q.fill("the ___ then then moos .", choices=["cow then", "cat"])
        assert {c.word for c in left_only.candidates if c.prob} == {"cow then", "cat"}
        assert sum(c.prob for c in rescored.candidates) == pytest.approx(1.0)


def test_threads_option_and_env_set_torch_threads(run, trained):
    before = torch.get_num_threads()
    try:
        run("fill", trained["bi"], "the ___ .", "--threads", 2)
        assert torch.get_num_threads() == 2
        run("fill", trained["bi"], "the ___ .", env={"BILM_THREADS": "1"})
        assert torch.get_num_threads() == 1
        result = run("evaluate", "--help")
        assert "--threads" in result.output and "BILM_THREADS" in result.output
    finally:
        torch.set_num_threads(before)


def test_bad_lines_in_answer_lines_do_not_fail_the_batch(trained):
    p = Predictor.load(trained["uni"])
    results = p.answer_lines(["the ___ .", "no blank", "___ ___"], True, 2)
    assert not isinstance(results[0], BilmError)
    assert isinstance(results[1], BilmError) and isinstance(results[2], BilmError)


def test_uni_bi_is_the_product_of_both_rescorings_and_needs_one_vocabulary(trained):
    bi, uni = Predictor.load(trained["bi"], uni=trained["uni"]), Predictor.load(trained["uni"])
    choices = ["cat", "cow", "owl", "dog"]
    _, voted, both = bi.fill("the ___ then then moos .", 3, choices)
    _, rescored = uni.fill("the ___ then then moos .", 3, choices)
    assert both.method == "uni+bi" and both.candidates[0].word == "cow"
    # UNI_WEIGHT 1 adds the two log-scores: uni+bi is bi-rescore x uni-rescore, renormalised.
    product = {c.word: c.prob for c in voted.candidates}
    for c in rescored.candidates:
        product[c.word] *= c.prob
    total = sum(product.values())
    assert {c.word: c.prob for c in both.candidates} == pytest.approx({w: p / total for w, p in product.items()})
    stranger = dataclasses.replace(uni.ckpt, tokenizer=Tokenizer.train([["some", "other", "words"]]))
    with pytest.raises(BilmError, match="different vocabularies"):
        Predictor.load(trained["bi"]).join(stranger)
