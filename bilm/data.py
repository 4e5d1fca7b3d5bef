"""Encoded corpus cache and batching.

`prepare` tokenizes a corpus once into `data/<corpus>-<key>/`:

    tokenizer.json      the vocabulary (train split only)
    meta.json           settings, counts, dtype
    {split}.ids         the token stream, raw uint16/uint32 (memory-mapped when read)
    {split}.spans.npy   (N, 2) int64 sentence [start, end) offsets into the stream
    {split}.docs.npy    (N,) int64 document of each sentence (corpora with documents only)

The key hashes the corpus files, the tokenizer settings and the text style with its
normalisation (textnorm), so a second `prepare`
or `train` reads the cache and tokenizes nothing. Training reads batches straight
from the memory map: memory does not grow with the corpus.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from . import textnorm
from .corpus import SPLITS, Corpus, CorpusNotFound, TextFile, open_corpus
from .errors import BilmError
from .models import Batch
from .tokenizer import Tokenizer

CACHE_VERSION = 2  # 2: text style, NFKC/quote normalisation of raw text, document of each sentence
CHUNK_UNITS = 20_000  # units encoded per call into the Rust tokenizer


@dataclass
class DataConfig:
    corpus: str = "wikitext-2"
    max_vocab: int | None = None  # None: every train word (WikiText-2: 33,278 as published)
    min_freq: int = 1
    lowercase: bool | None = None  # None: the corpus's default (gutenberg lower-cases)

    def to_dict(self) -> dict:
        return asdict(self)


def default_data_dir() -> Path:
    return Path(os.environ.get("BILM_DATA_DIR", "data"))


class PreparedData:
    """A prepared corpus: its tokenizer, counts, and memory-mapped splits."""

    def __init__(self, path: Path):
        self.path = path
        self.meta = json.loads((path / "meta.json").read_text())
        self.tokenizer = Tokenizer.load(path / "tokenizer.json", self.meta.get("text_style"))
        self.config = DataConfig(**self.meta["config"])

    def stream(self, split: str) -> np.ndarray:
        n = self.meta["splits"][split]["tokens"]
        if n == 0:
            return np.zeros(0, dtype=self.meta["dtype"])
        return np.memmap(self.path / f"{split}.ids", dtype=self.meta["dtype"], mode="r", shape=(n,))

    def spans(self, split: str) -> np.ndarray:
        return np.load(self.path / f"{split}.spans.npy", mmap_mode="r", allow_pickle=False)

    @property
    def document_unit(self) -> str | None:
        """What one document is ("article", "book", "file"), or None when the corpus has none."""
        return self.meta.get("document_unit")

    def documents(self, split: str) -> np.ndarray | None:
        """The document index of each sentence of `split` (N,), or None when the corpus has none."""
        path = self.path / f"{split}.docs.npy"
        return np.load(path, allow_pickle=False) if path.is_file() else None

    def sentences(self, split: str) -> Iterator[list[int]]:
        """Each sentence of `split` as a list of ids (no <bos>/<eos>)."""
        ids = self.stream(split)
        for a, b in self.spans(split):
            yield ids[a:b].tolist()


def prepare(
    cfg: DataConfig, corpus_dir: str | Path | None = None, data_dir: str | Path | None = None, log=print
) -> PreparedData:
    """Tokenize and cache `cfg.corpus` unless an identical cache exists; return it.

    A named corpus whose text is not here: the cache prepared from it earlier with the same
    settings (a machine given `data/` alone, e.g. a GPU node), else, for WikiText, the copy
    from the Hugging Face hub (hub.py), fetched once into `DATA_DIR/hub/`.
    """
    root = Path(data_dir or default_data_dir())
    try:
        corpus = open_corpus(cfg.corpus, corpus_dir, hub_dir=root / "hub")
    except CorpusNotFound:
        prepared = find_prepared(cfg, root)
        if prepared is not None:
            log(f"{cfg.corpus}: no text here; using the cache prepared from it, {prepared.path}")
            return prepared
        corpus = open_corpus(cfg.corpus, corpus_dir, hub_dir=root / "hub", download=True, log=log)
    lowercase = corpus.lowercase if cfg.lowercase is None else cfg.lowercase
    settings = dict(cfg.to_dict(), lowercase=lowercase, version=CACHE_VERSION, source=corpus.fingerprint())
    settings.update(text_style=corpus.style, normalization=textnorm.NORMALIZATION)
    key = _cache_key(settings)

    def build(tmp: Path) -> dict:
        log(f"tokenizing {cfg.corpus} (train split only for the vocabulary)...")
        tok = Tokenizer.train(
            (tokens for tokens, _ in corpus.units("train")),
            max_vocab=cfg.max_vocab,
            min_freq=cfg.min_freq,
            lowercase=lowercase,
            pretokenized=corpus.pretokenized,
            style=corpus.style,
        )
        if len(tok) <= 5:
            raise BilmError(f"corpus {cfg.corpus!r}: the train split has no words")
        tok.save(tmp / "tokenizer.json")
        dtype = "uint16" if len(tok) < 2**16 else "uint32"
        splits = {split: _encode_split(corpus, split, tok, tmp, dtype) for split in SPLITS}
        for split, counts in splits.items():
            if counts["tokens"] == 0:
                raise BilmError(f"corpus {cfg.corpus!r}: the {split} split has no text")
        meta = dict(config=dict(cfg.to_dict(), lowercase=lowercase), vocab_size=len(tok), dtype=dtype, splits=splits)
        meta.update(key=key, source=corpus.fingerprint(), pretokenized=corpus.pretokenized, version=CACHE_VERSION)
        meta.update(text_style=corpus.style, normalization=textnorm.NORMALIZATION, document_unit=corpus.document_unit)
        return meta

    return _build_cache(root / f"{_slug(cfg.corpus)}-{key}", build)


def _cache_key(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]


def _build_cache(out: Path, build: Callable[[Path], dict]) -> PreparedData:
    """The cache at `out`, built first if missing: `build(tmp)` writes its files into a temporary sibling and
    returns its meta; the folder then appears at `out` whole, by one rename, or not at all."""
    if (out / "meta.json").is_file():
        return PreparedData(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        (tmp / "meta.json").write_text(json.dumps(build(tmp), indent=2))
        try:
            tmp.rename(out)
        except OSError:  # another process finished the same cache first
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return PreparedData(out)


def _slug(corpus: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in Path(corpus).name or "corpus")


def find_prepared(cfg: DataConfig, data_dir: Path) -> PreparedData | None:
    """The newest cache in `data_dir` prepared from `cfg.corpus` with these settings, whatever its source files."""
    matches = []
    for meta_file in Path(data_dir).glob(f"{_slug(cfg.corpus)}-*/meta.json"):
        meta = json.loads(meta_file.read_text())
        made = meta.get("config", {})
        same = dict(corpus=cfg.corpus, max_vocab=cfg.max_vocab, min_freq=cfg.min_freq)
        if cfg.lowercase is not None:
            same["lowercase"] = cfg.lowercase
        current = meta.get("version") == CACHE_VERSION and meta.get("normalization") == textnorm.NORMALIZATION
        if current and all(made.get(k) == v for k, v in same.items()):
            matches.append(meta_file)
    newest = max(matches, key=lambda f: f.stat().st_mtime, default=None)
    return PreparedData(newest.parent) if newest else None


def prepare_text(path: str | Path, tokenizer: Tokenizer, data_dir: str | Path | None = None) -> PreparedData:
    """A text file encoded with a checkpoint's own tokenizer, cached as a prepared corpus whose one split is `text`."""
    corpus = TextFile(path, tokenizer)
    key = _cache_key(dict(version=CACHE_VERSION, source=corpus.fingerprint(), tokenizer=tokenizer.to_str()))

    def build(tmp: Path) -> dict:
        tokenizer.save(tmp / "tokenizer.json")
        dtype = "uint16" if len(tokenizer) < 2**16 else "uint32"
        counts = _encode_split(corpus, "text", tokenizer, tmp, dtype)
        if counts["sentences"] == 0:
            raise BilmError(f"--text {path}: no sentences in it")
        meta = dict(config=DataConfig(str(path)).to_dict(), vocab_size=len(tokenizer), dtype=dtype)
        meta.update(splits=dict(text=counts), key=key, text_style=tokenizer.style, version=CACHE_VERSION)
        return meta

    return _build_cache(Path(data_dir or default_data_dir()) / f"text-{key}", build)


