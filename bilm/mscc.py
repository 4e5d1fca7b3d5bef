"""The MSR Sentence Completion Challenge (Zweig & Burges 2011): 1,040 sentences, 5 choices each.

Each candidate fills the blank and the model scores the filled sentence:

    uni  log p(w1..wn <eos>) from `<eos>`: the whole sentence, so the words after the
         blank count (as the RNN LM results in the literature)
    bi   the pseudo-log-likelihood of the filled sentence: the sum over every word of
         log p(word | all the other words) (Salazar et al. 2020), so the words around the
         blank count too. It beat the candidate's own log p(candidate | both sides) by 2.4
         points with the 45-minute Gutenberg model (docs/quality.md); that score, the one
         `bilm fill --choices` shows, is reported beside it as `bi-blank`. Hyphenated
         candidates (`country-dance`) are several tokens, scored over their span.

The scoring is `choices.score_filled`, the same as `bilm fill --choices` and the REPL's.

A candidate with a token out of the vocabulary would be scored as `<unk>`, a frequent
"word": it is left unscored (-inf) and counted. When m candidates tie for the best
score (all unscored, say), the question counts 1/m if the key is among them: the
expected result of breaking the tie at random. Questions are independent, so the
interval is Wilson's.
"""

from __future__ import annotations

import csv
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .choices import score_filled
from .corpus import default_corpus_dir
from .errors import BilmError
from .models import LanguageModel
from .tokenizer import Tokenizer

BLANK = "_____"
LETTERS = "abcde"
QUESTIONS_FILE, ANSWERS_FILE = "testing_data.csv", "test_answer.csv"
# Published accuracies on the same 1,040 questions (shared/REFERENCE.md).
ANCHORS = (
    ("chance", 20.0, "5 choices"),
    ("4-gram LM", 39.0, "Mikolov et al. 2013, Table 7"),
    ("RNN LMs", 55.4, "Mikolov et al. 2013, Table 7"),
    ("context2vec (biLSTM, 50 M words)", 64.0, "Melamud et al. 2016, test half (65.1 % on all)"),
)


@dataclass
class Question:
    id: int
    left: str
    right: str
    choices: list[str]
    answer: int | None  # index into choices; None without an answer key


def default_dir() -> Path | None:
    """`../shared/benchmarks/mscc` next to the corpora, when it exists."""
    corpora = default_corpus_dir()
    candidates = [corpora.parent / "benchmarks" / "mscc"] if corpora else []
    candidates += [base.parent / "shared" / "benchmarks" / "mscc" for base in (Path.cwd(), Path(__file__).parents[1])]
    return next((p for p in candidates if (p / QUESTIONS_FILE).is_file()), None)


def _rows(path: Path, header: list[str]) -> list[dict]:
    if not path.is_file():
        raise BilmError(f"MSCC file {path} not found")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames != header:
            raise BilmError(f"{path}: expected the header {','.join(header)}, found {reader.fieldnames}")
        return list(reader)


def load_questions(questions: str | Path, answers: str | Path | None = None) -> list[Question]:
    """Questions from `id,question,a),b),c),d),e)` and, if given, the key from `id,answer`, matched by id."""
    out = []
    for row in _rows(Path(questions), ["id", "question"] + [f"{c})" for c in LETTERS]):
        text, qid = row["question"], row["id"]
        if text.count(BLANK) != 1:
            raise BilmError(f"{questions}: question {qid} must have exactly one {BLANK}")
        choices = [(row[f"{c})"] or "").strip() for c in LETTERS]
        if not all(choices):
            raise BilmError(f"{questions}: question {qid} has an empty choice")
        left, right = text.split(BLANK)
        out.append(Question(int(qid), left, right, choices, None))
    if answers is not None:
        key = {int(r["id"]): r["answer"].strip().lower() for r in _rows(Path(answers), ["id", "answer"])}
        ids = [q.id for q in out]
        if sorted(key) != sorted(ids):
            raise BilmError(f"{answers}: the answer ids do not match the question ids of {questions}")
        for q in out:
            if key[q.id] not in LETTERS:
                raise BilmError(f"{answers}: answer {key[q.id]!r} of question {q.id} is not one of a-e")
            q.answer = LETTERS.index(key[q.id])
    return out


