"""Named corpora, read as a stream of units with their sentences.

A corpus yields, for each split, *units*: a list of tokens plus the (start, end)
token spans of the sentences inside it. The stream view (for the uni model and
truncated BPTT) is every unit followed by `<eos>`; the sentence view (for the bi
model and evaluation) is the spans. One pass, nothing held in memory.

    wikitext-2  unit = a line (as the PyTorch example, so perplexities compare);
                sentences = split at . ! ?, headings skipped
    ptb         unit = a line = a sentence
    gutenberg   60 novels, header/footer stripped by MANIFEST.tsv, split by book;
                unit = a sentence
    PATH        a folder of .txt files: train/valid/test.txt if present, else split
                by file (3+ files) or by paragraph; unit = a sentence
    hf:NAME[:CONFIG]  a Hugging Face hub dataset with a `text` column (needs network)

Each corpus has a `style` (textnorm): how its text is tokenized, so that user input can
be cut the same way; raw text (every corpus but WikiText-2 and PTB) is normalised with
`textnorm.normalize` (NFKC, ASCII quotes) before it is cut into words. Units come with
the index of their *document* (a WikiText article, a Gutenberg book, a file) where the
corpus has documents, so that evaluation can resample whole documents.
"""

from __future__ import annotations

import csv
import hashlib
import os
import random
import re
from collections.abc import Iterator
from pathlib import Path

from . import hub, textnorm
from .errors import BilmError

SPLITS = ("train", "valid", "test")
NAMED = ("wikitext-2", "wikitext-103", "ptb", "gutenberg")

# Raw text is cut into words, numbers and single punctuation marks; a few titles keep
# their period so that "Mr. Holmes" does not end a sentence. Shared with the tokenizer,
# so what a user types is cut exactly as the training text was.
ABBREVIATIONS = r"(?i:mr|mrs|ms|dr|st|mme|mlle|messrs|jr|sr|prof|rev|col|capt|lt|gen|gov|sgt|mt)\."
WORD_PATTERN = r"<\w+>|" + ABBREVIATIONS + r"|\w+(?:['’]\w+)*|--|[^\w\s]"
_WORD_RE = re.compile(WORD_PATTERN)
_TERMINALS = {".", "!", "?"}
_CLOSERS = {'"', "'", ")", "’", "”"}

Unit = tuple[list[str], list[tuple[int, int]]]
DocumentedUnit = tuple[int | None, Unit]  # (document index or None, unit)


def default_corpus_dir() -> Path | None:
    """`BILM_CORPUS_DIR`, else the project's `../shared/corpora` when it exists."""
    env = os.environ.get("BILM_CORPUS_DIR")
    if env:
        return Path(env)
    for base in (Path.cwd(), Path(__file__).resolve().parent.parent):
        shared = base.parent / "shared" / "corpora"
        if shared.is_dir():
            return shared
    return None


def iter_lines(path: Path) -> Iterator[str]:
    """Lines without their ending (LF or CRLF); UTF-8, falling back to Latin-1 per line."""
    with open(path, "rb") as f:
        for raw in f:
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                line = raw.decode("latin-1")
            yield line.rstrip("\r\n")


def words(text: str) -> list[str]:
    """Cut raw text into tokens (see WORD_PATTERN)."""
    return _WORD_RE.findall(text)


def split_sentences(tokens: list[str], start: int = 0) -> list[tuple[int, int]]:
    """Sentence spans in a token list: end after . ! ? and any closing quotes."""
    spans, begin, i, n = [], 0, 0, len(tokens)
    while i < n:
        if tokens[i] in _TERMINALS:
            while i + 1 < n and tokens[i + 1] in _CLOSERS | _TERMINALS:
                i += 1
            spans.append((start + begin, start + i + 1))
            begin = i + 1
        i += 1
    if begin < n:
        spans.append((start + begin, start + n))
    return spans


def sentence_units(tokens: list[str], document: int | None) -> Iterator[DocumentedUnit]:
    """One unit per sentence of `tokens` (the raw corpora's way; WikiText keeps a line as one unit)."""
    for a, b in split_sentences(tokens):
        yield document, (tokens[a:b], [(0, b - a)])


class Corpus:
    """A source of units per split. `pretokenized` corpora are split on whitespace only."""

    name: str
    pretokenized = False
    lowercase = False
    style = "raw"  # textnorm style: how the text is tokenized
    document_unit: str | None = None  # what one document is ("article", "book"); None: no documents

    def files(self) -> list[Path]:
        """Every file read, for the cache key."""
        return []

    def units(self, split: str) -> Iterator[Unit]:
        return (unit for _, unit in self.documented_units(split))

    def documented_units(self, split: str) -> Iterator[DocumentedUnit]:
        """Each unit with the index of its document in the split (None without documents)."""
        raise NotImplementedError

    def fingerprint(self) -> str:
        h = hashlib.sha256(self.name.encode())
        for f in self.files():
            st = f.stat()
            h.update(f"{f.resolve()}:{st.st_size}:{int(st.st_mtime)}".encode())
        return h.hexdigest()


