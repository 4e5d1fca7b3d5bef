"""User text -> the words of a corpus's own conventions, and back to text a person writes.

Each prepared corpus records a *style*, the way its training text was tokenized, and
user input is cut the same way before it meets the vocabulary:

    wikitext    WikiText-2: punctuation split off; `don't` -> `don 't`, `It's` -> `It 's`;
                `well-known` -> `well @-@ known`, `1,000` -> `1 @,@ 000`, `3.5` -> `3 @.@ 5`;
                abbreviations the vocabulary holds (`Mr.`, `U.S.`, `e.g.`) keep their period
    ptb         Penn Treebank (Mikolov's): lower case, `don't` -> `do n't`, numbers -> `N`,
                punctuation dropped (the corpus has none), hyphenated words kept whole
    raw         raw prose (Gutenberg, folders of .txt): NFKC and curly quotes/apostrophes
                mapped to ASCII, at prepare time and at input time; then the tokenizer's
                own word pattern (corpus.WORD_PATTERN)
    whitespace  split on spaces only (a tokenizer built from pre-split lines, as in tests)

Every style first applies `normalize` (NFKC + the quote mapping), so `didn’t` and `“the`
reach the vocabulary as `didn't` and `"the`. `detokenize` undoes the WikiText markup
for display: `well @-@ known` -> `well-known`.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable

STYLES = ("wikitext", "ptb", "raw", "whitespace")
NORMALIZATION = "nfkc-quotes-1"  # part of the prepared-cache key: change it when `normalize` changes

_QUOTES = str.maketrans(
    {
        "\u2018": "'",  # ‘
        "\u2019": "'",  # ’
        "\u201a": "'",  # ‚
        "\u201b": "'",  # ‛
        "\u2032": "'",  # ′
        "\u00b4": "'",  # ´
        "\u0060": "'",  # `
        "\u201c": '"',  # “
        "\u201d": '"',  # ”
        "\u201e": '"',  # „
        "\u201f": '"',  # ‟
        "\u2033": '"',  # ″
        "\u00ab": '"',  # «
        "\u00bb": '"',  # »
    }
)


def normalize(text: str) -> str:
    """NFKC (full-width letters, ligatures, `…` -> `...`), then curly quotes to ASCII."""
    return unicodedata.normalize("NFKC", text).translate(_QUOTES)


def style_for_corpus(corpus: str) -> str:
    """The style of a corpus by its name: what a checkpoint that predates styles was trained on."""
    return {"wikitext-2": "wikitext", "wikitext-103": "wikitext", "ptb": "ptb"}.get(corpus, "raw")


# -- WikiText ------------------------------------------------------------------------------

_SPECIAL = re.compile(r"<\w+>")
_LEADING = "\"'([{$#£€-"
_TRAILING = "\"'.,;:!?)]}%"
_INNER = [
    (re.compile(r"(?<=\d),(?=\d)"), " @,@ "),
    (re.compile(r"(?<=\d)\.(?=\d)"), " @.@ "),
    (re.compile(r"(?<=\w)-(?=\w)"), " @-@ "),
    (re.compile(r"(?<=\w)'(?=\w)"), " '"),
    (re.compile(r"([/;:!?()\[\]\"])"), r" \1 "),
]


def wikitext_words(text: str, known: Callable[[str], bool] | None = None) -> list[str]:
    """WikiText-2's tokenization of raw text (see the module docstring).

    `known(word)`: whether the vocabulary holds a word; a chunk ending in `.` that it knows
    (`Mr.`, `U.S.`) keeps its period, as in the corpus, unless it ends the text.
    """
    chunks = normalize(text).split()
    out: list[str] = []
    for i, chunk in enumerate(chunks):
        out += _wikitext_chunk(chunk, known, last=i == len(chunks) - 1)
    return out


def _peel(chunk: str, known, last: bool) -> tuple[list[str], str, list[str]]:
    """Leading and trailing punctuation of a whitespace chunk, one mark each (`...` as one)."""
    head: list[str] = []
    tail: list[str] = []
    while len(chunk) > 1 and chunk[0] in _LEADING and not (chunk[0] == "-" and chunk[1].isdigit()):
        head.append(chunk[0])
        chunk = chunk[1:]
    while len(chunk) > 1 and chunk[-1] in _TRAILING:
        if chunk[-1] == "." and not last and known is not None and known(chunk):
            break
        mark = "..." if chunk.endswith("...") and len(chunk) > 3 else chunk[-1]
        tail.insert(0, mark)
        chunk = chunk[: -len(mark)]
    return head, chunk, tail


def _wikitext_chunk(chunk: str, known, last: bool) -> list[str]:
    if _SPECIAL.fullmatch(chunk):
        return [chunk]
    ends_text = last and chunk.endswith(".") and any(ch.isalnum() for ch in chunk)  # `U.S.` ending the text
    if known is not None and known(chunk) and not ends_text:
        return [chunk]  # a vocabulary word as it stands: `'s`, `U.S.`, `@-@`, `...` (already-tokenized text too)
    head, chunk, tail = _peel(chunk, known, last)
    if chunk and not (known is not None and known(chunk) and not chunk.isalnum()):
        for pattern, repl in _INNER:
            chunk = pattern.sub(repl, chunk)
    return head + chunk.split() + tail


# -- Penn Treebank -------------------------------------------------------------------------

_PTB_CONTRACTIONS = [
    (
        re.compile(r"(?i)\b(ca|wo|do|does|did|is|are|was|were|has|have|had|could|would|should|must|need|ai)n't\b"),
        r"\1 n't",
    ),
    (re.compile(r"(?i)(?<=\w)'(s|re|ve|ll|d|m)\b"), r" '\1"),
]
_NUMBER = re.compile(r"^[+-]?\d[\d,.]*$")
_PTB_KEEP = {"$", "&", "%", "#"}
_CLITICS = {"'s", "'re", "'ve", "'ll", "'d", "'m", "n't"}


def ptb_words(text: str, known: Callable[[str], bool] | None = None) -> list[str]:
    """Mikolov's PTB: lower case, Treebank contractions, numbers as N, no punctuation.

    `known` as for `wikitext_words` (`mr.`, `u.s.` keep their period)."""
    text = normalize(text).lower()
    for pattern, repl in _PTB_CONTRACTIONS:
        text = pattern.sub(repl, text)
    chunks = text.split()
    out = []
    for i, chunk in enumerate(chunks):
        if _SPECIAL.fullmatch(chunk) or chunk in _CLITICS:
            out.append(chunk)
            continue
        head, core, tail = _peel(chunk, known, last=i == len(chunks) - 1)
        core = "N" if _NUMBER.match(core) else core
        out += [w for w in head + [core] + tail if w in _PTB_KEEP or any(ch.isalnum() for ch in w)]
    return out


# -- back to text --------------------------------------------------------------------------

_NO_SPACE_BEFORE = re.compile(r" ([.,;:!?)\]}%]|'(?=\w)|n't\b)")
_NO_SPACE_AFTER = re.compile(r"([(\[{$]) ")


def detokenize(words: list[str]) -> str:
    """Words as a person writes them: `well @-@ known , 1 @,@ 000 do n't` -> `well-known, 1,000 don't`."""
    text = " ".join(words)
    text = text.replace(" @-@ ", "-").replace(" @,@ ", ",").replace(" @.@ ", ".")
    text = text.replace("@-@", "-").replace("@,@", ",").replace("@.@", ".")
    text = _NO_SPACE_BEFORE.sub(r"\1", text)
    text = _NO_SPACE_AFTER.sub(r"\1", text)
    parts, opening = [], True
    for piece in text.split('"'):
        parts.append(piece)
    if len(parts) > 1:  # straight double quotes: alternately opening (no space after) and closing
        text = parts[0]
        for piece in parts[1:]:
            text = (text + '"' + piece.lstrip()) if opening else (text.rstrip() + '"' + piece)
            opening = not opening
    return text


def display(word: str) -> str:
    """One vocabulary word as shown to a person: the WikiText markup `@-@` is a `-`."""
    return {"@-@": "-", "@,@": ",", "@.@": "."}.get(word, word)
