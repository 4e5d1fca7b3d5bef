"""Word-level tokenizer (Hugging Face `tokenizers`), trained on the train split only.

Ids are sorted by frequency after the special tokens, which the adaptive softmax
relies on. The whole tokenizer, pre-tokenizer and lower-casing included, is one
`tokenizer.json`, so a checkpoint cuts user input exactly as its training text.
`style` (see textnorm) says how the corpus was tokenized before it reached us, so
that raw user input is first cut the same way: `don't` -> `don 't` for WikiText-2.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Regex, normalizers, pre_tokenizers
from tokenizers import Tokenizer as HFTokenizer
from tokenizers.models import WordLevel

from . import textnorm
from .corpus import WORD_PATTERN
from .errors import BilmError

PAD, UNK, BOS, EOS, BLANK = "<pad>", "<unk>", "<bos>", "<eos>", "<blank>"
SPECIALS = [PAD, UNK, BOS, EOS, BLANK]
SURROGATE = re.compile("[\ud800-\udfff]")  # what Python makes of bytes that are not UTF-8


class Tokenizer:
    """Thin wrapper: words <-> ids, plus the ids of the special tokens."""

    def __init__(self, hf: HFTokenizer, style: str | None = None):
        """`style`: a textnorm style; None: `raw` for a tokenizer with a word pattern, else `whitespace`."""
        self.hf = hf
        if style is None:
            style = "raw" if "Split" in json.dumps(json.loads(hf.to_str()).get("pre_tokenizer")) else "whitespace"
        if style not in textnorm.STYLES:
            raise BilmError(f"unknown text style {style!r}: use one of {', '.join(textnorm.STYLES)}")
        self.style = style
        for tok in SPECIALS:
            if hf.token_to_id(tok) is None:
                raise BilmError(f"tokenizer lacks the special token {tok}")
        self.pad_id, self.unk_id, self.bos_id, self.eos_id, self.blank_id = (hf.token_to_id(t) for t in SPECIALS)
        self._vocab = hf.get_vocab()
        self._itos = {i: w for w, i in self._vocab.items()}

    @classmethod
    def train(
        cls,
        lines: Iterable[list[str]],
        max_vocab: int | None = None,
        min_freq: int = 1,
        lowercase: bool = False,
        pretokenized: bool = True,
        style: str | None = None,
    ) -> Tokenizer:
        """Learn the vocabulary from tokenized train lines. `max_vocab` counts the specials.

        Counting is ours (the Rust trainer re-adds specials that occur in the text, as
        WikiText's literal `<unk>` does, under new ids); ties break alphabetically so the
        vocabulary is the same on every machine.
        """
        counts = Counter()
        for tokens in lines:
            counts.update(t.lower() for t in tokens) if lowercase else counts.update(tokens)
        for tok in SPECIALS:
            counts.pop(tok, None)
        ranked = sorted((w for w, c in counts.items() if c >= min_freq), key=lambda w: (-counts[w], w))
        if max_vocab:
            ranked = ranked[: max(0, max_vocab - len(SPECIALS))]
        vocab = {w: i for i, w in enumerate(SPECIALS + ranked)}
        hf = HFTokenizer(WordLevel(vocab=vocab, unk_token=UNK))
        if lowercase:
            hf.normalizer = normalizers.Lowercase()
        splitters = [pre_tokenizers.WhitespaceSplit()]
        if not pretokenized:
            splitters.append(pre_tokenizers.Split(Regex(WORD_PATTERN), behavior="isolated"))
        hf.pre_tokenizer = pre_tokenizers.Sequence(splitters)
        return cls(hf, style)

    @classmethod
    def load(cls, path: str | Path, style: str | None = None) -> Tokenizer:
        try:
            hf = HFTokenizer.from_file(str(path))
        except Exception as e:  # the Rust side raises plain Exceptions
            raise BilmError(f"cannot read tokenizer {path}: {e}") from None
        return cls(hf, style)

    def save(self, path: str | Path) -> None:
        self.hf.save(str(path))

    def to_str(self) -> str:
        return self.hf.to_str()

    def __len__(self) -> int:
        return self.hf.get_vocab_size()

    def tokenize(self, text: str) -> list[str]:
        """The words of raw `text` as the model sees them (cut as its corpus, normalised), before the vocabulary."""
        if SURROGATE.search(text):
            raise BilmError("the text is not valid Unicode (bytes that are not UTF-8?): save it as UTF-8")
        if self.style == "wikitext":
            return [self._normalize(w) for w in textnorm.wikitext_words(text, self._known)]
        if self.style == "ptb":
            return [self._normalize(w) for w in textnorm.ptb_words(text, self._known)]
        normalized = self._normalize(textnorm.normalize(text))
        return [w for w, _ in self.hf.pre_tokenizer.pre_tokenize_str(normalized)]

    def _normalize(self, text: str) -> str:
        return self.hf.normalizer.normalize_str(text) if self.hf.normalizer else text

    def _known(self, word: str) -> bool:
        return self.hf.token_to_id(self._normalize(word)) is not None

    def encode(self, text: str) -> list[int]:
        """Ids of raw `text` (see `tokenize`); unknown words give `unk_id`."""
        words = self.tokenize(text)
        return self.encode_batch([words])[0] if words else []

    def encode_batch(self, words_per_line: list[list[str]]) -> list[list[int]]:
        return [e.ids for e in self.hf.encode_batch(words_per_line, is_pretokenized=True, add_special_tokens=False)]

    def id(self, word: str) -> int:
        """Id of one word as the tokenizer would see it; unknown words give `unk_id`."""
        ids = self.encode(word)
        return ids[0] if len(ids) == 1 else self.unk_id

    def is_known(self, word: str) -> bool:
        return self.hf.token_to_id(word) is not None

    def decode(self, ids: Iterable[int]) -> list[str]:
        return [self._itos.get(int(i), UNK) for i in ids]