def _encode_split(corpus: Corpus, split: str, tok: Tokenizer, out: Path, dtype: str) -> dict:
    """Stream one split to `{split}.ids` and `{split}.spans.npy`, a chunk of units at a time."""
    n_tokens = n_unk = 0
    spans: list[tuple[int, int]] = []
    docs: list[int] = []
    with open(out / f"{split}.ids", "wb") as f:
        chunk: list = []

        def flush():
            nonlocal n_tokens, n_unk
            encoded = tok.encode_batch([tokens for _, (tokens, _) in chunk]) if chunk else []
            for (doc, (_, unit_spans)), ids in zip(chunk, encoded, strict=True):
                kept = [(n_tokens + a, n_tokens + b) for a, b in unit_spans if b > a]
                spans.extend(kept)
                docs.extend([-1 if doc is None else doc] * len(kept))
                arr = np.asarray(ids + [tok.eos_id], dtype=dtype)
                n_unk += int((arr == tok.unk_id).sum())
                n_tokens += arr.size
                arr.tofile(f)
            chunk.clear()

        for unit in corpus.documented_units(split):
            chunk.append(unit)
            if len(chunk) >= CHUNK_UNITS:
                flush()
        flush()
    np.save(out / f"{split}.spans.npy", np.asarray(spans, dtype=np.int64).reshape(-1, 2))
    counts = dict(tokens=n_tokens, unk=n_unk, sentences=len(spans))
    if corpus.document_unit is not None:
        np.save(out / f"{split}.docs.npy", np.asarray(docs, dtype=np.int64))
        counts["documents"] = len(set(docs))
    return counts


