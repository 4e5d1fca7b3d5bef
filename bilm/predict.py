"""Predictions from a checkpoint: next word, fill in a blank, rank given choices.

Five ways to fill `the boys went to the ___ and got out of the pool .`:

    bi           p(w | left, right) from the bidirectional model, one forward pass
    bi-rescore   the bi top candidates (or the --choices), each put into the blank and
                 scored by log p(w | left, right) plus a share of how well the other
                 words are predicted with it there (choices.rescore), renormalised over
                 that shortlist: one pass per candidate
    uni-left     p(w | left) from the unidirectional model: ignores the right context
    uni-rescore  the uni-left top candidates (plus any --choices), each scored by the
                 uni model's log-probability of the *whole* sentence, renormalised
                 over that shortlist: uses the right context at one pass per candidate
    uni+bi       a bi Predictor given a uni checkpoint too (`bilm fill BI --uni UNI`):
                 bi-rescore's shortlist, each candidate's score plus the uni model's
                 log-probability of the filled sentence (choices.combine)

Given choices are scored as in `bilm mscc` (see choices.py): a choice of several tokens
(`country-dance`) fills the blank whole. Input is raw text, cut as the model's corpus was
(textnorm); each candidate comes back with the filled `sequence`, the input with the
blank replaced by the word as a person writes it.

Memory stays bounded whatever the length of the text: a model sees at most MAX_CONTEXT
words on each side of the blank (before the next word), nearer words kept, and the answer's
note says when a text was cut (an LSTM uses a few hundred words of context at most); a
forward pass holds at most choices.MAX_BATCH_TOKENS tokens (rows x length), so batches of long
texts and the rescoring shortlists are split into passes (scripts/bench_long_input.py).

The CLI and the REPL are thin layers over `Predictor`.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from . import textnorm
from .checkpoint import Checkpoint, load_checkpoint
from .choices import combine, rescore, score_filled, token_batches
from .data import pad_sentences
from .errors import BilmError
from .machine import resolve_device

BLANK_RE = re.compile(r"_{3,}|\[MASK\]|<mask>", re.IGNORECASE)
SHORTLIST = 50  # uni-rescore: how many uni-left candidates are rescored
BI_SHORTLIST = 5  # bi-rescore: how many bi candidates are rescored (top 3 did as well as top 10)
MAX_CONTEXT = 512  # words a model sees on each side of the blank (or before the next word)
CUT_NOTE = f"context cut to the nearest {MAX_CONTEXT} words on each side"


@dataclass
class Candidate:
    word: str
    prob: float | None  # None: the word is out of vocabulary
    known: bool = True
    sequence: str = ""  # the input with this word in the blank (or after it, for the next word)
    tokens: int = 1  # a choice cut into several tokens: its probability is their product (choices.py)


@dataclass
class Prediction:
    method: str  # bi | bi-rescore | uni+bi | uni-left | uni-rescore | next
    candidates: list[Candidate]
    unknown: list[str] = field(default_factory=list)  # input words the model maps to <unk>
    note: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Query:
    """A sentence split at its blank, as ids (no specials)."""

    left: list[int]
    right: list[int]
    unknown: list[str]
    cut: bool = False  # the text had more than MAX_CONTEXT words on a side


def split_blank(text: str) -> tuple[str, str]:
    """The text left and right of its one blank (`___`, `_____`, `[MASK]` or `<mask>`)."""
    blanks = BLANK_RE.findall(text)
    if not blanks:
        raise BilmError("no blank in the text: mark the missing word with ___")
    if len(blanks) > 1:
        raise BilmError(f"the text has {len(blanks)} blanks: bilm fills one blank at a time, mark just one with ___")
    left, right = BLANK_RE.split(text)
    return left, right


def same_vocabulary(a: Checkpoint, b: Checkpoint) -> bool:
    """Whether two checkpoints share one tokenizer: their log-probabilities are over the same words."""
    return a.tokenizer.to_str() == b.tokenizer.to_str()


class Predictor:
    def __init__(self, ckpt: Checkpoint, device: str | torch.device = "cpu", uni: Checkpoint | None = None):
        """`uni`: with a bi `ckpt`, a uni checkpoint of the same vocabulary, for the uni+bi ranking."""
        self.ckpt, self.model, self.tokenizer = ckpt, ckpt.model, ckpt.tokenizer
        self.kind = ckpt.model.cfg.kind
        self.device = resolve_device(device)
        tok = self.tokenizer
        self.specials = torch.tensor([tok.pad_id, tok.unk_id, tok.bos_id, tok.eos_id, tok.blank_id])
        self.uni = None
        if uni is not None:
            self.join(uni)

    def join(self, uni: Checkpoint) -> None:
        """Rank a bi model's blanks by uni+bi too, with the uni model of `uni` (the same vocabulary)."""
        if self.kind != "bi" or uni.model.cfg.kind != "uni":
            raise BilmError(f"uni+bi needs a bi checkpoint and a uni one, not {self.kind} and {uni.model.cfg.kind}")
        if not same_vocabulary(self.ckpt, uni):
            raise BilmError(f"{self.ckpt.path} and {uni.path} have different vocabularies: their scores would not add")
        self.uni = uni.model.to(self.device)

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu", uni: str | Path | None = None) -> Predictor:
        return cls(load_checkpoint(path, device), device, uni and load_checkpoint(uni, device))

    # -- input ---------------------------------------------------------------------
    def encode(self, text: str) -> tuple[list[int], list[str]]:
        """Ids of the words in `text`, and the words that are out of vocabulary."""
        words = self.tokenizer.tokenize(text)
        ids = self.tokenizer.encode_batch([words])[0] if words else []
        unknown = [w for w, i in zip(words, ids, strict=True) if i == self.tokenizer.unk_id and w != "<unk>"]
        return ids, unknown

    def query(self, text: str) -> Query:
        left, right = split_blank(text)
        left_ids, unk_left = self.encode(left)
        right_ids, unk_right = self.encode(right)
        cut = len(left_ids) > MAX_CONTEXT or len(right_ids) > MAX_CONTEXT
        return Query(left_ids[-MAX_CONTEXT:], right_ids[:MAX_CONTEXT], unk_left + unk_right, cut)

    # -- predictions ---------------------------------------------------------------
    def predict(self, text: str, k: int = 10, choices: list[str] | None = None) -> Prediction:
        """The next word after `text`. A bi model fills a blank put at the end instead."""
        return self.predict_many([text], k, choices)[0]

    def fill(self, text: str, k: int = 10, choices: list[str] | None = None) -> list[Prediction]:
        """Candidates for the blank: [bi, bi-rescore] for a bi model (and uni+bi given a uni one),
        [uni-left, uni-rescore] for a uni model."""
        return self.fill_many([text], k, choices)[0]

    def predict_many(self, texts: list[str], k: int = 10, choices: list[str] | None = None) -> list[Prediction]:
        """`predict` for several texts, one padded forward pass for all of them."""
        for text in texts:
            if BLANK_RE.search(text):
                raise BilmError("the text has a blank (___): `bilm fill` fills it; predict gives the next word")
        if self.kind == "bi":
            preds = [p[0] for p in self.fill_many([t.rstrip() + " ___" for t in texts], k, choices, rescore=False)]
            for pred in preds:
                cut = f"; {CUT_NOTE}" if CUT_NOTE in pred.note else ""
                pred.note = "bi model: the next word is filled as a blank at the end of the sentence" + cut
            return preds
        encoded = [self.encode(t) for t in texts]
        encoded = [(ids[-MAX_CONTEXT:], u, len(ids) > MAX_CONTEXT) for ids, u in encoded]
        logps = self._next_log_probs([ids for ids, _, _ in encoded])
        preds = [
            Prediction("next", self._rank(lp, k, choices, Query(ids, [], u)), u, CUT_NOTE if cut else "")
            for lp, (ids, u, cut) in zip(logps, encoded, strict=True)
        ]
        for text, pred in zip(texts, preds, strict=True):
            for c in pred.candidates:
                c.sequence = f"{text.rstrip()} {c.word}"
        return preds

    def fill_many(
        self, texts: list[str], k: int = 10, choices: list[str] | None = None, rescore: bool = True
    ) -> list[list[Prediction]]:
        """`fill` for several texts, one padded forward pass for all of them (the rescoring: one per text).

        `rescore=False` leaves out the rankings after the first (bi-rescore, uni+bi, uni-rescore) and their passes.
        A text without its one blank raises the `BilmError` of `split_blank`: check each with
        `query` first where one bad text must not fail the others.
        """
        qs = [self.query(t) for t in texts]
        if self.kind == "bi":
            logps = self._blank_log_probs(qs)
            first, first_note, second = "bi", "", "bi-rescore"
            shortlist, how = f"top {BI_SHORTLIST} candidates", "rescored with the other words' votes"
        else:
            logps = self._next_log_probs([q.left for q in qs])
            first, first_note, second = "uni-left", "left context only", "uni-rescore"
            shortlist, how = f"top {SHORTLIST} left-context candidates", "rescored with the whole sentence"
        note = f"{'the choices' if choices else shortlist} {how}"
        rescored = [(second, note)] if rescore else []
        if rescore and self.uni is not None:
            rescored.append(("uni+bi", f"{note} and the uni model's log p of the sentence"))
        out = []
        for lp, q in zip(logps, qs, strict=True):
            preds = [Prediction(first, self._rank(lp, k, choices, q), q.unknown, first_note)]
            if rescored:
                rankings = self._rescore(q, lp, k, choices)
                preds += [Prediction(m, c, q.unknown, n) for (m, n), c in zip(rescored, rankings, strict=True)]
            out.append(preds)
        for q, preds in zip(qs, out, strict=True):
            for pred in preds if q.cut else []:
                pred.note = f"{pred.note}; {CUT_NOTE}" if pred.note else CUT_NOTE
        for text, preds in zip(texts, out, strict=True):
            for c in (c for pred in preds for c in pred.candidates):
                c.sequence = BLANK_RE.sub(lambda _, w=c.word: w, text, count=1)
        return out

    def answer_lines(
        self,
        texts: list[str],
        fill: bool = True,
        k: int = 10,
        choices: list[str] | None = None,
        batch_size: int = 64,
    ) -> list[list[Prediction] | BilmError]:
        """`fill` (or `predict`) for many lines, `batch_size` at a time; a bad line yields its error, not the others."""
        run = self.fill_many if fill else (lambda ts, k, ch: [[p] for p in self.predict_many(ts, k, ch)])
        out: list = []
        for i in range(0, len(texts), batch_size):
            chunk = texts[i : i + batch_size]
            try:
                out += run(chunk, k, choices)
            except BilmError:
                for text in chunk:  # find the bad lines, answer the rest
                    try:
                        out += run([text], k, choices)
                    except BilmError as e:
                        out.append(e)
        return out

    def _next_log_probs(self, contexts: list[list[int]]) -> torch.Tensor:
        """log p(next | ids) for each list of ids, (N, V), in passes of at most MAX_BATCH_TOKENS tokens."""
        return self._in_passes(self._next_log_probs_pass, contexts, [len(c) + 1 for c in contexts])

    def _blank_log_probs(self, qs: list[Query]) -> torch.Tensor:
        """log p(blank | left, right) for each query, (N, V), in passes of at most MAX_BATCH_TOKENS tokens."""
        return self._in_passes(self._blank_log_probs_pass, qs, [len(q.left) + len(q.right) + 3 for q in qs])

    @staticmethod
    def _in_passes(run, rows: list, lengths: list[int]) -> torch.Tensor:
        out: list[torch.Tensor | None] = [None] * len(rows)
        for batch in token_batches(lengths):
            for i, logp in zip(batch, run([rows[i] for i in batch]), strict=True):
                out[i] = logp
        return torch.stack(out)

    @torch.inference_mode()
    def _next_log_probs_pass(self, contexts: list[list[int]]) -> torch.Tensor:
        """log p(next | ids) for each list of ids, (N, V); the uni stream starts lines after <eos>.

        Rows are padded on the right: a left-to-right model's state at a row's last word never sees the pad.
        """
        tok = self.tokenizer
        x = torch.full((len(contexts), 1 + max(map(len, contexts))), tok.pad_id, dtype=torch.long)
        for row, ids in enumerate(contexts):
            x[row, : len(ids) + 1] = torch.tensor([tok.eos_id, *ids])
        h, _ = self.model(x.to(self.device))
        last = torch.tensor([len(ids) for ids in contexts], device=self.device)
        return self.model.log_prob(h[torch.arange(len(contexts), device=self.device), last]).cpu()

    @torch.inference_mode()
    def _blank_log_probs_pass(self, qs: list[Query]) -> torch.Tensor:
        """log p(blank | left, right) for each query, (N, V)."""
        tok = self.tokenizer
        sentences = [q.left + [tok.blank_id] + q.right for q in qs]
        batch = pad_sentences(sentences, tok.bos_id, tok.eos_id, tok.pad_id).to(self.device)
        h = self.model(batch.inputs, batch.lengths)
        blank = torch.tensor([len(q.left) for q in qs], device=self.device)
        return self.model.log_prob(h[torch.arange(len(qs), device=self.device), blank]).cpu()

    @torch.inference_mode()
    def sentence_log_probs(self, sentences: list[list[int]]) -> torch.Tensor:
        """Uni model: log p(sentence + <eos>) for each sentence (lists of ids), (N,)."""
        tok = self.tokenizer
        batch = pad_sentences(sentences, tok.eos_id, tok.eos_id, tok.pad_id).to(self.device)
        return self.model.sequence_log_probs(batch.inputs, batch.lengths).sum(1).cpu()

    def _rescore(self, q: Query, logp: torch.Tensor, k: int, choices: list[str] | None) -> list[list[Candidate]]:
        """The choices, or the model's own top candidates for the blank (`logp`), ranked by `choices.rescore`;
        with a uni model joined, ranked again by `choices.combine` (uni+bi), from the same scores."""
        if choices:
            known, unknown = self._choice_ids(choices)
        else:
            masked = logp.index_fill(0, self.specials, -torch.inf)
            size = BI_SHORTLIST if self.kind == "bi" else SHORTLIST
            top = masked.topk(min(size, len(masked) - len(self.specials))).indices.tolist()
            words = self.tokenizer.decode(top)
            known, unknown = [(textnorm.display(w), [i]) for w, i in zip(words, top, strict=True)], []
        rankings = 1 if self.uni is None else 2
        if not known:
            return [[replace(c) for c in unknown] for _ in range(rankings)]
        items = [(q.left + ids + q.right, len(q.left), len(q.left) + len(ids)) for _, ids in known]
        scores = [rescore(self.model, *score_filled(self.model, items, self.device))]
        if self.uni is not None:
            scores.append(combine(scores[0], score_filled(self.uni, items, self.device)[1]))
        out = []
        for s in scores:
            probs = torch.softmax(torch.from_numpy(s), 0).tolist()
            ranked = sorted(zip(known, probs, strict=True), key=lambda x: -x[1])
            top_k = ranked[: len(known) if choices else k]
            out.append([Candidate(w, p, tokens=len(ids)) for (w, ids), p in top_k] + [replace(c) for c in unknown])
        return out

    def _choice_ids(self, choices: list[str]) -> tuple[list[tuple[str, list[int]]], list[Candidate]]:
        """Choices cut as the corpus was; one with a token out of the vocabulary would be scored as
        `<unk>`, a frequent word: it is left unranked."""
        tok = self.tokenizer
        options = [(c, tok.encode(c)) for c in choices]
        known = [(w, ids) for w, ids in options if ids and tok.unk_id not in ids]
        unknown = [Candidate(w, None, False, tokens=len(ids)) for w, ids in options if not ids or tok.unk_id in ids]
        return known, unknown

    def _rank(self, logp: torch.Tensor, k: int, choices: list[str] | None, q: Query) -> list[Candidate]:
        """Top-k words (specials excluded), or the given choices ranked by their score in the blank of `q`."""
        if choices:
            known, unknown = self._choice_ids(choices)
            items = [(q.left + ids + q.right, len(q.left), len(q.left) + len(ids)) for _, ids in known]
            span, _ = score_filled(self.model, items, self.device) if items else ([], [])
            cands = [Candidate(w, math.exp(s), tokens=len(ids)) for (w, ids), s in zip(known, span, strict=True)]
            return sorted(cands, key=lambda c: -c.prob) + unknown
        masked = logp.index_fill(0, self.specials, -torch.inf)
        top = masked.topk(min(k, len(masked) - len(self.specials)))
        words = self.tokenizer.decode(top.indices.tolist())
        return [Candidate(textnorm.display(w), p) for w, p in zip(words, top.values.exp().tolist(), strict=True)]