def _require_files(name: str, paths: list[Path], hint: str) -> None:
    for p in paths:
        if not p.is_file():
            raise BilmError(f"corpus {name!r}: {p} not found ({hint})")
        if p.stat().st_size == 0:
            raise BilmError(f"corpus {name!r}: {p} is empty")


class LineCorpus(Corpus):
    """WikiText-2 and PTB: pre-tokenized, one unit per line (blank lines too, as the example)."""

    pretokenized = True

    def __init__(self, name: str, paths: dict[str, Path], hint: str):
        self.name, self.paths = name, paths
        self.style = textnorm.style_for_corpus(name)
        self.document_unit = None if name == "ptb" else "article"
        _require_files(name, list(paths.values()), hint)

    def files(self) -> list[Path]:
        return list(self.paths.values())

    def documented_units(self, split: str) -> Iterator[DocumentedUnit]:
        """WikiText: an article starts at a top-level heading ` = Title = ` (sections are ` = = ... = = `)."""
        doc = -1
        for line in iter_lines(self.paths[split]):
            tokens = line.split()
            if self.name == "ptb":
                yield None, (tokens, [(0, len(tokens))] if tokens else [])
            elif tokens and tokens[0] == "=" and tokens[-1] == "=":
                if len(tokens) > 2 and tokens[1] != "=":
                    doc += 1
                yield max(doc, 0), (tokens, [])  # a heading: in the stream, not a sentence
            else:
                yield max(doc, 0), (tokens, split_sentences(tokens))


class RawTextCorpus(Corpus):
    """Plain prose: paragraphs (blank-line separated) -> words -> sentences, one unit each."""

    def __init__(self, name: str, documents: dict[str, list], lowercase: bool = False, document_unit: str = "file"):
        self.name, self.documents, self.lowercase = name, documents, lowercase
        self.document_unit = document_unit
        if not documents["train"]:
            raise BilmError(f"corpus {name!r} has no training text")

    def files(self) -> list[Path]:
        return sorted({doc.path for docs in self.documents.values() for doc in docs})

    def documented_units(self, split: str) -> Iterator[DocumentedUnit]:
        for index, doc in enumerate(self.documents[split]):
            for paragraph in doc.paragraphs():
                yield from sentence_units(words(textnorm.normalize(paragraph).replace("_", " ")), index)


class TextFile(Corpus):
    """A user's own text, cut with a checkpoint's tokenizer as its corpus was (`bilm evaluate --text`).

    Paragraphs are blank-line separated; WikiText-style tokenizers keep a paragraph as one unit with its
    sentences inside (as WikiText's lines), the others make a unit of each sentence (as the raw corpora).
    """

    document_unit = None

    def __init__(self, path: str | Path, tokenizer):
        self.path, self.tokenizer, self.name = Path(path), tokenizer, str(path)
        self.style = tokenizer.style
        if not self.path.is_file():
            raise BilmError(f"--text {self.path}: no such file")

    def files(self) -> list[Path]:
        return [self.path]

    def documented_units(self, split: str) -> Iterator[DocumentedUnit]:
        for paragraph in Document(self.path).paragraphs():
            tokens = self.tokenizer.tokenize(paragraph)
            if self.style == "wikitext":
                yield None, (tokens, split_sentences(tokens))
            else:
                yield from sentence_units(tokens, None)


class Document:
    """Lines [first, last) of a text file (None = to the end); `keep(i)` picks paragraphs by
    index, and paragraphs matching `drop` (e.g. Gutenberg's own title lines) are skipped."""

    def __init__(self, path: Path, first: int = 0, last: int | None = None, keep=None, drop: re.Pattern | None = None):
        self.path, self.first, self.last, self.keep, self.drop = path, first, last, keep, drop

    def paragraphs(self) -> Iterator[str]:
        buf, index = [], 0
        for i, line in enumerate(iter_lines(self.path)):
            if i < self.first or (self.last is not None and i >= self.last):
                continue
            if line.strip():
                buf.append(line.strip())
                continue
            if buf:
                yield from self._emit(" ".join(buf), index)
                buf, index = [], index + 1
        if buf:
            yield from self._emit(" ".join(buf), index)

    def _emit(self, paragraph: str, index: int) -> Iterator[str]:
        if (self.keep is None or self.keep(index)) and not (self.drop and self.drop.search(paragraph)):
            yield paragraph


def split_by_file(paths: list[Path], n_valid: int, n_test: int, seed: int = 1234) -> dict[str, list[Path]]:
    """A deterministic shuffle of the sorted files, then valid, test, and the rest for train."""
    order = sorted(paths)
    random.Random(seed).shuffle(order)
    return {
        "valid": sorted(order[:n_valid]),
        "test": sorted(order[n_valid : n_valid + n_test]),
        "train": sorted(order[n_valid + n_test :]),
    }


_GUTENBERG_NOTICE = re.compile(r"Project Gutenberg|\bE-?text\b", re.IGNORECASE)


