"""Held-out metrics: perplexity, and fill-in-the-blank accuracy of three methods.

Perplexity is exp(mean negative log-likelihood per predicted token):

- uni (stream perplexity): the split is read as one token stream in B rows, T steps
  at a time, with the hidden state carried across windows, and every token,
  `<eos>` and `<unk>` included, is predicted once from all the text before it in
  its row. This is how the PyTorch example and the WikiText-2/PTB literature count
  (WikiText-2 valid: 217,646 tokens), so the figures are comparable.
- bi (fill-in perplexity): every word of every sentence is predicted from the rest
  of its sentence (pseudo-perplexity); `<bos>`/`<eos>` are context, never targets.
  It is not comparable with the uni figure: it sees both sides.

Fill in the blank (`fill_in`): every word of every sentence is blanked in turn and
each method ranks the whole vocabulary (special tokens excluded) for it:

    bi           p(w_t | rest of the sentence): one pass per sentence gives every t
    uni-left     p(w_t | w_<t) from `<eos> w1..wn`: one pass per sentence gives every t;
                 the sentence starts fresh (as `Predictor` does), so it sees exactly
                 the words on bi's left side
    uni-rescore  the uni-left top K (`shortlist`), each scored by the uni model's
                 log-probability of the whole filled sentence: K passes per blank, so
                 it is run on a seeded random sample of positions; a target outside
                 the shortlist counts as a miss (rank infinity)
    bi-rescore   the bi top K (`bi_shortlist`), each scored by log p(w_t | rest) plus a
                 share of the filled sentence's other words' pseudo-log-likelihood
                 (choices.rescore): the words around the blank vote too. On the same
                 sample as uni-rescore, so the two compare blank for blank
    uni+bi       both models together: the bi top K, each scored by bi-rescore's score plus
                 the uni model's log-probability of the filled sentence (choices.combine);
                 on the same sample

rank = 1 + the number of words with a strictly higher score than the target;
top-k accuracy = share of blanks with rank <= k; MRR = mean of 1/rank. `<unk>`
targets are excluded: predicting `<unk>` is easy and says nothing. Confidence
intervals are 95 % percentile bootstraps that resample whole documents (WikiText
articles, Gutenberg books) where the corpus has at least MIN_DOCUMENTS of them in the
split, else whole sentences: the blanks of one sentence, and the sentences of one
article, are not independent. The unit resampled is part of the summary. A group of
fewer than MIN_CI_BLANKS blanks gets no interval: its figure is shown with its n.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from itertools import islice

import numpy as np
import torch
from tqdm import tqdm

from .choices import combine, rescore, score_filled
from .data import SentenceBatches, StreamBatches, pad_sentences
from .distributed import ONE, Group
from .models import AdaptiveSoftmax, BiLM, LanguageModel
from .predict import BI_SHORTLIST, SHORTLIST
from .tokenizer import Tokenizer

TOPK = (1, 5, 10)
METRICS = tuple(f"top{k}" for k in TOPK) + ("mrr",)
LENGTH_BUCKETS = ((1, 10), (11, 20), (21, 40), (41, math.inf))
POSITIONS = ("start", "middle", "end")
MIN_DOCUMENTS = 20  # fewer documents in the split: resample sentences (and say so)
MIN_CI_BLANKS = 30  # smaller groups: no interval, the figure with its n
RESCORED = ("uni-rescore", "bi-rescore", "uni+bi")  # the methods run on a sample of the blanks
CHUNK = 256  # blanks ranked at once: (CHUNK, V) floats, small enough to stay in cache
WORD_CLASSES = ("content", "function", "punctuation")
# Closed-class English words (articles, pronouns, auxiliaries, prepositions, conjunctions).
FUNCTION_WORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before being
    below between both but by can could did do does doing down during each few for from further had
    has have having he her here hers herself him himself his how i if in into is it its itself just
    may me might more most must my myself no nor not now of off on once only or other our ours
    ourselves out over own same shall she should so some such than that the their theirs them
    themselves then there these they this those through to too under until up upon very was we were
    what when where which while who whom whose why will with would you your yours yourself
    yourselves 's n't 'd 'll 're 've 'm""".split()
)


