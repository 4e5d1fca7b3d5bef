"""Raw text in: user input is cut as the model's corpus was (see bilm/textnorm.py)."""

import pytest

from bilm.textnorm import detokenize, normalize, ptb_words, wikitext_words
from bilm.tokenizer import Tokenizer

# Raw sentence -> WikiText-2's own tokenization (as its train.txt writes these words).
WIKITEXT = [
    ("I don't know why the price is so expensive.", "I don 't know why the price is so expensive ."),
    ('He said "the car is red" and left.', 'He said " the car is red " and left .'),
    ("It's a well-known fact.", "It 's a well @-@ known fact ."),
    ("In 1,000 cases (3.5%) it won't.", "In 1 @,@ 000 cases ( 3 @.@ 5 % ) it won 't ."),
    ("The 1990-91 season, e.g. in St. Louis.", "The 1990 @-@ 91 season , e.g. in St. Louis ."),
    ("Mr. O'Brien's cat...", "Mr. O 'Brien 's cat ..."),
    ("James' book cost $5; really?", "James ' book cost $ 5 ; really ?"),
    ("\u201cDidn\u2019t you?\u201d she said.", '" Didn \'t you ? " she said .'),
    ("a <unk> word", "a <unk> word"),
]
ABBREVIATIONS = {"Mr.", "St.", "e.g.", "U.S."}


@pytest.mark.parametrize("raw, expected", WIKITEXT)
def test_raw_text_is_cut_as_wikitext_writes_it(raw, expected):
    assert wikitext_words(raw, ABBREVIATIONS.__contains__) == expected.split()


@pytest.mark.parametrize("raw, expected", WIKITEXT[:6])
def test_wikitext_words_read_back_as_a_person_writes_them(raw, expected):
    assert detokenize(expected.split()) == raw


def test_text_already_tokenized_as_wikitext_reads_the_same():
    vocabulary = ABBREVIATIONS | {"'s", "'t", "'Brien", "@-@", "@,@", "@.@", "...", '"', "."}
    for _, expected in WIKITEXT:
        assert wikitext_words(expected, vocabulary.__contains__) == expected.split()


def test_a_period_ending_the_text_is_split_even_after_an_abbreviation():
    assert wikitext_words("He moved to the U.S.", ABBREVIATIONS.__contains__)[-2:] == ["U.S", "."]


def test_ptb_style_lowercases_splits_nt_maps_numbers_and_drops_punctuation():
    assert ptb_words("Mr. Smith didn't pay $1,000, did he?", {"mr."}.__contains__) == (
        "mr. smith did n't pay $ N did he".split()
    )


def test_normalize_maps_curly_quotes_and_compatibility_characters():
    assert normalize("\u2018hi\u2019 \u201cyou\u201d \ufb01ne\u2026 \uff21") == "'hi' \"you\" fine... A"


def test_tokenizer_applies_its_corpus_style_to_user_input(tmp_path):
    wiki = Tokenizer.train([["It", "'s", "a", "well", "@-@", "known", "fact", "."]], style="wikitext")
    assert wiki.decode(wiki.encode("It's a well-known fact.")) == ["It", "'s", "a", "well", "@-@", "known", "fact", "."]
    raw = Tokenizer.train([["didn't", "you", '"', "."]], pretokenized=False, lowercase=True)
    assert raw.style == "raw"
    assert raw.decode(raw.encode("\u201cDidn\u2019t you.\u201d")) == ['"', "didn't", "you", ".", '"']
    wiki.save(tmp_path / "tokenizer.json")
    assert Tokenizer.load(tmp_path / "tokenizer.json", "wikitext").tokenize("don't") == ["don", "'t"]
