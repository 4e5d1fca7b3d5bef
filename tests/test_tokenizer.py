import numpy as np

from bilm.data import DataConfig, prepare
from bilm.tokenizer import SPECIALS, Tokenizer


def test_tokenizer_round_trips_known_words_and_maps_unknown_to_unk(tmp_path):
    tok = Tokenizer.train([["the", "cat", "sat", "."], ["the", "dog", "."]], pretokenized=False)
    ids = tok.encode("the cat sat on the zebra.")
    assert tok.decode(ids) == ["the", "cat", "sat", "<unk>", "the", "<unk>", "."]
    tok.save(tmp_path / "tokenizer.json")
    assert Tokenizer.load(tmp_path / "tokenizer.json").encode("the cat sat on the zebra.") == ids


def test_specials_come_first_and_words_by_frequency():
    tok = Tokenizer.train([["b", "a", "b", "c", "b", "a", "<unk>", "<eos>"]])
    assert tok.decode(range(len(tok))) == SPECIALS + ["b", "a", "c"]
    assert (tok.pad_id, tok.unk_id, tok.bos_id, tok.eos_id, tok.blank_id) == (0, 1, 2, 3, 4)


def test_max_vocab_min_freq_and_lowercase():
    lines = [["The", "the", "THE", "cat", "cat", "rare"]]
    assert tok_words(Tokenizer.train(lines, lowercase=True)) == ["the", "cat", "rare"]
    assert tok_words(Tokenizer.train(lines, lowercase=True, min_freq=2)) == ["the", "cat"]
    assert tok_words(Tokenizer.train(lines, lowercase=True, max_vocab=len(SPECIALS) + 1)) == ["the"]


def tok_words(tok):
    return tok.decode(range(len(SPECIALS), len(tok)))


def test_vocabulary_comes_from_the_train_split_only(tmp_path, data_dir):
    root = tmp_path / "c"
    root.mkdir()
    (root / "train.txt").write_text("alpha beta .\n\ngamma alpha .\n")
    (root / "valid.txt").write_text("alpha validonly .\n")
    (root / "test.txt").write_text("testonly beta .\n")
    data = prepare(DataConfig(str(root)), data_dir=data_dir, log=lambda s: None)
    assert not data.tokenizer.is_known("validonly") and not data.tokenizer.is_known("testonly")
    valid = data.tokenizer.decode(np.asarray(data.stream("valid")))
    assert valid == ["alpha", "<unk>", ".", "<eos>"]
    assert data.meta["splits"]["valid"]["unk"] == 1
