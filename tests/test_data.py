import numpy as np
import torch

from bilm.data import DataConfig, SentenceBatches, StreamBatches, prepare, split_spans


def test_second_prepare_reads_the_cache_without_tokenizing(corpus, tmp_path):
    messages = []
    first = prepare(DataConfig(str(corpus)), data_dir=tmp_path, log=messages.append)
    assert any("tokenizing" in m for m in messages)
    messages.clear()
    second = prepare(DataConfig(str(corpus)), data_dir=tmp_path, log=messages.append)
    assert messages == [] and second.path == first.path
    other = prepare(DataConfig(str(corpus), min_freq=2), data_dir=tmp_path, log=messages.append)
    assert other.path != first.path  # different tokenizer settings, different cache


def test_cache_is_compact_and_memory_mapped(corpus, data_dir):
    data = prepare(DataConfig(str(corpus)), data_dir=data_dir, log=lambda s: None)
    ids = data.stream("train")
    assert isinstance(ids, np.memmap) and ids.dtype == np.uint16
    spans = data.spans("train")
    assert spans.shape == (600, 2)  # one sentence per paragraph
    first = data.tokenizer.decode(ids[spans[0, 0] : spans[0, 1]])
    assert first[0] == "the" and first[-1] == "." and len(first) == 6
    assert data.tokenizer.decode([ids[spans[0, 1]]]) == ["<eos>"]


def test_stream_batches_continue_each_row_across_batches():
    ids = np.arange(101)
    batches = list(StreamBatches(ids, batch_size=4, bptt=10)())
    assert len(batches) == 3  # 25 tokens per row: windows of 10, 10, 5
    assert batches[0].inputs[1, 0] == 25 and batches[1].inputs[1, 0] == 35
    assert torch.equal(batches[0].targets, batches[0].inputs + 1)
    assert batches[2].inputs.shape == (4, 5)


def test_sentence_batches_are_padded_and_reproducible_per_epoch():
    ids = np.arange(10, 100)
    spans = np.array([[0, 3], [3, 8], [8, 9], [9, 30], [30, 40]])
    make = lambda: SentenceBatches(ids, spans, 2, max_len=8, bos=2, eos=3, pad=0, seed=7)  # noqa: E731
    a, b = list(make()(epoch=1)), list(make()(epoch=1))
    assert all(torch.equal(x.inputs, y.inputs) for x, y in zip(a, b, strict=True))
    assert sum(int(x.lengths.sum()) for x in a) == 40  # every token once; long sentences cut at 8
    first = a[0]
    row = first.inputs[0]
    n = int(first.lengths[0])
    assert row[0] == 2 and row[n + 1] == 3 and (row[n + 2 :] == 0).all()
    assert not all(torch.equal(x.inputs, y.inputs) for x, y in zip(a, list(make()(epoch=2)), strict=False))


def test_chunked_shuffle_yields_every_piece_once_in_full_batches_and_resumes_mid_epoch():
    """Pools of memory-mapped chunks (tiny chunks here) must still cover the epoch exactly once."""
    rng = np.random.default_rng(0)
    ends = np.cumsum(rng.integers(1, 20, size=101))
    spans = np.stack([np.r_[0, ends[:-1]], ends], 1)
    batches = SentenceBatches(np.arange(ends[-1]), spans, 4, 8, bos=2, eos=3, pad=0, seed=1, chunk=7, pool=3)
    order = list(batches._order(epoch=0))
    pieces = np.concatenate(order)
    assert len(order) == len(batches) and sum(len(b) < 4 for b in order) <= 1
    assert sorted(map(tuple, pieces.tolist())) == sorted(map(tuple, split_spans(spans, 8).tolist()))
    assert not np.array_equal(pieces, split_spans(spans, 8))  # shuffled, not corpus order
    resumed = list(batches(epoch=0, start=5))
    assert all(torch.equal(a.inputs, b.inputs) for a, b in zip(resumed, list(batches(epoch=0))[5:], strict=True))


def test_long_sentences_are_cut_into_pieces_of_at_most_max_len_and_empty_ones_vanish():
    spans = np.array([[0, 3], [3, 3], [3, 20], [20, 28]])
    pieces = split_spans(spans, max_len=8)
    assert pieces.tolist() == [[0, 3], [3, 11], [11, 19], [19, 20], [20, 28]]