def gutenberg(root: Path) -> RawTextCorpus:
    manifest = root / "MANIFEST.tsv"
    _require_files("gutenberg", [manifest], "expected the 60 novels and MANIFEST.tsv")
    with open(manifest, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    books = {}
    for row in rows:
        path = root / row["file"]
        _require_files("gutenberg", [path], "listed in MANIFEST.tsv")
        footer = row.get("footer_line") or ""
        # header_end_line is the 1-based line of the small-print end marker: text starts after it.
        last = int(footer) - 1 if footer.strip() else None
        books[path] = Document(path, int(row["header_end_line"]), last, drop=_GUTENBERG_NOTICE)
    n = len(books)
    held_out = max(1, n // 20)
    split = split_by_file(list(books), held_out, held_out) if n >= 3 else None
    if split is None:
        raise BilmError("corpus 'gutenberg' needs at least 3 books to split by book")
    documents = {s: [books[p] for p in split[s]] for s in SPLITS}
    return RawTextCorpus("gutenberg", documents, lowercase=True, document_unit="book")


def folder(root: Path) -> RawTextCorpus:
    name = str(root)
    named = {s: root / f"{s}.txt" for s in SPLITS}
    if all(p.is_file() for p in named.values()):
        _require_files(name, list(named.values()), "")
        return RawTextCorpus(name, {s: [Document(p)] for s, p in named.items()})
    paths = sorted(p for p in root.glob("*.txt") if p.is_file())
    if not paths:
        raise BilmError(f"corpus folder {root} has no .txt files")
    _require_files(name, paths, "")
    if len(paths) >= 3:
        held_out = max(1, len(paths) // 20)
        split = split_by_file(paths, held_out, held_out)
        return RawTextCorpus(name, {s: [Document(p) for p in split[s]] for s in SPLITS})
    # Few files: every 20th paragraph goes to valid, the next to test.
    keep = {
        "train": lambda i: i % 20 < 18,
        "valid": lambda i: i % 20 == 18,
        "test": lambda i: i % 20 == 19,
    }
    return RawTextCorpus(name, {s: [Document(p, keep=keep[s]) for p in paths] for s in SPLITS})


class HubCorpus(Corpus):
    """A Hugging Face hub dataset with a `text` column; downloads, so never used offline."""

    def __init__(self, spec: str):
        import datasets

        self.name = spec
        name, _, config = spec[3:].partition(":")
        self.ds = datasets.load_dataset(name, config or None)
        self.split_names = {"train": "train", "valid": "validation", "test": "test"}

    def fingerprint(self) -> str:
        return hashlib.sha256(self.name.encode()).hexdigest()

    def documented_units(self, split: str) -> Iterator[DocumentedUnit]:
        for row in self.ds[self.split_names[split]]:
            tokens = words(textnorm.normalize(row["text"]))
            yield None, (tokens, split_sentences(tokens))


class CorpusNotFound(BilmError):
    """A named corpus with no copy here."""


def open_corpus(
    name: str,
    corpus_dir: str | Path | None = None,
    hub_dir: str | Path | None = None,
    download: bool = False,
    log=print,
) -> Corpus:
    """Find a corpus by name (in `corpus_dir` / BILM_CORPUS_DIR) or by folder path.

    WikiText without a local copy: the copy fetched from the hub earlier into `hub_dir`, or with
    `download`, fetched now (hub.py).
    """
    if name.startswith("hf:"):
        return HubCorpus(name)
    if name in NAMED:
        base = Path(corpus_dir) if corpus_dir else default_corpus_dir()
        root = base / name if base else None
        if (root is None or not root.is_dir()) and name in hub.CONFIGS and hub_dir is not None:
            if download or hub.complete(Path(hub_dir) / name):
                root = hub.fetch(name, Path(hub_dir), str(root) if root else "BILM_CORPUS_DIR", log)
        if root is None:
            raise CorpusNotFound(f"corpus {name!r}: no corpus directory; pass --corpus-dir or set BILM_CORPUS_DIR")
        if not root.is_dir():
            raise CorpusNotFound(
                f"corpus {name!r} not found: {root} does not exist (pass --corpus-dir or BILM_CORPUS_DIR)"
            )
        if name in hub.CONFIGS:  # train.txt ... as pytorch/examples names them, or the archive's wiki.train.tokens
            paths = {s: root / f"{s}.txt" for s in SPLITS}
            if not all(p.is_file() for p in paths.values()) and (root / "wiki.train.tokens").is_file():
                paths = {s: root / f"wiki.{s}.tokens" for s in SPLITS}
            return LineCorpus(name, paths, "expected train.txt, valid.txt, test.txt (or wiki.train.tokens, ...)")
        if name == "ptb":
            paths = {s: root / f"ptb.{s}.txt" for s in SPLITS}
            return LineCorpus(name, paths, "expected ptb.train.txt, ptb.valid.txt, ptb.test.txt")
        return gutenberg(root)
    path = Path(name)
    if path.is_dir():
        return folder(path)
    if path.is_file():
        raise BilmError(f"corpus {name!r} is a file: pass the folder that holds it")
    raise BilmError(f"corpus {name!r} not found: use one of {', '.join(NAMED)}, a folder of .txt files, or hf:NAME")