@torch.inference_mode()
def score(model: LanguageModel, tokenizer: Tokenizer, questions: list[Question], device, batch_size: int = 256):
    """Scores (Q, 5) of the whole filled sentences, -inf for unscored candidates, and the out-of-vocabulary counts."""
    whole, _, counts = score_both(model, tokenizer, questions, device, batch_size)
    return whole, counts


def score_both(model: LanguageModel, tokenizer: Tokenizer, questions: list[Question], device, batch_size: int = 256):
    """Scores (Q, 5) of the whole filled sentences and of the candidates' spans alone, and the OOV counts."""
    model.eval()
    unk = tokenizer.unk_id
    whole_scores, span_scores = (np.full((len(questions), len(LETTERS)), -np.inf) for _ in range(2))
    items, counts = [], dict(oov_candidates=0, multi_token_candidates=0, oov_keys=0, oov_context_words=0)
    for qi, q in enumerate(questions):
        left, right = tokenizer.encode(q.left), tokenizer.encode(q.right)
        counts["oov_context_words"] += (left + right).count(unk)
        for ci, choice in enumerate(q.choices):
            ids = tokenizer.encode(choice)
            if not ids or unk in ids:
                counts["oov_candidates"] += 1
                counts["oov_keys"] += ci == q.answer
                continue
            counts["multi_token_candidates"] += len(ids) > 1
            items.append((qi, ci, left + ids + right, len(left), len(left) + len(ids)))
    span, whole = score_filled(model, [it[2:] for it in items], device, batch_size)
    for (qi, ci, *_), w, s in zip(items, whole.tolist(), span.tolist(), strict=True):
        whole_scores[qi, ci], span_scores[qi, ci] = w, s
    return whole_scores, span_scores, counts


def wilson(successes: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion."""
    if n == 0:
        return (math.nan, math.nan)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (centre - half, centre + half)


def accuracy(scores: np.ndarray, answers: list[int]) -> dict:
    """Accuracy with ties split (1/m for a key among m tied best), and its Wilson interval."""
    best = scores.max(1, keepdims=True)
    tied = scores == best
    key = np.asarray(answers)
    credit = tied[np.arange(len(key)), key] / tied.sum(1)
    correct = float(credit.sum())
    return dict(
        accuracy=correct / len(key),
        ci=wilson(correct, len(key)),
        correct=correct,
        questions=len(key),
        tied_questions=int((tied.sum(1) > 1).sum()),
        predictions="".join(LETTERS[i] for i in scores.argmax(1)),
    )


def evaluate_mscc(models: dict[str, tuple[LanguageModel, Tokenizer]], questions: list[Question], device) -> dict:
    """Each model's accuracy and OOV counts; `models` maps a name (uni, bi) to (model, tokenizer)."""
    if any(q.answer is None for q in questions):
        raise BilmError("MSCC accuracy needs the answer key (--answers)")
    out = {
        "questions": len(questions),
        "models": {},
        "anchors": [dict(zip(("system", "accuracy", "source"), a, strict=True)) for a in ANCHORS],
    }
    answers, all_scores = [q.answer for q in questions], {}
    for name, (model, tokenizer) in models.items():
        started = time.perf_counter()
        all_scores[name], span, counts = score_both(model, tokenizer, questions, device)
        result = accuracy(all_scores[name], answers)
        result.update(counts, kind=model.cfg.kind, seconds=round(time.perf_counter() - started, 2))
        out["models"][name] = result
        if model.cfg.kind == "bi":  # the candidate's own log p(candidate | both sides), as `fill --choices`
            out["models"][f"{name}-blank"] = {**result, **accuracy(span, answers), "kind": "bi-blank"}
    if len(models) == 2 and len({t.to_str() for _, t in models.values()}) == 1:
        # log p_uni(sentence) + bi's pseudo-log-likelihood: a candidate unscored by either stays unscored
        combined = sum(all_scores.values())
        result = accuracy(combined, answers)
        counts = {k: v for k, v in out["models"][next(iter(models))].items() if k.startswith(("oov", "multi"))}
        result.update(counts, kind="uni+bi", seconds=sum(out["models"][name]["seconds"] for name in models))
        out["models"]["+".join(models)] = result
    return out
