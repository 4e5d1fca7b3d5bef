"""The REPL driven as a user would: scripted lines through stdin and through click's runner."""

from __future__ import annotations

import builtins
import io
import random
import re
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from bilm.data import DataConfig
from bilm.models import ModelConfig
from bilm.predict import Candidate, Prediction, Predictor
from bilm.repl import (
    Answer,
    _lines_with_readline,
    format_answer,
    format_prob,
    history_path,
    parse_choices,
    repl,
    run_repl,
)
from bilm.train import TrainConfig, train

# "the cat meows .": the animal is decided by the sound to its right, so the bi model
# knows it, the uni model's left context does not (1 in 4), and rescoring with the
# whole sentence recovers it.
SOUNDS = {"cat": "meows", "dog": "barks", "cow": "moos", "owl": "hoots"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("repl")
    corpus = root / "corpus"
    corpus.mkdir()
    rng = random.Random(0)
    for split, n in (("train", 2000), ("valid", 40), ("test", 40)):
        animals = [rng.choice(sorted(SOUNDS)) for _ in range(n)]
        (corpus / f"{split}.txt").write_text("\n\n".join(f"the {a} {SOUNDS[a]} ." for a in animals) + "\n")
    out = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: a second thread only waits, and stalls on a busy CPU
    try:
        for kind in ("uni", "bi"):
            out[kind] = root / kind
            train(
                DataConfig(str(corpus)),
                ModelConfig(kind=kind, emb_size=16, hidden_size=16, layers=1, dropout=0.0),
                TrainConfig(batch_size=16, bptt=12, lr=2e-2, max_steps=150, log_every=0, early_stop=0, epochs=1000),
                out[kind],
                data_dir=root / "data",
                log=lambda s: None,
            )
    finally:
        torch.set_num_threads(threads)
    return out


@pytest.fixture(scope="module")
def predictors(runs) -> tuple[Predictor, Predictor]:
    return Predictor.load(runs["bi"]), Predictor.load(runs["uni"])


def session(bi: Predictor, uni: Predictor | None, script: str, **kwargs) -> list[tuple[str, str]]:
    """Run the REPL on `script`; (input line, what it printed) for each line read."""
    out = io.StringIO()
    run_repl(bi, uni, stdin=io.StringIO(script), stdout=out, width=200, **kwargs)
    return transcript(out.getvalue())


def transcript(text: str) -> list[tuple[str, str]]:
    parts = re.split(r"^bilm> (.*)$", text, flags=re.M)
    return [(parts[i], parts[i + 1].strip("\n")) for i in range(1, len(parts), 2)]


def table(output: str) -> dict[str, list[tuple[str, str]]]:
    """Row label -> [(word, probability)] from a printed answer."""
    rows = {}
    for line in output.splitlines():
        m = re.match(r"^  ((?:bi|uni\+?|uni\+bi)\d?)\s{2,}(\S.*)$", line)  # bi+ rows are not read
        if m:
            cells = m.group(2).split()
            rows[m.group(1)] = list(zip(cells[::2], cells[1::2], strict=True))
    return rows


def words(output: str, label: str) -> list[str]:
    return [w for w, _ in table(output)[label]]


SCRIPT = """\
the ___ meows .

:k 2
:choices dog,cat,zebra
:choices
the cat
the ___ sat on the ___ .
the ___ purrs .
:frobnicate
:k many
:model
:help
"""


def test_scripted_session(predictors):
    bi, uni = predictors
    lines = session(bi, uni, SCRIPT)
    assert [line for line, _ in lines] == SCRIPT.splitlines()
    out = dict(lines)

    # A blank: bi sees "meows" and knows the cat; uni sees "the" only; uni+ rescores with "meows".
    first = table(out["the ___ meows ."])
    assert list(first) == ["bi", "uni", "uni+"]
    assert len(first["bi"]) == len(first["uni"]) == 10
    assert words(out["the ___ meows ."], "bi")[0] == "cat"
    assert words(out["the ___ meows ."], "uni+")[0] == "cat"
    assert set(words(out["the ___ meows ."], "uni")[:4]) == set(SOUNDS)
    assert max(float(p) for _, p in first["uni"]) < 0.5 < float(first["bi"][0][1])
    assert "uni: left context only" in out["the ___ meows ."]
    assert "  <unk>:" not in out["the ___ meows ."]

    assert out[""] == ""

    # :k re-shows the last sentence with the new k.
    assert out[":k 2"].startswith("  k = 2")
    assert [len(row) for row in table(out[":k 2"]).values()][:2] == [2, 2]
    assert words(out[":k 2"], "bi")[0] == "cat"

    # :choices ranks exactly the given words; the out-of-vocabulary one is marked, unranked.
    chosen = table(out[":choices dog,cat,zebra"])
    assert out[":choices dog,cat,zebra"].startswith("  choices: dog, cat, zebra (:choices alone")
    assert chosen["bi"][:2] == [("cat", chosen["bi"][0][1]), ("dog", chosen["bi"][1][1])]
    assert chosen["bi"][2] == ("zebra", "oov")
    assert [w for w, _ in chosen["uni+"]] == ["cat", "dog", "zebra"]
    assert "oov: not in the vocabulary" in out[":choices dog,cat,zebra"]
    assert out[":choices"].startswith("  choices cleared")
    assert "choices:" not in out[":choices"]
    assert [len(row) for row in table(out[":choices"]).values()][:2] == [2, 2]

    # No blank: the next word, with a note; the bi model fills a blank at the end.
    assert "no blank: the next word" in out["the cat"]
    assert words(out["the cat"], "uni")[0] == "meows"
    assert words(out["the cat"], "bi")[0] in {*SOUNDS.values(), "."}  # the word before <eos>
    assert "bi model: the next word is filled as a blank at the end" in out["the cat"]

    assert out["the ___ sat on the ___ ."] == (
        "  error: the text has 2 blanks: bilm fills one blank at a time, mark just one with ___"
    )
    assert out["the ___ purrs ."].startswith("  <unk>: purrs (not in the vocabulary)")
    assert set(table(out["the ___ purrs ."])) == {"bi", "uni", "uni+"}

    assert out[":frobnicate"] == "  error: unknown command :frobnicate (:help lists the commands)"
    assert out[":k many"] == "  error: :k takes a whole number from 1 to 1000, not 'many'"
    assert str(bi.ckpt.path) in out[":model"] and str(uni.ckpt.path) in out[":model"]
    assert "lstm 1x16 (emb 16), full softmax" in out[":model"] and "valid ppl" in out[":model"]
    assert "valid pseudo-perplexity" in out[":model"]  # bi's figure is not comparable with uni's
    assert "one blank at a time" in out[":help"] and ":choices a,b,c" in out[":help"]
    assert "(now 2)" in out[":help"]


def test_rescore_shortlist_has_no_specials(predictors):
    _, uni = predictors
    words = [c.word for c in uni.fill("the ___ meows .", k=10)[1].candidates]
    assert len(words) == 10 and not any(w.startswith("<") for w in words)


def test_quit_stops_reading_and_blank_markers(predictors):
    bi, _ = predictors
    lines = session(bi, None, "the _____ meows .\nthe [MASK] meows .\n:quit\nthe ___ meows .\n")
    assert [line for line, _ in lines] == ["the _____ meows .", "the [MASK] meows .", ":quit"]
    for _, out in lines[:2]:
        assert list(table(out)) == ["bi"] and words(out, "bi")[0] == "cat"
    assert lines[2][1] == ""


def test_uni_only_and_two_models_of_a_kind(predictors):
    _, uni = predictors
    lines = dict(session(uni, uni, "the ___ meows .\n", k=3))
    assert list(table(lines["the ___ meows ."])) == ["uni1", "uni+1", "uni2", "uni+2"]


def test_choices_stay_on_until_cleared(predictors):
    bi, _ = predictors
    out = dict(session(bi, None, ":choices cow,owl\nthe ___ moos .\nthe ___ hoots .\n"))
    assert out[":choices cow,owl"] == "  choices: cow, owl (:choices alone shows the top k again)"
    assert out["the ___ moos ."].startswith("  choices: cow, owl")
    assert words(out["the ___ moos ."], "bi") == ["cow", "owl"]
    assert words(out["the ___ hoots ."], "bi") == ["owl", "cow"]


def test_no_echo(predictors):
    bi, uni = predictors
    out = io.StringIO()
    run_repl(bi, uni, stdin=io.StringIO("the cat\n"), stdout=out, echo=False)
    assert "bilm>" not in out.getvalue() and "meows" in out.getvalue()


def test_click_command(runs):
    result = CliRunner().invoke(
        repl, [str(runs["bi"]), "--compare", str(runs["uni"]), "-k", "3"], input="the ___ barks .\n:choices cow owl\n"
    )
    assert result.exit_code == 0, result.output
    assert result.output.startswith("bilm repl: bi ")
    lines = dict(transcript(result.output))
    assert words(lines["the ___ barks ."], "bi")[0] == "dog"
    assert [len(row) for row in table(lines["the ___ barks ."]).values()][:2] == [3, 3]
    # A bi and a uni model of one vocabulary: a third bi row ranks by both together.
    assert list(table(lines["the ___ barks ."])) == ["bi", "uni+bi", "uni", "uni+"]
    assert words(lines["the ___ barks ."], "uni+bi")[0] == "dog"
    assert sorted(words(lines[":choices cow owl"], "uni+")) == ["cow", "owl"]


def test_click_command_bad_checkpoint(tmp_path):
    result = CliRunner().invoke(repl, [str(tmp_path / "nowhere")], input="")
    assert result.exit_code == 1
    assert result.output.strip() == f"Error: checkpoint {tmp_path / 'nowhere'} not found"


def test_terminal_input_history_and_ctrl_c(tmp_path, monkeypatch):
    """On a terminal: Ctrl-C cancels the line and keeps reading, Ctrl-D ends, history is saved."""
    history = tmp_path / "history"
    monkeypatch.setenv("BILM_HISTORY", str(history))
    events = iter([KeyboardInterrupt, "the ___ meows .", EOFError])

    def fake_input(prompt):
        event = next(events)
        if isinstance(event, type):
            raise event
        return event

    monkeypatch.setattr(builtins, "input", fake_input)

    class Out(io.StringIO):
        def say(self, text):
            self.write(text + "\n")

    out = Out()
    assert list(_lines_with_readline(out)) == ["the ___ meows ."]
    assert out.getvalue() == "^C\n\n"
    pytest.importorskip("readline")
    assert history.exists()


def test_history_path(monkeypatch, tmp_path):
    monkeypatch.delenv("BILM_HISTORY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert history_path() == tmp_path / ".bilm_history"
    monkeypatch.setenv("BILM_HISTORY", "")
    assert history_path() is None


def test_parse_choices():
    assert parse_choices("river,pool, river bank") == ["river", "pool", "river bank"]
    assert parse_choices("river pool") == ["river", "pool"]
    assert parse_choices("  ") is None


def test_format_wraps_to_width():
    cands = [Candidate(f"word{i}", 0.5 / (i + 1)) for i in range(10)]
    ans = Answer([("bi", Prediction("bi", cands)), ("uni", Prediction("uni-left", cands[:9], note="left only"))])
    text = format_answer(ans, width=60)
    lines = text.splitlines()
    assert all(len(line) <= 60 for line in lines)
    assert lines[0].startswith("  bi   word0 0.500  word1 0.250")
    assert "" in lines and lines[-1] == "  uni: left only"
    assert [w for line in lines if line.startswith("  bi ") for w in line.split()[1::2]] == [c.word for c in cands]
    assert format_prob(3e-5) == "3e-05" and format_prob(None) == "oov"


def test_a_piped_session_with_a_failing_line_exits_with_status_1(runs):
    result = CliRunner().invoke(repl, [str(runs["bi"])], input="the ___ ___ .\nthe ___ barks .\n")
    assert result.exit_code == 1
    lines = dict(transcript(result.output))
    assert "2 blanks" in lines["the ___ ___ ."] and "bi" in table(lines["the ___ barks ."].split("Error:")[0])
    assert result.output.rstrip().endswith("Error: 1 line(s) got an error (shown above)")
