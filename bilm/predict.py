"""Predictions from a checkpoint: next word, fill in a blank, rank given choices.

Three ways to fill `the boys went to the ___ and got out of the pool .`:

    bi           p(w | left, right) from the bidirectional model, one forward pass
    uni-left     p(w | left) from the unidirectional model: ignores the right context
    uni-rescore  the uni-left top candidates (plus any --choices), each scored by the
                 uni model's log-probability of the *whole* sentence, renormalised
                 over that shortlist: uses the right context at one pass per candidate

The CLI and the REPL are thin layers over `Predictor`.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from .checkpoint import Checkpoint, load_checkpoint
from .data import pad_sentences
from .errors import BilmError

BLANK_RE = re.compile(r"_{3,}|\[MASK\]")
SHORTLIST = 50  # uni-rescore: how many uni-left candidates are rescored


@dataclass
class Candidate:
    word: str
    prob: float | None  # None: the word is out of vocabulary
    known: bool = True


@dataclass
class Prediction:
    method: str  # bi | uni-left | uni-rescore | next
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


def split_blank(text: str) -> tuple[str, str]:
    """The text left and right of its one blank (`___`, `_____` or `[MASK]`)."""
    blanks = BLANK_RE.findall(text)
    if not blanks:
        raise BilmError("no blank in the text: mark the missing word with ___")
    if len(blanks) > 1:
        raise BilmError(f"the text has {len(blanks)} blanks: bilm fills one blank at a time, mark just one with ___")
    left, right = BLANK_RE.split(text)
    return left, right


class Predictor:
    def __init__(self, ckpt: Checkpoint, device: str | torch.device = "cpu"):
        self.ckpt, self.model, self.tokenizer = ckpt, ckpt.model, ckpt.tokenizer
        self.kind = ckpt.model.cfg.kind
        self.device = torch.device(device)
        tok = self.tokenizer
        self.specials = torch.tensor([tok.pad_id, tok.unk_id, tok.bos_id, tok.eos_id, tok.blank_id])

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu") -> Predictor:
        return cls(load_checkpoint(path, device), device)

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
        return Query(left_ids, right_ids, unk_left + unk_right)

    # -- predictions ---------------------------------------------------------------
    def predict(self, text: str, k: int = 10, choices: list[str] | None = None) -> Prediction:
        """The next word after `text`. A bi model fills a blank put at the end instead."""
        if self.kind == "bi":
            pred = self.fill(text.rstrip() + " ___", k, choices)[0]
            pred.note = "bi model: the next word is filled as a blank at the end of the sentence"
            return pred
        ids, unknown = self.encode(text)
        logp = self._next_log_probs(ids)
        return Prediction("next", self._rank(logp, k, choices), unknown)

    def fill(self, text: str, k: int = 10, choices: list[str] | None = None) -> list[Prediction]:
        """Candidates for the blank: [bi] for a bi model, [uni-left, uni-rescore] for a uni model."""
        q = self.query(text)
        if self.kind == "bi":
            return [Prediction("bi", self._rank(self._blank_log_probs(q), k, choices), q.unknown)]
        left = self._next_log_probs(q.left)
        return [
            Prediction("uni-left", self._rank(left, k, choices), q.unknown, "left context only"),
            Prediction(
                "uni-rescore",
                self._rescore(q, left, k, choices),
                q.unknown,
                ("the choices" if choices else f"top {SHORTLIST} left-context candidates")
                + " rescored with the whole sentence",
            ),
        ]

    @torch.inference_mode()
    def _next_log_probs(self, ids: list[int]) -> torch.Tensor:
        """log p(next | ids), (V,); the uni stream starts lines after <eos>."""
        x = torch.tensor([[self.tokenizer.eos_id, *ids]], device=self.device)
        h, _ = self.model(x)
        return self.model.log_prob(h[0, -1:])[0].cpu()

    @torch.inference_mode()
    def _blank_log_probs(self, q: Query) -> torch.Tensor:
        tok = self.tokenizer
        batch = pad_sentences([q.left + [tok.blank_id] + q.right], tok.bos_id, tok.eos_id, tok.pad_id).to(self.device)
        h = self.model(batch.inputs, batch.lengths)
        return self.model.log_prob(h[0, len(q.left) : len(q.left) + 1])[0].cpu()

    @torch.inference_mode()
    def sentence_log_probs(self, sentences: list[list[int]]) -> torch.Tensor:
        """Uni model: log p(sentence + <eos>) for each sentence (lists of ids), (N,)."""
        tok = self.tokenizer
        batch = pad_sentences(sentences, tok.eos_id, tok.eos_id, tok.pad_id).to(self.device)
        return self.model.sequence_log_probs(batch.inputs, batch.lengths).sum(1).cpu()

    def _rescore(self, q: Query, left: torch.Tensor, k: int, choices: list[str] | None) -> list[Candidate]:
        tok = self.tokenizer
        if choices:
            options = [(c, tok.encode(c)) for c in choices]
        else:
            masked = left.index_fill(0, self.specials, -torch.inf)
            top = masked.topk(min(SHORTLIST, len(masked) - len(self.specials))).indices.tolist()
            options = [(tok.decode([i])[0], [i]) for i in top]
        # An out-of-vocabulary choice would be scored as <unk>, a frequent word: leave it unranked.
        known = [(w, ids) for w, ids in options if ids and tok.unk_id not in ids]
        unknown = [Candidate(w, None, False) for w, ids in options if not ids or tok.unk_id in ids]
        if not known:
            return unknown
        scores = self.sentence_log_probs([q.left + ids + q.right for _, ids in known])
        probs = torch.softmax(scores, 0).tolist()
        ranked = sorted(zip(known, probs, strict=True), key=lambda x: -x[1])
        return [Candidate(w, p) for (w, _), p in ranked[: len(known) if choices else k]] + unknown

    def _rank(self, logp: torch.Tensor, k: int, choices: list[str] | None) -> list[Candidate]:
        """Top-k words (specials excluded), or the given choices ranked by probability."""
        if choices:
            cands = []
            for word in choices:
                i = self.tokenizer.id(word)
                known = i != self.tokenizer.unk_id
                cands.append(Candidate(word, logp[i].exp().item() if known else None, known))
            return sorted(cands, key=lambda c: (c.prob is None, -(c.prob or 0.0)))
        masked = logp.index_fill(0, self.specials, -torch.inf)
        top = masked.topk(min(k, len(masked) - len(self.specials)))
        words = self.tokenizer.decode(top.indices.tolist())
        return [Candidate(w, p) for w, p in zip(words, top.values.exp().tolist(), strict=True)]