class StreamBatches:
    """The stream cut into B rows, read T steps at a time (truncated BPTT).

        stream: a b c d e f g h i j k l m n o p q r s t u v w x      B = 4, T = 2
        rows:   a b c d e f  | g h i j k l  | m n o p q r  | s t u v w x
        batch 0: inputs [[a b] [g h] [m n] [s t]]  targets [[b c] [h i] [n o] [t u]]
        batch 1: inputs [[c d] [i j] ...]          (state carried from batch 0)

    Each row continues where it left off, so the hidden state carries across batches.

    With `world` processes (distributed.py) the stream is cut into B x world rows and process
    `rank` reads rows [rank B, (rank + 1) B): together they read the batches of one process with
    B x world rows. Views of the memory map: each process maps the file, none copies it.
    """

    def __init__(self, ids: np.ndarray, batch_size: int, bptt: int, rank: int = 0, world: int = 1):
        self.bptt = bptt
        rows = batch_size * world
        per_row = (len(ids) - 1) // rows
        if per_row < 2:
            raise BilmError(f"too little text for batch size {batch_size} x {world} processes: {len(ids)} tokens")
        mine = slice(rank * batch_size, (rank + 1) * batch_size)
        self.inputs = ids[: per_row * rows].reshape(rows, per_row)[mine]
        self.targets = ids[1 : per_row * rows + 1].reshape(rows, per_row)[mine]

    def __len__(self) -> int:
        return -(-self.inputs.shape[1] // self.bptt)

    def __call__(self, epoch: int = 0, start: int = 0) -> Iterator[Batch]:
        for i in range(start, len(self)):
            cols = slice(i * self.bptt, (i + 1) * self.bptt)
            yield Batch(_long(self.inputs[:, cols]), _long(self.targets[:, cols]))


class SentenceBatches:
    """Padded batches of whole sentences, `<bos> w1..wn <eos> <pad>...` (B, n_max + 2).

    Sentences longer than `max_len` are cut into pieces. Memory does not grow with the corpus:
    the sentence spans stay memory-mapped and are read a chunk at a time.

        spans (memory-mapped):  | c0 | c1 | c2 | c3 | c4 | c5 | ...   chunks of `chunk` sentences
        epoch order:            c4 c1 c5 | c0 c3 c2 | ...            `pool` chunks mixed per pool
        each pool:              cut into pieces, shuffled, sorted by length (little padding),
                                cut into batches of B, batches shuffled and yielded

    Pieces left over from a pool's last batch go into the next pool, so one batch per epoch at
    most is short. With `shuffle`, each epoch's order comes from (seed, epoch) alone, so a
    resumed run sees the same batches; without it, chunks and batches keep corpus order.

    With `world` processes every one orders the same batches of B x world pieces and process
    `rank` takes its share of each: the same number of batches everywhere, none empty (a last
    batch with fewer pieces than processes is left out of the epoch).
    """

    def __init__(
        self, ids, spans, batch_size, max_len, bos, eos, pad, shuffle=True, seed=0, chunk=4096, pool=8, rank=0, world=1
    ):
        """`chunk`: sentences read from the spans at a time; `pool`: chunks shuffled together."""
        self.ids, self.batch_size, self.max_len, self.shuffle, self.seed = ids, batch_size, max_len, shuffle, seed
        self.rank, self.world = rank, world
        self.chunk_size, self.pool_chunks = chunk, pool
        self.bos, self.eos, self.pad = bos, eos, pad
        self.spans = np.asarray(spans, dtype=np.int64).reshape(-1, 2)
        self.chunks = -(-len(self.spans) // chunk)
        self.pieces = sum(len(self._pieces(c)) for c in range(self.chunks))
        if self.pieces == 0:
            raise BilmError("no sentences to batch")

    def __len__(self) -> int:
        rows = self.batch_size * self.world
        short = self.pieces % rows
        return -(-self.pieces // rows) - (0 < short < self.world)

    def _pieces(self, c: int) -> np.ndarray:
        size = self.chunk_size
        return split_spans(np.asarray(self.spans[c * size : (c + 1) * size]), self.max_len)

    def _order(self, epoch: int) -> Iterator[np.ndarray]:
        """The epoch's batches as (B, 2) arrays of piece spans."""
        g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        shuffled = lambda n: torch.randperm(n, generator=g).numpy() if self.shuffle else np.arange(n)  # noqa: E731
        chunks, carry, B = shuffled(self.chunks), np.zeros((0, 2), np.int64), self.batch_size * self.world
        for i in range(0, self.chunks, self.pool_chunks):
            pool = np.concatenate([carry, *(self._pieces(c) for c in chunks[i : i + self.pool_chunks])])
            pool = pool[shuffled(len(pool))]
            pool = pool[np.argsort(pool[:, 1] - pool[:, 0], kind="stable")]
            full = len(pool) if i + self.pool_chunks >= self.chunks else len(pool) // B * B
            batches, carry = [pool[j : j + B] for j in range(0, full, B)], pool[full:]
            yield from (batches[k] for k in shuffled(len(batches)))

    def __call__(self, epoch: int = 0, start: int = 0) -> Iterator[Batch]:
        shared = (pieces for pieces in self._order(epoch) if len(pieces) >= self.world)
        for index, pieces in enumerate(shared):
            if index >= start:
                mine = np.array_split(pieces, self.world)[self.rank]
                yield self.collate([self.ids[a:b] for a, b in mine])

    def collate(self, sentences: list) -> Batch:
        return pad_sentences(sentences, self.bos, self.eos, self.pad)


class DeviceBatches:
    """Batches moved to a CUDA device one ahead, from pinned host memory with non-blocking copies
    (Batch.to): the copy of the next batch overlaps the step on this one."""

    def __init__(self, batches, device: torch.device):
        self.batches, self.device = batches, device

    def __len__(self) -> int:
        return len(self.batches)

    def __call__(self, epoch: int = 0, start: int = 0) -> Iterator[Batch]:
        ahead = None
        for batch in self.batches(epoch, start):
            moved = pinned(batch).to(self.device)
            if ahead is not None:
                yield ahead
            ahead = moved
        if ahead is not None:
            yield ahead


def on_device(batches, device: torch.device):
    """`batches` as DeviceBatches on CUDA; elsewhere as they are (the trainer's copy is a no-op on the CPU)."""
    return DeviceBatches(batches, device) if device.type == "cuda" else batches


def pinned(batch: Batch) -> Batch:
    return Batch(*(None if t is None else t.pin_memory() for t in (batch.inputs, batch.targets, batch.lengths)))


def split_spans(spans: np.ndarray, max_len: int) -> np.ndarray:
    """(N, 2) sentence spans -> (M, 2) pieces of at most `max_len` tokens, in order; empty spans vanish.

    Vectorised: a 100 M-token corpus has millions of sentences, and a Python tuple per
    piece would make training memory grow with the corpus.
    """
    a, e = spans[:, 0], spans[:, 1]
    n = np.maximum(-(-(e - a) // max_len), 0)  # pieces per sentence
    first = np.repeat(np.cumsum(n) - n, n)  # index of each piece's first sibling
    starts = np.repeat(a, n) + max_len * (np.arange(n.sum()) - first)
    return np.stack([starts, np.minimum(starts + max_len, np.repeat(e, n))], 1)


def document_runs(docs: np.ndarray | None, n: int) -> np.ndarray:
    """Which run of consecutive sentences of one document each of the n sentences is in (N,), from 0.

    Without documents every sentence is in run 0: the whole split is one document.
    """
    run = np.zeros(n, np.int64)
    if docs is not None and n:
        docs = np.asarray(docs)
        run[1:] = np.cumsum(docs[1:] != docs[:-1])
    return run


def document_spans(spans: np.ndarray, docs: np.ndarray | None) -> np.ndarray:
    """(N, 2) sentence spans -> (D, 2) spans of running text, from the first sentence of each document to its last.

    What a bi model trained with `context="document"` reads: cut into pieces of `max_len` tokens, a
    piece crosses sentence (and paragraph) boundaries but never a document's.
    """
    spans = np.asarray(spans, dtype=np.int64).reshape(-1, 2)
    if len(spans) == 0:
        return spans
    first = np.flatnonzero(np.diff(document_runs(docs, len(spans)), prepend=-1))  # a new document starts here
    last = np.r_[first[1:], len(spans)] - 1
    return np.stack([spans[first, 0], spans[last, 1]], 1)


def context_windows(ids: np.ndarray, spans: np.ndarray, docs: np.ndarray | None, context: int):
    """Each sentence with up to `context` tokens of its document on either side.

    Returns (windows, offsets): windows[i] is a list of ids, and sentence i is
    windows[i][offsets[i] : offsets[i] + its length]. The context is cut off at the document's
    first and last sentence, so it never reads another article.

        document:   ... s3 s4 [ s5 ] s6 s7 ...
        window 5:        ---- [ s5 ] ----       `context` tokens each side (fewer at the edges)
    """
    spans = np.asarray(spans, dtype=np.int64).reshape(-1, 2)
    bounds = document_spans(spans, docs)[document_runs(docs, len(spans))]  # (N, 2): each sentence's document
    lo = np.maximum(spans[:, 0] - context, bounds[:, 0])
    hi = np.minimum(spans[:, 1] + context, bounds[:, 1])
    windows = [ids[a:b].tolist() for a, b in zip(lo, hi, strict=True)]
    return windows, spans[:, 0] - lo


def pad_sentences(sentences: list, bos: int, eos: int, pad: int) -> Batch:
    """Sentences (lists of ids) -> Batch(inputs (B, n_max + 2), lengths (B,))."""
    lengths = [len(s) for s in sentences]
    out = np.full((len(sentences), max(lengths) + 2), pad, dtype=np.int64)
    out[:, 0] = bos
    for row, s in enumerate(sentences):
        out[row, 1 : len(s) + 1] = s
        out[row, len(s) + 1] = eos
    return Batch(torch.from_numpy(out), lengths=torch.tensor(lengths))


def unigram_counts(ids: np.ndarray, vocab_size: int, chunk: int = 1 << 24) -> torch.Tensor:
    """How often each id occurs (V,), counted a chunk at a time: `ids` may be a 100 M-token memmap."""
    counts = np.zeros(vocab_size, dtype=np.int64)
    for i in range(0, len(ids), chunk):
        counts += np.bincount(np.asarray(ids[i : i + chunk], dtype=np.int64), minlength=vocab_size)
    return torch.from_numpy(counts)


def _long(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64))