@torch.inference_mode()
def stream_perplexity(
    model: LanguageModel, ids: np.ndarray, device, batch_size: int = 10, bptt: int = 35, group: Group = ONE
) -> dict:
    """Perplexity of the stream read as `batch_size` rows; with a process `group`, each reads its share of the rows."""
    model.eval()
    total, count, state = 0.0, 0, None
    rows = -(-batch_size // group.world)
    for batch in StreamBatches(ids, rows, bptt, group.rank, group.world)():
        batch = batch.to(device)
        loss, state = model.loss(batch, state)
        total += loss.item() * batch.num_tokens
        count += batch.num_tokens
    return _summary(*group.sum(total, count))


@torch.inference_mode()
def fill_perplexity(
    model: LanguageModel,
    ids: np.ndarray,
    spans: np.ndarray,
    device,
    batch_size: int = 64,
    max_len: int = 10**9,
    group: Group = ONE,
) -> dict:
    """Fill-in pseudo-perplexity of every span (a sentence, or a piece of at most `max_len` tokens).

    With a process `group`, each scores every world-th batch.
    """
    model.eval()
    cfg = model.cfg
    batches = SentenceBatches(ids, spans, batch_size, max_len, cfg.bos_id, cfg.eos_id, cfg.pad_id, shuffle=False)
    total, count = 0.0, 0
    for batch in islice(batches(), group.rank, None, group.world):
        batch = batch.to(device)
        total -= model.sequence_log_probs(batch.inputs, batch.lengths).sum().item()
        count += batch.num_tokens
    return _summary(*group.sum(total, count))


def _summary(total_nll: float, count: int) -> dict:
    loss = total_nll / max(count, 1)
    return {"loss": loss, "ppl": math.exp(min(loss, 50)), "tokens": count}


def lm_quality(model: LanguageModel, ids: np.ndarray, spans: np.ndarray, device, batch_size: int = 10) -> dict:
    """The model's perplexity (stream for uni, fill-in for bi), with the targets it counts.

    `unk_rate` is the share of those targets that are `<unk>`: a corpus with more `<unk>`
    is easier, so it belongs next to every perplexity.
    """
    unk = model.cfg.unk_id
    started = time.perf_counter()
    if isinstance(model, BiLM):
        result = fill_perplexity(model, ids, spans, device)
        unk_count = sum(int((ids[a:b] == unk).sum()) for a, b in spans)
        method = "fill-in pseudo-perplexity: each sentence word from the rest of its sentence"
    else:
        result = stream_perplexity(model, ids, device, batch_size=batch_size)
        per_row = (len(ids) - 1) // batch_size
        unk_count = int((np.asarray(ids[1 : per_row * batch_size + 1]) == unk).sum())
        method = f"stream, {batch_size} rows, BPTT 35, state carried; <eos> and <unk> counted"
    result.update(unk=unk_count, unk_rate=unk_count / max(result["tokens"], 1), method=method)
    result["seconds"] = round(time.perf_counter() - started, 2)
    return result


# -- fill in the blank -------------------------------------------------------------------


@dataclass
class FillConfig:
    rescore_sample: int = 1000  # blanks that uni-rescore, bi-rescore and uni+bi rank (0: skip them)
    shortlist: int = SHORTLIST  # uni-rescore candidates per blank (as `bilm fill`)
    bi_shortlist: int = BI_SHORTLIST  # bi-rescore and uni+bi candidates per blank (as `bilm fill`)
    batch_size: int = 256  # sentences per pass
    bootstrap: int = 1000  # resamples for the confidence intervals
    seed: int = 1234
    max_sentences: int | None = None  # the first N sentences only (quick runs)
    context: int = 0  # tokens of the sentence's document each side that every method reads (data.context_windows)
    min_documents: int = MIN_DOCUMENTS  # resample documents when the evaluated text has at least this many

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class FillResult:
    """One entry per evaluated blank (N,): where it is, its target, each method's rank and log p.

    `ranks[m]` is float: nan where method m was not run on the blank (the rescoring methods
    outside their sample), inf where the target was not in its shortlist.
    """

    sentence: np.ndarray
    index: np.ndarray
    length: np.ndarray
    target: np.ndarray
    n_sentences: int
    excluded_unk: int
    ranks: dict[str, np.ndarray] = field(default_factory=dict)
    log_probs: dict[str, np.ndarray] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    passes: dict[str, int] = field(default_factory=dict)
    features: dict[str, torch.Tensor] = field(default_factory=dict)  # (N, H) per method, when asked (the cache)


def sentence_features(model: LanguageModel, sentences: list, device) -> torch.Tensor:
    """Features predicting each word from the context the method allows: (B, n_max, H).

    bi reads `<bos> w1..wn <eos>`; uni reads `<eos> w1..w_{n-1}`, its step t predicting w_{t+1}.
    """
    cfg = model.cfg
    start = cfg.bos_id if isinstance(model, BiLM) else cfg.eos_id
    batch = pad_sentences(sentences, start, cfg.eos_id, cfg.pad_id).to(device)
    if isinstance(model, BiLM):
        return model(batch.inputs, batch.lengths)
    return model(batch.inputs[:, :-2])[0]


def window_features(model: LanguageModel, windows: list, offsets: np.ndarray, n_max: int, device) -> torch.Tensor:
    """`sentence_features` of each window, cut to its sentence's words: (B, n_max, H).

    Row i's sentence starts `offsets[i]` words into windows[i]; uni reads only up to its end.
    A sentence read alone is its own window at offset 0.
    """
    if not isinstance(model, BiLM):
        windows = [w[: o + n_max] for w, o in zip(windows, offsets, strict=True)]
    h = sentence_features(model, windows, device)
    at = torch.as_tensor(offsets, device=device)[:, None] + torch.arange(n_max, device=device)
    return h.gather(1, at.clamp(max=h.size(1) - 1)[..., None].expand(-1, -1, h.size(2)))


def target_ranks(logp: torch.Tensor, targets: torch.Tensor, excluded: torch.Tensor) -> torch.Tensor:
    """Rank (1 = best) of each target in its row of scores (N, V); `excluded` ids never compete.

    The excluded columns are subtracted rather than masked: masking would copy (N, V).
    """
    t = logp.gather(1, targets[:, None])
    return (logp > t).sum(1) - (logp[:, excluded] > t).sum(1) + 1


def special_ids(model: LanguageModel) -> torch.Tensor:
    c = model.cfg
    return torch.tensor([c.pad_id, c.unk_id, c.bos_id, c.eos_id, c.blank_id])


def rank_targets(model: LanguageModel, h: torch.Tensor, targets: torch.Tensor, excluded: torch.Tensor):
    """Rank (N,) and log p (N,) of each target from features h (N, H).

    The same numbers as `target_ranks(model.log_prob(h), ...)`: the adaptive softmax's blocks
    (head words, then each cluster; `log_prob_blocks`, which its `log_prob` joins) are counted in
    place instead of copied into one (N, V) tensor.
    """
    x = model.output_features(h)
    rows = torch.arange(len(targets), device=h.device)
    if not isinstance(model.output, AdaptiveSoftmax):
        logp = model.output.log_prob(x)
        return target_ranks(logp, targets, excluded), logp[rows, targets]
    blocks = model.output.log_prob_blocks(x)
    edges = [0, *model.output.asm.cutoffs]
    tlp = x.new_zeros(len(targets))
    for block, lo, hi in zip(blocks, edges[:-1], edges[1:], strict=True):
        inside = (targets >= lo) & (targets < hi)
        tlp = torch.where(inside, block[rows, (targets - lo).clamp(0, hi - lo - 1)], tlp)
    above = sum((b > tlp[:, None]).sum(1) for b in blocks)
    return above - (blocks[0][:, excluded] > tlp[:, None]).sum(1) + 1, tlp


def blank_positions(sentences: list, unk_id: int) -> FillResult:
    """Every non-`<unk>` word of every sentence, in sentence order."""
    lengths = np.fromiter((len(s) for s in sentences), dtype=np.int64, count=len(sentences))
    flat = np.concatenate([np.asarray(s, dtype=np.int64) for s in sentences]) if sentences else np.zeros(0, np.int64)
    sentence = np.repeat(np.arange(len(sentences)), lengths)
    index = np.arange(len(flat)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    keep = flat != unk_id
    return FillResult(
        sentence[keep], index[keep], lengths[sentence][keep], flat[keep], len(sentences), int((~keep).sum())
    )


def blank_features(
    model: LanguageModel,
    sentences: list,
    result: FillResult,
    device,
    batch_size: int,
    windows: tuple[list, np.ndarray] | None = None,
):
    """(dest, features (n, H)) per batch: the features predicting the blanks `result.target[dest]`.

    One pass per sentence; with `windows` (data.context_windows) each sentence is read inside its window
    of document context. Sentences go in length order so that batches carry little padding.
    """
    model.eval()
    n = len(sentences)
    lengths = np.fromiter((len(s) for s in sentences), dtype=np.int64, count=n)
    texts, starts = windows or (sentences, np.zeros(n, np.int64))
    # Row of each kept blank in the result, addressed by (sentence, index).
    offsets = np.cumsum(lengths) - lengths
    slot = np.full(int(lengths.sum()), -1, dtype=np.int64)
    slot[offsets[result.sentence] + result.index] = np.arange(len(result.target))
    order = np.argsort([len(t) for t in texts], kind="stable")
    for i in range(0, n, batch_size):
        rows = order[i : i + batch_size]
        h = window_features(model, [texts[r] for r in rows], starts[rows], int(lengths[rows].max()), device)
        words = np.arange(h.size(1))[None, :]
        mask = words < lengths[rows][:, None]
        dest = slot[(offsets[rows][:, None] + words)[mask]]  # row-major, as h[mask]
        keep = dest >= 0
        yield dest[keep], h[torch.from_numpy(mask).to(device)][torch.from_numpy(keep).to(device)]


@torch.inference_mode()
def rank_all(
    model: LanguageModel,
    sentences: list,
    result: FillResult,
    device,
    batch_size: int,
    label: str,
    windows: tuple[list, np.ndarray] | None = None,
    keep_features: bool = False,
):
    """Rank of every blank's target under `model` (bi, or uni-left): one pass per sentence (`blank_features`).

    `keep_features`: also keep each blank's features in `result.features[label]`, for the continuous cache.
    """
    started = time.perf_counter()
    ranks = np.full(len(result.target), np.nan)
    logps = np.full(len(result.target), np.nan)
    features = None
    excluded = special_ids(model).to(device)
    with tqdm(total=len(result.target), desc=label, unit="blank", disable=None, leave=False) as bar:
        for dest, feats in blank_features(model, sentences, result, device, batch_size, windows):
            targets = torch.from_numpy(result.target[dest]).to(device)
            r, lp = [], []
            for j in range(0, len(targets), CHUNK):
                rank, logp = rank_targets(model, feats[j : j + CHUNK], targets[j : j + CHUNK], excluded)
                r.append(rank)
                lp.append(logp)
            if r:
                ranks[dest] = torch.cat(r).cpu().numpy()
                logps[dest] = torch.cat(lp).cpu().numpy()
            if keep_features:
                if features is None:
                    features = feats.new_empty(len(result.target), feats.size(1), dtype=torch.float32)
                features[torch.from_numpy(dest).to(device)] = feats.float()
            bar.update(len(targets))
    if features is not None:
        result.features[label] = features
    result.ranks[label], result.log_probs[label] = ranks, logps
    result.seconds[label] = time.perf_counter() - started
    result.passes[label] = len(sentences)


def rescore_sample(result: FillResult, cfg: FillConfig) -> np.ndarray:
    """The seeded sample of blanks that both rescoring methods rank, shortest sentences first."""
    n = min(cfg.rescore_sample, len(result.target))
    sample = np.random.default_rng(cfg.seed).choice(len(result.target), size=n, replace=False)
    return sample[np.argsort(result.length[sample], kind="stable")]


@torch.inference_mode()
def rank_rescored(
    model: LanguageModel,
    sentences: list,
    result: FillResult,
    device,
    cfg: FillConfig,
    windows: tuple[list, np.ndarray] | None = None,
    uni: LanguageModel | None = None,
):
    """uni-rescore or bi-rescore on `rescore_sample`: the model's own top K at the blank, each
    put into the blank and the filled sentence scored whole (`choices.rescore`). A bi `model` with
    `uni` also ranks uni+bi from the same shortlist and bi scores: the uni model's log p of each filled
    sentence joins the score (`choices.combine`).

    The K filled sentences of several blanks share one padded batch. With `windows`, each
    filled window is scored whole: the words after the blank (uni; bi: on both sides), in
    its sentence and in the context around it, vote.
    """
    model.eval()
    label = "bi-rescore" if isinstance(model, BiLM) else "uni-rescore"
    both = "uni+bi" if uni is not None else None
    started, uni_seconds = time.perf_counter(), 0.0
    ranks = {m: np.full(len(result.target), np.nan) for m in (label, both) if m}
    sample = rescore_sample(result, cfg)
    excluded = special_ids(model).to(device)
    k = min(cfg.bi_shortlist if isinstance(model, BiLM) else cfg.shortlist, model.cfg.vocab_size - len(excluded))
    per_batch = max(1, 512 // k)
    texts, starts = windows or (sentences, np.zeros(len(sentences), np.int64))
    with tqdm(total=len(sample), desc=" and ".join(ranks), unit="blank", disable=None, leave=False) as bar:
        for i in range(0, len(sample), per_batch):
            rows = sample[i : i + per_batch]
            sents = [texts[result.sentence[r]] for r in rows]
            at = starts[result.sentence[rows]] + result.index[rows]
            h = sentence_features(model, sents, device)
            logp = model.log_prob(h[torch.arange(len(rows), device=device), torch.from_numpy(at).to(device)])
            shortlist = logp.index_fill(1, excluded, -torch.inf).topk(k).indices.cpu()
            items = [
                ([*s[:t], w, *s[t + 1 :]], t, t + 1)
                for s, t, cands in zip(sents, at.tolist(), shortlist.tolist(), strict=True)
                for w in cands
            ]
            hit = shortlist == torch.from_numpy(result.target[rows])[:, None]
            scores = rescore(model, *score_filled(model, items, device))
            ranks[label][rows] = shortlist_ranks(scores, hit)
            if both:
                uni_started = time.perf_counter()
                ranks[both][rows] = shortlist_ranks(combine(scores, score_filled(uni, items, device)[1]), hit)
                uni_seconds += time.perf_counter() - uni_started
            bar.update(len(rows))
    seconds = time.perf_counter() - started
    result.ranks.update(ranks)
    result.seconds[label] = seconds - uni_seconds
    result.passes[label] = len(sample) * k
    if both:  # its own cost: bi's shortlist and scores, then the uni model's
        result.seconds[both] = seconds
        result.passes[both] = len(sample) * k * 2


def shortlist_ranks(scores: np.ndarray, hit: torch.Tensor) -> np.ndarray:
    """Each blank's target rank among its shortlist's (B * K,) `scores`; `hit` (B, K) marks the target (inf: missed)."""
    scores = torch.from_numpy(scores).view(hit.shape)
    target_score = torch.where(hit, scores, -torch.inf).max(1).values
    rank = (scores > target_score[:, None]).sum(1).double() + 1
    return torch.where(hit.any(1), rank, torch.inf).numpy()


def fill_in(
    sentences: list,
    device,
    cfg: FillConfig,
    uni: LanguageModel | None = None,
    bi: LanguageModel | None = None,
    windows: tuple[list, np.ndarray] | None = None,
    keep_features: tuple[str, ...] = (),
) -> FillResult:
    """Rank every blank with each method the given models allow (see the module docstring).

    `windows`: each sentence in its document context (data.context_windows with `cfg.context`
    tokens), read alike by every method; None reads the sentences alone. `keep_features`: the
    methods ("bi", "uni-left") whose features to keep in `result.features` (for cache.rank_with_cache).
    """
    if cfg.max_sentences is not None:
        sentences = sentences[: cfg.max_sentences]
        windows = windows and (windows[0][: cfg.max_sentences], windows[1][: cfg.max_sentences])
    model = uni or bi
    result = blank_positions(sentences, model.cfg.unk_id)
    if bi is not None:
        rank_all(bi, sentences, result, device, cfg.batch_size, "bi", windows, "bi" in keep_features)
    if uni is not None:
        rank_all(uni, sentences, result, device, cfg.batch_size, "uni-left", windows, "uni-left" in keep_features)
    if cfg.rescore_sample and uni is not None:
        rank_rescored(uni, sentences, result, device, cfg, windows)
    if cfg.rescore_sample and bi is not None:
        rank_rescored(bi, sentences, result, device, cfg, windows, uni=uni)
    return result


# -- summaries ---------------------------------------------------------------------------


def length_bucket(length: np.ndarray) -> np.ndarray:
    """Index into LENGTH_BUCKETS of each sentence length."""
    return np.searchsorted([b for _, b in LENGTH_BUCKETS[:-1]], length, side="left")


def bucket_label(bucket: tuple) -> str:
    lo, hi = bucket
    return f"{lo}+" if math.isinf(hi) else f"{lo}-{hi}"


def relative_position(index: np.ndarray, length: np.ndarray) -> np.ndarray:
    """Where the blank sits, in (0, 1): the middle of its word's slot, so both ends are symmetric."""
    return (index + 0.5) / length


def word_classes(tokenizer: Tokenizer) -> np.ndarray:
    """Class of every vocabulary id (V,): 0 content, 1 function word, 2 punctuation."""
    words = tokenizer.decode(range(len(tokenizer)))
    return np.array(
        [1 if w.lower() in FUNCTION_WORDS else 0 if any(ch.isalnum() for ch in w) else 2 for w in words],
        dtype=np.int8,
    )


def metric_values(ranks: np.ndarray, metric: str) -> np.ndarray:
    if metric == "mrr":
        return 1.0 / ranks
    return (ranks <= int(metric[3:])).astype(np.float64)


class Bootstrap:
    """Percentile intervals for per-blank means, resampling units (sentences or documents) with replacement.

    One multinomial weight matrix (R, S) serves every cell and every method, so two
    methods' intervals and their paired difference come from the same resamples.
    """

    def __init__(self, n_sentences: int, resamples: int, seed: int):
        rng = np.random.default_rng(seed)
        self.n = n_sentences
        self.weights = rng.multinomial(n_sentences, np.full(n_sentences, 1 / n_sentences), size=resamples).astype(
            np.float32
        )

    def interval(self, values: np.ndarray, unit: np.ndarray) -> tuple[float, float]:
        """The interval of the mean of `values`; `unit`: the resampled unit of each value."""
        if len(self.weights) == 0 or len(values) == 0:
            return (math.nan, math.nan)
        sums = np.bincount(unit, weights=values, minlength=self.n).astype(np.float32)
        counts = np.bincount(unit, minlength=self.n).astype(np.float32)
        with np.errstate(invalid="ignore", divide="ignore"):
            means = (self.weights @ sums) / (self.weights @ counts)
        lo, hi = np.nanpercentile(means, [2.5, 97.5]) if np.isfinite(means).any() else (math.nan, math.nan)
        return float(lo), float(hi)


def resampling_units(
    result: FillResult,
    documents: np.ndarray | None = None,
    document_unit: str | None = None,
    min_documents: int = MIN_DOCUMENTS,
) -> dict:
    """What the bootstrap resamples: `unit` (article, book, ... or sentence), how many (`units`),
    the unit of each blank (`of_blank`, (N,) ids in [0, units)) and a `note` when it falls back."""
    unit = document_unit or "document"
    if documents is not None:
        docs = np.asarray(documents)[: result.n_sentences]
        ids, inverse = np.unique(docs, return_inverse=True)
        if len(ids) >= min_documents:
            return dict(unit=unit, units=int(len(ids)), of_blank=inverse[result.sentence], note="")
        note = (
            f"only {len(ids)} {unit}(s) in the evaluated text, too few to resample: sentences are resampled, "
            f"and the intervals are too narrow where the sentences of one {unit} are alike"
        )
    else:
        note = "the corpus has no document boundaries: sentences are resampled"
    return dict(unit="sentence", units=result.n_sentences, of_blank=result.sentence, note=note)


def cell(ranks: np.ndarray, log_probs: np.ndarray | None, units: np.ndarray, boot: Bootstrap) -> dict:
    """Every metric over the given blanks; `units`: the resampled unit of each blank (for the interval).

    Fewer than MIN_CI_BLANKS blanks: no interval (nan), and `n` says why."""
    out = {"n": int(len(ranks)), "units": int(len(np.unique(units)))}
    for metric in METRICS:
        values = metric_values(ranks, metric)
        out[metric] = float(values.mean()) if len(values) else math.nan
        out[f"{metric}_ci"] = boot.interval(values, units) if len(values) >= MIN_CI_BLANKS else (math.nan, math.nan)
    if log_probs is not None and len(log_probs):
        out["ppl"] = math.exp(min(-float(log_probs.mean()), 50))
    return out


def groupings(result: FillResult, classes: np.ndarray) -> dict[str, list[tuple[str, np.ndarray]]]:
    """Named subsets of the blanks: by sentence length, blank position, word class."""
    bucket = length_bucket(result.length)
    rel = relative_position(result.index, result.length)
    third = np.minimum((rel * 3).astype(int), 2)
    decile = np.minimum((rel * 10).astype(int), 9)
    word = classes[result.target]
    return {
        "all": [("all", np.ones(len(rel), dtype=bool))],
        "length": [(bucket_label(b), bucket == i) for i, b in enumerate(LENGTH_BUCKETS)],
        "position": [(name, third == i) for i, name in enumerate(POSITIONS)],
        "position_decile": [(f"{i / 10:.1f}-{(i + 1) / 10:.1f}", decile == i) for i in range(10)],
        "word": [(name, word == i) for i, name in enumerate(WORD_CLASSES)],
    }


def summarize(
    result: FillResult,
    tokenizer: Tokenizer,
    cfg: FillConfig,
    documents: np.ndarray | None = None,
    document_unit: str | None = None,
) -> dict:
    """JSON-able figures: per method, per grouping, per group, every metric with its interval.

    `sample` repeats the comparison on the rescoring methods' sample only, so every method
    is compared on the same blanks. `documents`: the document of each sentence (PreparedData.
    documents), so that the intervals resample documents (see `resampling_units`).
    """
    resampled = resampling_units(result, documents, document_unit, cfg.min_documents)
    units = resampled.pop("of_blank")
    boot = Bootstrap(resampled["units"], cfg.bootstrap, cfg.seed)
    groups = groupings(result, word_classes(tokenizer))
    out = {"blanks": int(len(result.target)), "sentences": result.n_sentences, "excluded_unk": result.excluded_unk}
    out["methods"] = {}
    for method, ranks in result.ranks.items():
        done = ~np.isnan(ranks)
        lp = result.log_probs.get(method)
        out["methods"][method] = {
            name: {
                label: cell(ranks[done & m], None if lp is None else lp[done & m], units[done & m], boot)
                for label, m in subsets
            }
            for name, subsets in groups.items()
        }
    out["cost"] = {
        m: {
            "seconds": round(s, 2),
            "blanks": int((~np.isnan(result.ranks[m])).sum()),
            "ms_per_blank": round(1000 * s / max(int((~np.isnan(result.ranks[m])).sum()), 1), 3),
            "sentences_scored": result.passes[m],
        }
        for m, s in result.seconds.items()
    }
    rescored = [m for m in RESCORED if m in result.ranks]
    if rescored:
        sample = ~np.isnan(result.ranks[rescored[0]])
        out["sample"] = {
            m: cell(r[sample], None, units[sample], boot) for m, r in result.ranks.items() if m not in rescored
        }
        out["sample"].update({m: out["methods"][m]["all"]["all"] for m in rescored})
    out["differences"] = differences(result, boot, units)
    out["resampled"] = dict(resampled, resamples=cfg.bootstrap)
    return out


def differences(result: FillResult, boot: Bootstrap, units: np.ndarray | None = None) -> list[dict]:
    """Paired top-1 differences between methods on the blanks both ran, with intervals.

    `units`: the resampled unit of each blank (default: its sentence)."""
    units = result.sentence if units is None else units
    pairs = [("bi", "uni-left"), ("uni-rescore", "uni-left"), ("bi", "uni-rescore")]
    pairs += [("bi-rescore", "bi"), ("bi-rescore", "uni-rescore")]
    pairs += [("uni+bi", "bi"), ("uni+bi", "bi-rescore"), ("uni+bi", "uni-rescore")]
    pairs += [("bi+cache", "uni-left+cache"), ("bi+cache", "uni-rescore"), ("bi+cache", "bi")]
    out = []
    for a, b in pairs:
        if a not in result.ranks or b not in result.ranks:
            continue
        both = ~np.isnan(result.ranks[a]) & ~np.isnan(result.ranks[b])
        diff = metric_values(result.ranks[a][both], "top1") - metric_values(result.ranks[b][both], "top1")
        lo, hi = boot.interval(diff, units[both])
        out.append({"a": a, "b": b, "metric": "top1", "n": int(both.sum()), "diff": float(diff.mean()), "ci": [lo, hi]})
    return out
